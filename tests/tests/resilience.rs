//! Resilience of the datapath around the agent: the legacy tc attach (kernels without tcx),
//! forced here with `--tc-attach netlink` so it runs on this kernel too; the VM leg
//! (`cargo xtask test --kernel 6.1`) runs the scenarios where the probe picks it by itself.

use std::time::Duration;

use anyhow::{ensure, Result};
use enforcer::datapath::{tcx_supported, TcAttachMode};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    fixtures::{API_INGRESS_TCP_8080, WEB_API_WORKLOADS},
    netns::ns_exec,
    one_node::{web_api_topology, WebApi},
    probe_tcp, spawn_tcp_echo, ProbeOptions, StreamOptions, TcpEchoStream, ANY,
};

const NETLINK: &[&str] = &["--tc-attach", "netlink"];

fn reaches(web_ns: &str, port: u16) -> Result<bool> {
    let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
    Ok(probe_tcp(web_ns, format!("10.10.2.10:{port}").parse()?, &opts)?.is_answered())
}

/// `tc filter show` lines of one hook of a host-side interface that are our programs.
fn our_filters(node_ns: &str, ifname: &str, hook: &str) -> Result<Vec<String>> {
    let out = ns_exec(node_ns, "tc", &["filter", "show", "dev", ifname, hook])?;
    Ok(out
        .lines()
        .filter(|l| l.contains("from_pod") || l.contains("to_pod"))
        .map(str::to_owned)
        .collect())
}

/// Exactly one filter of ours per hook, first in order (pref 1), with our handle.
fn check_filters(node_ns: &str, ifname: &str) -> Result<()> {
    for (hook, program) in [("ingress", "from_pod"), ("egress", "to_pod")] {
        let lines = our_filters(node_ns, ifname, hook)?;
        ensure!(
            lines.len() == 1,
            "{ifname} {hook}: expected one filter of ours, got {lines:?}"
        );
        let l = &lines[0];
        ensure!(
            l.contains(program) && l.contains("pref 1 ") && l.contains("handle 0xe4f"),
            "{ifname} {hook}: {l}"
        );
    }
    Ok(())
}

#[test]
fn legacy_tc_attach_enforces_survives_sigkill_and_uninstalls() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = web_api_topology()?;
    let work = WorkDir::new("legacy-tc")?;
    let api_ns = topo.pod_netns("api-0")?.to_string();
    let web_ns = topo.pod_netns("web-0")?.to_string();
    let _servers = [
        spawn_tcp_echo(&api_ns, ANY, 8080)?,
        spawn_tcp_echo(&api_ns, ANY, 9090)?,
    ];
    let node_ns = topo.node("n1")?.netns().to_string();
    let api_if = topo.pod("api-0")?.host_ifname().to_string();
    // Both servers answer before any policy: a later "denied" is the datapath, not a dead server.
    let mut agent = AgentProcess::start(&topo, "n1", &work.0, NETLINK)?;
    agent.apply("workloads.yaml", WEB_API_WORKLOADS)?;
    assert!(reaches(&web_ns, 8080)? && reaches(&web_ns, 9090)?);
    assert_eq!(agent.status()?.tc_attach, TcAttachMode::Netlink);
    check_filters(&node_ns, &api_if)?;

    agent.apply("policy.yaml", API_INGRESS_TCP_8080)?;
    assert!(reaches(&web_ns, 8080)?, "allowed port");
    assert!(!reaches(&web_ns, 9090)?, "denied port");

    // SIGKILL: the filters stay attached (fail-static) and keep enforcing with no agent.
    let stream = TcpEchoStream::start(
        &web_ns,
        "10.10.2.10:8080".parse()?,
        &StreamOptions {
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
            source: None,
        },
    )?;
    assert!(stream.wait_for_round_trips(10, Duration::from_secs(5)));
    agent.kill()?;
    assert!(!reaches(&web_ns, 9090)?, "still denied with no agent");
    check_filters(&node_ns, &api_if)?;
    // The next agent replaces its filters in place (same priority and handle): no second copy.
    let before = stream.round_trips();
    agent.restart(&topo, &[])?; // keeps --tc-attach netlink: restart reuses the arguments
    check_filters(&node_ns, &api_if)?;
    assert!(reaches(&web_ns, 8080)? && !reaches(&web_ns, 9090)?);
    assert!(
        stream.is_alive() && stream.round_trips() > before,
        "the allowed connection survived the restart: {:?}",
        stream.error()
    );
    drop(stream);

    // Uninstall removes our filters: everything passes again.
    agent.kill()?;
    let bin = enforcer_bin()?;
    let bin = bin.to_str().unwrap_or("enforcer");
    let bpffs = agent.bpffs.display().to_string();
    ns_exec(&node_ns, bin, &["agent", "--uninstall", "--bpffs", &bpffs])?;
    for hook in ["ingress", "egress"] {
        let left = our_filters(&node_ns, &api_if, hook)?;
        assert!(left.is_empty(), "{hook}: {left:?}");
    }
    assert!(reaches(&web_ns, 9090)?, "uninstalled: nothing denies");
    Ok(())
}

/// Without `--tc-attach`, the agent picks the mode by the feature probe: tcx where the kernel has
/// it, legacy tc otherwise (the kernel matrix runs this on 6.1, where it must be legacy tc).
#[test]
fn the_attach_mode_follows_the_kernel() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let bed = WebApi::start("attach-auto", &["--tc-attach", "auto"])?;
    let (topo, agent) = (&bed.topo, &bed.agent);
    let mode = agent.status()?.tc_attach;
    let expected = if tcx_supported() {
        TcAttachMode::Tcx
    } else {
        TcAttachMode::Netlink
    };
    println!("tc_attach={mode} tcx_supported={}", tcx_supported());
    assert_eq!(mode, expected);
    let node_ns = topo.node("n1")?.netns().to_string();
    let api_if = topo.pod("api-0")?.host_ifname().to_string();
    let legacy = our_filters(&node_ns, &api_if, "egress")?;
    assert_eq!(
        legacy.len(),
        usize::from(mode == TcAttachMode::Netlink),
        "legacy tc filters present exactly in netlink mode: {legacy:?}"
    );
    Ok(())
}
