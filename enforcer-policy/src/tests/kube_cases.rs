//! The property tests over Kubernetes inputs: random namespaces, pods and workloads with labels
//! and named ports, `NetworkPolicies` and selector `FlowPolicies`:
//!
//! - the compiled entries decide every flow as `explain` does (with the same attribution);
//! - `explain` gives the same verdict when every `NetworkPolicy` is replaced by its `FlowPolicy`
//!   conversion (`enforcer policy convert`);
//! - the documents survive their canonical YAML (serialize, parse back).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{
    check_entries, compare, describe, net, run_property, sampled_choices, Datapath, Rng, CIDRS,
    PORTS, WORLD,
};
use crate::{
    compile, explain,
    k8s::{
        EgressRule, IngressRule, IntOrString, IpBlock, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec, PolicyType,
    },
    labels::{LabelSelector, Labels, Operator, Requirement},
    parse::parse_documents,
    Document, Flow, FlowPolicy, Mode, NamedPort, Namespace, NetworkPolicy, NodeContext, Peer,
    PolicySet, PortName, PortSpec, Protocol, Rule, Source, Verdict, Workload,
};

const NAMESPACES: [&str; 3] = ["n0", "n1", "n2"];
const APPS: [&str; 3] = ["web", "db", "api"];
const TIERS: [&str; 2] = ["front", "back"];
/// Named ports: each name with two possible numbers (pods with the same labels may differ).
const NAMED: [(&str, Protocol, [u16; 2]); 3] = [
    ("http", Protocol::Tcp, [80, 8080]),
    ("dns", Protocol::Udp, [53, 5353]),
    ("metrics", Protocol::Tcp, [9090, 80]),
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn gen_labels(rng: &mut Rng) -> Labels {
    let mut l = Labels::new();
    if rng.chance(85) {
        l.insert("app".into(), (*rng.pick(&APPS)).into());
    }
    if rng.chance(50) {
        l.insert("tier".into(), (*rng.pick(&TIERS)).into());
    }
    l
}

fn gen_selector(rng: &mut Rng, keys: &[(&str, &[&str])]) -> LabelSelector {
    let mut s = LabelSelector::default();
    if rng.chance(25) {
        return s;
    }
    let (key, values) = *rng.pick(keys);
    if rng.chance(50) {
        s.match_labels
            .insert(key.into(), (*rng.pick(values)).into());
    }
    if rng.chance(50) || s.match_labels.is_empty() {
        let (key, values) = *rng.pick(keys);
        let operator = *rng.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let values = match operator {
            Operator::In | Operator::NotIn => {
                let mut v: Vec<String> = vec![(*rng.pick(values)).into()];
                if rng.chance(40) {
                    v.push((*rng.pick(values)).into());
                }
                v
            }
            _ => Vec::new(),
        };
        s.match_expressions.push(Requirement {
            key: key.into(),
            operator,
            values,
        });
    }
    let _ = key;
    s
}

const POD_KEYS: &[(&str, &[&str])] = &[("app", &APPS), ("tier", &TIERS)];
const NS_KEYS: &[(&str, &[&str])] = &[
    ("team", &["a", "b"]),
    ("kubernetes.io/metadata.name", &NAMESPACES),
];

/// Endpoints: workloads and pods in random namespaces; their addresses.
fn gen_endpoints(rng: &mut Rng, set: &mut PolicySet) -> Vec<IpAddr> {
    let mut used = Vec::new();
    for i in 0..rng.range(3, 8) {
        let namespace = (*rng.pick(&NAMESPACES)).to_string();
        let host = u8::try_from(i + 1).expect("small");
        let mut addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 1, host))];
        if rng.chance(40) {
            addresses.push(IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                1,
                0,
                0,
                0,
                0,
                0,
                host.into(),
            )));
        }
        let mut ports: Vec<NamedPort> = Vec::new();
        for (name, protocol, numbers) in NAMED {
            if rng.chance(60) {
                ports.push(NamedPort {
                    name: name.into(),
                    port: *rng.pick(&numbers),
                    protocol,
                });
            }
        }
        let labels = gen_labels(rng);
        let source = Source::default();
        let doc = if rng.chance(30) {
            Document::Workload(Workload {
                name: format!("w{i}"),
                namespace,
                // A Workload is named by its service or by its labels.
                service: labels
                    .get("app")
                    .cloned()
                    .filter(|_| labels.is_empty() || rng.chance(50))
                    .or_else(|| labels.is_empty().then(|| "web".to_string())),
                labels,
                addresses: addresses.clone(),
                ports,
                source,
            })
        } else {
            let host_network = rng.chance(8);
            let without_ip = !host_network && rng.chance(8);
            if without_ip {
                addresses.clear();
            }
            Document::Pod(crate::Pod {
                name: format!("p{i}"),
                namespace,
                labels,
                host_network,
                ports,
                addresses: addresses.clone(),
                source,
            })
        };
        set.insert(doc).expect("unique");
        used.extend(addresses);
    }
    used
}

