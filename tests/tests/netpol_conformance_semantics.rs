//! `NetworkPolicy` semantics the upstream e2e suite (`netpol_conformance.rs`) does not exercise,
//! each a row named after the point of the Kubernetes API reference (`networking.k8s.io/v1`
//! `NetworkPolicySpec`, `NetworkPolicyPeer`, `NetworkPolicyPort`, `IPBlock`, `LabelSelector`)
//! it checks, judged only through the CLI contract:
//!
//! ```text
//! enforcer policy explain -f DIR --from NS/POD --to NS/POD --protocol P --port N -o json
//! ```
//!
//! Every row holds an allowed flow next to its denied ones (the same source or destination,
//! the same policy), so that no deny passes because the row is broken. The expectations are the
//! API reference's, written by hand here, never read from the engine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Namespaces: `x` is declared without the implicit `kubernetes.io/metadata.name` label (the
/// engine must add it), `y` carries `team: blue`, `z` no label at all.
const NAMESPACES: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: x
    labels: {ns: x}
- apiVersion: v1
  kind: Namespace
  metadata:
    name: y
    labels: {ns: y, team: blue, kubernetes.io/metadata.name: y}
- apiVersion: v1
  kind: Namespace
  metadata: {name: z}
";

/// Pods: `x/a` and `x/a2` have the same labels but number their `http` port differently;
/// `y/c` and `y/d` differ by the presence of `env`; `y/h` is on the host network; `y/p` has no
/// IP yet; `y/done` finished and its old address is `y/d`'s now.
const PODS: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: web, tier: front}}
  spec:
    containers:
    - name: main
      ports:
      - {name: http, containerPort: 8080, protocol: TCP}
      - {name: dns, containerPort: 53, protocol: UDP}
    - name: sidecar
      ports:
      - {name: metrics, containerPort: 9100}
  status: {phase: Running, podIP: 10.20.1.1, podIPs: [{ip: 10.20.1.1}, {ip: 'fd00:20::1:1'}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: a2, namespace: x, labels: {app: web, tier: front}}
  spec:
    containers:
    - name: main
      ports:
      - {name: http, containerPort: 8081, protocol: TCP}
  status: {phase: Running, podIP: 10.20.1.2, podIPs: [{ip: 10.20.1.2}, {ip: 'fd00:20::1:2'}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: c, namespace: y, labels: {app: client, env: prod}}
  spec: {containers: [{name: main}]}
  status: {phase: Running, podIP: 10.20.2.3, podIPs: [{ip: 10.20.2.3}, {ip: 'fd00:20::2:3'}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: d, namespace: y, labels: {app: client}}
  spec: {containers: [{name: main}]}
  status: {phase: Running, podIP: 10.20.2.4, podIPs: [{ip: 10.20.2.4}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: done, namespace: y, labels: {app: job}}
  spec: {containers: [{name: main}]}
  status: {phase: Succeeded, podIP: 10.20.2.4, podIPs: [{ip: 10.20.2.4}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: h, namespace: y, labels: {app: agent}}
  spec: {hostNetwork: true, containers: [{name: main}]}
  status: {phase: Running, podIP: 192.168.77.7, podIPs: [{ip: 192.168.77.7}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: p, namespace: y, labels: {app: pending}}
  spec: {containers: [{name: main}]}
  status: {phase: Pending}
- apiVersion: v1
  kind: Pod
  metadata: {name: e, namespace: z, labels: {app: other}}
  spec: {containers: [{name: main}]}
  status: {phase: Running, podIP: 10.20.3.5, podIPs: [{ip: 10.20.3.5}]}
";

/// An address no pod and no node holds.
const WORLD: &str = "203.0.113.9";

/// One row: policies (namespace, name, spec at spec level) and the flows it judges.
struct Row {
    name: &'static str,
    policies: Vec<(&'static str, &'static str, &'static str)>,
    /// (from, to, protocol, port, allowed)
    flows: Vec<(&'static str, &'static str, &'static str, u16, bool)>,
}

fn row(name: &'static str) -> Row {
    Row {
        name,
        policies: Vec::new(),
        flows: Vec::new(),
    }
}

impl Row {
    fn policy(mut self, ns: &'static str, name: &'static str, spec: &'static str) -> Row {
        self.policies.push((ns, name, spec));
        self
    }
    fn allow(
        mut self,
        from: &'static str,
        to: &'static str,
        proto: &'static str,
        port: u16,
    ) -> Row {
        self.flows.push((from, to, proto, port, true));
        self
    }
    fn deny(mut self, from: &'static str, to: &'static str, proto: &'static str, port: u16) -> Row {
        self.flows.push((from, to, proto, port, false));
        self
    }
}

const TCP: &str = "TCP";
const UDP: &str = "UDP";
const SCTP: &str = "SCTP";

fn spec_rows() -> Vec<Row> {
    vec![
        row("policyTypes defaulting: egress rules without policyTypes make the policy Ingress and Egress")
            .policy("y", "egress-to-x", "podSelector: {matchLabels: {env: prod}}\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: x}}\n")
            .allow("y/c", "x/a", TCP, 8080)
            .deny("y/c", "z/e", TCP, 80)
            .deny("z/e", "y/c", TCP, 80)
            .allow("z/e", "y/d", TCP, 80),
        row("policyTypes defaulting: an empty egress list without policyTypes is Ingress only")
            .policy("y", "empty-egress", "podSelector: {matchLabels: {env: prod}}\negress: []\n")
            .allow("y/c", "z/e", TCP, 80)
            .deny("z/e", "y/c", TCP, 80),
        row("policyTypes [Egress]: ingress rules of the policy are ignored and ingress is not isolated")
            .policy("y", "egress-only", "podSelector: {matchLabels: {env: prod}}\npolicyTypes: [Egress]\ningress:\n- from:\n  - podSelector: {matchLabels: {app: nothing}}\negress:\n- to:\n  - ipBlock: {cidr: 10.20.3.5/32}\n")
            .allow("x/a", "y/c", TCP, 80)
            .allow("y/c", "z/e", TCP, 80)
            .deny("y/c", "x/a", TCP, 8080),
        row("policyTypes [] is defaulted like a missing list")
            .policy("y", "empty-types", "podSelector: {matchLabels: {env: prod}}\npolicyTypes: []\n")
            .deny("z/e", "y/c", TCP, 80)
            .allow("y/c", "z/e", TCP, 80),
        row("missing podSelector selects every pod of the policy's namespace")
            .policy("z", "no-selector", "policyTypes: [Ingress]\n")
            .deny("y/c", "z/e", TCP, 80)
            .allow("z/e", "y/c", TCP, 80),
        row("an ingress rule with an empty from list allows every source (ports still apply)")
            .policy("x", "empty-from", "podSelector: {}\ningress:\n- from: []\n  ports: [{port: 8080}]\n")
            .allow("z/e", "x/a", TCP, 8080)
            .allow(WORLD, "x/a", TCP, 8080)
            .deny("z/e", "x/a", TCP, 8081),
        row("an ingress rule with an empty ports list allows every port and protocol")
            .policy("x", "empty-ports", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}}]\n  ports: []\n")
            .allow("z/e", "x/a", UDP, 9)
            .allow("z/e", "x/a", SCTP, 7)
            .deny(WORLD, "x/a", TCP, 80),
        row("an empty ingress list isolates without allowing anything")
            .policy("x", "no-rules", "podSelector: {matchLabels: {app: web}}\ningress: []\n")
            .deny("y/c", "x/a", TCP, 8080)
            .allow("x/a", "y/c", TCP, 80),
        row("multiple policies selecting a pod: allowed connections are the union")
            .policy("x", "from-y", "podSelector: {matchLabels: {app: web}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  ports: [{port: 8080}]\n")
            .policy("x", "from-z-metrics", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]\n  ports: [{port: metrics}]\n")
            .allow("y/c", "x/a", TCP, 8080)
            .allow("z/e", "x/a", TCP, 9100)
            .deny("z/e", "x/a", TCP, 8080)
            .deny("y/c", "x/a", TCP, 9100),
        row("ingress and egress: a flow between two isolated pods needs both the egress and the ingress allow")
            .policy("y", "c-egress-to-x", "podSelector: {matchLabels: {env: prod}}\npolicyTypes: [Egress]\negress:\n- to: [{namespaceSelector: {matchLabels: {ns: x}}}]\n")
            .policy("x", "a-ingress-from-z", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]\n")
            .deny("y/c", "x/a", TCP, 8080)
            .allow("z/e", "x/a", TCP, 8080)
            .deny("y/c", "z/e", TCP, 80)
            .allow("y/d", "z/e", TCP, 80),
    ]
}

fn selector_rows() -> Vec<Row> {
    vec![
        row("namespaceSelector: kubernetes.io/metadata.name is implicit on every namespace")
            .policy("z", "from-x", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]\n")
            .allow("x/a", "z/e", TCP, 80)
            .deny("y/c", "z/e", TCP, 80),
        row("matchExpressions NotIn matches pods without the key")
            .policy("z", "not-prod", "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector: {matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}\n")
            .allow("y/d", "z/e", TCP, 80)
            .allow("x/a", "z/e", TCP, 80)
            .deny("y/c", "z/e", TCP, 80),
        row("matchExpressions NotIn on a namespace label matches namespaces without the key")
            .policy("x", "not-blue", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [blue]}]}}]\n")
            .allow("z/e", "x/a", TCP, 8080)
            .deny("y/d", "x/a", TCP, 8080),
        row("matchExpressions Exists and DoesNotExist")
            .policy("z", "has-env", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: env, operator: Exists}]}}]\n")
            .policy("x", "no-env", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}]\n")
            .allow("y/c", "z/e", TCP, 80)
            .deny("y/d", "z/e", TCP, 80)
            .allow("y/d", "x/a", TCP, 8080)
            .deny("y/c", "x/a", TCP, 8080),
        row("matchLabels and matchExpressions of one selector are ANDed")
            .policy("z", "and", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}, matchExpressions: [{key: env, operator: In, values: [prod, staging]}]}}]\n")
            .allow("y/c", "z/e", TCP, 80)
            .deny("y/d", "z/e", TCP, 80),
        row("namespaceSelector {} selects pods of every namespace, not other addresses")
            .policy("x", "all-pods", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}}]\n")
            .allow("z/e", "x/a", TCP, 8080)
            .deny(WORLD, "x/a", TCP, 8080),
        row("podSelector alone selects pods of the policy's namespace only")
            .policy("x", "same-ns-web", "podSelector: {}\ningress:\n- from: [{podSelector: {matchLabels: {app: web}}}]\n")
            .allow("x/a2", "x/a", TCP, 8080)
            .deny("y/c", "x/a", TCP, 8080),
        row("hostNetwork pods are the node: traffic from them reaches isolated pods; they are never selected")
            .policy("y", "deny-all-y", "podSelector: {}\npolicyTypes: [Ingress, Egress]\n")
            .allow("y/h", "y/c", TCP, 80)
            .allow("x/a", "y/h", TCP, 80)
            .deny("y/c", "y/h", TCP, 80)
            .deny("x/a", "y/c", TCP, 80),
        row("a pod without an IP is judged by its labels")
            .policy("x", "from-pending", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: pending}}}]\n")
            .allow("y/p", "x/a", TCP, 8080)
            .deny("y/d", "x/a", TCP, 8080),
        row("a finished pod holds no address: its labels do not apply to the address a running pod reuses")
            .policy("x", "from-job", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: job}}}]\n")
            .policy("z", "from-client", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]\n")
            .deny("y/d", "x/a", TCP, 8080)
            .allow("y/d", "z/e", TCP, 80),
    ]
}

