//! Enforced from the first packet (issue 14) and interface churn (issue 17): pods are created
//! and deleted the way a runtime does it (namespace, veth, address, route, then the chained
//! `enforcer-cni` ADD; DEL, then the namespace goes) while the agent runs with `--pod-cidrs`.
//! Each new pod fires a flow its own egress policy denies at once, before ADD and right after
//! it; not one datagram may arrive. The allowed flow of the same pod must work after ADD, every
//! time, and the pod addresses are recycled, so a new pod on an old address is judged as itself.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use enforcer_common::{Reason, Verdict};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    netns::run_in_netns,
    one_node::web_api_topology,
    probe_tcp, spawn_tcp_echo, spawn_udp_echo, ProbeOptions, Topology, ANY,
};

/// The node's pod range: web-0, api-0 and every new pod are inside it.
const POD_CIDRS: &str = "10.10.0.0/16";
/// New pods are named `batch` (like a stateful set's pod recreated under its name) and take
/// their address from this many, so addresses are recycled.
const ADDRESSES: u32 = 20;

/// web-0 and api-0 as Workloads; `batch` as a v1 Pod with no IP yet (the API server's view of a
/// pod being created); batch may only reach web on TCP 8080, which admits it with a per-source
/// rate limit (so each pod leaves a bucket behind to forget).
const POLICY: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10]}
---
apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: default
  labels: {app.kubernetes.io/name: batch}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: web-ingress}
spec:
  service: web
  ingress:
    - from: [{service: batch}]
      ports: [{protocol: TCP, port: 8080}]
      rateLimit: {packetsPerSecond: 10000, burst: 1000, per: source}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: batch-egress}
spec:
  service: batch
  egress:
    - to: [{service: web}]
      ports: [{protocol: TCP, port: 8080}]
";

fn cni_bin() -> Result<PathBuf> {
    Ok(enforcer_bin()?.with_file_name("enforcer-cni"))
}

/// Run `enforcer-cni` as a runtime does: `command` in `CNI_COMMAND`, the network configuration
/// with the previous plugin's result on stdin. Returns (success, stdout).
fn cni(
    command: &str,
    socket: &str,
    container: &str,
    host_if: &str,
    addr: IpAddr,
) -> Result<(bool, String)> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "type": "enforcer-cni",
        "socket": socket,
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": host_if},
                {"name": "eth0", "sandbox": format!("/run/netns/{container}")}
            ],
            "ips": [{"address": format!("{addr}/32"), "interface": 1}]
        }
    });
    let mut child = Command::new(cni_bin()?)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=batch",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("enforcer-cni")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Fire `n` datagrams of the denied flow (batch → api) from `ns`, without waiting for anything.
fn fire(ns: &str, dst: SocketAddr, n: usize) -> Result<()> {
    run_in_netns(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        for i in 0..n {
            // The first datagrams may wait for neighbour resolution; none may be refused.
            sock.send_to(format!("denied {i}").as_bytes(), dst)?;
        }
        Ok(())
    })
}

/// Drops counted with `reason` (both directions).
fn drops(agent: &AgentProcess, reason: Reason) -> Result<u64> {
    Ok(agent
        .stats()?
        .packets
        .iter()
        .filter(|c| c.verdict == Verdict::Deny && c.reason == reason)
        .map(|c| c.packets)
        .sum())
}

/// Entries of the churned pods' addresses (10.10.3.0/24) left in the pinned maps: conntrack
/// flows, per-source buckets, endpoints, and exact identities other than `unknown`.
fn stale_entries(agent: &AgentProcess) -> Result<Vec<String>> {
    use aya::maps::{HashMap, Map, MapData};
    use enforcer_common::{
        identity, ratelimit::BucketKey, Addr, CtKey, CtValue, EndpointKey, IdentityKey,
        IdentityValue, RateBucket, LAYOUT_VERSION,
    };
    let dir = agent.bpffs.join(format!("v{LAYOUT_VERSION}")).join("maps");
    let open = |name: &str| -> Result<Map> {
        Ok(Map::HashMap(
            MapData::from_pin(dir.join(name)).with_context(|| name.to_string())?,
        ))
    };
    let churned = |a: &Addr| {
        a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] && a[12..15] == [10, 10, 3]
    };
    let mut stale = Vec::new();
    let ct = HashMap::<_, CtKey, CtValue>::try_from(open("CONNTRACK")?)?;
    stale.extend(
        ct.keys()
            .filter_map(Result::ok)
            .filter(|k| churned(&k.a) || churned(&k.b))
            .map(|k| format!("CONNTRACK {k:?}")),
    );
    let buckets = HashMap::<_, BucketKey, RateBucket>::try_from(open("RATE_BUCKETS")?)?;
    stale.extend(
        buckets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| churned(&k.addr))
            .map(|k| format!("RATE_BUCKETS {k:?}")),
    );
    let endpoints = HashMap::<_, EndpointKey, u32>::try_from(open("ENDPOINTS")?)?;
    stale.extend(
        endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|k| churned(&k.addr))
            .map(|k| format!("ENDPOINTS {k:?}")),
    );
    let ids = HashMap::<_, IdentityKey, IdentityValue>::try_from(open("IDENTITIES")?)?;
    stale.extend(
        ids.iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| churned(&k.addr) && v.id != identity::UNKNOWN)
            .map(|(k, v)| format!("IDENTITIES {k:?} -> {v:?}")),
    );
    Ok(stale)
}

