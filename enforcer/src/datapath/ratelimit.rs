//! Rate limits in the datapath maps (docs/ratelimit.md): the limit of every rate-limited rule is
//! written to `RATE_LIMITS` with the rest of a policy generation (slotted, so the flip changes
//! limits atomically); buckets are keyed by rule id and survive updates. The compiler converts
//! each `rateLimit` to its `RateLimitConfig` ([`Compiled::rate_limits`]): this module only
//! writes and reads them.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{HashMap, PerCpuArray};
use enforcer_common::{
    maps::names,
    ratelimit::{rate_stat, RATE_BUCKET_CAPACITY, RATE_LIMIT_CAPACITY},
    BucketKey, RateBucket, CONFIG_RATE_LIMITS,
};

use super::{install::check_capacity, map_err, Datapath, Result};
use crate::policy::{compile::addr_bits, Compiled};

/// `Config::flags` bits for the rate limits of `compiled`.
pub(super) fn config_flags(compiled: &Compiled) -> u32 {
    if compiled.rate_limits().next().is_some() {
        CONFIG_RATE_LIMITS
    } else {
        0
    }
}

/// State of the rate-limit buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Per-source buckets in `RATE_BUCKETS` now.
    pub source_buckets: u64,
    /// Capacity of `RATE_BUCKETS`.
    pub source_capacity: u32,
    /// Per-source buckets ever created (pinned: survives agent restarts).
    pub created: u64,
    /// Per-source buckets evicted by the LRU (`created - source_buckets`): each eviction lets a
    /// returning source start again with a full burst.
    pub evicted: u64,
    /// Per-rule buckets in `RULE_BUCKETS`.
    pub rule_buckets: u64,
    /// Packets dropped because a compare-and-swap loop kept losing (should stay 0).
    pub contended: u64,
    /// Over-limit packets dropped early in `xdp_uplink`.
    pub xdp_drops: u64,
}

impl Datapath {
    /// Check that the limits of `compiled` fit `RATE_LIMITS` (before anything is written).
    pub(super) fn check_rate_limits(compiled: &Compiled) -> Result<()> {
        let n = compiled.rate_limits().count();
        check_capacity(names::RATE_LIMITS, n, RATE_LIMIT_CAPACITY)
    }

    /// After the flip: drop the per-rule buckets of rules that no longer have a `per: rule`
    /// limit (per-source buckets age out of their LRU map).
    pub(super) fn prune_rule_buckets(&mut self, compiled: &Compiled) -> Result<()> {
        let keep: BTreeSet<u32> = compiled
            .rate_limits()
            .filter(|(_, c)| !c.per_source())
            .map(|(rule, _)| rule)
            .collect();
        let mut map = HashMap::<_, u32, RateBucket>::try_from(self.map_mut(names::RULE_BUCKETS)?)
            .map_err(map_err(names::RULE_BUCKETS))?;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for k in stale {
            let _ = map.remove(&k);
        }
        Ok(())
    }

    /// The bucket of `rule` for `source` (`per: source`), or the rule's bucket (`None`).
    pub fn rate_bucket(&self, rule: u32, source: Option<IpAddr>) -> Result<Option<RateBucket>> {
        let found = if let Some(addr) = source {
            let map = HashMap::<_, BucketKey, RateBucket>::try_from(self.map(names::RATE_BUCKETS)?)
                .map_err(map_err(names::RATE_BUCKETS))?;
            let key = BucketKey {
                rule,
                addr: addr_bits(addr).to_be_bytes(),
            };
            map.get(&key, 0).ok()
        } else {
            let map = HashMap::<_, u32, RateBucket>::try_from(self.map(names::RULE_BUCKETS)?)
                .map_err(map_err(names::RULE_BUCKETS))?;
            map.get(&rule, 0).ok()
        };
        Ok(found)
    }

    /// Bucket counts and the `RATE_STATS` counters.
    pub fn rate_limit_stats(&self) -> Result<RateLimitStats> {
        let stats = PerCpuArray::<_, u64>::try_from(self.map(names::RATE_STATS)?)
            .map_err(map_err(names::RATE_STATS))?;
        let stat = |i: u32| -> Result<u64> {
            Ok(stats
                .get(&i, 0)
                .map_err(map_err(names::RATE_STATS))?
                .iter()
                .sum())
        };
        let source_buckets =
            HashMap::<_, BucketKey, RateBucket>::try_from(self.map(names::RATE_BUCKETS)?)
                .map_err(map_err(names::RATE_BUCKETS))?
                .keys()
                .flatten()
                .count() as u64;
        let rule_buckets = HashMap::<_, u32, RateBucket>::try_from(self.map(names::RULE_BUCKETS)?)
            .map_err(map_err(names::RULE_BUCKETS))?
            .keys()
            .flatten()
            .count() as u64;
        let created = stat(rate_stat::BUCKETS_CREATED)?;
        Ok(RateLimitStats {
            source_buckets,
            source_capacity: RATE_BUCKET_CAPACITY,
            created,
            evicted: created.saturating_sub(source_buckets),
            rule_buckets,
            contended: stat(rate_stat::CONTENDED)?,
            xdp_drops: stat(rate_stat::XDP_DROPS)?,
        })
    }
}
