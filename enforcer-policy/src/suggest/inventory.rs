//! The inventory: observed flows merged into edges (source, destination, protocol, port), each
//! with what it says about the policy in force.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;

use super::{Observation, Outcome, Passed};
use crate::{identity_ref::IdentityRef, Direction, Peer, PortSpec, Protocol, RuleRef};

/// One end of an edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// A workload's service.
    Service(String),
    /// An address of the node itself (`host`).
    Host(IpAddr),
    /// An address of no workload (`world`).
    World(IpAddr),
}

impl Endpoint {
    /// The endpoint of a flow side: its identity and address.
    fn of(identity: &IdentityRef, addr: IpAddr) -> Endpoint {
        match identity {
            IdentityRef::Host => Endpoint::Host(addr),
            IdentityRef::World { .. } | IdentityRef::Unknown(_) => Endpoint::World(addr),
            IdentityRef::Workload(name) => Endpoint::Service(name.clone()),
        }
    }

    /// The policy peer that selects this endpoint: its service, or its address as a /32 (/128).
    pub fn peer(&self) -> Peer {
        match self {
            Endpoint::Service(s) => Peer::Service(s.clone()),
            Endpoint::Host(a) | Endpoint::World(a) => Peer::Cidr {
                cidr: IpNet::from(*a),
                except: Vec::new(),
            },
        }
    }

    pub fn service(&self) -> Option<&str> {
        match self {
            Endpoint::Service(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Service(s) => f.write_str(s),
            Endpoint::Host(a) => write!(f, "host ({a})"),
            Endpoint::World(a) => write!(f, "world ({a})"),
        }
    }
}

/// What the observed traffic of an edge says about the policy in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeStatus {
    /// Passed, allowed explicitly by a rule.
    Allowed,
    /// Passed only because no policy isolates its ends: no rule mentions it (a "shadow" API).
    Shadow,
    /// Passed, but an audit policy would deny it.
    Audit,
    /// From the node itself to a workload: always allowed, needs no rule.
    Host,
    /// Denied (never passed): left out of the suggestion.
    Denied,
}

impl EdgeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeStatus::Allowed => "allowed",
            EdgeStatus::Shadow => "shadow",
            EdgeStatus::Audit => "audit",
            EdgeStatus::Host => "host",
            EdgeStatus::Denied => "denied",
        }
    }

    /// Whether the suggested policy must allow the edge.
    pub fn suggested(self) -> bool {
        matches!(
            self,
            EdgeStatus::Allowed | EdgeStatus::Shadow | EdgeStatus::Audit
        )
    }
}

impl fmt::Display for EdgeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service-to-service traffic on one protocol and port, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub src: Endpoint,
    pub dst: Endpoint,
    /// TCP, UDP, SCTP, ICMP, or the IP protocol number.
    pub protocol: String,
    /// Destination port (`None` for ICMP and protocols without ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New flows seen (each flow is reported by every side that judges it; the busier side counts).
    pub flows: u64,
    /// Unix time in milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub status: EdgeStatus,
    /// The rules that allowed it (JSON: `policy rule`).
    #[serde(skip_serializing_if = "BTreeSet::is_empty", serialize_with = "labels")]
    pub allowed_by: BTreeSet<RuleRef>,
    /// The rules that denied it, or would in audit mode (JSON: `policy rule`).
    #[serde(skip_serializing_if = "BTreeSet::is_empty", serialize_with = "labels")]
    pub denied_by: BTreeSet<RuleRef>,
}

/// A rule as `policy rule` (`api-ingress ingress[0]`, `default-deny db/ingress`).
pub fn label(r: &RuleRef) -> String {
    format!("{} {}", r.policy_label(), r.rule_label())
}

fn labels<S: serde::Serializer>(rules: &BTreeSet<RuleRef>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(rules.iter().map(label))
}

