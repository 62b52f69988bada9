//! Conformance with the upstream Kubernetes `NetworkPolicy` e2e suite
//! (`test/e2e/network/netpol/network_policy.go`), judged only through the CLI contract:
//!
//! ```text
//! enforcer policy explain -f DIR --from NS/POD --to NS/POD --protocol P --port N -o json
//! ```
//!
//! over files as `kubectl get -o yaml` prints them (a `v1 List` of Namespaces, a `v1 List` of
//! Pods, one `NetworkPolicy` per file, with kubectl's metadata and status noise).
//!
//! The topology is upstream's: namespaces x, y, z (label `ns=<name>`, plus the implicit
//! `kubernetes.io/metadata.name`), pods a, b, c in each (label `pod=<name>`), each serving ports
//! 80 and 81 over TCP, UDP and SCTP under the names `serve-<port>-<protocol>`. Every case builds
//! its expected reachability matrix the way the upstream test does (all allowed, then
//! `ExpectPeer`/`ExpectAllIngress`/`ExpectAllEgress`/`Expect` edits): the expectations come from
//! the upstream tests, never from the engine. Pairs of a pod with itself are skipped, as upstream
//! does (`ignoreLoopback`). All cases run; mismatches are reported together as truth tables.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Concurrent `explain` processes.
const WORKERS: usize = 4;

/// A pod of the model, `ns/pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PodRef {
    ns: usize,
    pod: usize,
}

impl PodRef {
    fn all() -> impl Iterator<Item = PodRef> {
        (0..NAMESPACES.len()).flat_map(|ns| (0..PODS.len()).map(move |pod| PodRef { ns, pod }))
    }
    fn parse(s: &str) -> PodRef {
        let (ns, pod) = s.split_once('/').expect("ns/pod");
        PodRef {
            ns: NAMESPACES.iter().position(|n| *n == ns).expect("namespace"),
            pod: PODS.iter().position(|p| *p == pod).expect("pod"),
        }
    }
    fn name(self) -> String {
        format!("{}/{}", NAMESPACES[self.ns], PODS[self.pod])
    }
    fn v4(self) -> String {
        format!("10.10.{}.{}", 21 + self.ns, self.pod + 1)
    }
}

/// Upstream's `Peer`: a namespace and/or a pod name, empty = any.
#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    ns: Option<&'static str>,
    pod: Option<&'static str>,
}

impl Peer {
    fn any() -> Peer {
        Peer::default()
    }
    fn ns(ns: &'static str) -> Peer {
        Peer {
            ns: Some(ns),
            pod: None,
        }
    }
    fn pod(ns: &'static str, pod: &'static str) -> Peer {
        Peer {
            ns: Some(ns),
            pod: Some(pod),
        }
    }
    fn matches(self, p: PodRef) -> bool {
        self.ns.is_none_or(|n| n == NAMESPACES[p.ns]) && self.pod.is_none_or(|n| n == PODS[p.pod])
    }
}

/// Upstream's `Reachability`: the expected verdict of every (from, to) pair.
#[derive(Debug, Clone)]
struct Reachability(BTreeMap<(PodRef, PodRef), bool>);

impl Reachability {
    fn new(default: bool) -> Reachability {
        let mut m = BTreeMap::new();
        for from in PodRef::all() {
            for to in PodRef::all() {
                m.insert((from, to), default);
            }
        }
        Reachability(m)
    }
    fn expect(mut self, from: &str, to: &str, v: bool) -> Self {
        self.0.insert((PodRef::parse(from), PodRef::parse(to)), v);
        self
    }
    fn expect_peer(mut self, from: Peer, to: Peer, v: bool) -> Self {
        for ((f, t), e) in &mut self.0 {
            if from.matches(*f) && to.matches(*t) {
                *e = v;
            }
        }
        self
    }
    fn expect_all_ingress(mut self, to: &str, v: bool) -> Self {
        let to = PodRef::parse(to);
        for ((_, t), e) in &mut self.0 {
            if *t == to {
                *e = v;
            }
        }
        self
    }
    fn expect_all_egress(mut self, from: &str, v: bool) -> Self {
        let from = PodRef::parse(from);
        for ((f, _), e) in &mut self.0 {
            if *f == from {
                *e = v;
            }
        }
        self
    }
}

