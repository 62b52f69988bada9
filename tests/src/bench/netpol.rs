//! `netpol`: Kubernetes objects at scale through a real `enforcer agent` (issue 13): 10 000 Pods
//! in 1 000 label sets over 10 namespaces, with 1 000 `NetworkPolicies`.
//!
//! Goals: compile + install < 1 s; a pod label change reaches the datapath < 100 ms.
//!
//! A one-node topology with two real pods (`server`, `client`) whose addresses are those of two
//! of the 10 000 generated Pods, an agent in the node namespace, driven through its API socket
//! (what `enforcer policy apply -f` sends). Timings are taken around the agent's `apply` request,
//! which returns after the agent parsed the documents, compiled the whole set and installed it
//! (flipped the active generation); so they bound compile + install from above (they also hold
//! the socket round trip, the parse and the persisting of the state).
//!
//! The label change: the client Pod moves from a label set the server's policy does not allow to
//! one it allows (and back). From the `apply` of that one Pod document, real TCP connects from
//! the client's namespace to the server (each with a 10 ms timeout, a fresh flow each) run until
//! one is answered: that is when the change reached the datapath. Moving back, one probe checks
//! the connection is refused again (so the allowed state was the label's doing).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use enforcer_tests::{
    cluster::{AgentProcess, WorkDir},
    probe, spawn_tcp_echo, ProbeOptions, Protocol, Topology, ANY,
};

use super::{
    stats::{summarize, Summary},
    Config, Goal, Section,
};

/// How many objects a run generates.
#[derive(Clone, Copy)]
struct Sizes {
    pods: usize,
    label_sets: usize,
    policies: usize,
}

/// The sizes of issue 13.
const FULL: Sizes = Sizes {
    pods: 10_000,
    label_sets: 1_000,
    policies: 1_000,
};

/// `--quick` (a smoke test of the benchmark, no figures): a tenth.
const QUICK: Sizes = Sizes {
    pods: 1_000,
    label_sets: 100,
    policies: 100,
};

impl Sizes {
    /// Generated pod index of the real client (label set `label_sets / 2`).
    const fn client(self) -> usize {
        self.label_sets / 2
    }
}

const NAMESPACES: usize = 10;
/// Generated pod index of the real server (label set 0).
const SERVER: usize = 0;
/// The label set the server's policy allows (policy j allows set j + 1).
const ALLOWED_SET: usize = 1;
const PORT: u16 = 80;

fn pod_addr(i: usize) -> IpAddr {
    // 10.100.0.1 .. 10.100.39.250: 250 per /24.
    let (hi, lo) = (i / 250, i % 250 + 1);
    IpAddr::V4(Ipv4Addr::new(
        10,
        100,
        u8::try_from(hi).unwrap_or(u8::MAX),
        u8::try_from(lo).unwrap_or(u8::MAX),
    ))
}

fn namespace_of_set(set: usize) -> usize {
    set % NAMESPACES
}

/// The namespace of generated pod `i`: that of its initial label set. A relabel keeps it (a
/// Pod's namespace and name never change; only its labels do).
fn namespace_of_pod(z: Sizes, i: usize) -> usize {
    namespace_of_set(i % z.label_sets)
}

/// Pod `i` (in its own namespace, with its own address) as kubectl prints its essentials, with
/// the labels of label set `set`.
fn pod_yaml(z: Sizes, i: usize, set: usize) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: ns{}\n  labels:\n    app: app{set}\n    \
         tier: t{}\nspec:\n  containers:\n  - name: c\n    image: agnhost\n    ports:\n    - name: http\n      containerPort: 80\n      \
         protocol: TCP\nstatus:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n",
        namespace_of_pod(z, i),
        set % 7,
        ip = pod_addr(i)
    )
}

/// Namespaces and pods: pod i has label set i % 1000 (so 10 pods per set), in the namespace of
/// that set.
fn inventory_yaml(z: Sizes) -> String {
    let mut y = String::new();
    for n in 0..NAMESPACES {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{n}\n  labels:\n    team: team{}\n",
            n % 3
        );
    }
    for i in 0..z.pods {
        y.push_str(&pod_yaml(z, i, i % z.label_sets));
    }
    y
}

