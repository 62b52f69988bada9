//! What the documents say about identities, in the form `explain` and the compiler both read:
//! the endpoints (Workloads and Pods not on the host network) with their identity (namespace,
//! labels, named ports), the labels of every namespace, and every policy as a `FlowPolicy`
//! (a `NetworkPolicy` through its exact equivalent), with its kind and name.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use super::document::Kind;
use super::k8s::namespace::implicit_labels;
use super::labels::Labels;
use super::model::{service_of, FlowPolicy, ObjectKey, Peer, Rule, ANY_SERVICE, DEFAULT_NAMESPACE};
use super::named_port::{resolve_ports, NamedPort, ResolvedPorts};
use super::{NodeContext, PolicySet};

/// The identity of an endpoint: one per distinct (namespace, labels, named ports), as Cilium
/// allocates them per label set (named ports are part of it, so that pods whose ports of one
/// name differ resolve them each to their own number).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
}

impl Identity {
    /// The service: the value of the service label.
    pub fn service(&self) -> Option<&str> {
        service_of(&self.labels)
    }
}

impl fmt::Display for Identity {
    /// `SERVICE` (default namespace), `NAMESPACE/SERVICE`, or the labels `{k=v,...}` for an
    /// endpoint without a service.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace != DEFAULT_NAMESPACE {
            write!(f, "{}/", self.namespace)?;
        }
        if let Some(s) = self.service() {
            return f.write_str(s);
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "{{{}}}", labels.join(","))
    }
}

/// A Workload, or a Pod with its own addresses.
#[derive(Clone, Debug)]
pub struct Endpoint<'a> {
    pub key: ObjectKey,
    pub identity: Identity,
    pub addresses: &'a [IpAddr],
}

/// A policy of either kind, as the engine evaluates it.
#[derive(Clone, Debug)]
pub struct PolicyRef<'a> {
    pub kind: Kind,
    pub key: ObjectKey,
    pub policy: Cow<'a, FlowPolicy>,
}

impl PolicyRef<'_> {
    /// The name the policy is reported by: `NAME`, or `NAMESPACE/NAME` for namespaced ones.
    pub fn display(&self) -> String {
        self.key.to_string()
    }
}

/// The documents of a set, indexed for evaluation.
pub struct View<'a> {
    pub endpoints: Vec<Endpoint<'a>>,
    by_address: HashMap<IpAddr, usize>,
    /// Addresses of host-network pods (identity `host`).
    host_pods: BTreeSet<IpAddr>,
    /// Labels of every namespace (declared or holding an endpoint), the implicit one included.
    namespaces: BTreeMap<String, Labels>,
    /// Every policy: `FlowPolicies` then `NetworkPolicies`, each by namespace and name.
    pub policies: Vec<PolicyRef<'a>>,
}

/// What an address is (rule 1).
#[derive(Debug, Clone, Copy)]
pub enum Party<'v, 'a> {
    Endpoint(&'v Endpoint<'a>),
    Host,
    World,
}

/// The endpoints of a set (Workloads, then Pods), and the addresses of host-network pods.
fn endpoints_of(set: &PolicySet) -> (Vec<Endpoint<'_>>, BTreeSet<IpAddr>) {
    let mut endpoints = Vec::with_capacity(set.workloads.len() + set.pods.len());
    for w in set.workloads.values() {
        endpoints.push(Endpoint {
            key: w.key(),
            identity: Identity {
                namespace: w.namespace.clone(),
                labels: w.identity_labels(),
                ports: sorted(&w.ports),
            },
            addresses: &w.addresses,
        });
    }
    let mut host_pods = BTreeSet::new();
    for p in set.pods.values() {
        if p.host_network {
            host_pods.extend(p.addresses.iter().copied());
            continue;
        }
        endpoints.push(Endpoint {
            key: p.key(),
            identity: Identity {
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                ports: sorted(&p.ports),
            },
            addresses: &p.addresses,
        });
    }
    (endpoints, host_pods)
}

