//! The engine of `enforcer suggest`: from observed flows, the service inventory (who talks to
//! whom, on which protocol and port, how often, first and last seen, which rule allowed it) and
//! `FlowPolicies` that allow exactly those flows: per destination service
//! `suggested-<svc>-ingress`, per source service `suggested-<svc>-egress`. Both directions are
//! isolated, so once applied in `enforce` mode every flow that was not observed is denied.
//!
//! Pure functions of typed observations ([`inventory`], [`suggest`]); the CLI fetches the events
//! and prints.

mod inventory;
mod policies;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use self::inventory::{inventory, label, Edge, EdgeStatus, Endpoint};
pub use self::policies::{suggest, Suggestion};
use crate::{identity_ref::IdentityRef, Direction, RuleRef};

/// One side of an observed flow: its address and what identity the datapath gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub addr: IpAddr,
    pub identity: IdentityRef,
}

/// Why an observed packet passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// A rule allowed it.
    ByRule,
    /// From the node itself to a workload: always allowed.
    FromHost,
    /// Nothing isolates its ends.
    Unisolated,
}

/// What the datapath decided about an observed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed(Passed),
    /// Passed, but an audit policy would deny it.
    Audit,
    /// Denied by a policy or a default deny.
    Denied,
}

/// One flow event, as the engine reads it. Events that say nothing about which flows the
/// services need (spoofed, malformed, rate-limited drops) are not observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub src: Side,
    pub dst: Side,
    /// The protocol's name (`TCP`, `ICMPv6`, ...) or number.
    pub protocol: String,
    /// Destination port (ICMP: the type).
    pub dport: u16,
    /// The side that judged the packet.
    pub direction: Direction,
    pub outcome: Outcome,
    /// The rule that decided, if one did.
    pub decided_by: Option<RuleRef>,
}
