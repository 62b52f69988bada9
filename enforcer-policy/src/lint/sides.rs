//! The decision of every side (subject identity, direction, peer class) at every (protocol,
//! port interval), with the engine's semantics (`explain`): deny wins, then isolation, then the
//! allow rules; audit policies count only in the audit decision. Each point keeps the rules that
//! match it, so that a caller can decide it again without some of them.

use enforcer_common::Protocol as Ip;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use super::super::identity::{resolved, Endpoint, Party, View};
use super::super::named_port::NamedPort;
use super::super::{Direction, Mode, Peer, Rule, Section};
use super::classes::{Classes, PeerClass};

/// A rule of the view: its policy's index in `View::policies`, section and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub policy: usize,
    pub section: Section,
    pub index: usize,
}

/// A rule matching a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cand {
    pub key: RuleKey,
    pub deny: bool,
    pub audit: bool,
    pub rate_limited: bool,
}

/// The decision of a point in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// The deciding rule (`None`: not isolated, or default deny).
    pub by: Option<RuleKey>,
    /// The rate-limited allow rule whose bucket the flow takes.
    pub bucket: Option<RuleKey>,
}

/// Decides a point from the rules matching it, in order, skipping the rules `skip` names.
pub fn decide(
    m: &[Cand],
    isolated: bool,
    with_audit: bool,
    skip: impl Fn(&RuleKey) -> bool,
) -> Decision {
    let live = |c: &&Cand| (with_audit || !c.audit) && !skip(&c.key);
    if let Some(c) = m.iter().filter(|c| c.deny).find(live) {
        return Decision {
            allow: false,
            by: Some(c.key),
            bucket: None,
        };
    }
    if !isolated {
        return Decision {
            allow: true,
            by: None,
            bucket: None,
        };
    }
    match m.iter().filter(|c| !c.deny).find(live) {
        Some(c) => Decision {
            allow: true,
            by: Some(c.key),
            bucket: c.rate_limited.then_some(c.key),
        },
        None => Decision {
            allow: false,
            by: None,
            bucket: None,
        },
    }
}

/// Protocols with ports, then ICMP (both numbers) and a protocol no rule names.
const PORTED: [u8; 3] = [Ip::Tcp as u8, Ip::Udp as u8, Ip::Sctp as u8];
const PORTLESS: [u8; 3] = [Ip::Icmp as u8, Ip::Icmpv6 as u8, 255];

/// A (protocol, port interval) of one side with the rules matching it.
#[derive(Debug, Clone)]
pub struct Point {
    pub protocol: u8,
    pub low: u16,
    pub high: u16,
    pub matching: Vec<Cand>,
}

/// One side: subject, direction, peer class, isolation (enforce-only, with audit), points.
pub struct Side<'s, 'v, 'a> {
    pub subject: &'v Endpoint<'a>,
    pub dir: Direction,
    pub peer: &'s PeerClass<'v, 'a>,
    pub isolated: (bool, bool),
    pub points: Rc<Vec<Point>>,
}

impl Side<'_, '_, '_> {
    /// Both decisions of a point: (enforce-only, with audit policies).
    pub fn decisions(&self, p: &Point) -> (Decision, Decision) {
        (
            decide(&p.matching, self.isolated.0, false, |_| false),
            decide(&p.matching, self.isolated.1, true, |_| false),
        )
    }
}

/// What the points of a side depend on: the rules its peer selects, the destination's ports.
type PointsKey = (Vec<usize>, Option<Vec<NamedPort>>);

/// A subject's rule in one direction.
struct SideRule<'p> {
    cand: Cand,
    rule: &'p Rule,
    ns: Option<&'p str>,
}