/// One validation of an upstream test: the objects in force, a port and protocol, the matrix.
struct Phase {
    case: &'static str,
    policies: Vec<(&'static str, &'static str, String)>,
    /// Extra namespace labels (namespace, key, value).
    ns_labels: Vec<(&'static str, &'static str, &'static str)>,
    /// Extra pod labels (ns/pod, key, value).
    pod_labels: Vec<(&'static str, &'static str, &'static str)>,
    protocol: &'static str,
    port: u16,
    reach: Reachability,
}

fn phase(case: &'static str, protocol: &'static str, port: u16, reach: Reachability) -> Phase {
    Phase {
        case,
        policies: Vec::new(),
        ns_labels: Vec::new(),
        pod_labels: Vec::new(),
        protocol,
        port,
        reach,
    }
}

impl Phase {
    /// Adds a `NetworkPolicy` `name` in `ns` with `spec` (YAML lines at spec level).
    fn policy(mut self, ns: &'static str, name: &'static str, spec: &str) -> Self {
        self.policies.push((ns, name, spec.to_string()));
        self
    }
    fn ns_label(mut self, ns: &'static str, k: &'static str, v: &'static str) -> Self {
        self.ns_labels.push((ns, k, v));
        self
    }
    fn pod_label(mut self, pod: &'static str, k: &'static str, v: &'static str) -> Self {
        self.pod_labels.push((pod, k, v));
        self
    }
}

// ------------------------------------------------------------------------------------- files

/// kubectl's metadata noise, indented for an item of a `v1 List`.
fn noise(indent: &str, uid: usize) -> String {
    format!(
        "{indent}uid: 6f0c2d1e-0000-4000-8000-{uid:012}\n\
         {indent}resourceVersion: \"{}\"\n\
         {indent}creationTimestamp: \"2026-11-29T10:00:00Z\"\n\
         {indent}managedFields:\n\
         {indent}- apiVersion: v1\n\
         {indent}  fieldsType: FieldsV1\n\
         {indent}  fieldsV1: {{f:metadata: {{f:labels: {{.: {{}}}}}}}}\n\
         {indent}  manager: kubectl-create\n\
         {indent}  operation: Update\n\
         {indent}  time: \"2026-11-29T10:00:00Z\"\n",
        1000 + uid
    )
}

fn namespaces_yaml(p: &Phase) -> String {
    let mut y =
        String::from("apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n");
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Namespace\n  metadata:\n{}    labels:\n      {NAME_LABEL}: {ns}\n      ns: {ns}\n",
            noise("    ", i)
        );
        for (n, k, v) in &p.ns_labels {
            if n == ns {
                let _ = writeln!(y, "      {k}: {v}");
            }
        }
        let _ = write!(
            y,
            "    name: {ns}\n  spec:\n    finalizers:\n    - kubernetes\n  status:\n    phase: Active\n"
        );
    }
    y
}

fn pods_yaml(p: &Phase) -> String {
    let mut y =
        String::from("apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n");
    for (i, pod) in PodRef::all().enumerate() {
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n{}    generateName: {}-\n    labels:\n      pod: {}\n",
            noise("    ", 100 + i),
            PODS[pod.pod],
            PODS[pod.pod]
        );
        for (name, k, v) in &p.pod_labels {
            if PodRef::parse(name) == pod {
                let _ = writeln!(y, "      {k}: {v}");
            }
        }
        let _ = write!(
            y,
            "    name: {}\n    namespace: {}\n  spec:\n    nodeName: kind-worker\n    containers:\n",
            PODS[pod.pod], NAMESPACES[pod.ns]
        );
        for port in [80, 81] {
            for proto in ["TCP", "UDP", "SCTP"] {
                let lower = proto.to_lowercase();
                let _ = write!(
                    y,
                    "    - name: cont-{port}-{lower}\n      image: registry.k8s.io/e2e-test-images/agnhost:2.53\n      \
                     command: [/agnhost, serve-hostname, --{lower}, --port, \"{port}\"]\n      \
                     imagePullPolicy: IfNotPresent\n      ports:\n      - containerPort: {port}\n        \
                     name: serve-{port}-{lower}\n        protocol: {proto}\n      resources: {{}}\n"
                );
            }
        }
        let _ = write!(
            y,
            "  status:\n    conditions:\n    - lastProbeTime: null\n      status: \"True\"\n      type: Ready\n    \
             hostIP: 172.18.0.2\n    phase: Running\n    podIP: {ip}\n    podIPs:\n    - ip: {ip}\n    qosClass: BestEffort\n",
            ip = pod.v4()
        );
    }
    y
}

