//! The policy compiler: a pure function from the model to the entries of the datapath maps.
//!
//! Identities follow Cilium: each workload address gets the identity of its (namespace, labels,
//! named ports); CIDR peers get local identities. Because a CIDR peer may also match workload or node addresses, an identity is
//! really a *class*: (endpoint identity | host | world, longest CIDR prefix containing the address). With
//! all prefixes nested or disjoint, an address is inside `cidr` and outside every `except` exactly
//! when its longest prefix is, so every peer selector resolves to a set of identities.
//!
//! Policy entries are an LPM trie keyed by (slot, direction, subject, peer, protocol, port
//! prefix). For each (subject, direction, peer) the compiler writes the complete decision over
//! (protocol, port) — deny-wins, isolation, audit and enforce folded in — as nested prefixes, so
//! the datapath needs at most two lookups (the peer's own table, then the table for any peer)
//! whatever the number of rules. The table for any peer is the one most peers share (usually
//! that of the rules without peers), so only the peers whose decisions differ take entries.

mod decide;
mod numbering;
mod prefix;
mod tables;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use enforcer_common::{
    identity, IdentityValue, PolicyKeyData, PolicyValue, RateLimitConfig, IDF_HOST, IDF_LOCAL,
};
use ipnet::IpNet;

pub use self::decide::{port_blocks, PROTOCOLS};
pub use self::prefix::{addr_bits, Prefix, IPV4_MAPPED};
use self::tables::TableCompiler;
pub use super::rule::{RuleInfo, RuleLabels};
use super::{
    identity::{Identity, View},
    identity_ref::IdentityRef,
    rule::{PolicyId, RuleRef},
    Direction, NodeContext, Peer, PolicySet, RateLimit, RateScope,
};

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Host,
    World,
    Endpoint(Identity),
}

/// An identity: what the address is, and the longest CIDR peer prefix containing it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityClass {
    pub kind: Kind,
    pub class: Option<Prefix>,
}

impl fmt::Display for IdentityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Host => f.write_str("host"),
            Kind::World => f.write_str("world"),
            Kind::Endpoint(id) => write!(f, "{id}"),
        }?;
        match &self.class {
            Some(p) if self.kind == Kind::World => write!(f, " ({p})"),
            _ => Ok(()),
        }
    }
}

impl IdentityClass {
    /// The class as flow events name it.
    pub fn to_ref(&self) -> IdentityRef {
        match &self.kind {
            Kind::Host => IdentityRef::Host,
            Kind::World => IdentityRef::World {
                cidr: self.class.map(|p| p.to_net()),
            },
            Kind::Endpoint(id) => IdentityRef::Workload(id.to_string()),
        }
    }
}

/// One entry of the `POLICY` trie (the slot byte is set when it is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    pub prefix_len: u32,
    pub key: PolicyKeyData,
    pub value: PolicyValue,
}

/// Everything the datapath needs for one policy generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// Exact addresses (workloads, node) → identity.
    pub identities: Vec<(IpAddr, IdentityValue)>,
    /// CIDR classes of addresses that are neither workloads nor the node's.
    pub cidrs: Vec<(Prefix, IdentityValue)>,
    pub policy: Vec<PolicyEntry>,
    /// Rule ids, `rules[id - 1]`.
    pub rules: Vec<RuleInfo>,
    /// Identity → its class, for display.
    pub identity_classes: BTreeMap<u32, IdentityClass>,
}

impl Compiled {
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        id.checked_sub(1).and_then(|i| self.rules.get(i as usize))
    }

    /// The `RATE_LIMITS` entries: (rule id, limit) of every rate-limited rule. The compiler
    /// makes the bucket id of a rate-limited allow rule its rule id.
    pub fn rate_limits(&self) -> impl Iterator<Item = (u32, RateLimitConfig)> + '_ {
        self.rules
            .iter()
            .filter_map(|r| r.rate_limit.map(|l| (r.id, l)))
    }

    /// What identity number `id` stands for in this generation.
    pub fn identity_ref(&self, id: u32) -> IdentityRef {
        match id {
            identity::HOST => IdentityRef::Host,
            identity::WORLD => IdentityRef::World { cidr: None },
            _ => self
                .identity_classes
                .get(&id)
                .map_or(IdentityRef::Unknown(id), IdentityClass::to_ref),
        }
    }

    pub fn identity_name(&self, id: u32) -> String {
        self.identity_ref(id).to_string()
    }
}

/// Compile a policy set for a node.
pub fn compile(set: &PolicySet, ctx: &NodeContext) -> Compiled {
    let view = View::new(set);
    let prefixes = cidr_prefixes(&view);
    let (exact, ids) = assign_identities(&view, ctx, &prefixes);
    let mut out = Compiled {
        identities: exact
            .iter()
            .map(|(a, c, flags)| {
                let id = ids[c];
                (*a, IdentityValue { id, flags: *flags })
            })
            .collect(),
        cidrs: prefixes
            .iter()
            .map(|p| {
                let c = IdentityClass {
                    kind: Kind::World,
                    class: Some(*p),
                };
                (
                    *p,
                    IdentityValue {
                        id: ids[&c],
                        flags: 0,
                    },
                )
            })
            .collect(),
        identity_classes: ids.iter().map(|(c, id)| (*id, c.clone())).collect(),
        ..Compiled::default()
    };
    let rule_ids = assign_rule_ids(&view, &mut out.rules);
    let mut compiler = TableCompiler::new(&view, &ids, &rule_ids);
    for (class, subject) in &ids {
        if let Kind::Endpoint(identity) = &class.kind {
            compiler.subject(identity, *subject, &mut out);
        }
    }
    out
}

/// An exact address, its identity class and its flags.
type Exact = (IpAddr, IdentityClass, u32);