/// Calls `f` with every side of the view. Host peers are not sides: host traffic to a local
/// workload always passes, and host is matched as the world is otherwise.
pub fn for_each_side<'v, 'a>(
    view: &'v View<'a>,
    classes: &Classes<'v, 'a>,
    mut f: impl FnMut(&Side<'_, 'v, 'a>),
) {
    for subject in &classes.subjects {
        for dir in Direction::BOTH {
            let (rules, isolated) = side_rules(view, subject, dir);
            let mut cache: HashMap<PointsKey, Rc<Vec<Point>>> = HashMap::new();
            for peer in &classes.peers {
                let selected: Vec<usize> = (0..rules.len())
                    .filter(|i| peer_matches(view, rules[*i].rule, rules[*i].ns, peer))
                    .collect();
                let dst_ports = match dir {
                    Direction::Ingress => Some(subject.identity.ports.clone()),
                    Direction::Egress => peer.endpoint().map(|e| e.identity.ports.clone()),
                };
                let points = cache
                    .entry((selected.clone(), dst_ports.clone()))
                    .or_insert_with(|| Rc::new(points(&rules, &selected, dst_ports.as_deref())))
                    .clone();
                f(&Side {
                    subject,
                    dir,
                    peer,
                    isolated,
                    points,
                });
            }
        }
    }
}

/// The rules of the policies selecting `subject` in `dir` (deny section then allow section of
/// each policy, in view order), and whether it is isolated (by enforce policies, by any).
fn side_rules<'p>(
    view: &'p View<'_>,
    subject: &Endpoint<'_>,
    dir: Direction,
) -> (Vec<SideRule<'p>>, (bool, bool)) {
    let mut rules = Vec::new();
    let mut isolated = (false, false);
    for (pi, p) in view.policies.iter().enumerate() {
        let policy = &*p.policy;
        if !view.selects(policy, &subject.identity) {
            continue;
        }
        let audit = policy.mode == Mode::Audit;
        if policy.isolates(dir) {
            isolated = (isolated.0 || !audit, true);
        }
        for section in [dir.deny_section(), dir.allow_section()] {
            for (index, rule) in policy.section(section).iter().enumerate() {
                rules.push(SideRule {
                    cand: Cand {
                        key: RuleKey {
                            policy: pi,
                            section,
                            index,
                        },
                        deny: section.is_deny(),
                        audit,
                        rate_limited: rule.rate_limit.is_some(),
                    },
                    rule,
                    ns: policy.namespace.as_deref(),
                });
            }
        }
    }
    (rules, isolated)
}

/// Whether a rule's peers (not its ports) select the peer class, as `View::rule_matches` does.
pub fn peer_matches(
    view: &View<'_>,
    rule: &Rule,
    ns: Option<&str>,
    peer: &PeerClass<'_, '_>,
) -> bool {
    rule.peers.is_empty()
        || rule.peers.iter().any(|p| match (p, peer.party) {
            (Peer::Cidr { .. }, _) => p.cidr_contains(peer.addr),
            (_, Party::Endpoint(e)) => view.peer_selects(p, ns, &e.identity),
            _ => false,
        })
}

/// The points of one side: every elementary port interval of the ported protocols, and one
/// point for each portless protocol, with the rules matching them.
fn points(
    rules: &[SideRule<'_>],
    selected: &[usize],
    dst_ports: Option<&[NamedPort]>,
) -> Vec<Point> {
    let resolved: Vec<_> = selected
        .iter()
        .map(|i| (rules[*i].cand, resolved(rules[*i].rule, dst_ports)))
        .collect();
    let mut out = Vec::new();
    let matching = |proto: u8, port: u16| -> Vec<Cand> {
        resolved
            .iter()
            .filter(|(_, r)| r.matches(proto, port))
            .map(|(c, _)| *c)
            .collect()
    };
    for proto in PORTED {
        let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65_536]);
        for (_, r) in &resolved {
            for spec in r.specs() {
                if super::super::protocol_matches(spec.protocol, proto) {
                    let (lo, hi) = spec.range();
                    cuts.extend([u32::from(lo), u32::from(hi) + 1]);
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        for w in cuts.windows(2) {
            let (low, high) = (
                u16::try_from(w[0]).unwrap_or(u16::MAX),
                u16::try_from(w[1] - 1).unwrap_or(u16::MAX),
            );
            let m = matching(proto, low);
            match out.last_mut() {
                Some(Point {
                    protocol,
                    high: h,
                    matching: lm,
                    ..
                }) if *protocol == proto && *lm == m => *h = high,
                _ => out.push(Point {
                    protocol: proto,
                    low,
                    high,
                    matching: m,
                }),
            }
        }
    }
    for proto in PORTLESS {
        out.push(Point {
            protocol: proto,
            low: 0,
            high: u16::MAX,
            matching: matching(proto, 0),
        });
    }
    out
}
