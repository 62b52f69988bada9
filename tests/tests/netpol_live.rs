//! Live `NetworkPolicy` through the CLI contract only: a real `enforcer agent` in a node namespace,
//! objects given with `enforcer policy apply -f FILE` and removed with
//! `enforcer policy delete NAME --kind NetworkPolicy -n NS`, real pods (network namespaces),
//! real TCP.
//!
//! The point: a flow that a pod label change newly denies is cut within 1 s, established
//! connection included (conntrack entries carry the policy generation, so the next packet of the
//! flow is judged again), while an unrelated label change leaves it alone.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    probe_tcp, spawn_tcp_echo, ProbeOptions, StreamOptions, TcpEchoStream, Topology, ANY,
};

const NAMESPACE: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {ns: x}\n";

const POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: a-from-clients
  namespace: x
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

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A Pod of namespace x as kubectl prints its essentials.
fn pod(name: &str, addr: &str, role: Option<&str>) -> String {
    let role = role.map_or(String::new(), |r| format!(", role: {r}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: x\n  labels: {{pod: {name}{role}}}\n\
         spec:\n  containers: [{{name: c, image: agnhost}}]\nstatus:\n  phase: Running\n  podIP: {addr}\n  podIPs: [{{ip: {addr}}}]\n"
    )
}

struct Env {
    topo: Topology,
    agent: AgentProcess,
    work: WorkDir,
    _server: enforcer_tests::TcpEchoServer,
}

impl Env {
    fn start() -> Result<Env> {
        let topo = Topology::builder()
            .node("n1")
            .pod("a", "n1", &[ip("10.10.21.1")])
            .pod("b", "n1", &[ip("10.10.21.2")])
            .pod("c", "n1", &[ip("10.10.21.3")])
            .build()?;
        let work = WorkDir::new(topo.prefix())?;
        let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
        let server = spawn_tcp_echo(topo.pod_netns("a")?, ANY, 80)?;
        Ok(Env {
            topo,
            agent,
            work,
            _server: server,
        })
    }

    /// `enforcer --socket S policy ARGS...`, failing on a non-zero exit.
    fn cli(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(enforcer_bin()?)
            .arg("--socket")
            .arg(&self.agent.socket)
            .arg("policy")
            .args(args)
            .output()
            .context("running enforcer policy")?;
        if !out.status.success() {
            bail!(
                "enforcer policy {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `enforcer policy apply -f FILE` with `yaml` written to `name` in the work directory.
    fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let file = self.work.0.join(name);
        std::fs::write(&file, yaml)?;
        self.cli(&["apply", "-f", path_str(&file)?])
    }

    /// Whether a new TCP connection from pod `from` to a:80 is answered.
    fn reaches_a(&self, from: &str) -> Result<bool> {
        let dst = SocketAddr::new(ip("10.10.21.1"), 80);
        let opts = ProbeOptions::with_timeout(Duration::from_millis(800));
        Ok(probe_tcp(self.topo.pod_netns(from)?, dst, &opts)?.is_answered())
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("path is not UTF-8")
}

#[test]
fn a_label_change_cuts_an_established_flow_within_one_second() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::start()?;
    let objects = [
        NAMESPACE.to_string(),
        pod("a", "10.10.21.1", None),
        pod("b", "10.10.21.2", Some("client")),
        pod("c", "10.10.21.3", None),
        POLICY.to_string(),
    ]
    .join("---\n");
    e.apply("objects.yaml", &objects)?;
    assert!(e.reaches_a("b")?, "b (role=client) reaches a");
    assert!(!e.reaches_a("c")?, "c (no role) does not reach a");

    let opts = StreamOptions {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(300),
        source: None,
    };
    let stream = TcpEchoStream::start(
        e.topo.pod_netns("b")?,
        SocketAddr::new(ip("10.10.21.1"), 80),
        &opts,
    )?;
    assert!(stream.wait_for_round_trips(10, Duration::from_secs(5)));

    // An unrelated label change (c becomes a client) is a new generation that keeps the flow.
    e.apply("c.yaml", &pod("c", "10.10.21.3", Some("client")))?;
    let n = stream.round_trips();
    assert!(
        stream.wait_for_round_trips(n + 10, Duration::from_secs(5)),
        "the established flow survives an unrelated label change: {:?}",
        stream.error()
    );
    assert!(e.reaches_a("c")?, "c, relabelled role=client, reaches a");

    // b loses its role: its established connection is cut within 1 s.
    let t = Instant::now();
    e.apply("b.yaml", &pod("b", "10.10.21.2", None))?;
    let applied = t.elapsed();
    let cut_by = Instant::now();
    let dead = stream.wait_until_dead(Duration::from_secs(1));
    let last = stream.round_trips();
    eprintln!(
        "apply returned after {applied:?}; stream dead {dead} after {:?} more ({} round trips, error {:?}); \
         the stream's own timeout is {:?}",
        cut_by.elapsed(),
        last,
        stream.error(),
        opts.timeout
    );
    assert!(
        dead,
        "b's established connection is cut within 1 s of the label change"
    );
    assert!(!e.reaches_a("b")?, "a new connection from b is denied too");

    // The policy deleted by kind, namespace and name: a is open again.
    e.cli(&[
        "delete",
        "a-from-clients",
        "--kind",
        "NetworkPolicy",
        "-n",
        "x",
    ])?;
    assert!(e.reaches_a("b")?, "with the policy deleted, b reaches a");
    Ok(())
}