fn gen_peer(rng: &mut Rng, addresses: &[IpAddr]) -> NetworkPolicyPeer {
    let mut peer = NetworkPolicyPeer {
        pod_selector: None,
        namespace_selector: None,
        ip_block: None,
    };
    match rng.below(4) {
        0 => peer.pod_selector = Some(gen_selector(rng, POD_KEYS)),
        1 => peer.namespace_selector = Some(gen_selector(rng, NS_KEYS)),
        2 => {
            peer.pod_selector = Some(gen_selector(rng, POD_KEYS));
            peer.namespace_selector = Some(gen_selector(rng, NS_KEYS));
        }
        _ => {
            let cidr = if rng.chance(50) || addresses.is_empty() {
                net(rng.pick::<&str>(CIDRS))
            } else {
                let a = *rng.pick(addresses);
                let len = if a.is_ipv4() {
                    rng.range(16, 32)
                } else {
                    rng.range(64, 128)
                };
                IpNet::new(a, u8::try_from(len).expect("len"))
                    .expect("net")
                    .trunc()
            };
            let except = addresses
                .iter()
                .filter(|a| cidr.contains(*a) && rng.chance(30))
                .map(|a| IpNet::from(*a))
                .filter(|e| e.prefix_len() > cidr.prefix_len())
                .collect();
            peer.ip_block = Some(IpBlock { cidr, except });
        }
    }
    peer
}

fn gen_port(rng: &mut Rng) -> NetworkPolicyPort {
    let protocol = rng
        .chance(70)
        .then(|| (*rng.pick(&["TCP", "UDP", "SCTP"])).to_string());
    let (port, end_port) = match rng.below(4) {
        0 => (None, None),
        1 => (Some(IntOrString::String(rng.pick(&NAMED).0.into())), None),
        2 => {
            let p = *rng.pick(PORTS);
            (Some(IntOrString::Int(p.max(1))), None)
        }
        _ => {
            let p = (*rng.pick(PORTS)).max(1);
            (Some(IntOrString::Int(p)), Some(p.max(*rng.pick(PORTS))))
        }
    };
    NetworkPolicyPort {
        protocol,
        port,
        end_port,
    }
}

fn gen_rule_parts(
    rng: &mut Rng,
    addresses: &[IpAddr],
) -> (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
) {
    let peers = rng.chance(75).then(|| {
        (0..rng.range(0, 2))
            .map(|_| gen_peer(rng, addresses))
            .collect()
    });
    let ports = rng
        .chance(65)
        .then(|| (0..rng.range(0, 2)).map(|_| gen_port(rng)).collect());
    (peers, ports)
}