fn policy_yaml(ns: &str, name: &str, spec: &str, uid: usize) -> String {
    let mut y = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  annotations:\n    \
         kubectl.kubernetes.io/last-applied-configuration: |\n      {{\"apiVersion\":\"networking.k8s.io/v1\"}}\n  \
         generation: 1\n{}  name: {name}\n  namespace: {ns}\nspec:\n",
        noise("  ", 500 + uid)
    );
    for line in spec.lines() {
        let _ = writeln!(y, "  {line}");
    }
    y
}

fn write_phase(dir: &Path, p: &Phase) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("namespaces.yaml"), namespaces_yaml(p))?;
    std::fs::write(dir.join("pods.yaml"), pods_yaml(p))?;
    for (i, (ns, name, spec)) in p.policies.iter().enumerate() {
        std::fs::write(
            dir.join(format!("netpol-{i}-{ns}-{name}.yaml")),
            policy_yaml(ns, name, spec, i),
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- running

/// The verdict of `enforcer policy explain ... -o json`: true = allow.
fn explain(bin: &Path, dir: &Path, from: PodRef, to: PodRef, p: &Phase) -> Result<bool> {
    let out = Command::new(bin)
        .args(["policy", "explain", "-f"])
        .arg(dir)
        .args(["--from", &from.name(), "--to", &to.name()])
        .args([
            "--protocol",
            p.protocol,
            "--port",
            &p.port.to_string(),
            "-o",
            "json",
        ])
        .output()
        .context("running enforcer policy explain")?;
    if !out.status.success() {
        bail!(
            "enforcer policy explain {} -> {}: {}",
            from.name(),
            to.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("explain output: {}", String::from_utf8_lossy(&out.stdout)))?;
    match v.get("verdict").and_then(|v| v.as_str()) {
        Some("allow") => Ok(true),
        Some("deny") => Ok(false),
        other => bail!("unexpected verdict {other:?} in {v}"),
    }
}

/// Upstream's truth-table printout: rows are sources, columns destinations, `.` = as expected,
/// `X` = mismatch, `-` = skipped (loopback).
fn truth_table(got: &BTreeMap<(PodRef, PodRef), bool>, want: &Reachability) -> String {
    let mut t = String::from("      ");
    for to in PodRef::all() {
        let _ = write!(t, " {}", to.name());
    }
    t.push('\n');
    for from in PodRef::all() {
        let _ = write!(t, "  {}", from.name());
        for to in PodRef::all() {
            let cell = match got.get(&(from, to)) {
                None => "-",
                Some(g) if *g == want.0[&(from, to)] => ".",
                Some(_) => "X",
            };
            let _ = write!(t, "   {cell}");
        }
        t.push('\n');
    }
    t
}

/// Runs one phase; returns a description of its mismatches (empty when it conforms).
fn run_phase(bin: &Path, root: &Path, index: usize, p: &Phase) -> Result<String> {
    let dir = root.join(format!("{index:02}"));
    write_phase(&dir, p)?;
    let pairs: Vec<(PodRef, PodRef)> = PodRef::all()
        .flat_map(|f| PodRef::all().filter(move |t| *t != f).map(move |t| (f, t)))
        .collect();
    // One process per question; a few at a time (they mostly wait on process start-up).
    let verdicts: Vec<Result<bool>> = std::thread::scope(|s| {
        let workers: Vec<_> = pairs
            .chunks(pairs.len().div_ceil(WORKERS))
            .map(|chunk| {
                let dir = &dir;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(f, t)| explain(bin, dir, *f, *t, p))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("explain worker panicked"))
            .collect()
    });
    let mut got = BTreeMap::new();
    let mut wrong = Vec::new();
    for (&(from, to), v) in pairs.iter().zip(verdicts) {
        {
            let v = v?;
            if v != p.reach.0[&(from, to)] {
                wrong.push(format!(
                    "{} -> {} {}/{}: expected {}, got {}",
                    from.name(),
                    to.name(),
                    p.protocol,
                    p.port,
                    if v { "deny" } else { "allow" },
                    if v { "allow" } else { "deny" }
                ));
            }
            got.insert((from, to), v);
        }
    }
    if wrong.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "{} ({} {}, files in {}):\n{}\n{}",
        p.case,
        p.protocol,
        p.port,
        dir.display(),
        wrong.join("\n"),
        truth_table(&got, &p.reach)
    ))
}

fn bin() -> Result<PathBuf> {
    enforcer_tests::cluster::enforcer_bin()
}

#[path = "netpol_conformance/cases.rs"]
mod cases;

#[test]
fn upstream_netpol_e2e_truth_tables() -> Result<()> {
    let bin = bin()?;
    let root = std::env::temp_dir().join(format!(
        "enforcer-netpol-conformance-{}",
        std::process::id()
    ));
    let phases = cases::all();
    assert!(phases.len() >= 50, "the upstream cases are all here");
    let mut failures = Vec::new();
    let mut flows = 0;
    for (i, p) in phases.iter().enumerate() {
        let denies = p
            .reach
            .0
            .iter()
            .filter(|((f, t), v)| f != t && !**v)
            .count();
        flows += p.reach.0.len() - 9;
        let report = run_phase(&bin, &root, i, p)?;
        eprintln!(
            "{} {} {}/{} ({denies} denied pairs)",
            if report.is_empty() { "ok  " } else { "FAIL" },
            p.case,
            p.protocol,
            p.port
        );
        if !report.is_empty() {
            failures.push(report);
        }
    }
    eprintln!("{} phases, {flows} flows", phases.len());
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        bail!(
            "{} of {} phases do not conform:\n\n{}",
            failures.len(),
            phases.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
