//! `enforcer agent --kubernetes` against the API server stand-in (`tests/src/apiserver.rs`, the
//! list/watch protocol over HTTP): pods added, relabelled, deleted and their addresses reused,
//! and `ClusterFlowPolicies` applied, reach the datapath within 1 s, probed with real traffic
//! between network-namespace pods; the policies' status reports this node's verdict; the agent
//! converges after 410 Gone and dropped connections.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use enforcer_tests::apiserver::{
    self, cluster_flow_policy, pod, ApiServer, CLUSTER_FLOW_POLICIES, FLOW_POLICIES, NAMESPACES,
    NETWORK_POLICIES, NODES, PODS,
};
use enforcer_tests::{
    cluster::{AgentProcess, WorkDir},
    netns::run_in_netns,
    probe_tcp, spawn_tcp_echo, ProbeOptions, Topology, ANY,
};
use serde_json::{json, Value};

const WEB: &str = "10.10.1.10";
const API: &str = "10.10.2.10";
const BATCH: &str = "10.10.4.10";
/// The agent's metrics address in the node namespace (tests/src/cluster.rs).
const METRICS: &str = "127.0.0.1:9963";
/// How fast an API change must reach the datapath.
const WITHIN: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

struct Env {
    topo: Topology,
    api: ApiServer,
    agent: AgentProcess,
    _work: WorkDir,
    _servers: Vec<enforcer_tests::TcpEchoServer>,
}

fn api_ingress() -> Value {
    cluster_flow_policy(
        "api-ingress",
        &json!({"service": "api", "ingress": [{"from": [{"service": "web"}],
                "ports": [{"protocol": "TCP", "port": 8080}]}]}),
    )
}

/// Pods web-0, api-0 and batch-0 on node n1, their Pod objects in the stand-in, api-ingress
/// applied, and the agent started with `--kubernetes` (ready = watches synced).
fn env(tag: &str) -> Result<Env> {
    env_with(tag, true)
}

fn env_with(tag: &str, api_ingress_policy: bool) -> Result<Env> {
    let topo = Topology::builder()
        .pod("web-0", "n1", &[ip(WEB)])
        .pod("api-0", "n1", &[ip(API)])
        .pod("batch-0", "n1", &[ip(BATCH)])
        .build()?;
    let work = WorkDir::new(tag)?;
    let api = apiserver::start_in_netns(topo.node("n1")?.netns())?;
    api.put(
        PODS,
        pod(
            "default",
            "web-0",
            &[("app.kubernetes.io/name", "web")],
            &[WEB],
        ),
    );
    api.put(PODS, pod("default", "api-0", &[("app", "api")], &[API]));
    api.put(
        PODS,
        pod("team-b", "batch-0", &[("app", "batch")], &[BATCH]),
    );
    if api_ingress_policy {
        api.put(CLUSTER_FLOW_POLICIES, api_ingress());
    }
    for ns in ["default", "team-b"] {
        api.put(
            NAMESPACES,
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}),
        );
    }
    start_agent(topo, api, work, &[])
}

/// The agent on n1 watching the stand-in (`--kubernetes` plus `more` flags), and api-0's echo
/// server on 8080.
fn start_agent(topo: Topology, api: ApiServer, work: WorkDir, more: &[&str]) -> Result<Env> {
    let kubeconfig = work.0.join("kubeconfig");
    std::fs::write(&kubeconfig, apiserver::kubeconfig(api.addr))?;
    let kubeconfig = kubeconfig.display().to_string();
    let mut extra = vec![
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        "n1",
    ];
    extra.extend_from_slice(more);
    let agent = AgentProcess::start(&topo, "n1", &work.0, &extra)?;
    let servers = vec![spawn_tcp_echo(topo.pod_netns("api-0")?, ANY, 8080)?];
    Ok(Env {
        topo,
        api,
        agent,
        _work: work,
        _servers: servers,
    })
}

impl Env {
    fn reaches_api(&self, from: &str) -> Result<bool> {
        let opts = ProbeOptions::with_timeout(Duration::from_millis(150));
        let dst: SocketAddr = format!("{API}:8080").parse()?;
        Ok(probe_tcp(self.topo.pod_netns(from)?, dst, &opts)?.is_answered())
    }