fn gen_netpol(rng: &mut Rng, i: usize, addresses: &[IpAddr]) -> NetworkPolicy {
    let policy_types = match rng.below(5) {
        0 => Some(vec![PolicyType::Ingress]),
        1 => Some(vec![PolicyType::Egress]),
        2 => Some(vec![PolicyType::Ingress, PolicyType::Egress]),
        _ => None,
    };
    let ingress = rng.chance(70).then(|| {
        (0..rng.range(0, 2))
            .map(|_| {
                let (from, ports) = gen_rule_parts(rng, addresses);
                IngressRule { from, ports }
            })
            .collect()
    });
    let egress = rng.chance(50).then(|| {
        (0..rng.range(0, 2))
            .map(|_| {
                let (to, ports) = gen_rule_parts(rng, addresses);
                EgressRule { to, ports }
            })
            .collect()
    });
    NetworkPolicy {
        name: format!("np{i}"),
        namespace: (*rng.pick(&NAMESPACES)).into(),
        spec: NetworkPolicySpec {
            pod_selector: gen_selector(rng, POD_KEYS),
            policy_types,
            ingress,
            egress,
        },
        source: Source::default(),
    }
}

/// A `FlowPolicy` with selectors (and a deny rule now and then).
fn gen_flow_policy(rng: &mut Rng, i: usize, addresses: &[IpAddr]) -> FlowPolicy {
    let np = gen_netpol(rng, i, addresses);
    let mut p = np.to_flow_policy();
    p.name = format!("fp{i}");
    if rng.chance(40) {
        p.namespace = None;
    }
    if rng.chance(20) {
        p.mode = Mode::Audit;
    }
    if rng.chance(35) {
        let pods = Some(gen_selector(rng, POD_KEYS));
        let ports = if rng.chance(50) {
            vec![PortSpec {
                protocol: Protocol::Tcp,
                port: None,
                end_port: None,
                name: "http".parse::<PortName>().ok(),
            }]
        } else {
            Vec::new()
        };
        let deny = Rule {
            peers: vec![Peer::Selector {
                pods,
                namespaces: None,
            }],
            ports,
            rate_limit: None,
            line: 0,
        };
        if rng.chance(50) {
            p.ingress_deny.push(deny);
        } else {
            p.egress_deny.push(deny);
        }
    }
    p
}

struct KubeCase {
    set: PolicySet,
    ctx: NodeContext,
    addresses: Vec<IpAddr>,
    ports: Vec<u16>,
}

fn gen_case(rng: &mut Rng) -> KubeCase {
    let mut set = PolicySet::new();
    for ns in NAMESPACES {
        if rng.chance(70) {
            let team = *rng.pick(&["a", "b"]);
            set.insert(Document::Namespace(Namespace {
                name: ns.into(),
                labels: labels(&[("team", team)]),
                source: Source::default(),
            }))
            .expect("unique");
        }
    }
    let endpoints = gen_endpoints(rng, &mut set);
    let mut ctx = NodeContext::default();
    ctx.host_addresses.insert("10.0.1.254".parse().expect("ip"));
    ctx.local_addresses = endpoints
        .iter()
        .copied()
        .filter(|_| rng.chance(50))
        .collect();
    for i in 0..rng.range(0, 4) {
        set.insert(gen_netpol(rng, i, &endpoints).into())
            .expect("unique");
    }
    for i in 0..rng.range(0, 2) {
        set.insert(gen_flow_policy(rng, i, &endpoints).into())
            .expect("unique");
    }
    let mut addresses = endpoints;
    addresses.extend(ctx.host_addresses.iter().copied());
    addresses.extend(
        set.pods
            .values()
            .filter(|p| p.host_network)
            .flat_map(|p| p.addresses.clone()),
    );
    addresses.extend(
        WORLD
            .iter()
            .take(8)
            .map(|a| a.parse::<IpAddr>().expect("ip")),
    );
    addresses.push("fd00:1::100".parse().expect("ip"));
    addresses.sort();
    addresses.dedup();
    let mut ports = vec![1, 53, 80, 5353, 8080, 9090, 65535];
    ports.extend(PORTS);
    KubeCase {
        set,
        ctx,
        addresses,
        ports,
    }
}

