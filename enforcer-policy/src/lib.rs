//! The policy engine, pure and kernel-free: `parse` (YAML → typed model), `compile` (model → map
//! entries) and `explain` (model + flow → verdict with the deciding policy and rule).

pub mod compile;
mod de;
pub mod document;
pub mod errors;
pub mod explain;
pub mod graph;
pub mod identity;
pub mod identity_ref;
pub mod k8s;
pub mod labels;
pub mod lint;
pub mod model;
pub mod named_port;
pub mod node_de;
pub mod parse;
pub mod ports;
pub mod rate_limit;
pub mod report;
pub mod resolve;
pub mod rule;
pub mod schema;
pub mod set;
pub mod simulate;
pub mod suggest;
#[cfg(test)]
mod tests;
pub mod yaml;

use std::{collections::BTreeSet, fmt, net::IpAddr};

pub use compile::{compile, Compiled};
pub use document::*;
pub use errors::*;
pub use explain::{explain, Explanation};
pub use identity_ref::IdentityRef;
pub use k8s::{Namespace, NetworkPolicy, Pod};
pub use labels::{LabelSelector, Labels};
pub use model::*;
pub use named_port::*;
pub use ports::*;
pub use rate_limit::*;
pub use rule::{PolicyId, RuleRef};
pub use set::*;

/// What the engine must know about the node it runs for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// The node's own addresses (identity `host`).
    pub host_addresses: BTreeSet<IpAddr>,
    /// Workload addresses served by this node (they can never arrive on the uplink).
    pub local_addresses: BTreeSet<IpAddr>,
}

/// A flow to judge: `src → dst`, IP protocol number, destination port (or ICMP type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub port: u16,
}

/// Verdict of a flow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    /// Passes, but only because the denying policy is in audit mode.
    Audit,
}

impl Verdict {
    /// Its name (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Audit => "audit",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Policy direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The datapath's encoding (`DIR_INGRESS` / `DIR_EGRESS`).
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => enforcer_common::DIR_INGRESS,
            Direction::Egress => enforcer_common::DIR_EGRESS,
        }
    }

    /// The allow section of this direction.
    pub fn allow_section(self) -> Section {
        match self {
            Direction::Ingress => Section::Ingress,
            Direction::Egress => Section::Egress,
        }
    }

    /// The deny section of this direction.
    pub fn deny_section(self) -> Section {
        match self {
            Direction::Ingress => Section::IngressDeny,
            Direction::Egress => Section::EgressDeny,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl FlowPolicy {
    /// Whether this policy isolates its service(s) in `direction` (has the key, even empty).
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.ingress.is_some(),
            Direction::Egress => self.egress.is_some(),
        }
    }
}

/// Whether a rule's port list matches protocol number `protocol` and `port` (ICMP: any type).
pub fn ports_match(ports: &[PortSpec], protocol: u8, port: u16) -> bool {
    ports.is_empty()
        || ports.iter().any(|spec| {
            let (low, high) = spec.range();
            protocol_matches(spec.protocol, protocol)
                && (!spec.protocol.has_ports() || (low..=high).contains(&port))
        })
}

/// Whether a policy protocol covers IP protocol number `number` (ICMP covers ICMP and `ICMPv6`).
pub fn protocol_matches(protocol: Protocol, number: u8) -> bool {
    protocol.number(false) == number || protocol.number(true) == number
}
