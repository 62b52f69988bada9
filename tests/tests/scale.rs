//! A policy of 10 000 rules applied to a real agent; probes' verdicts are still right. The apply
//! time is printed (the benchmark `cargo xtask bench controlplane` measures it properly).

use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use enforcer_tests::{
    cluster::{AgentProcess, WorkDir},
    probe_tcp, spawn_tcp_echo, ProbeOptions, Topology, ANY,
};

/// 1 000 services with one workload each, 1 000 policies of 10 ingress rules (10 000 rules), and
/// the rule under test: api admits web on TCP 8080.
fn generate() -> String {
    let mut y = String::new();
    let doc = |y: &mut String, body: &str| {
        y.push_str("---\napiVersion: enforcer/v1\n");
        y.push_str(body);
    };
    doc(
        &mut y,
        "kind: Workload\nmetadata: {name: web-0}\nspec: {service: web, addresses: [10.10.1.10]}\n",
    );
    doc(
        &mut y,
        "kind: Workload\nmetadata: {name: api-0}\nspec: {service: api, addresses: [10.10.2.10]}\n",
    );
    for i in 0..1000u32 {
        doc(&mut y, &format!("kind: Workload\nmetadata: {{name: svc-{i}-0}}\nspec: {{service: svc-{i}, addresses: [10.20.{}.{}]}}\n", i / 200, i % 200 + 1));
    }
    for i in 0..1000u32 {
        let mut body = format!("kind: FlowPolicy\nmetadata: {{name: svc-{i}-ingress}}\nspec:\n  service: svc-{i}\n  ingress:\n");
        for j in 0..10u32 {
            let peer = (i + j + 1) % 1000;
            let _ = writeln!(
                body,
                "    - from: [{{service: svc-{peer}}}]\n      ports: [{{protocol: TCP, port: {}}}]",
                1000 + j
            );
        }
        doc(&mut y, &body);
    }
    doc(&mut y, "kind: FlowPolicy\nmetadata: {name: api-ingress}\nspec:\n  service: api\n  ingress:\n    - from: [{service: web}]\n      ports: [{protocol: TCP, port: 8080}]\n");
    y
}

#[test]
fn ten_thousand_rules_applied_and_enforced() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
    let topo = Topology::builder()
        .pod("web-0", "n1", &[ip("10.10.1.10")])
        .pod("api-0", "n1", &[ip("10.10.2.10")])
        .build()?;
    let work = WorkDir::new("scale")?;
    let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
    let api_ns = topo.pod_netns("api-0")?.to_string();
    let _s = [
        spawn_tcp_echo(&api_ns, ANY, 8080)?,
        spawn_tcp_echo(&api_ns, ANY, 9090)?,
    ];
    let yaml = generate();
    let started = Instant::now();
    let result = agent.apply("generated.yaml", &yaml)?;
    eprintln!(
        "applied {} documents (10 001 rules) in {:.3} s, generation {}",
        result.applied.len(),
        started.elapsed().as_secs_f64(),
        result.generation
    );
    let web = topo.pod_netns("web-0")?;
    let opts = ProbeOptions::with_timeout(Duration::from_millis(800));
    assert!(
        probe_tcp(web, "10.10.2.10:8080".parse()?, &opts)?.is_answered(),
        "allowed by the rule under test"
    );
    assert!(
        !probe_tcp(web, "10.10.2.10:9090".parse()?, &opts)?.is_answered(),
        "default deny still applies"
    );
    let status = agent.status()?;
    let policy = status
        .maps
        .iter()
        .find(|m| m.map == "POLICY")
        .expect("POLICY map");
    eprintln!(
        "POLICY map: {} of {} entries",
        policy.entries, policy.capacity
    );
    assert!(policy.entries >= 10_000, "every rule reached the datapath");
    Ok(())
}
