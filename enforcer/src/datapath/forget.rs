//! Forgetting deleted pods: the conntrack entries and per-source rate-limit buckets of their
//! addresses. The kernel would keep them until the LRU evicts them, and a pod that gets a
//! recycled address must start with no state of the old one.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::HashMap;
use enforcer_common::{maps::names, ratelimit::BucketKey, Addr, CtKey, CtValue, RateBucket};

use super::{map_err, Datapath, Result};
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
    pub fn forget_addresses(&mut self, addresses: &BTreeSet<IpAddr>) -> Result<Forgotten> {
        let wanted: BTreeSet<Addr> = addresses
            .iter()
            .map(|a| addr_bits(*a).to_be_bytes())
            .collect();
        let mut out = Forgotten::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut ct = HashMap::<_, CtKey, CtValue>::try_from(self.map_mut(names::CONNTRACK)?)
            .map_err(map_err(names::CONNTRACK))?;
        let stale: Vec<CtKey> = ct
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| wanted.contains(&k.a) || wanted.contains(&k.b))
            .collect();
        out.flows = stale.iter().filter(|k| ct.remove(k).is_ok()).count();
        let mut buckets =
            HashMap::<_, BucketKey, RateBucket>::try_from(self.map_mut(names::RATE_BUCKETS)?)
                .map_err(map_err(names::RATE_BUCKETS))?;
        let stale: Vec<BucketKey> = buckets
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| wanted.contains(&k.addr))
            .collect();
        out.buckets = stale.iter().filter(|k| buckets.remove(k).is_ok()).count();
        Ok(out)
    }
}