fn port_rows() -> Vec<Row> {
    vec![
        row("named port resolved on each destination pod (same labels, different numbers)")
            .policy("x", "http", "podSelector: {matchLabels: {app: web}}\ningress:\n- ports: [{port: http}]\n")
            .allow("y/c", "x/a", TCP, 8080)
            .deny("y/c", "x/a", TCP, 8081)
            .allow("y/c", "x/a2", TCP, 8081)
            .deny("y/c", "x/a2", TCP, 8080),
        row("named port resolved with its protocol")
            .policy("x", "dns-tcp", "podSelector: {}\ningress:\n- ports: [{port: dns, protocol: TCP}]\n")
            .policy("x", "metrics", "podSelector: {}\ningress:\n- ports: [{port: metrics}]\n")
            .deny("y/c", "x/a", UDP, 53)
            .deny("y/c", "x/a", TCP, 53)
            .allow("y/c", "x/a", TCP, 9100),
        row("named port of a UDP container port")
            .policy("x", "dns-udp", "podSelector: {}\ningress:\n- ports: [{port: dns, protocol: UDP}]\n")
            .allow("y/c", "x/a", UDP, 53)
            .deny("y/c", "x/a", TCP, 53)
            .deny("y/c", "x/a2", UDP, 53),
        row("egress named port resolved on the destination pod; other addresses have no named ports")
            .policy("y", "egress-http", "podSelector: {matchLabels: {env: prod}}\npolicyTypes: [Egress]\negress:\n- ports: [{port: http}]\n")
            .allow("y/c", "x/a", TCP, 8080)
            .allow("y/c", "x/a2", TCP, 8081)
            .deny("y/c", "x/a2", TCP, 8080)
            .deny("y/c", WORLD, TCP, 8080),
        row("endPort: the range port..endPort, both ends included")
            .policy("z", "range", "podSelector: {}\ningress:\n- ports: [{port: 8000, endPort: 8100}]\n")
            .allow("y/c", "z/e", TCP, 8000)
            .allow("y/c", "z/e", TCP, 8100)
            .deny("y/c", "z/e", TCP, 7999)
            .deny("y/c", "z/e", TCP, 8101)
            .deny("y/c", "z/e", UDP, 8050),
        row("protocol defaults to TCP")
            .policy("z", "port-80", "podSelector: {}\ningress:\n- ports: [{port: 80}]\n")
            .allow("y/c", "z/e", TCP, 80)
            .deny("y/c", "z/e", UDP, 80)
            .deny("y/c", "z/e", SCTP, 80),
        row("SCTP port")
            .policy("z", "sctp", "podSelector: {}\ningress:\n- ports: [{port: 80, protocol: SCTP}]\n")
            .allow("y/c", "z/e", SCTP, 80)
            .deny("y/c", "z/e", TCP, 80),
        row("protocol without port: every port of that protocol")
            .policy("z", "udp", "podSelector: {}\ningress:\n- ports: [{protocol: UDP}]\n")
            .allow("y/c", "z/e", UDP, 1)
            .allow("y/c", "z/e", UDP, 65535)
            .deny("y/c", "z/e", TCP, 80),
    ]
}

