//! Issue 17, the long run: pod churn, policy updates and traffic together against one real
//! agent, while its memory (RSS), open file descriptors and map entries are sampled. The short
//! form (`ENFORCER_SOAK_SECONDS`, default 60) runs in `cargo test`; `cargo xtask soak --minutes N`
//! runs the long one and writes RELIABILITY.md section `soak` from the `soak=` line printed here.
//!
//! Each round:
//! - churn: a pod is created on a recycled address with a Workload, alternately of service `web`
//!   (allowed to api:8080) and `intruder` (allowed nothing), probed, then deleted with its
//!   Workload: a recycled address never inherits the previous pod's allowances;
//! - update: web → api:9090 is allowed, then denied again, each checked by a probe once the
//!   apply returned (a denial only counts with a drop counted by the datapath);
//! - traffic: one TCP connection (web → api:8080) streams and web → api:UDP 5353 echoes all the
//!   time; neither pair is ever touched by an update, so neither may break or lose a datagram;
//! - sample (every `ENFORCER_SOAK_SAMPLE_SECONDS`, default 5, after a round, so every sample is
//!   taken with the same pods present): the agent's `VmRSS`, its entries in `/proc/PID/fd`, and
//!   the entries of every map as `status` reports them.
//!
//! The slope of each series (least squares, per hour) is printed; the test fails on a wrong
//! verdict, a broken untouched connection, a lost datagram, or an entry left behind by the
//! churned pods (endpoints and identities back to where they were after the first round).

mod resil_common;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use enforcer_tests::{probe_tcp, ProbeOptions};
use resil_common::{api, ip, Fixture};

/// web → api:9090, allowed and denied in turn.
const TOGGLED_PORT: u16 = 9090;

fn toggled_policy() -> String {
    resil_common::BASE
        .replace("api-base", "api-toggled")
        .replace(
            "[{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]",
            &format!("[{{protocol: TCP, port: {TOGGLED_PORT}}}]"),
        )
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// One sample of the agent's resources.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    maps: BTreeMap<String, u64>,
}

fn sample(f: &Fixture, at: Duration) -> Result<Sample> {
    let pid = f.agent.pid().context("no agent pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let mut maps: BTreeMap<String, u64> = f
        .agent
        .status()?
        .maps
        .into_iter()
        .map(|m| (m.map, m.entries as u64))
        .collect();
    for map in ["CONNTRACK", "RATE_BUCKETS"] {
        maps.insert(map.to_string(), pinned_entries(f, map)?);
    }
    Ok(Sample {
        at,
        rss_kib,
        fds,
        maps,
    })
}

/// Entries of a pinned map the agent's `status` does not count (`bpftool map dump`).
fn pinned_entries(f: &Fixture, map: &str) -> Result<u64> {
    let path = f
        .agent
        .bpffs
        .join(format!("v{}", enforcer_common::LAYOUT_VERSION))
        .join("maps")
        .join(map);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .context("running bpftool")?;
    ensure!(
        out.status.success(),
        "bpftool map dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(dump.as_array().map_or(0, |a| a.len() as u64))
}

/// Least-squares slope of `ys` over the samples' times, per hour.
#[expect(
    clippy::cast_precision_loss,
    reason = "sample counts, kibibytes, descriptors and map entries are far below 2^52"
)]
fn slope_per_hour(samples: &[Sample], y: impl Fn(&Sample) -> u64) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let xs: Vec<f64> = samples
        .iter()
        .map(|s| s.at.as_secs_f64() / 3600.0)
        .collect();
    let ys: Vec<f64> = samples.iter().map(|s| y(s) as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Outcome counts of the rounds.
#[derive(Default)]
struct Counts {
    rounds: u64,
    pods: u64,
    updates: u64,
    checks: u64,
    wrong: Vec<String>,
}

impl Counts {
    fn check(&mut self, what: String, ok: bool) {
        self.checks += 1;
        if !ok {
            self.wrong.push(what);
        }
    }
}

/// The churn step: create a pod on a recycled address with a Workload of `service`, check what
/// it may reach, delete both. (Engineer `firstpacket`'s churn tests cover first-packet
/// enforcement; this is the part the soak repeats.)
fn churn_step(f: &mut Fixture, round: u64, counts: &mut Counts) -> Result<()> {
    let name = format!("churn-{round}");
    let addr = ip(if round % 4 < 2 {
        "10.10.1.100"
    } else {
        "10.10.1.101"
    });
    let service = if round.is_multiple_of(2) {
        "web"
    } else {
        "intruder"
    };
    f.topo.add_pod(&name, "n1", &[addr])?;
    let workload = format!(
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: churn}}\n\
         spec: {{service: {service}, addresses: [{addr}]}}\n"
    );
    f.agent.apply("churn.yaml", &workload)?;
    let ns = f.topo.pod_netns(&name)?.to_string();
    let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
    // The pod's interface is attached by the agent when it appears; allow it that long.
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = loop {
        let answered = probe_tcp(&ns, api(8080), &opts)?.is_answered();
        if answered || service != "web" || Instant::now() > deadline {
            break answered;
        }
    };
    counts.check(
        format!("round {round}: {service} pod at {addr} → api:8080 answered={answered}"),
        answered == (service == "web"),
    );
    f.agent.delete("churn")?;
    f.topo.remove_pod(&name)?;
    counts.pods += 1;
    Ok(())
}

