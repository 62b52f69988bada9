//! The policy compiler: a pure function from the model to the entries of the datapath maps.
//!
//! Identities follow Cilium: each workload address gets its service's identity; CIDR peers get
//! local identities. Because a CIDR peer may also match workload or node addresses, an identity is
//! really a *class*: (service | host | world, longest CIDR prefix containing the address). With
//! all prefixes nested or disjoint, an address is inside `cidr` and outside every `except` exactly
//! when its longest prefix is, so every peer selector resolves to a set of identities.
//!
//! Policy entries are an LPM trie keyed by (slot, direction, subject, peer, protocol, port
//! prefix). For each (subject, direction, peer) the compiler writes the complete decision over
//! (protocol, port) — deny-wins, isolation, audit and enforce folded in — as nested prefixes, so
//! the datapath needs at most two lookups (the peer's own table, then the table for any peer)
//! whatever the number of rules. The table for any peer is the one most peers share (usually
//! that of the rules without peers), so only the peers whose decisions differ take entries.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use enforcer_common::{
    identity, policy_key_data, IdentityValue, PolicyKeyData, PolicyValue, IDF_HOST, IDF_LOCAL,
    POLICY_KEY_FIXED_BITS, POLICY_KEY_PROTO_BITS, REASON_DEFAULT_DENY, REASON_NOT_ISOLATED,
    REASON_POLICY, VERDICT_ALLOW, VERDICT_DENY,
};
use ipnet::IpNet;

use super::{
    explain::rules_of, ports_match, Direction, FlowPolicy, Mode, NodeContext, Peer, PolicySet,
    RateLimit, Rule, ANY_SERVICE,
};

/// Protocols whose ports (or ICMP types) the trie distinguishes; any other protocol is decided
/// by the rules without ports.
pub const PROTOCOLS: [u8; 5] = [6, 17, 132, 1, 58];
/// A protocol number no port entry names, to evaluate "every other protocol".
const OTHER_PROTOCOL: u8 = 255;

/// An IP prefix in the 16-byte (IPv4-mapped) address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: u128,
    /// 0..=128, in the mapped space (an IPv4 /24 is 120).
    pub len: u8,
}

/// An address in the 16-byte form, as an integer.
pub fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Prefix {
    pub fn from_net(net: &IpNet) -> Prefix {
        let (addr, len) = match net {
            IpNet::V4(n) => (addr_bits(IpAddr::V4(n.network())), 96 + n.prefix_len()),
            IpNet::V6(n) => (addr_bits(IpAddr::V6(n.network())), n.prefix_len()),
        };
        Prefix {
            addr: addr & mask(len),
            len,
        }
    }

    pub fn contains_addr(&self, addr: u128) -> bool {
        (addr ^ self.addr) & mask(self.len) == 0
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }

    /// The 16 address bytes of the prefix.
    pub fn octets(&self) -> [u8; 16] {
        self.addr.to_be_bytes()
    }

    /// Whether the prefix lies in the IPv4 part of the mapped space (`::ffff:0:0/96`).
    pub fn is_ipv4(&self) -> bool {
        IPV4_MAPPED.contains(self)
    }
}

/// The IPv4 addresses in the 16-byte form (`::ffff:0:0/96`, i.e. `0.0.0.0/0`).
pub const IPV4_MAPPED: Prefix = Prefix {
    addr: 0xffff << 32,
    len: 96,
};

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Host,
    World,
    Workload(String),
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
            Kind::Workload(s) => f.write_str(s),
        }?;
        match &self.class {
            Some(p) if self.kind == Kind::World => write!(f, " ({p})"),
            _ => Ok(()),
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

/// What a rule id stands for (metrics and events name rules with it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleInfo {
    pub id: u32,
    /// The policy, or `None` for a default deny.
    pub policy: Option<String>,
    /// `section[index]`, or `service/direction` for a default deny.
    pub rule: String,
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// For a default deny: the isolated service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip)]
    pub rate_limit: Option<RateLimit>,
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

impl RuleInfo {
    /// The policy label of metrics and events: the policy's name, or `default-deny` for the
    /// default deny of an isolated service (whose `rule` is then `service/direction`).
    pub fn policy_name(&self) -> &str {
        self.policy.as_deref().unwrap_or("default-deny")
    }
}

impl Compiled {
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        id.checked_sub(1).and_then(|i| self.rules.get(i as usize))
    }

    pub fn identity_name(&self, id: u32) -> String {
        match id {
            identity::HOST => "host".into(),
            identity::WORLD => "world".into(),
            _ => self
                .identity_classes
                .get(&id)
                .map_or_else(|| format!("identity {id}"), ToString::to_string),
        }
    }
}

