//! `cargo xtask demo`: a five-minute tour on this machine. Three pods of two services in network
//! namespaces, the real agent in the node namespace with the example policy, an allowed flow that
//! works, a denied one that is dropped, the counters, then everything is cleaned up.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    probe_tcp, spawn_tcp_echo, ProbeOptions, Topology, ANY,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("demo address")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn cli(topo: &Topology, agent: &AgentProcess, args: &[&str]) -> Result<()> {
    let bin = enforcer_bin()?;
    let mut cmd = topo.node_command("n1", bin.to_str().context("binary path")?)?;
    cmd.arg("--socket").arg(&agent.socket).args(args);
    println!("$ enforcer {}", args.join(" "));
    let out = cmd.output()?;
    print!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "enforcer {} failed", args.join(" "));
    Ok(())
}

fn probe(topo: &Topology, from: &str, to: &str, port: u16) -> Result<bool> {
    let ns = topo.pod_netns(from)?;
    let dst = topo.pod_addresses(to)?[0];
    let answered = probe_tcp(
        ns,
        std::net::SocketAddr::new(dst, port),
        &ProbeOptions::with_timeout(Duration::from_secs(1)),
    )?
    .is_answered();
    println!(
        "  {from} -> {to} ({dst}) TCP/{port}: {}",
        if answered {
            "\x1b[32mconnected\x1b[0m"
        } else {
            "\x1b[31mdropped (no answer within 1 s)\x1b[0m"
        }
    );
    Ok(answered)
}

fn run() -> Result<()> {
    anyhow::ensure!(
        enforcer_tests::is_root(),
        "the demo needs root (network namespaces and eBPF)"
    );
    step("topology: node n1 with pods web-0, web-1 (service web) and api-0 (service api)");
    let topo = Topology::builder()
        .pod("web-0", "n1", &[ip("10.10.1.10"), ip("fd00:10::110")])
        .pod("web-1", "n1", &[ip("10.10.1.11"), ip("fd00:10::111")])
        .pod("api-0", "n1", &[ip("10.10.2.10"), ip("fd00:10::210")])
        .build()?;
    let api_ns = topo.pod_netns("api-0")?.to_string();
    let web_ns = topo.pod_netns("web-0")?.to_string();
    let _servers = [
        spawn_tcp_echo(&api_ns, ANY, 8080)?,
        spawn_tcp_echo(&api_ns, ANY, 9090)?,
        spawn_tcp_echo(&web_ns, ANY, 8080)?,
    ];
    let work = WorkDir::new("demo")?;
    step("start the agent inside the node namespace");
    let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
    cli(&topo, &agent, &["status"])?;

    step("before any policy every flow passes");
    // The controls of the denied flow below: its server answers without a policy.
    for from in ["web-0", "web-1"] {
        anyhow::ensure!(
            probe(&topo, from, "api-0", 9090)?,
            "{from} -> api-0:9090 is not answered before any policy"
        );
    }

    step("apply the example policy (examples/)");
    for f in ["workloads.yaml", "api-ingress.yaml"] {
        cli(
            &topo,
            &agent,
            &[
                "policy",
                "apply",
                "-f",
                examples().join(f).to_str().context("path")?,
            ],
        )?;
    }
    cli(&topo, &agent, &["policy", "get"])?;

    step("an allowed flow works, a denied one is dropped in the kernel");
    let allowed = probe(&topo, "web-0", "api-0", 8080)?;
    let denied = !probe(&topo, "web-1", "api-0", 9090)?;
    let reverse = probe(&topo, "api-0", "web-0", 8080)?;
    cli(
        &topo,
        &agent,
        &[
            "policy",
            "explain",
            "--from",
            "web-1",
            "--to",
            "api-0",
            "--protocol",
            "TCP",
            "--port",
            "9090",
        ],
    )?;

    step("counters and flows");
    cli(&topo, &agent, &["stats"])?;
    cli(
        &topo,
        &agent,
        &["flows", "--verdict", "denied", "--last", "3"],
    )?;

    step("clean up");
    let prefix = topo.prefix().to_string();
    drop(agent);
    drop(topo);
    let left: Vec<String> = enforcer_tests::netns::list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    println!(
        "  namespaces left: {}",
        if left.is_empty() {
            "none".into()
        } else {
            left.join(", ")
        }
    );
    anyhow::ensure!(
        allowed && denied && reverse,
        "the demo did not behave as expected"
    );
    anyhow::ensure!(left.is_empty(), "namespaces left behind");
    println!("\ndemo finished: allowed flow passed, denied flow dropped, nothing left behind");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