fn gen_flow(rng: &mut Rng, case: &KubeCase) -> Flow {
    let src = *rng.pick(&case.addresses);
    let same: Vec<IpAddr> = case
        .addresses
        .iter()
        .copied()
        .filter(|a| a.is_ipv6() == src.is_ipv6())
        .collect();
    let dst = *rng.pick(&same);
    let icmp = if src.is_ipv4() { 1 } else { 58 };
    Flow {
        src,
        dst,
        protocol: *rng.pick(&[6, 6, 17, 132, icmp]),
        port: *rng.pick(&case.ports),
    }
}

/// The set with every `NetworkPolicy` replaced by its `FlowPolicy` conversion.
fn converted(set: &PolicySet) -> PolicySet {
    let mut out = set.clone();
    out.network_policies.clear();
    for p in set.network_policies.values() {
        let f = p.to_flow_policy();
        out.policies.insert(f.key(), f);
    }
    out
}

/// The set read back from its canonical YAML.
fn reparsed(set: &PolicySet) -> PolicySet {
    let yaml = Document::to_yaml_stream(&set.documents()).expect("yaml");
    let docs = parse_documents("case.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    PolicySet::from_documents(docs).expect("set")
}

/// One case: a Kubernetes set and 150 flows from `choices`, judged by the compiled entries, the
/// `FlowPolicy` conversion and the set read back from YAML against `explain`.
fn property(choices: &[u64], verdicts: &RefCell<BTreeMap<Verdict, usize>>) -> Result<(), String> {
    let mut rng = Rng::new(choices);
    let case = gen_case(&mut rng);
    let compiled = compile(&case.set, &case.ctx);
    check_entries(&compiled)?;
    let dp = Datapath::new(&compiled);
    let conv = converted(&case.set);
    let back = reparsed(&case.set);
    for _ in 0..150 {
        let f = gen_flow(&mut rng, &case);
        let e = explain(&case.set, &case.ctx, &f);
        *verdicts.borrow_mut().entry(e.verdict).or_default() += 1;
        let described = || describe(&case.set, &case.ctx, &f, &e);
        compare(&dp, &f, &e).map_err(|diff| format!("{diff}\n{}", described()))?;
        let c = explain(&conv, &case.ctx, &f);
        if c.verdict != e.verdict {
            return Err(format!("converted {c:?}\n{}", described()));
        }
        let b = explain(&back, &case.ctx, &f);
        if b != e {
            return Err(format!("round trip: {b:?}\n{}", described()));
        }
    }
    Ok(())
}

#[test]
fn kubernetes_inputs_compile_convert_and_round_trip_like_explain() {
    let verdicts = RefCell::new(BTreeMap::new());
    let choices = proptest::collection::vec(proptest::prelude::any::<u64>(), 1200);
    run_property(0x6b75_6265_0000_0013, 600, &choices, |choices| {
        property(choices, &verdicts)
    });
    let verdicts = verdicts.into_inner();
    eprintln!("Kubernetes property: {verdicts:?}");
    assert!(verdicts.values().all(|n| *n > 1000), "{verdicts:?}");
}

/// `namespaces` × 20 apps × 10 pods, one label set per app, and one `NetworkPolicy` per app
/// (ingress from two other apps of its namespace and from a team of namespaces on a port, egress
/// to one app on a named port). With 50 namespaces: 10 000 pods in 1 000 label sets with 1 000
/// `NetworkPolicies`.
fn scale_set(namespaces: usize) -> PolicySet {
    let mut set = PolicySet::new();
    for n in 0..namespaces {
        let team = if n % 2 == 0 { "a" } else { "b" };
        set.insert(Document::Namespace(Namespace {
            name: format!("ns{n}"),
            labels: labels(&[("team", team)]),
            source: Source::default(),
        }))
        .expect("unique");
        for a in 0..20 {
            for p in 0..10 {
                let i = (n * 20 + a) * 10 + p;
                let [_, b, c, d] = u32::try_from(i).expect("small").to_be_bytes();
                set.insert(Document::Pod(crate::Pod {
                    name: format!("app{a}-{p}"),
                    namespace: format!("ns{n}"),
                    labels: labels(&[("app", &format!("app{a}"))]),
                    host_network: false,
                    ports: vec![NamedPort {
                        name: "http".into(),
                        port: 8080,
                        protocol: Protocol::Tcp,
                    }],
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(10, b, c, d))],
                    source: Source::default(),
                }))
                .expect("unique");
            }
            let peer = |app: usize| NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::of(labels(&[("app", &format!("app{app}"))]))),
                namespace_selector: None,
                ip_block: None,
            };
            let spec = NetworkPolicySpec {
                pod_selector: LabelSelector::of(labels(&[("app", &format!("app{a}"))])),
                policy_types: Some(vec![PolicyType::Ingress, PolicyType::Egress]),
                ingress: Some(vec![
                    IngressRule {
                        from: Some(vec![peer((a + 1) % 20), peer((a + 2) % 20)]),
                        ports: Some(vec![NetworkPolicyPort {
                            protocol: None,
                            port: Some(IntOrString::Int(8080)),
                            end_port: None,
                        }]),
                    },
                    IngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            pod_selector: None,
                            namespace_selector: Some(LabelSelector::of(labels(&[("team", "a")]))),
                            ip_block: None,
                        }]),
                        ports: Some(vec![NetworkPolicyPort {
                            protocol: Some("TCP".into()),
                            port: Some(IntOrString::Int(9000 + u16::try_from(a).expect("small"))),
                            end_port: None,
                        }]),
                    },
                ]),
                egress: Some(vec![EgressRule {
                    to: Some(vec![peer((a + 3) % 20)]),
                    ports: Some(vec![NetworkPolicyPort {
                        protocol: None,
                        port: Some(IntOrString::String("http".into())),
                        end_port: None,
                    }]),
                }]),
            };
            set.insert(Document::NetworkPolicy(NetworkPolicy {
                name: format!("app{a}"),
                namespace: format!("ns{n}"),
                spec,
                source: Source::default(),
            }))
            .expect("unique");
        }
    }
    set
}