/// A rule as the compiler sees it.
struct RuleRef<'a> {
    id: u32,
    deny: bool,
    audit: bool,
    rule: &'a Rule,
    /// `None` = any peer.
    peers: Option<BTreeSet<u32>>,
}

/// A decision table: `(prefix_len, protocol, port, value)` entries of one (subject, direction,
/// peer).
type Table = Vec<(u32, u8, u16, PolicyValue)>;

/// Compile a policy set for a node.
pub fn compile(set: &PolicySet, ctx: &NodeContext) -> Compiled {
    let prefixes = cidr_prefixes(set);
    let (exact, ids) = assign_identities(set, ctx, &prefixes);
    let mut out = Compiled {
        identities: exact
            .iter()
            .map(|(a, c, flags)| {
                (
                    *a,
                    IdentityValue {
                        id: ids[c],
                        flags: *flags,
                    },
                )
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
    let rule_ids = assign_rule_ids(set, &mut out.rules);
    let mut by_service: HashMap<&str, Vec<&FlowPolicy>> = HashMap::new();
    for p in set.policies.values() {
        by_service.entry(p.service.as_str()).or_default().push(p);
    }
    let mut compiler = TableCompiler {
        by_service,
        peers: PeerIndex::new(&ids),
        all_ids: ids.values().copied().collect::<BTreeSet<u32>>(),
        rule_ids: &rule_ids,
        default_ids: BTreeMap::new(),
        cache: HashMap::new(),
    };
    for (class, subject) in &ids {
        if let Kind::Workload(service) = &class.kind {
            for dir in Direction::BOTH {
                compiler.subject(service, *subject, dir, &mut out);
            }
        }
    }
    out
}

/// Identity classes of the exact addresses, and the id of every class.
#[expect(clippy::type_complexity, reason = "a private helper's pair of results")]
fn assign_identities(
    set: &PolicySet,
    ctx: &NodeContext,
    prefixes: &[Prefix],
) -> (
    Vec<(IpAddr, IdentityClass, u32)>,
    BTreeMap<IdentityClass, u32>,
) {
    let class_of = |ip: IpAddr| {
        let a = addr_bits(ip);
        prefixes
            .iter()
            .filter(|p| p.contains_addr(a))
            .max_by_key(|p| p.len)
            .copied()
    };
    let mut exact: Vec<(IpAddr, IdentityClass, u32)> = Vec::new();
    for w in set.workloads.values() {
        for a in &w.addresses {
            let flags = if ctx.local_addresses.contains(a) {
                IDF_LOCAL
            } else {
                0
            };
            let class = IdentityClass {
                kind: Kind::Workload(w.service.clone()),
                class: class_of(*a),
            };
            exact.push((*a, class, flags));
        }
    }
    for a in &ctx.host_addresses {
        if !exact.iter().any(|(e, _, _)| e == a) {
            exact.push((
                *a,
                IdentityClass {
                    kind: Kind::Host,
                    class: class_of(*a),
                },
                IDF_HOST,
            ));
        }
    }
    let mut classes: BTreeSet<IdentityClass> = exact.iter().map(|(_, c, _)| c.clone()).collect();
    classes.extend(prefixes.iter().map(|p| IdentityClass {
        kind: Kind::World,
        class: Some(*p),
    }));
    let mut ids = BTreeMap::from([
        (
            IdentityClass {
                kind: Kind::Host,
                class: None,
            },
            identity::HOST,
        ),
        (
            IdentityClass {
                kind: Kind::World,
                class: None,
            },
            identity::WORLD,
        ),
    ]);
    let mut next = identity::FIRST_DYNAMIC;
    for c in classes {
        ids.entry(c).or_insert_with(|| {
            next += 1;
            next - 1
        });
    }
    (exact, ids)
}

/// Rule ids, in policy then document order.
fn assign_rule_ids<'a>(
    set: &'a PolicySet,
    rules: &mut Vec<RuleInfo>,
) -> HashMap<(&'a str, &'static str, usize), u32> {
    let mut ids = HashMap::new();
    for p in set.policies.values() {
        for (section, i, rule) in p.rules() {
            let id = next_rule_id(rules);
            ids.insert((p.name.as_str(), section.key(), i), id);
            rules.push(RuleInfo {
                id,
                policy: Some(p.name.clone()),
                rule: format!("{}[{i}]", section.key()),
                verdict: if section.is_deny() { "deny" } else { "allow" },
                service: None,
                rate_limit: rule.rate_limit,
            });
        }
    }
    ids
}

/// Compiles the tables of each subject, sharing identical tables between peers.
struct TableCompiler<'a> {
    /// Policies by their `service` (`"*"` included), each list in name order.
    by_service: HashMap<&'a str, Vec<&'a FlowPolicy>>,
    peers: PeerIndex<'a>,
    /// Every identity an address can have on this node.
    all_ids: BTreeSet<u32>,
    rule_ids: &'a HashMap<(&'a str, &'static str, usize), u32>,
    default_ids: BTreeMap<(String, Direction), u32>,
    cache: HashMap<(String, Direction, Vec<usize>), Table>,
}

impl<'a> TableCompiler<'a> {
    fn resolve(&self, peers: &[Peer]) -> Option<BTreeSet<u32>> {
        if peers.is_empty() {
            return None;
        }
        let mut out = BTreeSet::new();
        for peer in peers {
            self.peers.select(peer, &mut out);
        }
        Some(out)
    }

    /// The entries of `subject` (an identity of `service`) in direction `dir`.
    /// The policies that apply to `service` (its own and `"*"`'s), in name order as `explain`
    /// sees them, without scanning every policy for every subject.
    fn policies_for(&self, service: &str) -> Vec<&'a FlowPolicy> {
        let own = self.by_service.get(service).map_or(&[][..], Vec::as_slice);
        let any = if service == ANY_SERVICE {
            &[][..]
        } else {
            self.by_service
                .get(ANY_SERVICE)
                .map_or(&[][..], Vec::as_slice)
        };
        let mut out: Vec<&'a FlowPolicy> = own.iter().chain(any).copied().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn subject(&mut self, service: &str, subject: u32, dir: Direction, out: &mut Compiled) {
        let policies = self.policies_for(service);
        let isolated_enforce = policies
            .iter()
            .any(|p| p.mode == Mode::Enforce && p.isolates(dir));
        let isolated_all = policies.iter().any(|p| p.isolates(dir));
        let mut rules: Vec<RuleRef> = Vec::new();
        for p in &policies {
            for section in [dir.deny_section(), dir.allow_section()] {
                for (i, rule) in rules_of(p, section).iter().enumerate() {
                    rules.push(RuleRef {
                        id: self.rule_ids[&(p.name.as_str(), section.key(), i)],
                        deny: section.is_deny(),
                        audit: p.mode == Mode::Audit,
                        rule,
                        peers: self.resolve(&rule.peers),
                    });
                }
            }
        }
        if rules.is_empty() && !isolated_all {
            return;
        }
        let default_id = if isolated_all {
            *self
                .default_ids
                .entry((service.to_string(), dir))
                .or_insert_with(|| {
                    let id = next_rule_id(&out.rules);
                    out.rules.push(RuleInfo {
                        id,
                        policy: None,
                        rule: format!("{service}/{}", dir.as_str()),
                        verdict: "deny",
                        service: Some(service.to_string()),
                        rate_limit: None,
                    });
                    id
                })
        } else {
            0
        };
        let iso = (isolated_enforce, isolated_all);
        self.tables(service, dir, subject, &rules, (iso, default_id), out);
    }

    /// Writes the tables of `subject` over `rules`: the one for any peer, and the peers' own.
    fn tables(
        &mut self,
        service: &str,
        dir: Direction,
        subject: u32,
        rules: &[RuleRef],
        (iso, default_id): ((bool, bool), u32),
        out: &mut Compiled,
    ) {
        // The table for any peer: rules without peers.
        let any_rules: Vec<usize> = (0..rules.len())
            .filter(|i| rules[*i].peers.is_none())
            .collect();
        // The rules that apply to each peer some rule names.
        let named: BTreeSet<u32> = rules
            .iter()
            .filter_map(|r| r.peers.as_ref())
            .flatten()
            .copied()
            .collect();
        let selections: BTreeMap<u32, Vec<usize>> = named
            .iter()
            .map(|peer| {
                let selected = (0..rules.len())
                    .filter(|i| rules[*i].peers.as_ref().is_none_or(|s| s.contains(peer)))
                    .collect();
                (*peer, selected)
            })
            .collect();
        // Scale: the table stored for "any peer" is normally the table of the rules without
        // peers, which every identity no rule names uses. But a rule naming most identities
        // (e.g. `from: [{service: "*"}]` in a `"*"` policy) then needs one table per (subject,
        // named peer): N² entries for N services (a million for 1 000, beyond the map's
        // capacity). So when it writes fewer entries, the table most peers use becomes the "any
        // peer" one, and the identities that differ (host, world, ...) get tables of their own.
        let mut users: BTreeMap<&Vec<usize>, usize> = BTreeMap::new();
        for selected in selections.values() {
            *users.entry(selected).or_default() += 1;
        }
        *users.entry(&any_rules).or_default() += self.all_ids.len() - named.len();
        let groups: Vec<(&Vec<usize>, usize, Table)> = users
            .into_iter()
            .map(|(selected, n)| {
                let t = self.table(service, dir, rules, selected.clone(), iso, default_id);
                (selected, n, t)
            })
            .collect();
        let any_table = self.table(service, dir, rules, any_rules.clone(), iso, default_id);
        // The entries written with `base` as the "any peer" table (`roots`: a peer's own table
        // needs a root entry, see below).
        let cost = |base: &Table, roots: bool| {
            base.len()
                + groups
                    .iter()
                    .filter(|(_, _, t)| t != base)
                    .map(|(_, n, t)| n * (t.len() + usize::from(roots && !has_root(t))))
                    .sum::<usize>()
        };
        let base = groups
            .iter()
            .filter(|(selected, _, _)| **selected != any_rules)
            .max_by_key(|(_, n, _)| *n)
            .filter(|(_, _, t)| cost(t, true) < cost(&any_table, false))
            .map(|(_, _, t)| t.clone());
        let Some(base_table) = base else {
            push_table(&mut out.policy, dir, subject, identity::ANY, &any_table);
            // Tables of the peers some rule names, where they differ.
            for (peer, selected) in selections {
                let t = self.table(service, dir, rules, selected, iso, default_id);
                if t != any_table {
                    push_table(&mut out.policy, dir, subject, peer, &t);
                }
            }
            return;
        };
        // The tables of the peers that differ from the "any peer" one. A peer's own table must
        // never miss: the datapath would fall back to the "any peer" table, which here is not
        // made of a subset of the peer's rules.
        let own: BTreeMap<&Vec<usize>, Table> = groups
            .iter()
            .filter(|(_, _, t)| *t != base_table)
            .map(|(selected, _, t)| {
                let mut t = t.clone();
                if !has_root(&t) {
                    t.insert(0, (POLICY_KEY_FIXED_BITS, 0, 0, MISS));
                }
                (*selected, t)
            })
            .collect();
        push_table(&mut out.policy, dir, subject, identity::ANY, &base_table);
        for (peer, selected) in &selections {
            if let Some(t) = own.get(selected) {
                push_table(&mut out.policy, dir, subject, *peer, t);
            }
        }
        if let Some(t) = own.get(&any_rules) {
            for peer in self.all_ids.difference(&named) {
                push_table(&mut out.policy, dir, subject, *peer, t);
            }
        }
    }

    fn table(
        &mut self,
        service: &str,
        dir: Direction,
        rules: &[RuleRef],
        selected: Vec<usize>,
        iso: (bool, bool),
        default_id: u32,
    ) -> Table {
        self.cache
            .entry((service.to_string(), dir, selected))
            .or_insert_with_key(|(_, _, selected)| {
                let rs: Vec<&RuleRef> = selected.iter().map(|i| &rules[*i]).collect();
                decision_table(&rs, iso, default_id)
            })
            .clone()
    }
}

