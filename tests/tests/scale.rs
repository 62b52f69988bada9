//! A policy of 10 000 rules applied to a real agent; probes' verdicts are still right. The apply
//! time is printed (the benchmark `cargo xtask bench controlplane` measures it properly).

use std::time::{Duration, Instant};

use anyhow::Result;
use enforcer_tests::{one_node::WebApi, probe_tcp, spawn_tcp_echo, ProbeOptions, ANY};

#[test]
fn ten_thousand_rules_applied_and_enforced() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let bed = WebApi::start("scale", &[])?;
    let (topo, agent, api_ns) = (&bed.topo, &bed.agent, bed.api_ns.clone());
    let _s = [
        spawn_tcp_echo(&api_ns, ANY, 8080)?,
        spawn_tcp_echo(&api_ns, ANY, 9090)?,
    ];
    let yaml = enforcer_tests::fixtures::ten_thousand_rules();
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