/// Policy j selects label set j in its namespace and allows set j+1 from any namespace on the
/// named port and on one numbered port (`variant` moves it, to make each apply a new policy);
/// one policy in four also isolates egress to its own team's namespaces.
fn policies_yaml(z: Sizes, variant: usize) -> String {
    let mut y = String::new();
    for j in 0..z.policies {
        let _ = write!(
            y,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np-{j}\n  namespace: ns{}\nspec:\n  \
             podSelector:\n    matchLabels:\n      app: app{j}\n  ingress:\n  - from:\n    - namespaceSelector: {{}}\n      podSelector:\n        \
             matchLabels:\n          app: app{}\n    ports:\n    - port: http\n    - port: {}\n      protocol: TCP\n",
            namespace_of_set(j),
            (j + 1) % z.label_sets,
            8000 + (j + variant) % 1000
        );
        if j % 4 == 3 {
            let _ = write!(
                y,
                "  policyTypes: [Ingress, Egress]\n  egress:\n  - to:\n    - namespaceSelector:\n        matchExpressions:\n        \
                 - {{key: team, operator: In, values: [team{}]}}\n",
                namespace_of_set(j) % 3
            );
        }
    }
    y
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Env {
    topo: Topology,
    agent: AgentProcess,
    _work: WorkDir,
    _server: enforcer_tests::TcpEchoServer,
}

impl Env {
    fn start(z: Sizes) -> Result<Env> {
        let topo = Topology::builder()
            .node("n1")
            .pod("server", "n1", &[pod_addr(SERVER)])
            .pod("client", "n1", &[pod_addr(z.client())])
            .build()?;
        let work = WorkDir::new(topo.prefix())?;
        let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
        let server = spawn_tcp_echo(topo.pod_netns("server")?, ANY, PORT)?;
        Ok(Env {
            topo,
            agent,
            _work: work,
            _server: server,
        })
    }

    /// One TCP connect + echo from the client to the server with `timeout`.
    fn reaches(&self, timeout: Duration) -> Result<bool> {
        Ok(probe(
            self.topo.pod_netns("client")?,
            Protocol::Tcp,
            pod_addr(SERVER),
            PORT,
            &ProbeOptions::with_timeout(timeout),
        )?
        .is_answered())
    }

    fn timed_apply(&self, source: &str, yaml: &str) -> Result<f64> {
        let t = Instant::now();
        self.agent.apply(source, yaml)?;
        Ok(ms(t.elapsed()))
    }
}

/// Measured figures of one run.
struct Figures {
    inventory_ms: f64,
    yaml_mib: f64,
    policies_ms: Vec<f64>,
    full_ms: Vec<f64>,
    /// (apply returned, first answered probe) of each deny → allow change.
    change_ms: Vec<(f64, f64)>,
    /// Apply time of each allow → deny change.
    revert_ms: Vec<f64>,
}

fn measure_changes(env: &Env, z: Sizes, rounds: usize, f: &mut Figures) -> Result<()> {
    let client = z.client();
    let pod = |set| pod_yaml(z, client, set);
    if env.reaches(Duration::from_millis(500))? {
        bail!("client (label set {client}) reaches the server before any label change");
    }
    for _ in 0..rounds {
        let t = Instant::now();
        env.agent.apply("client.yaml", &pod(ALLOWED_SET))?;
        let applied = ms(t.elapsed());
        loop {
            if env.reaches(Duration::from_millis(10))? {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the client's new labels did not open the flow within 10 s");
            }
        }
        f.change_ms.push((applied, ms(t.elapsed())));
        f.revert_ms
            .push(env.timed_apply("client.yaml", &pod(client % z.label_sets))?);
        if env.reaches(Duration::from_millis(500))? {
            bail!("the client still reaches the server after its labels were reverted");
        }
    }
    Ok(())
}

fn measure(cfg: &Config, z: Sizes) -> Result<Figures> {
    let env = Env::start(z).context("netpol: topology and agent")?;
    let inventory = inventory_yaml(z);
    let mut f = Figures {
        inventory_ms: env.timed_apply("inventory.yaml", &inventory)?,
        yaml_mib: 0.0,
        policies_ms: Vec::new(),
        full_ms: Vec::new(),
        change_ms: Vec::new(),
        revert_ms: Vec::new(),
    };
    let trials = if cfg.quick { 2 } else { cfg.trials };
    for k in 0..trials {
        f.policies_ms
            .push(env.timed_apply("policies.yaml", &policies_yaml(z, k))?);
    }
    // Everything in one request (what `kubectl get pods,namespaces,networkpolicies -A -o yaml |
    // enforcer policy apply -f -` sends), the policies changed again so that it compiles.
    for k in 0..trials {
        let all = format!("{inventory}{}", policies_yaml(z, trials + k));
        #[expect(clippy::cast_precision_loss, reason = "a few MiB")]
        let mib = all.len() as f64 / 1_048_576.0;
        f.yaml_mib = mib;
        f.full_ms.push(env.timed_apply("all.yaml", &all)?);
    }
    measure_changes(&env, z, if cfg.quick { 3 } else { 10 }, &mut f)?;
    Ok(f)
}

fn goal(name: &str, s: &Summary, limit_ms: f64, what: &str) -> Goal {
    Goal {
        name: name.into(),
        measured: format!("{} ms ({what})", s.value(1)),
        met: s.max < limit_ms,
        limit: String::new(),
    }
}

pub fn run(cfg: &Config) -> Result<Section> {
    let z = if cfg.quick { QUICK } else { FULL };
    let Sizes {
        pods,
        label_sets,
        policies: nps,
    } = z;
    eprintln!("netpol: {pods} pods, {label_sets} label sets, {nps} NetworkPolicies");
    let f = measure(cfg, z)?;
    let policies = summarize(&f.policies_ms);
    let full = summarize(&f.full_ms);
    let applied = summarize(&f.change_ms.iter().map(|c| c.0).collect::<Vec<_>>());
    let reached = summarize(&f.change_ms.iter().map(|c| c.1).collect::<Vec<_>>());
    let revert = summarize(&f.revert_ms);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "A real `enforcer agent` in a node namespace, driven through its API socket (what `enforcer policy apply -f` \
         sends); two real pods (netns) hold the addresses of two of the generated Pods. {pods} Pods in {label_sets} \
         label sets (10 pods each) over {NAMESPACES} Namespaces, {nps} NetworkPolicies (each selects one label set, \
         allows the next set from any namespace on a named and a numbered port; one in four also isolates egress by a \
         namespace matchExpressions). Times are wall-clock around the agent's `apply` request, which returns once the \
         whole set is parsed, compiled and installed (generation flipped): an upper bound of compile + install. Median \
         (min–max).\n"
    );
    let _ = writeln!(md, "| step | ms |\n|---|---|");
    let _ = writeln!(
        md,
        "| apply 10 Namespaces + {pods} Pods (no policy yet), once | {:.0} |",
        f.inventory_ms
    );
    let _ = writeln!(
        md,
        "| apply {nps} NetworkPolicies over the {pods} Pods ({} trials, each a changed policy set) | {} |",
        policies.n,
        policies.value(1)
    );
    let _ = writeln!(
        md,
        "| apply everything in one request ({:.1} MiB of YAML, {} trials) | {} |",
        f.yaml_mib,
        full.n,
        full.value(1)
    );
    let _ = writeln!(
        md,
        "| label change deny → allow: `apply` of the client's Pod returned ({} rounds) | {} |",
        applied.n,
        applied.value(1)
    );
    let _ = writeln!(
        md,
        "| label change deny → allow: first answered TCP connect (10 ms probes) | {} |",
        reached.value(1)
    );
    let _ = writeln!(
        md,
        "| label change allow → deny: `apply` returned (then one probe checks the deny) | {} |",
        revert.value(1)
    );
    Ok(Section {
        name: "netpol",
        title: "NetworkPolicy at scale through the agent (`netpol`)".into(),
        markdown: md,
        goals: vec![
            goal(
                &format!("{pods} pods / {label_sets} label sets / {nps} NetworkPolicies: compile + install < 1 s"),
                &policies,
                1_000.0,
                "apply of the policies, worst trial under the limit",
            ),
            goal(
                "a pod label change reaches the datapath < 100 ms",
                &reached,
                100.0,
                "apply of one Pod to the first answered connect, worst round under the limit",
            ),
        ],
        data: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field of `yaml` after `key: ` (first occurrence).
    fn field<'a>(yaml: &'a str, key: &str) -> &'a str {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_default()
    }

    #[test]
    fn a_relabel_keeps_the_pods_namespace_name_and_address() {
        for z in [FULL, QUICK] {
            relabel_keeps(z);
        }
    }

    fn relabel_keeps(z: Sizes) {
        let client = z.client();
        let before = pod_yaml(z, client, client % z.label_sets);
        let after = pod_yaml(z, client, ALLOWED_SET);
        assert_ne!(
            namespace_of_set(client % z.label_sets),
            namespace_of_set(ALLOWED_SET),
            "the two label sets belong to different namespaces, so this test can fail"
        );
        for key in ["name: ", "namespace: ", "podIP: "] {
            assert_eq!(field(&before, key), field(&after, key), "{key}");
        }
        assert_ne!(field(&before, "app: "), field(&after, "app: "));
    }
}