fn ip_block_rows() -> Vec<Row> {
    vec![
        row("ipBlock matches pod addresses too (ingress)")
            .policy("z", "from-c-ip", "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.20.2.3/32}}]\n")
            .allow("y/c", "z/e", TCP, 80)
            .deny("y/d", "z/e", TCP, 80),
        row("ipBlock except carves addresses out of cidr")
            .policy("x", "except", "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.20.0.0/16, except: [10.20.2.0/24]}}]\n")
            .allow("z/e", "x/a", TCP, 8080)
            .deny("y/c", "x/a", TCP, 8080)
            .deny(WORLD, "x/a", TCP, 8080),
        row("ipBlock 0.0.0.0/0 with except: the world minus the cluster")
            .policy("y", "egress-world", "podSelector: {matchLabels: {env: prod}}\npolicyTypes: [Egress]\negress:\n- to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.20.0.0/16]}}]\n")
            .allow("y/c", WORLD, TCP, 443)
            .deny("y/c", "z/e", TCP, 80),
        row("IPv6: an IPv6 ipBlock matches the pod's IPv6 address, not its IPv4 one")
            .policy("x", "v6", "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 'fd00:20::2:0/112', except: ['fd00:20::2:4/128']}}]\n")
            .allow("fd00:20::2:3", "fd00:20::1:1", TCP, 8080)
            .deny("10.20.2.3", "10.20.1.1", TCP, 8080)
            .deny("fd00:20::2:4", "fd00:20::1:1", TCP, 8080),
        row("IPv6: selectors apply to both address families of a pod")
            .policy("x", "from-c", "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {env: prod}}}]\n")
            .allow("fd00:20::2:3", "fd00:20::1:1", TCP, 8080)
            .allow("10.20.2.3", "10.20.1.1", TCP, 8080)
            .deny("fd00:20::2:4", "fd00:20::1:1", TCP, 8080),
    ]
}