impl Edge {
    /// `TCP/8080`, `ICMP`.
    pub fn service_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}/{p}", self.protocol),
            None => self.protocol.clone(),
        }
    }

    /// The policy port entry of the edge, `None` if the protocol cannot be written in a policy.
    pub(super) fn port_spec(&self) -> Option<PortSpec> {
        let protocol: Protocol = self.protocol.parse().ok()?;
        Some(PortSpec {
            protocol,
            port: if protocol.has_ports() {
                self.port
            } else {
                None
            },
            name: None,
            end_port: None,
        })
    }
}

/// The protocol name policies use, and whether it has ports.
fn canonical_protocol(p: &str) -> (String, bool) {
    use enforcer_common::Protocol as Ip;
    match Ip::ALL
        .iter()
        .find(|ip| ip.as_str().eq_ignore_ascii_case(p))
    {
        Some(Ip::Icmp | Ip::Icmpv6) => (Ip::Icmp.as_str().into(), false),
        Some(ip) => (ip.as_str().into(), true),
        None => (p.to_ascii_uppercase(), false),
    }
}

/// The observations of one edge.
#[derive(Default)]
struct Tally {
    /// Per judging direction: (passed, denied) events.
    by_direction: BTreeMap<Direction, (u64, u64)>,
    audit: bool,
    host_only: bool,
    first: u64,
    last: u64,
    allowed_by: BTreeSet<RuleRef>,
    denied_by: BTreeSet<RuleRef>,
}

impl Tally {
    fn new(time_ms: u64) -> Tally {
        Tally {
            host_only: true,
            first: time_ms,
            last: time_ms,
            ..Tally::default()
        }
    }

    fn add(&mut self, o: &Observation) {
        self.first = self.first.min(o.time_ms);
        self.last = self.last.max(o.time_ms);
        let counts = self.by_direction.entry(o.direction).or_default();
        let decided_by = o.decided_by.iter().cloned();
        match o.outcome {
            Outcome::Denied => {
                counts.1 += 1;
                self.denied_by.extend(decided_by);
                return;
            }
            Outcome::Audit => {
                self.audit = true;
                self.denied_by.extend(decided_by);
            }
            Outcome::Passed(Passed::ByRule) => self.allowed_by.extend(decided_by),
            Outcome::Passed(Passed::FromHost | Passed::Unisolated) => {}
        }
        counts.0 += 1;
        if o.outcome != Outcome::Passed(Passed::FromHost) {
            self.host_only = false;
        }
    }

    fn status(&self, src: &Endpoint) -> EdgeStatus {
        // Blocked: some side that judged it never let it through.
        let blocked = self
            .by_direction
            .values()
            .any(|(passed, denied)| *passed == 0 && *denied > 0);
        if blocked {
            EdgeStatus::Denied
        } else if self.audit {
            EdgeStatus::Audit
        } else if matches!(src, Endpoint::Host(_)) && self.host_only {
            EdgeStatus::Host
        } else if self.allowed_by.is_empty() {
            EdgeStatus::Shadow
        } else {
            EdgeStatus::Allowed
        }
    }
}

/// The edges seen in `observations`, sorted by source, destination, protocol and port.
pub fn inventory(observations: &[Observation]) -> Vec<Edge> {
    type Key = (Endpoint, Endpoint, String, Option<u16>);
    let mut tallies: BTreeMap<Key, Tally> = BTreeMap::new();
    for o in observations {
        let src = Endpoint::of(&o.src.identity, o.src.addr);
        let dst = Endpoint::of(&o.dst.identity, o.dst.addr);
        let (protocol, has_ports) = canonical_protocol(&o.protocol);
        let port = has_ports.then_some(o.dport);
        tallies
            .entry((src, dst, protocol, port))
            .or_insert_with(|| Tally::new(o.time_ms))
            .add(o);
    }
    tallies
        .into_iter()
        .map(|((src, dst, protocol, port), t)| Edge {
            status: t.status(&src),
            src,
            dst,
            protocol,
            port,
            flows: t
                .by_direction
                .values()
                .map(|(p, d)| p + d)
                .max()
                .unwrap_or(0),
            first_seen_ms: t.first,
            last_seen_ms: t.last,
            allowed_by: t.allowed_by,
            denied_by: t.denied_by,
        })
        .collect()
}
