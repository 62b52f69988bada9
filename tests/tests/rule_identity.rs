//! Typed rule identity end to end (issue 11): the compiler names each rule once (`RuleRef`:
//! policy kind, namespace and name, section and index, or the default deny of an isolated
//! identity), and a Kubernetes `NetworkPolicy`'s rules reach flow events, `stats` and the
//! Prometheus metrics under that identity. Real agent, real pods (network namespaces), real TCP;
//! the denied probe is proven against a live server by the allowed one in the same test. The
//! first-seen and last-matched times of each rule (what `policy lint` ages rules by) survive an
//! agent restart.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use enforcer::{
    api::{FlowEvent, Request},
    policy::{document::Kind, PolicyId, RuleRef, Section},
};
use enforcer_common::{Direction, Reason, Verdict};
use enforcer_tests::{
    cluster::{AgentProcess, WorkDir},
    http_get, probe_tcp, spawn_tcp_echo, ProbeOptions, Topology, ANY,
};

const OBJECTS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: x
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, image: agnhost}]}
status: {phase: Running, podIP: 10.10.31.1, podIPs: [{ip: 10.10.31.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b, role: client}}
spec: {containers: [{name: c, image: agnhost}]}
status: {phase: Running, podIP: 10.10.31.2, podIPs: [{ip: 10.10.31.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
spec: {containers: [{name: c, image: agnhost}]}
status: {phase: Running, podIP: 10.10.31.3, podIPs: [{ip: 10.10.31.3}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-clients, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels: {role: client}
      ports:
        - {port: 80, protocol: TCP}
";

/// Where `AgentProcess` makes the agent serve metrics, inside the node namespace.
const METRICS: &str = "127.0.0.1:9963";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Events of the agent's history until `found` holds for one (or 5 s pass).
fn wait_event(
    agent: &AgentProcess,
    found: impl Fn(&FlowEvent) -> bool,
) -> Result<Option<FlowEvent>> {
    let start = Instant::now();
    loop {
        let events: Vec<FlowEvent> = agent.call(&Request::Flows {
            follow: false,
            verdict: None,
            service: None,
            limit: None,
        })?;
        if let Some(e) = events.into_iter().find(|e| found(e)) {
            return Ok(Some(e));
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn network_policy_rules_are_named_in_events_stats_and_metrics() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = Topology::builder()
        .node("n1")
        .pod("a", "n1", &[ip("10.10.31.1")])
        .pod("b", "n1", &[ip("10.10.31.2")])
        .pod("c", "n1", &[ip("10.10.31.3")])
        .build()?;
    let work = WorkDir::new(topo.prefix())?;
    let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
    let _server = spawn_tcp_echo(topo.pod_netns("a")?, ANY, 80)?;
    agent.apply("objects.yaml", OBJECTS)?;

    let dst = SocketAddr::new(ip("10.10.31.1"), 80);
    let opts = ProbeOptions::with_timeout(Duration::from_millis(800));
    ensure!(
        probe_tcp(topo.pod_netns("b")?, dst, &opts)?.is_answered(),
        "b (role=client) reaches a:80: the server is alive"
    );
    ensure!(
        !probe_tcp(topo.pod_netns("c")?, dst, &opts)?.is_answered(),
        "c (no role) does not reach a:80"
    );

    let rule = RuleRef::Rule {
        policy: PolicyId::parse(Kind::NetworkPolicy, "x/a-from-clients"),
        section: Section::Ingress,
        index: 0,
    };
    // a's ingress side (b's and c's egress are not isolated).
    let from = |src: &'static str| {
        move |e: &FlowEvent| e.src == ip(src) && e.dport == 80 && e.direction == Direction::Ingress
    };
    let allowed = wait_event(&agent, from("10.10.31.2"))?.context("no event of b -> a")?;
    ensure!(
        allowed.verdict == Verdict::Allow && allowed.rule.as_ref() == Some(&rule),
        "b -> a is allowed by {rule}: {allowed:?}"
    );
    let denied = wait_event(&agent, from("10.10.31.3"))?.context("no event of c -> a")?;
    let default_deny = match &denied.rule {
        Some(r @ RuleRef::DefaultDeny { direction, .. })
            if *direction == enforcer::policy::Direction::Ingress =>
        {
            r.clone()
        }
        other => anyhow::bail!("c -> a is denied by a default deny, not {other:?}: {denied:?}"),
    };
    ensure!(denied.verdict == Verdict::Deny && denied.reason == Reason::DefaultDeny);
    ensure!(
        denied.dst_identity.to_string().starts_with("x/"),
        "a's identity is namespaced: {denied:?}"
    );
    // The JSON of `flows -o json` names the policy, the rule and the policy's kind.
    let json = serde_json::to_value(&allowed)?;
    ensure!(
        json["policy"] == "x/a-from-clients"
            && json["rule"] == "ingress[0]"
            && json["kind"] == "NetworkPolicy",
        "{json}"
    );

    let stats = agent.stats()?;
    let packets = |r: &RuleRef| stats.rules.iter().find(|c| &c.rule == r).map(|c| c.packets);
    ensure!(
        packets(&rule).is_some_and(|n| n > 0),
        "stats count the NetworkPolicy rule: {:?}",
        stats.rules
    );
    ensure!(
        packets(&default_deny).is_some_and(|n| n > 0),
        "stats count its default deny: {:?}",
        stats.rules
    );

    check_metrics(topo.node_netns("n1")?, &default_deny)
}

/// `/metrics` counts the `NetworkPolicy` rule under its name and labels, and the default deny.
fn check_metrics(node_ns: &str, default_deny: &RuleRef) -> Result<()> {
    let (code, scrape) = http_get(node_ns, METRICS, "/metrics")?;
    ensure!(code == 200, "{scrape}");
    let has = |prefix: &str, labels: &[&str]| {
        scrape
            .lines()
            .any(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
    };
    let counted = scrape.lines().any(|l| {
        l.starts_with("enforcer_policy_rule_packets_total{")
            && l.contains(r#"policy="x/a-from-clients""#)
            && l.contains(r#"rule="ingress[0]""#)
            && l.contains(r#"verdict="allow""#)
            && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) > Some(0.0)
    });
    ensure!(counted, "the rule's packets in /metrics:\n{scrape}");
    ensure!(
        has(
            "enforcer_policy_rule_info{",
            &[
                r#"policy="x/a-from-clients""#,
                r#"rule="ingress[0]""#,
                r#"direction="ingress""#,
                r#"rate_limited="false""#,
            ]
        ),
        "the rule's labels in /metrics:\n{scrape}"
    );
    let deny_rule = format!(r#"rule="{}""#, default_deny.rule_label());
    ensure!(
        has(
            "enforcer_policy_rule_packets_total{",
            &[r#"policy="default-deny""#, &deny_rule, r#"verdict="deny""#]
        ),
        "the default deny in /metrics:\n{scrape}"
    );
    Ok(())
}

#[test]
fn rule_times_survive_an_agent_restart() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = Topology::builder()
        .node("n1")
        .pod("a", "n1", &[ip("10.10.31.1")])
        .pod("b", "n1", &[ip("10.10.31.2")])
        .pod("c", "n1", &[ip("10.10.31.3")])
        .build()?;
    let work = WorkDir::new(topo.prefix())?;
    let mut agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
    let _server = spawn_tcp_echo(topo.pod_netns("a")?, ANY, 80)?;
    agent.apply("objects.yaml", OBJECTS)?;
    let dst = SocketAddr::new(ip("10.10.31.1"), 80);
    let opts = ProbeOptions::with_timeout(Duration::from_millis(800));
    ensure!(
        probe_tcp(topo.pod_netns("b")?, dst, &opts)?.is_answered(),
        "b reaches a:80"
    );
    let rule = RuleRef::Rule {
        policy: PolicyId::parse(Kind::NetworkPolicy, "x/a-from-clients"),
        section: Section::Ingress,
        index: 0,
    };
    let times = |agent: &AgentProcess| -> Result<_> {
        let stats = agent.stats()?;
        let counter = stats
            .rules
            .iter()
            .find(|c| c.rule == rule)
            .with_context(|| format!("no counter of {rule}: {:?}", stats.rules))?;
        let policy = stats.policies_first_seen.get("x/a-from-clients").copied();
        Ok((counter.first_seen, counter.last_matched, policy))
    };
    let before = times(&agent)?;
    ensure!(
        before.0.is_some() && before.1.is_some() && before.2.is_some(),
        "first seen, last matched and the policy's first seen are reported: {before:?}"
    );
    // The clock moves on (times are in seconds), then the agent restarts without new traffic.
    std::thread::sleep(Duration::from_millis(1100));
    agent.restart(&topo, &[])?;
    let after = times(&agent)?;
    ensure!(
        after == before,
        "times kept across the restart: before {before:?}, after {after:?}"
    );
    Ok(())
}