/// The update step: allow web → api:9090, probe, deny it again, probe.
fn update_step(f: &Fixture, round: u64, counts: &mut Counts) -> Result<()> {
    f.agent.apply("toggled.yaml", &toggled_policy())?;
    let allowed = f.reaches(TOGGLED_PORT, Duration::from_millis(700))?;
    counts.check(
        format!("round {round}: 9090 allowed, answered={allowed}"),
        allowed,
    );
    f.agent.delete("api-toggled")?;
    let before = f.agent.packets("denied")?;
    let answered = f.reaches(TOGGLED_PORT, Duration::from_millis(700))?;
    let dropped = f.agent.packets("denied")? > before;
    counts.check(
        format!("round {round}: 9090 denied, answered={answered} drop_counted={dropped}"),
        !answered && dropped,
    );
    counts.updates += 2;
    Ok(())
}

#[test]
fn churn_updates_and_traffic_leave_resources_flat() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let duration = env_secs("ENFORCER_SOAK_SECONDS", 60);
    let every = env_secs("ENFORCER_SOAK_SAMPLE_SECONDS", 5);
    let mut f = Fixture::new("soak", &[TOGGLED_PORT])?;
    let stream = f.stream()?;
    let udp = f.datagrams();
    let start = Instant::now();
    let mut counts = Counts::default();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = Duration::ZERO;
    while start.elapsed() < duration {
        churn_step(&mut f, counts.rounds, &mut counts)?;
        update_step(&f, counts.rounds, &mut counts)?;
        counts.rounds += 1;
        if start.elapsed() >= next_sample {
            samples.push(sample(&f, start.elapsed())?);
            next_sample += every;
        }
    }
    samples.push(sample(&f, start.elapsed())?);
    let datagrams = udp.stop();
    let report = stream.stop();
    let lost = datagrams.iter().filter(|p| !p.answered).count();

    let (first, end) = (&samples[0], &samples[samples.len() - 1]);
    let mut line = format!(
        "soak=seconds={} rounds={} pods_churned={} updates={} checks={} wrong_verdicts={} \
         udp_sent={} udp_lost={lost} tcp_round_trips={} tcp_broken={} samples={} \
         rss_kib_first={} rss_kib_last={} rss_kib_per_hour={:.0} fds_first={} fds_last={} \
         fds_per_hour={:.1}",
        start.elapsed().as_secs(),
        counts.rounds,
        counts.pods,
        counts.updates,
        counts.checks,
        counts.wrong.len(),
        datagrams.len(),
        report.round_trips,
        report.error.is_some(),
        samples.len(),
        first.rss_kib,
        end.rss_kib,
        slope_per_hour(&samples, |s| s.rss_kib),
        first.fds,
        end.fds,
        slope_per_hour(&samples, |s| s.fds),
    );
    for map in first.maps.keys() {
        let entries = |s: &Sample| s.maps.get(map).copied().unwrap_or(0);
        let _ = write!(
            line,
            " {map}_first={} {map}_last={} {map}_per_hour={:.1}",
            entries(first),
            entries(end),
            slope_per_hour(&samples, entries)
        );
    }
    println!("{line}");
    ensure!(counts.rounds >= 2, "at least two rounds ran");
    ensure!(
        counts.wrong.is_empty(),
        "wrong verdicts: {:#?}",
        counts.wrong
    );
    ensure!(lost == 0, "untouched UDP datagrams lost: {lost}");
    ensure!(
        report.error.is_none(),
        "the untouched TCP connection broke: {:?}",
        report.error
    );
    // Every sample is taken with the churned pod gone: what it added must be gone too.
    for map in ["ENDPOINTS", "IDENTITIES"] {
        ensure!(
            first.maps.get(map) == end.maps.get(map),
            "{map}: {:?} entries after the first round, {:?} at the end",
            first.maps.get(map),
            end.maps.get(map)
        );
    }
    Ok(())
}
