//! Map sizes: how many entries each sized map holds, set when the object is loaded
//! (`EbpfLoader::set_max_entries`), so a node can be sized without rebuilding the eBPF object.
//! The defaults (`enforcer_common` capacities) fit a cluster of 150 000 pods and 100 000 rules;
//! the memory each map takes at its size is measured from the kernel's own accounting by the
//! `controlplane` benchmark (BENCHMARKS.md).

use enforcer_common::{
    maps::names, CIDR_CAPACITY, CONNTRACK_CAPACITY, ENDPOINT_CAPACITY, IDENTITY_CAPACITY,
    POLICY_CAPACITY, RULE_CAPACITY, SLOTS,
};
use serde::{Deserialize, Serialize};

/// Entries of each sized map. The slotted maps (`identities`, `cidrs`, `policy`) are sized per
/// slot: the map holds [`SLOTS`] times as many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Capacities {
    /// Workload and node addresses (`IDENTITIES`, per slot).
    pub identities: u32,
    /// CIDR classes (`CIDR_IDENTITIES`, per slot).
    pub cidrs: u32,
    /// Policy entries (`POLICY`, per slot).
    pub policy: u32,
    /// (pod interface, address) pairs of local pods (`ENDPOINTS`).
    pub endpoints: u32,
    /// Rule ids, default denies included (`RULE_COUNTERS`).
    pub rules: u32,
    /// Flows (`CONNTRACK`, LRU).
    pub conntrack: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            identities: IDENTITY_CAPACITY,
            cidrs: CIDR_CAPACITY,
            policy: POLICY_CAPACITY,
            endpoints: ENDPOINT_CAPACITY,
            rules: RULE_CAPACITY,
            conntrack: CONNTRACK_CAPACITY,
        }
    }
}

/// A capacity of 0 (the kernel refuses such a map).
#[derive(Debug, thiserror::Error)]
#[error("capacity of {0} must be at least 1")]
pub struct ZeroCapacity(pub &'static str);

impl Capacities {
    /// `max_entries` of every sized map, by map name.
    pub fn max_entries(&self) -> [(&'static str, u32); 6] {
        [
            (names::IDENTITIES, self.identities.saturating_mul(SLOTS)),
            (names::CIDR_IDENTITIES, self.cidrs.saturating_mul(SLOTS)),
            (names::POLICY, self.policy.saturating_mul(SLOTS)),
            (names::ENDPOINTS, self.endpoints),
            (names::RULE_COUNTERS, self.rules),
            (names::CONNTRACK, self.conntrack),
        ]
    }

    /// Every capacity is at least 1.
    pub fn validate(&self) -> Result<(), ZeroCapacity> {
        match self.max_entries().into_iter().find(|(_, n)| *n == 0) {
            Some((name, _)) => Err(ZeroCapacity(name)),
            None => Ok(()),
        }
    }
}
