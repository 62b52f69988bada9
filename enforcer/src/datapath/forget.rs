//! Forgetting deleted pods: the conntrack entries and per-source rate-limit buckets of their
//! addresses. The kernel would keep them until the LRU evicts them, and a pod that gets a
//! recycled address must start with no state of the old one.

use std::{collections::BTreeSet, net::IpAddr};

use enforcer_common::{ratelimit::BucketKey, Addr, CtKey};

use super::Datapath;
use crate::policy::compile::addr_bits;

/// What [`Datapath::forget_addresses`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub flows: usize,
    pub buckets: usize,
}

impl Datapath {
    /// Remove every conntrack entry with an end in `addresses` and every per-source bucket of
    /// them. An entry the kernel evicts meanwhile is simply gone.
    pub fn forget_addresses(&mut self, addresses: &BTreeSet<IpAddr>) -> Forgotten {
        let wanted: BTreeSet<Addr> = addresses
            .iter()
            .map(|a| addr_bits(*a).to_be_bytes())
            .collect();
        let mut out = Forgotten::default();
        if wanted.is_empty() {
            return out;
        }
        let ct = &mut self.maps.conntrack;
        let stale: Vec<CtKey> = ct
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| wanted.contains(&k.a) || wanted.contains(&k.b))
            .collect();
        out.flows = stale.iter().filter(|k| ct.remove(k).is_ok()).count();
        let buckets = &mut self.maps.rate_buckets;
        let stale: Vec<BucketKey> = buckets
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| wanted.contains(&k.addr))
            .collect();
        out.buckets = stale.iter().filter(|k| buckets.remove(k).is_ok()).count();
        out
    }
}
