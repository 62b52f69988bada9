//! The tables of each subject identity: for each direction, the decision table for any peer and
//! the tables of the peers whose decision differs, sharing identical tables between peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use enforcer_common::{identity, PolicyKey, POLICY_KEY_FIXED_BITS};

use super::decide::{decision_table, Decider, Table, MISS};
use super::{
    cidr_selects, default_deny, next_rule_id, Compiled, IdentityClass, Kind, PolicyEntry, Prefix,
    RuleIds,
};
use crate::{
    identity::{Identity, View},
    named_port::{resolve_ports, NamedPort, ResolvedPorts},
    ports::{PortName, PortSpec, Protocol},
    Direction, Mode, Peer, ANY_SERVICE,
};

/// The rules a table is made of (indices into the subject's rules), and the named ports of the
/// destination when rules resolve them per peer (egress rules naming ports): an index into
/// [`TableCompiler::signatures`].
type Sel = (Vec<usize>, Option<usize>);

/// The rule selections of one subject and direction.
struct Selections {
    /// The rules that apply to any peer.
    any: Sel,
    /// The peers some rule names (or that resolve a named port).
    named: BTreeSet<u32>,
    /// The rules that apply to each named peer.
    by_peer: BTreeMap<u32, Sel>,
}

/// The table most peers share, if writing it as the "any peer" table takes fewer entries than
/// writing the table of the rules without peers (`roots`: a peer's own table then needs a root
/// entry, see `push_shared`).
fn shared_base(groups: &[(&Sel, usize, Table)], any_sel: &Sel, any_table: &Table) -> Option<Table> {
    let cost = |base: &Table, roots: bool| {
        base.len()
            + groups
                .iter()
                .filter(|(_, _, t)| t != base)
                .map(|(_, n, t)| n * (t.len() + usize::from(roots && !has_root(t))))
                .sum::<usize>()
    };
    groups
        .iter()
        .filter(|(selected, _, _)| *selected != any_sel)
        .max_by_key(|(_, n, _)| *n)
        .filter(|(_, _, t)| cost(t, true) < cost(any_table, false))
        .map(|(_, _, t)| t.clone())
}

/// A rule as the table compiler sees it.
struct RuleRef<'a> {
    decider: Decider,
    /// The ports as written, for rules resolved per peer (`late`).
    raw_ports: &'a [PortSpec],
    late: bool,
    /// `None` = any peer.
    peers: Option<BTreeSet<u32>>,
}