    /// Probe until `from` → api:8080 is `allowed` (or not); fail if no probe started within
    /// `within` of `since` sees it. Returns when the first probe that saw it started.
    fn expect(
        &self,
        from: &str,
        allowed: bool,
        since: Instant,
        within: Duration,
    ) -> Result<Duration> {
        loop {
            let started = since.elapsed();
            if self.reaches_api(from)? == allowed {
                return Ok(started);
            }
            if since.elapsed() > within {
                bail!(
                    "{from} → api-0:8080 still {} after {:?}\n{}",
                    if allowed { "denied" } else { "allowed" },
                    since.elapsed(),
                    self.agent.log_tail()
                );
            }
        }
    }

    fn metrics(&self) -> Result<String> {
        self.http_get("/metrics")
    }

    /// The agent's answer to `GET path` (status line, headers and body).
    fn http_get(&self, path: &str) -> Result<String> {
        let path = path.to_owned();
        run_in_netns(self.topo.node("n1")?.netns(), move || {
            let mut s = std::net::TcpStream::connect(METRICS)?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
    }

    fn metric(&self, series: &str) -> Result<u64> {
        let text = self.metrics()?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0))
    }
}

#[test]
fn pods_follow_the_api_within_one_second() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let env = env("kube-pods")?;
    // Listed at startup: web allowed, batch denied (api isolated by the ClusterFlowPolicy).
    env.expect("web-0", true, Instant::now(), WITHIN)?;
    env.expect("batch-0", false, Instant::now(), WITHIN)?;

    // Relabel: batch-0 becomes web (MODIFIED) → allowed.
    let t = Instant::now();
    env.api
        .put(PODS, pod("team-b", "batch-0", &[("app", "web")], &[BATCH]));
    let took = env.expect("batch-0", true, t, WITHIN)?;
    println!("relabel to web → allowed in {took:?}");

    // Relabel web-0 away from web → denied.
    let t = Instant::now();
    env.api
        .put(PODS, pod("default", "web-0", &[("app", "other")], &[WEB]));
    let took = env.expect("web-0", false, t, WITHIN)?;
    println!("relabel away from web → denied in {took:?}");

    // Delete batch-0 (a web pod): its address is nobody's → denied.
    let t = Instant::now();
    env.api.delete(PODS, "team-b/batch-0");
    let took = env.expect("batch-0", false, t, WITHIN)?;
    println!("delete → denied in {took:?}");

    // Address reuse: a new web pod takes 10.10.4.10 → allowed; then a batch pod created later
    // gets the same address while the web pod's object still lingers (deleted afterwards): the
    // newest pod holds the address, so it does not inherit web's allowance.
    let t = Instant::now();
    env.api
        .put(PODS, pod("team-b", "web-2", &[("app", "web")], &[BATCH]));
    env.expect("batch-0", true, t, WITHIN)?;
    let t = Instant::now();
    let mut newer = pod("team-b", "batch-9", &[("app", "batch")], &[BATCH]);
    newer["metadata"]["creationTimestamp"] = json!("2026-11-29T11:00:00Z");
    env.api.put(PODS, newer);
    let took = env.expect("batch-0", false, t, WITHIN)?;
    println!("address reused by a batch pod → denied in {took:?}");
    env.api.delete(PODS, "team-b/web-2");
    env.expect("batch-0", false, Instant::now(), WITHIN)?;

    assert!(
        env.metric("enforcer_kube_watch_events_total{event=\"delete\",resource=\"pods\"}")? >= 2
    );
    assert_eq!(env.metric("enforcer_kube_synced")?, 1);
    Ok(())
}

