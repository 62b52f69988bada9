//! CNI-bypass detection: a tc program on the node's uplink that delivers into a pod with
//! `bpf_redirect_peer` (what Cilium's BPF host routing and Calico's eBPF mode do) makes the
//! pod's ingress policy absent; the agent finds it at startup and refuses readiness, naming the
//! device and the program, in `/readyz`, `enforcer status`, a metric and its log.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_tests::{
    bypass::RedirectPeer,
    fixtures::{API_INGRESS_TCP_8080, WEB_API_WORKLOADS},
    http_get,
    one_node::WebApi,
    probe_tcp, spawn_tcp_echo, ProbeOptions, Topology, ANY, UPLINK_IFNAME,
};

const METRICS: &str = "127.0.0.1:9963";

fn reaches(ns: &str) -> Result<bool> {
    let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
    Ok(probe_tcp(ns, "10.10.2.10:8080".parse()?, &opts)?.is_answered())
}

/// `/readyz` once it settles on `want` (200 or 503): its body.
fn readyz(node_ns: &str, want: u16) -> Result<String> {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(node_ns, METRICS, "/readyz")?;
        if code == want {
            return Ok(body);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "/readyz: {code}, expected {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_redirect_peer_program_on_the_uplink_makes_the_agent_refuse_readiness() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = Topology::builder()
        .pod("web-0", "n1", &["10.10.1.10".parse()?])
        .pod("api-0", "n1", &["10.10.2.10".parse()?])
        .external("ext", &["198.51.100.7".parse()?])
        .build()?;
    let mut env = WebApi::start_on(topo, "bypass", &[])?;
    let _server = spawn_tcp_echo(&env.api_ns, ANY, 8080)?;
    env.agent.apply("workloads.yaml", WEB_API_WORKLOADS)?;
    env.agent.apply("policy.yaml", API_INGRESS_TCP_8080)?;
    let node_ns = env.topo.node("n1")?.netns().to_string();
    let ext_ns = env
        .topo
        .externals()
        .first()
        .context("ext")?
        .netns()
        .to_string();
    // Without the program: ready, web reaches api, the world is denied by api's ingress policy.
    let body = readyz(&node_ns, 200)?;
    ensure!(reaches(&env.web_ns)?, "web → api:8080 is allowed");
    ensure!(!reaches(&ext_ns)?, "ext → api:8080 is denied");

    // The CNI's program on the uplink: ext's packets now reach api past the veth (to_pod never
    // sees them), so the policy's deny is gone.
    let api_veth = env.topo.pod("api-0")?.host_ifname().to_string();
    let _bypass = RedirectPeer::attach(
        &node_ns,
        UPLINK_IFNAME,
        "10.10.2.10".parse()?,
        &api_veth,
        &env.work.0,
    )?;
    ensure!(
        reaches(&ext_ns)?,
        "the redirect really bypasses the veth (ext → api answered)"
    );

    // The agent finds it when it starts, and is not ready, saying why.
    env.agent.restart(&env.topo, &[])?;
    let reason = readyz(&node_ns, 503)?;
    for want in [
        "bpf_redirect_peer",
        UPLINK_IFNAME,
        "cni_redirect",
        "tc/ingress",
    ] {
        ensure!(reason.contains(want), "/readyz names {want}:\n{reason}");
    }
    let status = env.agent.status()?;
    ensure!(
        status
            .not_ready
            .iter()
            .any(|r| r.contains("bpf_redirect_peer") && r.contains(UPLINK_IFNAME)),
        "status: {:?}",
        status.not_ready
    );
    let (_, scrape) = http_get(&node_ns, METRICS, "/metrics")?;
    let series = format!(
        "enforcer_cni_bypass{{device=\"{UPLINK_IFNAME}\",hook=\"tc/ingress\",program=\"cni_redirect\"}} 1"
    );
    ensure!(scrape.contains(&series), "no {series}:\n{scrape}");
    let log = std::fs::read_to_string(&env.agent.log)?;
    ensure!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("cni_redirect")
            && l.contains(UPLINK_IFNAME)),
        "the log names the device and program:\n{}",
        env.agent.log_tail()
    );
    eprintln!("ready without the program: {}", body.trim());
    eprintln!("not ready with it: {}", reason.trim());
    Ok(())
}