/// The full size (10 000 pods, 1 000 label sets, 1 000 `NetworkPolicies`) in release builds
/// (`cargo test --release -p enforcer --lib network_policies_at_scale -- --nocapture` prints the
/// compile time); a tenth of it in debug builds, where it would take minutes.
#[test]
fn network_policies_at_scale() {
    let namespaces = if cfg!(debug_assertions) { 5 } else { 50 };
    let set = scale_set(namespaces);
    let ctx = NodeContext::default();
    let start = std::time::Instant::now();
    let compiled = compile(&set, &ctx);
    let took = start.elapsed();
    eprintln!(
        "{} pods, {} NetworkPolicies: {} identities, {} policy entries, compiled in {took:?}",
        set.pods.len(),
        set.network_policies.len(),
        compiled.identity_classes.len(),
        compiled.policy.len()
    );
    // One identity per label set (plus host and world).
    assert_eq!(compiled.identity_classes.len(), namespaces * 20 + 2);
    check_entries(&compiled).expect("entries");
    let dp = Datapath::new(&compiled);
    let choices = sampled_choices(300 * 3);
    let mut rng = Rng::new(&choices);
    let pods: Vec<IpAddr> = set.pods.values().map(|p| p.addresses[0]).collect();
    let view = crate::identity::View::new(&set);
    for _ in 0..300 {
        let f = Flow {
            src: *rng.pick(&pods),
            dst: *rng.pick(&pods),
            protocol: 6,
            port: *rng.pick(&[8080, 9003, 9004, 80]),
        };
        let e = crate::explain::explain_in(&view, &ctx, &f);
        compare(&dp, &f, &e).unwrap_or_else(|d| panic!("{d}"));
    }
}