#[test]
fn cluster_flow_policy_is_enforced_and_reports_status() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let env = env("kube-cfp")?;
    env.expect("batch-0", false, Instant::now(), WITHIN)?;
    let accepted = |patches: &[(String, Value)], name: &str| {
        patches
            .iter()
            .rev()
            .find(|(p, _)| p.ends_with(&format!("/{name}/status")))
            .map(|(_, b)| {
                let node = &b["status"]["nodes"][0];
                assert_eq!(node["node"], "n1");
                (
                    node["accepted"].as_bool(),
                    node["reason"].as_str().map(str::to_owned),
                )
            })
    };
    let deadline = Instant::now() + WITHIN;
    while accepted(&env.api.status_patches(), "api-ingress").is_none() && Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    assert_eq!(
        accepted(&env.api.status_patches(), "api-ingress"),
        Some((Some(true), None))
    );

    // A second policy lets batch in: enforced within 1 s.
    let t = Instant::now();
    env.api.put(
        CLUSTER_FLOW_POLICIES,
        cluster_flow_policy(
            "batch-to-api",
            &json!({"service": "api", "ingress": [{"from": [{"service": "batch"}]}]}),
        ),
    );
    let took = env.expect("batch-0", true, t, WITHIN)?;
    println!("ClusterFlowPolicy applied → enforced in {took:?}");

    // An invalid policy is rejected with the engine's message; the policy in force stays.
    env.api.put(
        CLUSTER_FLOW_POLICIES,
        cluster_flow_policy(
            "bad",
            &json!({"service": "api", "ingress": [{"from": [{"cidr": "10.0.0.1/24"}]}]}),
        ),
    );
    let deadline = Instant::now() + WITHIN;
    let rejected = loop {
        if let Some(v) = accepted(&env.api.status_patches(), "bad") {
            break v;
        }
        if Instant::now() > deadline {
            bail!("no status for the invalid policy\n{}", env.agent.log_tail());
        }
        std::thread::yield_now();
    };
    assert_eq!(rejected.0, Some(false));
    assert!(rejected.1.unwrap_or_default().contains("host bits set"));
    env.expect("batch-0", true, Instant::now(), WITHIN)?;
    env.expect("web-0", true, Instant::now(), WITHIN)?;

    // Deleted → no longer enforced.
    let t = Instant::now();
    env.api.delete(CLUSTER_FLOW_POLICIES, "batch-to-api");
    env.expect("batch-0", false, t, WITHIN)?;
    Ok(())
}

#[test]
fn converges_after_gone_and_dropped_connections() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let env = env("kube-gone")?;
    env.expect("batch-0", false, Instant::now(), WITHIN)?;
    // A change, then the log is compacted and every watch dropped: the agent resumes from a
    // resourceVersion the server no longer has → 410 Gone → relist, and sees the change.
    env.api.drop_connections();
    env.api
        .put(PODS, pod("team-b", "batch-0", &[("app", "web")], &[BATCH]));
    env.api.compact();
    env.api.drop_connections();
    let took = env.expect("batch-0", true, Instant::now(), Duration::from_secs(10))?;
    println!("converged after 410 Gone in {took:?}");
    assert!(env.metric("enforcer_kube_watch_events_total{event=\"gone\",resource=\"pods\"}")? >= 1);
    assert!(
        env.metric("enforcer_kube_watch_events_total{event=\"relist\",resource=\"pods\"}")? >= 2
    );
    // The relist replaced the store: a pod deleted while disconnected disappears too.
    env.api.drop_connections();
    env.api.delete(PODS, "team-b/batch-0");
    env.api.compact();
    env.api.drop_connections();
    env.expect("batch-0", false, Instant::now(), Duration::from_secs(10))?;
    let watches = env
        .api
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    assert!(
        watches >= 3,
        "watches were not resumed: {:?}",
        env.api.requests()
    );
    Ok(())
}

fn network_policy(name: &str, from: &Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": 8080}]}]},
    })
}

#[test]
fn network_policies_and_namespaces_from_the_api() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let env = env_with("kube-netpol", false)?;
    // Nothing isolates api yet.
    env.expect("batch-0", true, Instant::now(), WITHIN)?;
    let t = Instant::now();
    let web = json!([{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}}]);
    env.api
        .put(NETWORK_POLICIES, network_policy("api-from-web", &web));
    let took = env.expect("batch-0", false, t, WITHIN)?;
    println!("NetworkPolicy applied → batch (team-b) denied in {took:?}");
    env.expect("web-0", true, Instant::now(), WITHIN)?;
    // A namespaceSelector peer admits every pod of team-b.
    let t = Instant::now();
    let team_b =
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}}]);
    env.api
        .put(NETWORK_POLICIES, network_policy("api-from-team-b", &team_b));
    let took = env.expect("batch-0", true, t, WITHIN)?;
    println!("namespaceSelector peer → allowed in {took:?}");
    // Relabel the namespace: it no longer matches → denied again.
    let t = Instant::now();
    env.api.put(NAMESPACES, json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-b", "labels": {"kubernetes.io/metadata.name": "team-b", "x": "y"}}}));
    env.api.put(
        NETWORK_POLICIES,
        network_policy(
            "api-from-team-b",
            &json!([{"namespaceSelector": {"matchLabels": {"x": "z"}}}]),
        ),
    );
    env.expect("batch-0", false, t, WITHIN)?;
    env.api.delete(NETWORK_POLICIES, "default/api-from-web");
    env.api.delete(NETWORK_POLICIES, "default/api-from-team-b");
    env.expect("batch-0", true, Instant::now(), WITHIN)?;
    Ok(())
}

