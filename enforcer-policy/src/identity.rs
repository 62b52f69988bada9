//! What the documents say about identities, in the form `explain` and the compiler both read:
//! the endpoints (Workloads and Pods not on the host network) with their identity (namespace,
//! labels, named ports), the labels of every namespace, and every policy as a `FlowPolicy`
//! (a `NetworkPolicy` through its exact equivalent), with its kind and name.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::document::Kind;
use super::k8s::namespace::implicit_labels;
use super::labels::{check_label_key, Labels};
use super::model::{
    FlowPolicy, ObjectKey, Peer, Rule, ANY_SERVICE, DEFAULT_NAMESPACE, SERVICE_LABEL,
    SERVICE_LABEL_FALLBACK,
};
use super::named_port::{resolve_ports, NamedPort, ResolvedPorts};
use super::{NodeContext, PolicySet};

/// The labels whose value is an endpoint's service, tried in order: by default
/// `app.kubernetes.io/name`, then `app`. Configured with `--service-label KEY[,KEY...]` (agent
/// flag or `serviceLabel` in its config file, and the offline commands' flag). A Workload's
/// `spec.service` is its service whatever the keys; it is shown under the first key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceLabels(Vec<String>);

impl Default for ServiceLabels {
    fn default() -> Self {
        ServiceLabels(vec![
            SERVICE_LABEL.to_string(),
            SERVICE_LABEL_FALLBACK.to_string(),
        ])
    }
}

impl ServiceLabels {
    /// The service of an object with these labels: the value of the first key it has.
    pub fn service_of<'l>(&self, labels: &'l Labels) -> Option<&'l str> {
        self.0
            .iter()
            .find_map(|k| labels.get(k))
            .map(String::as_str)
    }

    /// The first key: the label a Workload's `spec.service` stands for.
    pub fn primary(&self) -> &str {
        &self.0[0]
    }
}

impl FromStr for ServiceLabels {
    type Err = String;

    /// `KEY[,KEY...]`: label keys, at least one, each valid.
    fn from_str(text: &str) -> Result<ServiceLabels, String> {
        let keys: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        if keys.is_empty() {
            return Err("the service label needs at least one label key".to_string());
        }
        for k in &keys {
            check_label_key(k).map_err(|e| format!("service label: {e}"))?;
        }
        Ok(ServiceLabels(keys))
    }
}

impl fmt::Display for ServiceLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl Serialize for ServiceLabels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceLabels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ServiceLabels, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The identity of an endpoint: one per distinct (namespace, labels, named ports), as Cilium
/// allocates them per label set (named ports are part of it, so that pods whose ports of one
/// name differ resolve them each to their own number).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
    /// The service: a Workload's `spec.service`, else the value of a service label
    /// ([`ServiceLabels`]).
    pub service: Option<String>,
}

impl Identity {
    /// The service, if the endpoint has one.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
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
    let keys = &set.service_labels;
    let mut endpoints = Vec::with_capacity(set.workloads.len() + set.pods.len());
    for w in set.workloads.values() {
        let labels = w.identity_labels(keys.primary());
        endpoints.push(Endpoint {
            key: w.key(),
            identity: Identity {
                namespace: w.namespace.clone(),
                service: w
                    .service
                    .clone()
                    .or_else(|| keys.service_of(&labels).map(str::to_string)),
                labels,
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
                service: keys.service_of(&p.labels).map(str::to_string),
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