/// Identity classes of the exact addresses, and the id of every class.
fn assign_identities(
    view: &View<'_>,
    ctx: &NodeContext,
    prefixes: &[Prefix],
) -> (Vec<Exact>, BTreeMap<IdentityClass, u32>) {
    let class_of = |ip: IpAddr| {
        let a = addr_bits(ip);
        prefixes
            .iter()
            .filter(|p| p.contains_addr(a))
            .max_by_key(|p| p.len)
            .copied()
    };
    let mut exact: Vec<Exact> = Vec::new();
    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    for e in &view.endpoints {
        for a in e.addresses {
            if !seen.insert(*a) {
                continue;
            }
            let flags = if ctx.local_addresses.contains(a) {
                IDF_LOCAL
            } else {
                0
            };
            let class = IdentityClass {
                kind: Kind::Endpoint(e.identity.clone()),
                class: class_of(*a),
            };
            exact.push((*a, class, flags));
        }
    }
    // The node's addresses, and those of host-network pods, are `host`.
    for a in ctx.host_addresses.iter().chain(view.host_pod_addresses()) {
        if seen.insert(*a) {
            let class = IdentityClass {
                kind: Kind::Host,
                class: class_of(*a),
            };
            exact.push((*a, class, IDF_HOST));
        }
    }
    let ids = number_classes(&exact, prefixes);
    (exact, ids)
}

/// The id of every identity class: the reserved ones, then the classes of the exact addresses
/// and of the prefixes, each numbered by what it is (`numbering`).
fn number_classes(exact: &[Exact], prefixes: &[Prefix]) -> BTreeMap<IdentityClass, u32> {
    let mut classes: BTreeSet<IdentityClass> = exact.iter().map(|(_, c, _)| c.clone()).collect();
    classes.extend(prefixes.iter().map(|p| IdentityClass {
        kind: Kind::World,
        class: Some(*p),
    }));
    numbering::number_classes(classes)
}

/// Rule ids by (policy index in the view, section, rule index), in policy then document order.
pub type RuleIds = HashMap<(usize, &'static str, usize), u32>;

fn assign_rule_ids(view: &View<'_>, rules: &mut Vec<RuleInfo>) -> RuleIds {
    let mut ids = HashMap::new();
    for (index, p) in view.policies.iter().enumerate() {
        let policy = PolicyId {
            kind: p.kind,
            key: p.key.clone(),
        };
        for (section, i, rule) in p.policy.rules() {
            let id = next_rule_id(rules);
            ids.insert((index, section.key(), i), id);
            rules.push(RuleInfo {
                id,
                rule: RuleRef::Rule {
                    policy: policy.clone(),
                    section,
                    index: i,
                },
                labels: RuleLabels {
                    service: p.policy.service.clone(),
                    peers: peers_label(&rule.peers),
                },
                rate_limit: rule.rate_limit.as_ref().map(rate_limit_config),
            });
        }
    }
    ids
}

/// The `peers` label of a rule: its peers, comma-separated, `*` for any peer.
fn peers_label(peers: &[Peer]) -> String {
    if peers.is_empty() {
        return "*".to_string();
    }
    peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The datapath's form of a `rateLimit` (converted here, once per generation).
pub fn rate_limit_config(limit: &RateLimit) -> RateLimitConfig {
    RateLimitConfig::new(
        limit.packets_per_second.unwrap_or(0),
        limit.bytes_per_second.unwrap_or(0),
        limit.burst,
        limit.per == RateScope::Source,
    )
}

/// The rule of the default deny of `identity` in `dir`.
fn default_deny(id: u32, identity: String, dir: Direction) -> RuleInfo {
    RuleInfo {
        id,
        labels: RuleLabels {
            service: identity.clone(),
            peers: "*".to_string(),
        },
        rule: RuleRef::DefaultDeny {
            subject: identity,
            direction: dir,
        },
        rate_limit: None,
    }
}

fn next_rule_id(rules: &[RuleInfo]) -> u32 {
    u32::try_from(rules.len()).map_or(u32::MAX, |n| n + 1)
}

/// Every CIDR and except prefix named by any policy.
fn cidr_prefixes(view: &View<'_>) -> Vec<Prefix> {
    let mut out = BTreeSet::new();
    for p in &view.policies {
        for (_, _, rule) in p.policy.rules() {
            for peer in &rule.peers {
                if let Peer::Cidr { cidr, except } = peer {
                    out.insert(Prefix::from_net(cidr));
                    out.extend(except.iter().map(Prefix::from_net));
                }
            }
        }
    }
    // An IPv6 prefix such as `::/0` or `::/80` contains the IPv4-mapped space, but matches no
    // IPv4 address (rule 2; `IpNet::contains` is false across families). The IPv4 space as a
    // class of its own keeps IPv4 addresses out of such a prefix's class (the longest prefix
    // of an IPv4 address is then always an IPv4 one), in the compiler and in the datapath's
    // CIDR trie alike; `cidr_selects` never gives an IPv6 peer an IPv4 class.
    if out.iter().any(|p| !p.is_ipv4() && p.contains(&IPV4_MAPPED)) {
        out.insert(IPV4_MAPPED);
    }
    out.into_iter().collect()
}

/// Whether CIDR peer `{cidr, except}` selects identity class `c` (rule 2).
fn cidr_selects(cidr: &IpNet, except: &[IpNet], c: &IdentityClass) -> bool {
    c.class.is_some_and(|class| {
        // An IPv6 CIDR selects no IPv4 address, even one it contains in the mapped space.
        (matches!(cidr, IpNet::V4(_)) || !class.is_ipv4())
            && Prefix::from_net(cidr).contains(&class)
            && !except.iter().any(|e| Prefix::from_net(e).contains(&class))
    })
}
