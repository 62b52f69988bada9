//! End to end: real pods (network namespaces), the real agent in the node namespace, real TCP
//! connections allowed and dropped by the eBPF programs.

use std::time::Duration;

use enforcer_tests::{
    fixtures::{API_INGRESS_TCP_8080, WEB_API_WORKLOADS},
    one_node::WebApi,
    probe_tcp, spawn_tcp_echo, ProbeOptions, ANY,
};

#[test]
fn tcp_allowed_and_dropped_between_pods() -> anyhow::Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let bed = WebApi::start("enforce", &[])?;
    let (agent, web_ns, api_ns) = (&bed.agent, bed.web_ns.clone(), bed.api_ns.clone());
    let _s1 = spawn_tcp_echo(&api_ns, ANY, 8080)?;
    let _s2 = spawn_tcp_echo(&api_ns, ANY, 9090)?;
    let opts = ProbeOptions::with_timeout(Duration::from_secs(1));
    // Before any policy: both pass.
    assert!(probe_tcp(&web_ns, "10.10.2.10:9090".parse()?, &opts)?.is_answered());

    let result = agent.apply(
        "policy.yaml",
        &format!("{WEB_API_WORKLOADS}---{API_INGRESS_TCP_8080}"),
    )?;
    assert!(result.generation > 0);
    let denied_before = agent.packets("denied")?;
    assert!(
        probe_tcp(&web_ns, "10.10.2.10:8080".parse()?, &opts)?.is_answered(),
        "allowed flow must pass"
    );
    let denied = probe_tcp(&web_ns, "10.10.2.10:9090".parse()?, &opts)?;
    assert!(
        !denied.is_answered(),
        "denied flow must be dropped, got {denied:?}"
    );
    assert!(
        agent.packets("denied")? > denied_before,
        "the drop is counted"
    );
    // api → web is not restricted (web is not isolated).
    let _s3 = spawn_tcp_echo(&web_ns, ANY, 7000)?;
    assert!(probe_tcp(&api_ns, "10.10.1.10:7000".parse()?, &opts)?.is_answered());
    Ok(())
}