/// The identities a peer selector can select, indexed so that resolving a peer does not scan
/// every identity (with thousands of rules and identities, that scan dominated compile time).
/// `select` still decides with `selects`, on the candidates only.
struct PeerIndex<'a> {
    /// Workload identities by service.
    by_service: HashMap<&'a str, Vec<(&'a IdentityClass, u32)>>,
    /// Identities with a CIDR class, sorted by the class prefix's address.
    by_prefix: Vec<(Prefix, &'a IdentityClass, u32)>,
}

impl<'a> PeerIndex<'a> {
    fn new(ids: &'a BTreeMap<IdentityClass, u32>) -> Self {
        let mut by_service: HashMap<&str, Vec<(&IdentityClass, u32)>> = HashMap::new();
        let mut by_prefix = Vec::new();
        for (c, id) in ids {
            if let Kind::Workload(service) = &c.kind {
                by_service.entry(service).or_default().push((c, *id));
            }
            if let Some(p) = c.class {
                by_prefix.push((p, c, *id));
            }
        }
        by_prefix.sort_by_key(|(p, _, _)| p.addr);
        PeerIndex {
            by_service,
            by_prefix,
        }
    }

    /// Adds the identities `peer` selects to `out`.
    fn select(&self, peer: &Peer, out: &mut BTreeSet<u32>) {
        match peer {
            Peer::Service(name) if name == ANY_SERVICE => {
                out.extend(self.by_service.values().flatten().map(|(_, id)| *id));
            }
            Peer::Service(name) => {
                out.extend(
                    self.by_service
                        .get(name.as_str())
                        .into_iter()
                        .flatten()
                        .map(|(_, id)| *id),
                );
            }
            Peer::Cidr { cidr, .. } => {
                // A class inside the CIDR has its address in the CIDR's address range.
                let net = Prefix::from_net(cidr);
                let last = net.addr | !mask(net.len);
                let start = self
                    .by_prefix
                    .partition_point(|(p, _, _)| p.addr < net.addr);
                out.extend(
                    self.by_prefix[start..]
                        .iter()
                        .take_while(|(p, _, _)| p.addr <= last)
                        .filter(|(_, c, _)| selects(peer, c))
                        .map(|(_, _, id)| *id),
                );
            }
        }
    }
}