/// A source inside node n1's pod range that is no pod of it, and one outside the range.
const ROGUE: &str = "10.10.9.7";
const OUTSIDE: &str = "198.51.100.7";

/// web-0 and api-0 on n1, whose Node object carries the taint, another taint and the pod range
/// 10.10.0.0/16; the stand-in answers 503 to the `FlowPolicy` list; the agent started with
/// `--pod-cidrs-from-node`.
fn tainted_env() -> Result<Env> {
    let topo = Topology::builder()
        .pod("web-0", "n1", &[ip(WEB)])
        .pod("api-0", "n1", &[ip(API)])
        .external("rogue", &[ip(ROGUE)])
        .external("outside", &[ip(OUTSIDE)])
        .build()?;
    let work = WorkDir::new("kube-taint")?;
    let api = apiserver::start_in_netns(topo.node("n1")?.netns())?;
    api.put(
        NODES,
        apiserver::node(
            "n1",
            &["10.10.0.0/16"],
            &[
                ("example.com/dedicated", "NoSchedule"),
                ("enforcer.dev/agent-not-ready", "NoSchedule"),
            ],
        ),
    );
    api.put(PODS, pod("default", "web-0", &[("app", "web")], &[WEB]));
    api.put(PODS, pod("default", "api-0", &[("app", "api")], &[API]));
    // Not ready: one watch cannot list yet.
    api.fail(FLOW_POLICIES, true);
    start_agent(topo, api, work, &["--pod-cidrs-from-node"])
}

/// The node taint `enforcer.dev/agent-not-ready` is removed only once the agent is ready, by a
/// JSON merge patch that keeps the node's other taints and names the resourceVersion it read;
/// `--pod-cidrs-from-node` takes the node's `spec.podCIDRs` (see [`node_pod_range_in_force`]).
#[test]
fn node_taint_goes_when_ready_and_pod_ranges_come_from_the_node() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let env = tainted_env()?;
    std::thread::sleep(Duration::from_secs(3));
    let readyz = env.http_get("/readyz")?;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(
        env.api.node_patches().is_empty(),
        "the node was patched before the agent was ready: {:?}",
        env.api.node_patches()
    );

    env.api.fail(FLOW_POLICIES, false);
    let since = Instant::now();
    while env.api.node_patches().is_empty() {
        if since.elapsed() > Duration::from_mins(1) {
            bail!(
                "no node patch 60 s after the watches could sync\n{}",
                env.agent.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let readyz = env.http_get("/readyz")?;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    let patches = env.api.node_patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let patch = &patches[0];
    assert_eq!(
        (
            patch.node.as_str(),
            patch.content_type.as_str(),
            patch.status
        ),
        ("n1", "application/merge-patch+json", 200)
    );
    let other = json!([{"key": "example.com/dedicated", "effect": "NoSchedule"}]);
    assert_eq!(patch.body["spec"]["taints"], other);
    assert!(
        patch.body["metadata"]["resourceVersion"].is_string(),
        "{patch:?}"
    );
    let node = env.api.get(NODES, "n1").expect("node n1");
    assert_eq!(node["spec"]["taints"], other);
    node_pod_range_in_force(&env)
}

/// A source inside the node's range that is no pod of it is dropped as `unknown_endpoint`,
/// while a pod inside the range and a source outside it reach the same server.
fn node_pod_range_in_force(env: &Env) -> Result<()> {
    let opts = ProbeOptions::with_timeout(Duration::from_millis(300));
    let dst: SocketAddr = format!("{API}:8080").parse()?;
    let reaches = |netns: &str| -> Result<bool> { Ok(probe_tcp(netns, dst, &opts)?.is_answered()) };
    assert!(
        reaches(env.topo.pod_netns("web-0")?)?,
        "web-0 (a pod inside the range) → api-0"
    );
    assert!(
        reaches(env.topo.external("outside")?.netns())?,
        "{OUTSIDE} (outside the range) → api-0"
    );
    let unknown = |env: &Env| -> Result<u64> {
        Ok(env
            .metrics()?
            .lines()
            .filter(|l| {
                l.starts_with("enforcer_drops_total") && l.contains("reason=\"unknown_endpoint\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    };
    let before = unknown(env)?;
    assert!(
        !reaches(env.topo.external("rogue")?.netns())?,
        "{ROGUE} (inside the node's range, no pod) → api-0 must be dropped"
    );
    let after = unknown(env)?;
    assert!(
        after > before,
        "no unknown_endpoint drop counted ({before} → {after})"
    );
    Ok(())
}
