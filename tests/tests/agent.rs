//! The agent and the operator CLI, end to end: the real `enforcer` binary applying policy to a
//! real agent in a node namespace, probed with real traffic.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Result;
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    fixtures::{API_INGRESS_TCP_8080, BAD_PORT_POLICY, WEB_API_WORKLOADS},
    one_node::web_api_topology,
    one_node::{text, OneNode as Env},
    probe_tcp, spawn_tcp_echo, ProbeOptions, ANY,
};

const WORKLOADS: &str = WEB_API_WORKLOADS;

const POLICY: &str = API_INGRESS_TCP_8080;

const BAD_POLICY: &str = BAD_PORT_POLICY;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Poll `cond` every 50 ms until it holds; an error naming `what` after `deadline`.
fn wait_until(
    deadline: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = std::time::Instant::now();
    while !cond()? {
        if start.elapsed() > deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn env(tag: &str) -> Result<Env> {
    Env::start(tag, &[])
}

/// Attempts a denied TCP connection over and over on a thread, counting any that get through.
struct Attacker {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    leaked: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Attacker {
    fn start(ns: &str, target: &str) -> Attacker {
        let (stop, attempts, leaked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, a, l, ns) = (
            stop.clone(),
            attempts.clone(),
            leaked.clone(),
            ns.to_string(),
        );
        let target: std::net::SocketAddr = target.parse().expect("target address");
        let thread = std::thread::spawn(move || {
            let opts = ProbeOptions::with_timeout(Duration::from_millis(150));
            while !s.load(Ordering::SeqCst) {
                if let Ok(o) = probe_tcp(&ns, target, &opts) {
                    a.fetch_add(1, Ordering::SeqCst);
                    if o.is_answered() {
                        l.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Attacker {
            stop,
            attempts,
            leaked,
            thread,
        }
    }

    /// Wait until `n` more attempts were made (at most 10 s).
    fn wait_attempts(&self, n: u64) -> Result<()> {
        let start = self.attempts.load(Ordering::SeqCst);
        wait_until(
            Duration::from_secs(10),
            "denied connection attempts",
            || Ok(self.attempts.load(Ordering::SeqCst) >= start + n),
        )
    }

    /// Stop; returns (attempts, leaked).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        (
            self.attempts.load(Ordering::SeqCst),
            self.leaked.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn cli_apply_delete_and_rejected_policy() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = env("cli")?;
    assert!(e.reaches(9090)?, "no policy yet: everything passes");

    let good = e.write("policy.yaml", POLICY)?;
    let out = e.cli(&["policy", "apply", "-f", &good])?;
    assert!(out.status.success(), "apply failed: {}", text(&out));
    assert!(
        text(&out).contains("flowpolicy/api-ingress created"),
        "{}",
        text(&out)
    );
    assert!(e.reaches(8080)?, "allowed port passes");
    assert!(!e.reaches(9090)?, "other port is dropped after apply");

    // A bad policy: exit 1, file:line: reason, and the policy in force stays.
    let bad = e.write("bad.yaml", BAD_POLICY)?;
    let out = e.cli(&["policy", "apply", "-f", &bad])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains(&format!("{bad}:9:")),
        "error names file and line: {msg}"
    );
    assert!(msg.contains("70000"), "error gives the reason: {msg}");
    assert!(
        e.reaches(8080)? && !e.reaches(9090)?,
        "previous policy still enforced"
    );

    // Offline check agrees, for CI pipelines.
    let out = e.cli(&["policy", "check", "-f", &bad])?;
    assert_eq!(out.status.code(), Some(1));
    let out = e.cli(&["policy", "check", "-f", &good])?;
    assert!(out.status.success(), "{}", text(&out));

    // get shows it; explain names it.
    let out = e.cli(&["policy", "get", "api-ingress", "-o", "yaml"])?;
    assert!(text(&out).contains("name: api-ingress"), "{}", text(&out));
    let out = e.cli(&[
        "policy",
        "explain",
        "--from",
        "web-0",
        "--to",
        "api-0",
        "--protocol",
        "TCP",
        "--port",
        "9090",
        "-o",
        "json",
    ])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["verdict"], "deny", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("default deny of isolated service api"),
        "{v}"
    );

    // delete reverts.
    let out = e.cli(&["policy", "delete", "api-ingress"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(e.reaches(9090)?, "deleting the policy reverts to allow");
    Ok(())
}

#[test]
fn policy_dir_is_watched_and_bad_files_change_nothing() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = web_api_topology()?;
    let work = WorkDir::new("pdir")?;
    let dir = work.0.join("policies");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("workloads.yaml"), WORKLOADS)?;
    let agent = AgentProcess::start(
        &topo,
        "n1",
        &work.0,
        &["--policy-dir", dir.to_str().unwrap_or_default()],
    )?;
    let api_ns = topo.pod_netns("api-0")?.to_string();
    let _s = [
        spawn_tcp_echo(&api_ns, ANY, 8080)?,
        spawn_tcp_echo(&api_ns, ANY, 9090)?,
    ];
    let web_ns = topo.pod_netns("web-0")?.to_string();
    let reaches = |port: u16| -> Result<bool> {
        let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
        Ok(probe_tcp(&web_ns, format!("10.10.2.10:{port}").parse()?, &opts)?.is_answered())
    };
    let wait_generation = |min: u64| -> Result<u64> {
        for _ in 0..50 {
            let g = agent.status()?.generation;
            if g >= min {
                return Ok(g);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("generation never reached {min}")
    };
    assert!(reaches(9090)?);
    let g0 = agent.status()?.generation;
    // A ConfigMap-style atomic update: write elsewhere, rename into place.
    std::fs::write(work.0.join("tmp.yaml"), POLICY)?;
    std::fs::rename(work.0.join("tmp.yaml"), dir.join("policy.yaml"))?;
    let g1 = wait_generation(g0 + 1)?;
    assert!(
        reaches(8080)? && !reaches(9090)?,
        "policy from the directory is enforced"
    );
    // CLI delete of a directory document is refused, naming the file.
    let err = agent.delete("api-ingress").expect_err("refused");
    assert!(format!("{err:#}").contains("policy.yaml"), "{err:#}");
    // A bad file: rejected (the agent says so), the policy in force stays.
    std::fs::write(dir.join("policy.yaml"), BAD_POLICY)?;
    wait_until(
        Duration::from_secs(10),
        "the agent rejects the bad file",
        || {
            Ok(agent
                .status()?
                .not_ready
                .iter()
                .any(|r| r.contains("policy directory rejected") && r.contains("policy.yaml:9")))
        },
    )?;
    assert_eq!(agent.status()?.generation, g1, "nothing applied");
    assert!(
        reaches(8080)? && !reaches(9090)?,
        "previous policy still enforced"
    );
    // Removing the file reverts.
    std::fs::remove_file(dir.join("policy.yaml"))?;
    wait_generation(g1 + 1)?;
    assert!(reaches(9090)?);
    Ok(())
}

#[test]
fn sigkill_restart_keeps_enforcing_without_a_gap() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut e = env("restart")?;
    e.agent.apply("policy.yaml", POLICY)?;
    let generation = e.agent.status()?.generation;
    // An allowed connection streaming data.
    let stream = e.stream_to_api(Duration::from_secs(2))?;
    assert!(stream.wait_for_round_trips(10, Duration::from_secs(5)));
    // A denied flow attempted over and over.
    let attacker = Attacker::start(&e.web_ns, "10.10.2.10:9090");
    attacker.wait_attempts(3)?;
    let before = stream.round_trips();
    e.agent.kill()?; // SIGKILL
    attacker.wait_attempts(3)?; // attempts while no agent runs at all
    e.agent.restart(&e.topo, &[])?;
    attacker.wait_attempts(3)?; // and after the new agent took over
    let (attempts, leaked) = attacker.stop();
    assert!(
        attempts >= 9,
        "the denied flow was attempted during the restart"
    );
    assert_eq!(leaked, 0, "no denied connection got through");
    assert!(
        stream.is_alive(),
        "allowed connection survived: {:?}",
        stream.error()
    );
    assert!(stream.round_trips() > before + 10, "and kept streaming");
    assert_eq!(
        e.agent.status()?.generation,
        generation,
        "the new agent reports the same generation"
    );
    assert!(e.reaches(8080)? && !e.reaches(9090)?);
    Ok(())
}

#[test]
fn socket_refuses_non_root_clients() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = env("sock")?;
    let bin = enforcer_bin()?;
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--socket")
        .arg(&e.agent.socket)
        .arg("status")
        .output()?;
    assert!(!out.status.success(), "a non-root client must be refused");
    let msg = text(&out).to_lowercase();
    assert!(msg.contains("permission denied"), "{msg}");
    // Root is served.
    assert!(e.cli(&["status"])?.status.success());
    Ok(())
}

#[test]
fn upgrade_across_a_layout_change_migrates_without_a_gap() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut e = env("layout")?;
    e.agent.apply("policy.yaml", POLICY)?;
    let stream = e.stream_to_api(Duration::from_secs(2))?;
    assert!(stream.wait_for_round_trips(10, Duration::from_secs(5)));
    e.agent.kill()?;
    // What an older agent (layout v0) would have left: the same pins under another version.
    let current = e
        .agent
        .bpffs
        .join(format!("v{}", enforcer_common::LAYOUT_VERSION));
    let old = e.agent.bpffs.join("v0");
    std::fs::rename(&current, &old)?;
    assert!(
        !e.reaches(9090)?,
        "the old layout's datapath keeps enforcing with no agent"
    );
    let before = stream.round_trips();
    e.agent.restart(&e.topo, &[])?;
    assert!(
        !old.exists(),
        "the old layout's pins are removed after the migration"
    );
    assert!(
        current.join("links").read_dir()?.count() >= 4,
        "links moved to the new layout"
    );
    assert!(
        e.reaches(8080)? && !e.reaches(9090)?,
        "the new datapath enforces the persisted policy"
    );
    assert!(
        stream.is_alive() && stream.round_trips() > before,
        "the allowed connection survived: {:?}",
        stream.error()
    );
    Ok(())
}

#[test]
fn a_policy_change_cuts_an_established_connection() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = env("cut")?;
    e.agent.apply("policy.yaml", POLICY)?;
    let stream = e.stream_to_api(Duration::from_millis(800))?;
    assert!(stream.wait_for_round_trips(10, Duration::from_secs(5)));
    // Another policy generation that still allows 8080 leaves the connection alone.
    e.agent.apply(
        "noop.yaml",
        &POLICY.replace("api-ingress", "api-ingress-copy"),
    )?;
    let n = stream.round_trips();
    assert!(
        stream.wait_for_round_trips(n + 10, Duration::from_secs(5)),
        "re-judged and still allowed"
    );
    // Now 8080 is no longer allowed: the next packet of the established flow is dropped.
    e.agent.delete("api-ingress-copy")?;
    e.agent
        .apply("policy.yaml", &POLICY.replace("port: 8080", "port: 8081"))?;
    let dead = stream.wait_until_dead(Duration::from_secs(5));
    if !dead {
        eprintln!(
            "round trips {} alive {}",
            stream.round_trips(),
            stream.is_alive()
        );
        eprintln!("{:#?}", e.agent.stats()?);
        eprintln!("{}", e.agent.log_tail());
    }
    assert!(dead, "the established connection is cut");
    Ok(())
}

#[test]
fn interfaces_that_appear_later_are_attached_and_vanished_ones_forgotten() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut e = env("hotplug")?;
    e.agent.apply("policy.yaml", POLICY)?;
    let attached = |a: &AgentProcess| -> Result<usize> {
        Ok(a.status()?
            .interfaces
            .iter()
            .filter(|i| i.role == "pod")
            .count())
    };
    assert_eq!(attached(&e.agent)?, 2);
    // A new pod of service web starts on the node.
    e.topo.add_pod("web-1", "n1", &[ip("10.10.1.11")])?;
    e.agent.apply(
        "web-1.yaml",
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-1}\nspec: {service: web, addresses: [10.10.1.11]}\n",
    )?;
    let mut waited = 0;
    while attached(&e.agent)? < 3 && waited < 50 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert_eq!(
        attached(&e.agent)?,
        3,
        "the new pod's interface is attached"
    );
    let ns = e.topo.pod_netns("web-1")?.to_string();
    let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
    // Its endpoint and identity reach the datapath at a resync after the attach.
    wait_until(Duration::from_secs(10), "web-1 is web: allowed", || {
        Ok(probe_tcp(&ns, "10.10.2.10:8080".parse()?, &opts)?.is_answered())
    })?;
    assert!(
        !probe_tcp(&ns, "10.10.2.10:9090".parse()?, &opts)?.is_answered(),
        "and only on 8080"
    );
    // The pod goes away: its interface is forgotten.
    enforcer_tests::netns::delete_netns(&ns)?;
    let mut waited = 0;
    while attached(&e.agent)? > 2 && waited < 50 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert_eq!(
        attached(&e.agent)?,
        2,
        "the vanished interface is forgotten"
    );
    Ok(())
}