/// Whether a table has an entry for every protocol and port (it never misses).
fn has_root(table: &Table) -> bool {
    table.iter().any(|(len, ..)| *len == POLICY_KEY_FIXED_BITS)
}

fn next_rule_id(rules: &[RuleInfo]) -> u32 {
    u32::try_from(rules.len()).map_or(u32::MAX, |n| n + 1)
}

fn push_table(out: &mut Vec<PolicyEntry>, dir: Direction, subject: u32, peer: u32, table: &Table) {
    out.extend(
        table
            .iter()
            .map(|(prefix_len, proto, port, value)| PolicyEntry {
                prefix_len: *prefix_len,
                key: policy_key_data(0, dir.code(), subject, peer, *proto, *port),
                value: *value,
            }),
    );
}

/// Every CIDR and except prefix named by any policy.
fn cidr_prefixes(set: &PolicySet) -> Vec<Prefix> {
    let mut out = BTreeSet::new();
    for p in set.policies.values() {
        for (_, _, rule) in p.rules() {
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
    // CIDR trie alike; `selects` never gives an IPv6 peer an IPv4 class.
    if out.iter().any(|p| !p.is_ipv4() && p.contains(&IPV4_MAPPED)) {
        out.insert(IPV4_MAPPED);
    }
    out.into_iter().collect()
}

/// Whether peer selector `peer` selects identity class `c` (rule 2).
fn selects(peer: &Peer, c: &IdentityClass) -> bool {
    match peer {
        Peer::Service(name) => {
            matches!(&c.kind, Kind::Workload(s) if name == ANY_SERVICE || name == s)
        }
        Peer::Cidr { cidr, except } => c.class.is_some_and(|class| {
            // An IPv6 CIDR selects no IPv4 address, even one it contains in the mapped space.
            (matches!(cidr, IpNet::V4(_)) || !class.is_ipv4())
                && Prefix::from_net(cidr).contains(&class)
                && !except.iter().any(|e| Prefix::from_net(e).contains(&class))
        }),
    }
}

/// The value of a lookup that finds nothing: not isolated, nothing denies.
const MISS: PolicyValue = PolicyValue {
    rule: 0,
    audit_rule: 0,
    ratelimit: 0,
    verdict: VERDICT_ALLOW,
    audit_verdict: VERDICT_ALLOW,
    reason: REASON_NOT_ISOLATED,
    audit_reason: REASON_NOT_ISOLATED,
};

/// Decide one (protocol, port) point for one mode (`with_audit`: audit policies count too).
fn eval(
    rules: &[&RuleRef],
    proto: u8,
    port: u16,
    with_audit: bool,
    isolated: bool,
    default_id: u32,
) -> (u8, u32, u8, u32) {
    let applies =
        |r: &&&RuleRef| (with_audit || !r.audit) && ports_match(&r.rule.ports, proto, port);
    if let Some(r) = rules.iter().filter(|r| r.deny).find(applies) {
        return (VERDICT_DENY, r.id, REASON_POLICY, 0);
    }
    if !isolated {
        return (VERDICT_ALLOW, 0, REASON_NOT_ISOLATED, 0);
    }
    if let Some(r) = rules.iter().filter(|r| !r.deny).find(applies) {
        let bucket = if r.rule.rate_limit.is_some() { r.id } else { 0 };
        return (VERDICT_ALLOW, r.id, REASON_POLICY, bucket);
    }
    (VERDICT_DENY, default_id, REASON_DEFAULT_DENY, 0)
}

fn value_at(
    rules: &[&RuleRef],
    proto: u8,
    port: u16,
    iso: (bool, bool),
    default_id: u32,
) -> PolicyValue {
    let (verdict, rule, reason, ratelimit) = eval(rules, proto, port, false, iso.0, default_id);
    let (audit_verdict, audit_rule, audit_reason, _) =
        eval(rules, proto, port, true, iso.1, default_id);
    PolicyValue {
        rule,
        audit_rule,
        ratelimit,
        verdict,
        audit_verdict,
        reason,
        audit_reason,
    }
}

/// The trie entries `(prefix_len, protocol, port, value)` of one (subject, direction, peer).
fn decision_table(rules: &[&RuleRef], iso: (bool, bool), default_id: u32) -> Table {
    let mut out = Vec::new();
    let root = value_at(rules, OTHER_PROTOCOL, 0, iso, default_id);
    if root != MISS {
        out.push((POLICY_KEY_FIXED_BITS, 0, 0, root));
    }
    for proto in PROTOCOLS {
        // Elementary port intervals: every range start and end + 1 of a matching port entry.
        let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65_536]);
        for r in rules {
            for spec in &r.rule.ports {
                if super::protocol_matches(spec.protocol, proto) && spec.protocol.has_ports() {
                    let (lo, hi) = spec.range();
                    cuts.insert(u32::from(lo));
                    cuts.insert(u32::from(hi) + 1);
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut intervals: Vec<(u32, u32, PolicyValue)> = Vec::new();
        for w in cuts.windows(2) {
            let port = u16::try_from(w[0]).unwrap_or(u16::MAX);
            let v = value_at(rules, proto, port, iso, default_id);
            match intervals.last_mut() {
                Some(last) if last.2 == v => last.1 = w[1] - 1,
                _ => intervals.push((w[0], w[1] - 1, v)),
            }
        }
        // The most common value becomes the protocol entry; the rest are port prefixes.
        let mut coverage: Vec<(PolicyValue, u32)> = Vec::new();
        for (lo, hi, v) in &intervals {
            match coverage.iter_mut().find(|(c, _)| c == v) {
                Some(c) => c.1 += hi - lo + 1,
                None => coverage.push((*v, hi - lo + 1)),
            }
        }
        let base = coverage
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(root, |(v, _)| *v);
        if base != root {
            out.push((POLICY_KEY_PROTO_BITS, proto, 0, base));
        }
        for (lo, hi, v) in intervals {
            if v != base {
                for (start, bits) in port_blocks(lo, hi) {
                    out.push((POLICY_KEY_PROTO_BITS + 16 - bits, proto, start, v));
                }
            }
        }
    }
    out
}

/// Split the inclusive port range `[lo, hi]` into aligned power-of-two blocks
/// `(start, log2(size))`.
pub fn port_blocks(lo: u32, hi: u32) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        let mut size: u32 = if start == 0 {
            1 << 16
        } else {
            start & start.wrapping_neg()
        };
        while start + size - 1 > hi {
            size >>= 1;
        }
        out.push((
            u16::try_from(start).unwrap_or(u16::MAX),
            size.trailing_zeros(),
        ));
        start += size;
    }
    out
}