fn write_row(dir: &Path, row: &Row) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("namespaces.yaml"), NAMESPACES)?;
    std::fs::write(dir.join("pods.yaml"), PODS)?;
    for (i, (ns, name, spec)) in row.policies.iter().enumerate() {
        let mut y = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n"
        );
        for line in spec.lines() {
            let _ = writeln!(y, "  {line}");
        }
        std::fs::write(dir.join(format!("netpol-{i}.yaml")), y)?;
    }
    Ok(())
}

/// `enforcer policy explain ... -o json`: true = allow.
fn explain(bin: &Path, dir: &Path, flow: (&str, &str, &str, u16)) -> Result<bool> {
    let (from, to, proto, port) = flow;
    let out = Command::new(bin)
        .args(["policy", "explain", "-f"])
        .arg(dir)
        .args(["--from", from, "--to", to, "--protocol", proto])
        .args(["--port", &port.to_string(), "-o", "json"])
        .output()
        .context("running enforcer policy explain")?;
    if !out.status.success() {
        bail!(
            "explain {from} -> {to}: {}",
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

fn bin() -> Result<PathBuf> {
    enforcer_tests::cluster::enforcer_bin()
}

#[test]
fn api_reference_semantics() -> Result<()> {
    let bin = bin()?;
    let root =
        std::env::temp_dir().join(format!("enforcer-netpol-semantics-{}", std::process::id()));
    let rows: Vec<Row> = [spec_rows(), selector_rows(), port_rows(), ip_block_rows()]
        .into_iter()
        .flatten()
        .collect();
    let mut failures = Vec::new();
    let mut flows = 0;
    for (i, r) in rows.iter().enumerate() {
        assert!(
            r.flows.iter().any(|f| f.4) && r.flows.iter().any(|f| !f.4),
            "row {:?} needs an allowed control and a denied flow",
            r.name
        );
        let dir = root.join(format!("{i:02}"));
        write_row(&dir, r)?;
        let mut wrong = Vec::new();
        for &(from, to, proto, port, want) in &r.flows {
            flows += 1;
            let got = explain(&bin, &dir, (from, to, proto, port))
                .with_context(|| format!("row {:?}", r.name))?;
            if got != want {
                let word = |b: bool| if b { "allow" } else { "deny" };
                wrong.push(format!(
                    "  {from} -> {to} {proto}/{port}: expected {}, got {}",
                    word(want),
                    word(got)
                ));
            }
        }
        eprintln!(
            "{} {}",
            if wrong.is_empty() { "ok  " } else { "FAIL" },
            r.name
        );
        if !wrong.is_empty() {
            failures.push(format!(
                "{} (files in {}):\n{}",
                r.name,
                dir.display(),
                wrong.join("\n")
            ));
        }
    }
    eprintln!("{} rows, {flows} flows", rows.len());
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    } else {
        bail!(
            "{} of {} rows do not conform:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        )
    }
}

/// Specs the API server refuses (`ValidateNetworkPolicy`, `ValidateLabelSelector`): each is an
/// error at its file and line, and the same file with the offending part fixed is accepted (so
/// that the refusal is for that part).
#[test]
fn api_validation_refuses_with_file_and_line() -> Result<()> {
    let bin = bin()?;
    let dir =
        std::env::temp_dir().join(format!("enforcer-netpol-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // (what, invalid peer/port lines, valid counterpart)
    let cases: [(&str, &str, &str); 7] = [
        ("ipBlock except equal to cidr", "- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]", "- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/17]}}]"),
        ("ipBlock except outside cidr", "- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]", "- from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/24]}}]"),
        ("ipBlock except of the other family", "- from: [{ipBlock: {cidr: 10.0.0.0/16, except: ['fd00::/120']}}]", "- from: [{ipBlock: {cidr: 'fd00::/64', except: ['fd00::/120']}}]"),
        ("In with no values", "- from: [{podSelector: {matchExpressions: [{key: a, operator: In, values: []}]}}]", "- from: [{podSelector: {matchExpressions: [{key: a, operator: In, values: [b]}]}}]"),
        ("Exists with values", "- from: [{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}]", "- from: [{podSelector: {matchExpressions: [{key: a, operator: Exists}]}}]"),
        ("endPort below port", "- ports: [{port: 90, endPort: 80}]", "- ports: [{port: 80, endPort: 90}]"),
        ("endPort with a named port", "- ports: [{port: http, endPort: 90}]", "- ports: [{port: http}]"),
    ];
    let check = |rules: &str| -> Result<(bool, String)> {
        let file = dir.join("np.yaml");
        std::fs::write(
            &file,
            format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: x}}\nspec:\n  podSelector: {{}}\n  ingress:\n  {rules}\n"),
        )?;
        let out = Command::new(&bin)
            .args(["policy", "check", "-f"])
            .arg(&file)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ))
    };
    let mut failures = Vec::new();
    for (what, bad, good) in cases {
        let (ok, stderr) = check(bad)?;
        if ok || !stderr.contains("np.yaml:7:") {
            failures.push(format!(
                "{what}: accepted or not located at np.yaml:7: {stderr}"
            ));
        }
        let (ok, stderr) = check(good)?;
        if !ok {
            failures.push(format!(
                "{what}: the valid counterpart is refused: {stderr}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// `service` is the value of a configurable label: by default `app.kubernetes.io/name`, then
/// `app`; `--service-label team` makes `team` name it. A `FlowPolicy` for service `api` then
/// isolates the pod labelled `team: api` (and no longer the one labelled `app: api`), and its
/// `from: [{service: web}]` admits the pod labelled `team: web`.
#[test]
fn service_label_is_configurable() -> Result<()> {
    let bin = bin()?;
    let dir = std::env::temp_dir().join(format!("enforcer-service-label-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pod = |name: &str, labels: &str, ip: &str| {
        format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\nstatus: {{podIP: {ip}}}\n")
    };
    let pods = [
        pod("api-team", "team: api", "10.30.0.1"),
        pod("api-app", "app: api", "10.30.0.2"),
        pod("web-team", "team: web", "10.30.0.3"),
        pod("other", "team: other", "10.30.0.4"),
    ]
    .concat();
    std::fs::write(dir.join("pods.yaml"), pods)?;
    std::fs::write(
        dir.join("api.yaml"),
        "apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: api-ingress}\nspec:\n  service: api\n  ingress:\n  - from: [{service: web}]\n",
    )?;
    let verdict = |keys: Option<&str>, from: &str, to: &str| -> Result<bool> {
        let mut cmd = Command::new(&bin);
        if let Some(k) = keys {
            cmd.args(["--service-label", k]);
        }
        let out = cmd
            .args(["policy", "explain", "-f"])
            .arg(&dir)
            .args([
                "--from",
                from,
                "--to",
                to,
                "--protocol",
                "TCP",
                "--port",
                "80",
                "-o",
                "json",
            ])
            .output()?;
        if !out.status.success() {
            bail!("explain: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["verdict"] == "allow")
    };
    let team = Some("team");
    let cases = [
        (team, "default/web-team", "default/api-team", true),
        (team, "default/other", "default/api-team", false),
        (team, "default/other", "default/api-app", true),
        (None, "default/other", "default/api-app", false),
        (None, "default/other", "default/api-team", true),
    ];
    let mut wrong = Vec::new();
    for (keys, from, to, want) in cases {
        if verdict(keys, from, to)? != want {
            wrong.push(format!(
                "--service-label {keys:?}: {from} -> {to} expected allow={want}"
            ));
        }
    }
    let out = Command::new(&bin)
        .args(["--service-label", "not a key!", "policy", "check", "-f"])
        .arg(&dir)
        .output()?;
    if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("service label") {
        wrong.push(format!(
            "an invalid --service-label is not refused: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if wrong.is_empty() {
        Ok(())
    } else {
        bail!("{}", wrong.join("\n"))
    }
}