/// Compiles the tables of each subject, sharing identical tables between peers.
pub struct TableCompiler<'v, 'a> {
    view: &'v View<'a>,
    /// Policy indices by namespace (`None`: cluster-wide) and service (`"*"` included), in view
    /// order: the policies that may select an identity are found without testing every policy.
    by_scope: HashMap<(Option<&'v str>, &'v str), Vec<usize>>,
    peers: PeerIndex<'v>,
    /// Every identity an address can have on this node.
    all_ids: BTreeSet<u32>,
    /// Named ports of every endpoint identity.
    endpoint_ports: BTreeMap<u32, &'v [NamedPort]>,
    rule_ids: &'v RuleIds,
    /// Peers of each rule, resolved once: (policy, section, rule) → identities.
    resolved: HashMap<(usize, &'static str, usize), Option<BTreeSet<u32>>>,
    default_ids: BTreeMap<(String, Direction), u32>,
    /// Subject identities, numbered (cache keys).
    subjects: HashMap<&'v Identity, usize>,
    /// Distinct named-port lists of destinations, numbered (cache keys).
    signatures: Vec<Vec<NamedPort>>,
    signature_ids: HashMap<Vec<NamedPort>, usize>,
    cache: HashMap<(usize, Direction, Sel), Table>,
}

impl<'v, 'a> TableCompiler<'v, 'a> {
    pub fn new(
        view: &'v View<'a>,
        ids: &'v BTreeMap<IdentityClass, u32>,
        rule_ids: &'v RuleIds,
    ) -> Self {
        let mut by_scope: HashMap<(Option<&str>, &str), Vec<usize>> = HashMap::new();
        for (i, p) in view.policies.iter().enumerate() {
            by_scope
                .entry((p.policy.namespace.as_deref(), p.policy.service.as_str()))
                .or_default()
                .push(i);
        }
        let endpoint_ports = ids
            .iter()
            .filter_map(|(c, id)| match &c.kind {
                Kind::Endpoint(identity) => Some((*id, &identity.ports[..])),
                _ => None,
            })
            .collect();
        TableCompiler {
            view,
            by_scope,
            peers: PeerIndex::new(ids),
            all_ids: ids.values().copied().collect(),
            endpoint_ports,
            rule_ids,
            resolved: HashMap::new(),
            default_ids: BTreeMap::new(),
            subjects: HashMap::new(),
            signatures: Vec::new(),
            signature_ids: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// The policies that apply to `identity`, in view order as `explain` sees them, testing
    /// only those of its namespace (or cluster-wide) for its service (or `"*"`).
    fn policies_for(&self, identity: &Identity) -> Vec<usize> {
        let namespaces = [None, Some(identity.namespace.as_str())];
        let services = [Some(ANY_SERVICE), identity.service()];
        let mut out: Vec<usize> = namespaces
            .iter()
            .flat_map(|ns| services.iter().flatten().map(move |s| (*ns, *s)))
            .filter_map(|scope| self.by_scope.get(&scope))
            .flatten()
            .copied()
            .filter(|i| self.view.selects(&self.view.policies[*i].policy, identity))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The identities the peers of rule `(policy, section, i)` select (`None`: any peer).
    fn peers_of(
        &mut self,
        policy: usize,
        section: &'static str,
        i: usize,
        peers: &[Peer],
    ) -> Option<BTreeSet<u32>> {
        if peers.is_empty() {
            return None;
        }
        let view = self.view;
        let index = &self.peers;
        self.resolved
            .entry((policy, section, i))
            .or_insert_with(|| {
                let ns = view.policies[policy].policy.namespace.as_deref();
                let mut out = BTreeSet::new();
                for peer in peers {
                    index.select(view, peer, ns, &mut out);
                }
                Some(out)
            })
            .clone()
    }

    /// Writes the entries of `subject` (an identity of `identity`) in both directions.
    pub fn subject(&mut self, identity: &'v Identity, subject: u32, out: &mut Compiled) {
        let next = self.subjects.len();
        let key = *self.subjects.entry(identity).or_insert(next);
        let policies = self.policies_for(identity);
        for dir in Direction::BOTH {
            let view = self.view;
            let refs: Vec<_> = policies.iter().map(|i| (*i, &view.policies[*i])).collect();
            let isolated_enforce = refs
                .iter()
                .any(|(_, p)| p.policy.mode == Mode::Enforce && p.policy.isolates(dir));
            let isolated_all = refs.iter().any(|(_, p)| p.policy.isolates(dir));
            let mut rules: Vec<RuleRef> = Vec::new();
            for (index, p) in &refs {
                for section in [dir.deny_section(), dir.allow_section()] {
                    for (i, rule) in p.policy.section(section).iter().enumerate() {
                        let late =
                            dir == Direction::Egress && rule.ports.iter().any(|s| s.name.is_some());
                        // Ingress: the destination is the subject; egress without names: none.
                        let ports = match dir {
                            Direction::Ingress => resolve_ports(&rule.ports, Some(&identity.ports)),
                            Direction::Egress if late => ResolvedPorts::All,
                            Direction::Egress => resolve_ports(&rule.ports, None),
                        };
                        rules.push(RuleRef {
                            decider: Decider {
                                id: self.rule_ids[&(*index, section.key(), i)],
                                deny: section.is_deny(),
                                audit: p.policy.mode == Mode::Audit,
                                ports,
                                rate_limited: rule.rate_limit.is_some(),
                            },
                            raw_ports: &rule.ports,
                            late,
                            peers: self.peers_of(*index, section.key(), i, &rule.peers),
                        });
                    }
                }
            }
            if rules.is_empty() && !isolated_all {
                continue;
            }
            let default_id = if isolated_all {
                self.default_id(identity, dir, out)
            } else {
                0
            };
            let iso = ((isolated_enforce, isolated_all), default_id);
            self.tables(key, dir, subject, &rules, iso, out);
        }
    }

    /// The rule id of the default deny of `identity`'s name in `dir`.
    fn default_id(&mut self, identity: &Identity, dir: Direction, out: &mut Compiled) -> u32 {
        let name = identity.to_string();
        *self
            .default_ids
            .entry((name.clone(), dir))
            .or_insert_with(|| {
                let id = next_rule_id(&out.rules);
                out.rules.push(default_deny(id, name, dir));
                id
            })
    }

    /// Writes the tables of `subject` over `rules`: the one for any peer, and the peers' own.
    fn tables(
        &mut self,
        key: usize,
        dir: Direction,
        subject: u32,
        rules: &[RuleRef],
        (iso, default_id): ((bool, bool), u32),
        out: &mut Compiled,
    ) {
        let selection = self.selections(rules);
        // Scale: the table stored for "any peer" is normally the table of the rules without
        // peers, which every identity no rule names uses. But a rule naming most identities
        // (e.g. `from: [{service: "*"}]` in a `"*"` policy) then needs one table per (subject,
        // named peer): N² entries for N services (a million for 1 000, beyond the map's
        // capacity). So when it writes fewer entries, the table most peers use becomes the "any
        // peer" one, and the identities that differ (host, world, ...) get tables of their own.
        let mut users: BTreeMap<&Sel, usize> = BTreeMap::new();
        for selected in selection.by_peer.values() {
            *users.entry(selected).or_default() += 1;
        }
        *users.entry(&selection.any).or_default() += self.all_ids.len() - selection.named.len();
        let groups: Vec<(&Sel, usize, Table)> = users
            .into_iter()
            .map(|(selected, n)| {
                let t = self.table(key, dir, rules, selected, iso, default_id);
                (selected, n, t)
            })
            .collect();
        let any_table = self.table(key, dir, rules, &selection.any, iso, default_id);
        let Some(base_table) = shared_base(&groups, &selection.any, &any_table) else {
            push_table(&mut out.policy, dir, subject, identity::ANY, &any_table);
            // Tables of the peers some rule names, where they differ.
            for (peer, selected) in &selection.by_peer {
                let t = self.table(key, dir, rules, selected, iso, default_id);
                if t != any_table {
                    push_table(&mut out.policy, dir, subject, *peer, &t);
                }
            }
            return;
        };
        self.push_shared(
            (dir, subject),
            &base_table,
            &groups,
            &selection,
            &mut out.policy,
        );
    }

    /// The selection for any peer, the peers some rule names, and each named peer's selection.
    fn selections(&mut self, rules: &[RuleRef]) -> Selections {
        // The table for any peer: rules without peers (named ports then match nothing: any
        // peer is not an endpoint, endpoints all get their own selection below).
        let any: Sel = (
            (0..rules.len())
                .filter(|i| rules[*i].peers.is_none())
                .collect(),
            None,
        );
        // The rules that apply to each peer some rule names.
        let mut named: BTreeSet<u32> = rules
            .iter()
            .filter_map(|r| r.peers.as_ref())
            .flatten()
            .copied()
            .collect();
        // Rules naming ports resolve them on each destination: the endpoints that have one of
        // those names get a selection of their own.
        let signatures = self.signatures_for(rules);
        named.extend(signatures.keys().copied());
        let by_peer: BTreeMap<u32, Sel> = named
            .iter()
            .map(|peer| {
                let selected = (0..rules.len())
                    .filter(|i| rules[*i].peers.as_ref().is_none_or(|s| s.contains(peer)))
                    .collect();
                (*peer, (selected, signatures.get(peer).copied()))
            })
            .collect();
        Selections {
            any,
            named,
            by_peer,
        }
    }

    /// Writes `base` as the "any peer" table, and the tables of the peers that differ from it.
    /// A peer's own table must never miss: the datapath would fall back to the "any peer"
    /// table, which here is not made of a subset of the peer's rules.
    fn push_shared(
        &self,
        (dir, subject): (Direction, u32),
        base: &Table,
        groups: &[(&Sel, usize, Table)],
        selection: &Selections,
        policy: &mut Vec<PolicyEntry>,
    ) {
        let own: BTreeMap<&Sel, Table> = groups
            .iter()
            .filter(|(_, _, t)| t != base)
            .map(|(selected, _, t)| {
                let mut t = t.clone();
                if !has_root(&t) {
                    t.insert(0, (POLICY_KEY_FIXED_BITS, 0, 0, MISS));
                }
                (*selected, t)
            })
            .collect();
        push_table(policy, dir, subject, identity::ANY, base);
        for (peer, selected) in &selection.by_peer {
            if let Some(t) = own.get(selected) {
                push_table(policy, dir, subject, *peer, t);
            }
        }
        if let Some(t) = own.get(&selection.any) {
            for peer in self.all_ids.difference(&selection.named) {
                push_table(policy, dir, subject, *peer, t);
            }
        }
    }

    /// For rules resolving named ports per destination: the endpoint identities that have one of
    /// the names (and protocols) they use, and the number of their relevant named ports.
    fn signatures_for(&mut self, rules: &[RuleRef]) -> BTreeMap<u32, usize> {
        let names: Vec<(PortName, Protocol)> = rules
            .iter()
            .filter(|r| r.late)
            .flat_map(|r| r.raw_ports.iter())
            .filter_map(|s| Some((s.name?, s.protocol)))
            .collect();
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return out;
        }
        let endpoints: Vec<(u32, &'v [NamedPort])> = self
            .endpoint_ports
            .iter()
            .map(|(id, p)| (*id, *p))
            .collect();
        for (id, ports) in endpoints {
            let relevant: Vec<NamedPort> = ports
                .iter()
                .filter(|p| {
                    names
                        .iter()
                        .any(|(n, pr)| n.as_str() == p.name && *pr == p.protocol)
                })
                .cloned()
                .collect();
            if relevant.is_empty() {
                continue;
            }
            let next = self.signatures.len();
            let sig = *self.signature_ids.entry(relevant.clone()).or_insert(next);
            if sig == next {
                self.signatures.push(relevant);
            }
            out.insert(id, sig);
        }
        out
    }

    fn table(
        &mut self,
        key: usize,
        dir: Direction,
        rules: &[RuleRef],
        sel: &Sel,
        iso: (bool, bool),
        default_id: u32,
    ) -> Table {
        if let Some(t) = self.cache.get(&(key, dir, sel.clone())) {
            return t.clone();
        }
        let deciders: Vec<Decider> = sel
            .0
            .iter()
            .map(|i| {
                let r = &rules[*i];
                let mut d = r.decider.clone();
                if r.late {
                    let ports = sel.1.map(|i| &self.signatures[i][..]);
                    d.ports = resolve_ports(r.raw_ports, ports);
                }
                d
            })
            .collect();
        let refs: Vec<&Decider> = deciders.iter().collect();
        let t = decision_table(&refs, iso, default_id);
        self.cache.insert((key, dir, sel.clone()), t.clone());
        t
    }
}

/// The identities a peer selector can select, indexed so that resolving a peer does not scan
/// every identity (with thousands of rules and identities, that scan dominated compile time).
struct PeerIndex<'v> {
    /// Endpoint identities: class, identity, id.
    endpoints: Vec<(&'v Identity, u32)>,
    /// Indices into `endpoints` by namespace.
    by_namespace: BTreeMap<&'v str, Vec<usize>>,
    /// Endpoint identities by service.
    by_service: HashMap<&'v str, Vec<u32>>,
    /// Identities with a CIDR class, sorted by the class prefix's address.
    by_prefix: Vec<(Prefix, &'v IdentityClass, u32)>,
}

impl<'v> PeerIndex<'v> {
    fn new(ids: &'v BTreeMap<IdentityClass, u32>) -> Self {
        let mut index = PeerIndex {
            endpoints: Vec::new(),
            by_namespace: BTreeMap::new(),
            by_service: HashMap::new(),
            by_prefix: Vec::new(),
        };
        for (c, id) in ids {
            if let Kind::Endpoint(identity) = &c.kind {
                index
                    .by_namespace
                    .entry(identity.namespace.as_str())
                    .or_default()
                    .push(index.endpoints.len());
                index.endpoints.push((identity, *id));
                if let Some(service) = identity.service() {
                    index.by_service.entry(service).or_default().push(*id);
                }
            }
            if let Some(p) = c.class {
                index.by_prefix.push((p, c, *id));
            }
        }
        index.by_prefix.sort_by_key(|(p, _, _)| p.addr);
        index
    }

    /// Adds the identities `peer` (of a policy in namespace `policy_ns`) selects to `out`.
    fn select(
        &self,
        view: &View<'_>,
        peer: &Peer,
        policy_ns: Option<&str>,
        out: &mut BTreeSet<u32>,
    ) {
        match peer {
            Peer::Service(name) if name == ANY_SERVICE => {
                out.extend(self.endpoints.iter().map(|(_, id)| *id));
            }
            Peer::Service(name) => {
                out.extend(self.by_service.get(name.as_str()).into_iter().flatten());
            }
            Peer::Selector { pods, namespaces } => {
                let candidates: Vec<usize> = match (namespaces, policy_ns) {
                    (Some(sel), _) => self
                        .by_namespace
                        .iter()
                        .filter(|(ns, _)| sel.matches(&view.namespace_labels(ns)))
                        .flat_map(|(_, v)| v.iter().copied())
                        .collect(),
                    (None, Some(ns)) => self.by_namespace.get(ns).cloned().unwrap_or_default(),
                    (None, None) => (0..self.endpoints.len()).collect(),
                };
                out.extend(
                    candidates
                        .into_iter()
                        .map(|i| self.endpoints[i])
                        .filter(|(identity, _)| {
                            pods.as_ref().is_none_or(|s| s.matches(&identity.labels))
                        })
                        .map(|(_, id)| id),
                );
            }
            Peer::Cidr { cidr, except } => {
                // A class inside the CIDR has its address in the CIDR's address range.
                let net = Prefix::from_net(cidr);
                let last = net.addr | !super::prefix::mask(net.len);
                let start = self
                    .by_prefix
                    .partition_point(|(p, _, _)| p.addr < net.addr);
                out.extend(
                    self.by_prefix[start..]
                        .iter()
                        .take_while(|(p, _, _)| p.addr <= last)
                        .filter(|(_, c, _)| cidr_selects(cidr, except, c))
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

fn push_table(out: &mut Vec<PolicyEntry>, dir: Direction, subject: u32, peer: u32, table: &Table) {
    out.extend(table.iter().map(|(prefix_len, proto, port, value)| {
        PolicyEntry {
            prefix_len: *prefix_len,
            key: PolicyKey {
                slot: 0,
                direction: dir.code(),
                subject,
                peer,
                protocol: *proto,
                port: *port,
            }
            .encode(),
            value: *value,
        }
    }));
}