impl<'a> View<'a> {
    pub fn new(set: &'a PolicySet) -> View<'a> {
        let (endpoints, host_pods) = endpoints_of(set);
        let mut by_address = HashMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            for a in e.addresses {
                by_address.entry(*a).or_insert(i);
            }
        }
        let mut namespaces: BTreeMap<String, Labels> = set
            .namespaces
            .values()
            .map(|n| (n.name.clone(), n.effective_labels()))
            .collect();
        for e in &endpoints {
            let ns = &e.identity.namespace;
            if !namespaces.contains_key(ns) {
                namespaces.insert(ns.clone(), implicit_labels(ns, &Labels::new()));
            }
        }
        let flow = set.policies.values().map(|p| PolicyRef {
            kind: Kind::FlowPolicy,
            key: p.key(),
            policy: Cow::Borrowed(p),
        });
        let net = set.network_policies.values().map(|p| PolicyRef {
            kind: Kind::NetworkPolicy,
            key: p.key(),
            policy: Cow::Owned(p.to_flow_policy()),
        });
        View {
            endpoints,
            by_address,
            host_pods,
            namespaces,
            policies: flow.chain(net).collect(),
        }
    }

    /// What `addr` is: an endpoint's address, the node's (or a host-network pod's), or world.
    pub fn classify(&self, ctx: &NodeContext, addr: IpAddr) -> Party<'_, 'a> {
        if let Some(i) = self.by_address.get(&addr) {
            Party::Endpoint(&self.endpoints[*i])
        } else if ctx.host_addresses.contains(&addr) || self.host_pods.contains(&addr) {
            Party::Host
        } else {
            Party::World
        }
    }

    /// The addresses of host-network pods.
    pub fn host_pod_addresses(&self) -> &BTreeSet<IpAddr> {
        &self.host_pods
    }

    /// The labels of namespace `ns` (only the implicit name label if nothing declares it).
    pub fn namespace_labels(&self, ns: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(ns) {
            Some(l) => Cow::Borrowed(l),
            None => Cow::Owned(implicit_labels(ns, &Labels::new())),
        }
    }

    /// Whether `policy` applies to endpoints of identity `id`.
    pub fn selects(&self, policy: &FlowPolicy, id: &Identity) -> bool {
        policy
            .namespace
            .as_ref()
            .is_none_or(|ns| *ns == id.namespace)
            && (policy.service == ANY_SERVICE || id.service() == Some(policy.service.as_str()))
            && policy
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&id.labels))
    }

    /// Whether a peer of a policy in namespace `policy_ns` selects endpoints of identity `id`
    /// (CIDR peers are decided on addresses, not identities: false here).
    pub fn peer_selects(&self, peer: &Peer, policy_ns: Option<&str>, id: &Identity) -> bool {
        match peer {
            Peer::Service(name) => name == ANY_SERVICE || id.service() == Some(name.as_str()),
            Peer::Cidr { .. } => false,
            Peer::Selector { pods, namespaces } => {
                let ns_ok = match namespaces {
                    Some(sel) => sel.matches(&self.namespace_labels(&id.namespace)),
                    None => policy_ns.is_none_or(|ns| ns == id.namespace),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&id.labels))
            }
        }
    }

    /// Whether `rule` (of a policy in `policy_ns`) matches a flow whose peer is `party` at
    /// `addr`, to protocol number `protocol` and `port` of a destination with named ports
    /// `dst_ports` (`None`: not an endpoint).
    pub fn rule_matches(
        &self,
        rule: &Rule,
        policy_ns: Option<&str>,
        (party, addr): (Party<'_, '_>, IpAddr),
        dst_ports: Option<&[NamedPort]>,
        (protocol, port): (u8, u16),
    ) -> bool {
        let peer_ok = rule.peers.is_empty()
            || rule.peers.iter().any(|p| match (p, party) {
                (Peer::Cidr { .. }, _) => p.cidr_contains(addr),
                (_, Party::Endpoint(e)) => self.peer_selects(p, policy_ns, &e.identity),
                _ => false,
            });
        peer_ok && resolved(rule, dst_ports).matches(protocol, port)
    }
}

/// A rule's ports resolved for a destination.
pub fn resolved(rule: &Rule, dst_ports: Option<&[NamedPort]>) -> ResolvedPorts {
    resolve_ports(&rule.ports, dst_ports)
}

fn sorted(ports: &[NamedPort]) -> Vec<NamedPort> {
    let mut out = ports.to_vec();
    out.sort();
    out
}