struct Bed {
    topo: Topology,
    agent: AgentProcess,
    _work: WorkDir,
    socket: String,
}

fn start(tag: &str) -> Result<Bed> {
    let topo = web_api_topology()?;
    let work = WorkDir::new(tag)?;
    let mut agent = AgentProcess::start(&topo, "n1", &work.0, &["--pod-cidrs", POD_CIDRS])?;
    agent.apply("first-packet.yaml", POLICY)?;
    agent.wait_ready(Duration::from_secs(10))?;
    let socket = agent.socket.display().to_string();
    Ok(Bed {
        topo,
        agent,
        _work: work,
        socket,
    })
}

#[test]
fn a_new_pod_is_enforced_from_its_first_packet_in_200_creations() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut bed = start("first-packet")?;
    let api_ns = bed.topo.pod_netns("api-0")?.to_string();
    let web_ns = bed.topo.pod_netns("web-0")?.to_string();
    let api_udp = spawn_udp_echo(&api_ns, 0)?;
    let _web_tcp = spawn_tcp_echo(&web_ns, ANY, 8080)?;
    let denied: SocketAddr = SocketAddr::new([10, 10, 2, 10].into(), api_udp.port());
    let allowed: SocketAddr = "10.10.1.10:8080".parse()?;
    let opts = ProbeOptions::with_timeout(Duration::from_secs(2));
    let tries = 200;
    let mut fired = 0;
    for i in 0..tries {
        let addr = IpAddr::from([10, 10, 3, 1 + u8::try_from(i % ADDRESSES)?]);
        let name = format!("b{i}");
        let host_if = bed
            .topo
            .add_pod(&name, "n1", &[addr])?
            .host_ifname()
            .to_string();
        let ns = bed.topo.pod_netns(&name)?.to_string();
        // Before ADD: the pod's address is unknown.
        fire(&ns, denied, 2)?;
        let container = format!("{}-{name}", bed.topo.prefix());
        let (ok, out) = cni("ADD", &bed.socket, &container, &host_if, addr)?;
        ensure!(
            ok,
            "try {i}: CNI ADD failed: {out}\n{}",
            bed.agent.log_tail()
        );
        // Right after ADD: the pod's own egress policy denies it.
        fire(&ns, denied, 2)?;
        fired += 4;
        // The allowed flow of the same pod works.
        let outcome = probe_tcp(&ns, allowed, &opts)?;
        ensure!(
            outcome.is_answered(),
            "try {i}: batch ({addr}) → web:8080 must be allowed after ADD: {outcome:?}\n{}",
            bed.agent.log_tail()
        );
        let (ok, out) = cni("DEL", &bed.socket, &container, &host_if, addr)?;
        ensure!(ok, "try {i}: CNI DEL failed: {out}");
        bed.topo.remove_pod(&name)?;
    }
    // Late arrivals of the last datagrams.
    std::thread::sleep(Duration::from_millis(300));
    let leaked: u64 = api_udp
        .peers()
        .iter()
        .filter(|(ip, _)| matches!(ip.to_canonical(), IpAddr::V4(v4) if v4.octets()[..3] == [10, 10, 3]))
        .map(|(_, n)| n)
        .sum();
    let unknown = drops(&bed.agent, Reason::UnknownEndpoint)?;
    let policy = drops(&bed.agent, Reason::DefaultDeny)? + drops(&bed.agent, Reason::Policy)?;
    eprintln!(
        "first packet: {tries} pods created, {fired} denied datagrams fired, {leaked} arrived; \
         drops: unknown_endpoint {unknown}, policy {policy}"
    );
    ensure!(leaked == 0, "{leaked} datagrams of the denied flow arrived");
    ensure!(
        unknown + policy >= fired,
        "every fired datagram must be counted as dropped ({fired} fired, {unknown} unknown_endpoint, {policy} policy)"
    );
    let stale = stale_entries(&bed.agent)?;
    ensure!(
        stale.is_empty(),
        "deleted pods left {} entries behind, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    // The api server is alive: web's flow to it is not isolated.
    let web_to_api = enforcer_tests::probe_udp(&web_ns, denied, &opts)?;
    ensure!(web_to_api.is_answered(), "web → api UDP: {web_to_api:?}");
    Ok(())
}

