//! Conntrack aging (issue 15 "Conntrack", issue 17) with real traffic through a real agent: the
//! datapath stamps entries with the last second a packet was seen and whether TCP is closing;
//! the agent's sweep removes idle ones by timeout (`conntrack` in the agent config, here short:
//! 3 s for UDP and closing TCP, swept every second) and counts them in the metrics.
//!
//! - an answered UDP datagram leaves an entry, which is gone once idle past the UDP timeout,
//!   and the same pair is answered again afterwards (a new entry);
//! - closed TCP connections (FIN) go after the closing timeout;
//! - an established TCP connection idle for longer than those timeouts (but not its own, 6 h)
//!   keeps its entry and carries data again afterwards;
//! - `enforcer_conntrack_sweeps_total`, `enforcer_conntrack_expired_total` and
//!   `enforcer_bpf_map_entries{map="CONNTRACK"}` move.

mod resil_common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use enforcer_common::{addr::from_v4, CtKey, CtValue};
use enforcer_tests::{
    fixtures::WEB_API_WORKLOADS, http_get, one_node::WebApi, probe_tcp, probe_udp, spawn_tcp_echo,
    spawn_udp_echo, ProbeOptions, StreamOptions, TcpEchoStream, ANY,
};

const METRICS: &str = "127.0.0.1:9963";
/// The short timeouts of this test (seconds); TCP established keeps its default (6 h).
const SHORT: u64 = 3;

fn api(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 10, 2, 10], port))
}

/// The entries of web-0 (10.10.1.10, end `a`) → api-0 (10.10.2.10) to `port` of `protocol`.
fn entries(bpffs: &std::path::Path, protocol: u8, port: u16) -> Result<Vec<(CtKey, CtValue)>> {
    let path = bpffs
        .join(format!("v{}", enforcer_common::LAYOUT_VERSION))
        .join("maps/CONNTRACK");
    let map = Map::from_map_data(MapData::from_pin(&path)?)?;
    let ct: HashMap<_, CtKey, CtValue> = HashMap::try_from(map)?;
    let (web, api) = (from_v4([10, 10, 1, 10]), from_v4([10, 10, 2, 10]));
    Ok(ct
        .iter()
        .filter_map(std::result::Result::ok)
        .filter(|(k, _)| k.a == web && k.b == api && k.protocol == protocol && k.b_port == port)
        .collect())
}

/// Wait until `cond` holds (polled every 200 ms) or `timeout` passes.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<bool> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(true);
        }
        if start.elapsed() > timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of an unlabelled metric, or of `name{labels}`.
fn metric(ns: &str, series: &str) -> Result<f64> {
    let (status, body) = http_get(ns, METRICS, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {series} in /metrics"))
}

/// The sweep's metrics moved: at least the 4 idle entries expired since `expired_before`, a
/// sweep a second, the table counted.
fn check_metrics(node_ns: &str, expired_before: f64) -> Result<()> {
    let expired = metric(node_ns, "enforcer_conntrack_expired_total")? - expired_before;
    let sweeps = metric(node_ns, "enforcer_conntrack_sweeps_total")?;
    let table = metric(node_ns, "enforcer_bpf_map_entries{map=\"CONNTRACK\"}")?;
    eprintln!("expired {expired}, sweeps {sweeps}, CONNTRACK entries {table}");
    ensure!(expired >= 4.0, "expired_total moved by {expired}");
    ensure!(sweeps >= 5.0, "sweeps_total {sweeps}");
    ensure!(table >= 1.0, "CONNTRACK entries {table}");
    Ok(())
}

#[test]
fn idle_entries_expire_and_established_tcp_stays() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    // The agent refuses a config file in a directory others may write (/tmp itself).
    let dir = std::env::temp_dir().join(format!("enforcer-ct-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "conntrack: {{other: {SHORT}, tcpOpening: {SHORT}, tcpClosing: {SHORT}, \
             sweepInterval: 1}}\n"
        ),
    )?;
    let config_arg = config.display().to_string();
    let WebApi {
        topo,
        work: _work,
        agent,
        web_ns,
        api_ns,
    } = WebApi::start("ct-aging", &["--config", &config_arg])?;
    let node_ns = topo.node_netns("n1")?.to_string();
    let _tcp = spawn_tcp_echo(&api_ns, ANY, 8080)?;
    let _udp = spawn_udp_echo(&api_ns, 5353)?;
    agent.apply("workloads.yaml", WEB_API_WORKLOADS)?;
    agent.apply("base.yaml", resil_common::BASE)?;
    let opts = ProbeOptions::with_timeout(Duration::from_secs(2));
    let bpffs = agent.bpffs.clone();

    // The established connection: one echo every 8 s, idle in between for longer than the
    // short timeouts.
    let stream = TcpEchoStream::start(
        &web_ns,
        api(8080),
        &StreamOptions {
            interval: Duration::from_secs(8),
            timeout: Duration::from_secs(3),
            source: None,
        },
    )?;
    ensure!(
        stream.wait_for_round_trips(1, Duration::from_secs(5)),
        "the stream's first echo"
    );
    // Closed connections and one answered datagram.
    for _ in 0..3 {
        ensure!(
            probe_tcp(&web_ns, api(8080), &opts)?.is_answered(),
            "TCP 8080 is allowed"
        );
    }
    ensure!(
        probe_udp(&web_ns, api(5353), &opts)?.is_answered(),
        "UDP 5353 is allowed"
    );
    let udp = entries(&bpffs, 17, 5353)?;
    ensure!(!udp.is_empty(), "the answered datagram left no entry");
    let tcp_before = entries(&bpffs, 6, 8080)?.len();
    ensure!(
        tcp_before >= 4,
        "expected the stream's and 3 closed connections' entries, found {tcp_before}"
    );
    let expired_before = metric(&node_ns, "enforcer_conntrack_expired_total")?;
    let t0 = Instant::now();

    // UDP and closed TCP go once idle past 3 s (plus a sweep every second).
    ensure!(
        wait_for(Duration::from_secs(15), || Ok(
            entries(&bpffs, 17, 5353)?.is_empty()
        ))?,
        "the idle UDP entry was not swept"
    );
    ensure!(
        wait_for(Duration::from_secs(15), || Ok(entries(&bpffs, 6, 8080)?
            .len()
            == 1))?,
        "the closed TCP entries were not swept: {:?}",
        entries(&bpffs, 6, 8080)?
    );
    let gone_after = t0.elapsed();
    eprintln!("idle UDP and closed TCP entries gone {gone_after:?} after the check that followed their last packet");
    ensure!(
        gone_after >= Duration::from_secs(SHORT - 1),
        "swept before their timeout ({gone_after:?})"
    );
    // The stream's connection stayed through idle periods longer than the short timeouts.
    let rounds = stream.round_trips();
    ensure!(
        stream.wait_for_round_trips(rounds + 2, Duration::from_secs(20)),
        "the established connection stopped after idling: {:?}",
        stream.error()
    );
    ensure!(stream.is_alive(), "stream died: {:?}", stream.error());
    ensure!(
        entries(&bpffs, 6, 8080)?.len() == 1,
        "the established entry is gone"
    );
    // The pair whose entry expired is answered again (a new entry).
    ensure!(
        probe_udp(&web_ns, api(5353), &opts)?.is_answered(),
        "UDP 5353 after expiry"
    );
    ensure!(!entries(&bpffs, 17, 5353)?.is_empty(), "no new UDP entry");

    check_metrics(&node_ns, expired_before)?;
    let _report = stream.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