#[test]
fn cni_add_fails_closed_when_the_agent_cannot_enforce() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut bed = start("cni-closed")?;
    let addr: IpAddr = [10, 10, 3, 1].into();
    let host_if = bed
        .topo
        .add_pod("b0", "n1", &[addr])?
        .host_ifname()
        .to_string();
    let container = format!("{}-b0", bed.topo.prefix());
    // An interface the agent does not manage: refused.
    let (ok, out) = cni("ADD", &bed.socket, &container, "lo", addr)?;
    ensure!(!ok && out.contains("\"code\":100"), "ADD on lo: {out}");
    // The agent down: refused (try again later), and DEL still completes.
    bed.agent.kill()?;
    let (ok, out) = cni("ADD", &bed.socket, &container, &host_if, addr)?;
    ensure!(
        !ok && out.contains("\"code\":11"),
        "ADD with the agent down: {out}"
    );
    let (ok, out) = cni("DEL", &bed.socket, &container, &host_if, addr)?;
    ensure!(ok, "DEL with the agent down: {out}");
    let (ok, out) = cni("VERSION", &bed.socket, &container, &host_if, addr)?;
    ensure!(ok && out.contains("1.0.0"), "VERSION: {out}");
    Ok(())
}

/// A restarted agent keeps its CNI registrations (state dir) and re-adopts the pod interfaces
/// before it installs: after the restart the registered pod's allowed flow works, its denied
/// flow is dropped, and CHECK still finds it.
#[test]
fn registrations_survive_an_agent_restart() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut bed = start("cni-restart")?;
    let api_ns = bed.topo.pod_netns("api-0")?.to_string();
    let web_ns = bed.topo.pod_netns("web-0")?.to_string();
    let api_udp = spawn_udp_echo(&api_ns, 0)?;
    let _web_tcp = spawn_tcp_echo(&web_ns, ANY, 8080)?;
    let denied = SocketAddr::new([10, 10, 2, 10].into(), api_udp.port());
    let allowed: SocketAddr = "10.10.1.10:8080".parse()?;
    let opts = ProbeOptions::with_timeout(Duration::from_secs(2));
    let addr: IpAddr = [10, 10, 3, 1].into();
    let host_if = bed
        .topo
        .add_pod("b0", "n1", &[addr])?
        .host_ifname()
        .to_string();
    let ns = bed.topo.pod_netns("b0")?.to_string();
    let container = format!("{}-b0", bed.topo.prefix());
    let (ok, out) = cni("ADD", &bed.socket, &container, &host_if, addr)?;
    ensure!(ok, "ADD: {out}");
    ensure!(
        probe_tcp(&ns, allowed, &opts)?.is_answered(),
        "allowed before the restart"
    );
    bed.agent.restart(&bed.topo, &[])?;
    bed.agent.wait_ready(Duration::from_secs(10))?;
    let outcome = probe_tcp(&ns, allowed, &opts)?;
    ensure!(
        outcome.is_answered(),
        "allowed after the restart: {outcome:?}\n{}",
        bed.agent.log_tail()
    );
    fire(&ns, denied, 3)?;
    let (ok, out) = cni("CHECK", &bed.socket, &container, &host_if, addr)?;
    ensure!(ok, "CHECK after the restart: {out}");
    std::thread::sleep(Duration::from_millis(300));
    let leaked = api_udp.peers().get(&addr).copied().unwrap_or(0);
    ensure!(
        leaked == 0,
        "{leaked} denied datagrams arrived after the restart"
    );
    let web_to_api = enforcer_tests::probe_udp(&web_ns, denied, &opts)?;
    ensure!(web_to_api.is_answered(), "web → api UDP: {web_to_api:?}");
    Ok(())
}
