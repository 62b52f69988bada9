//! Rate limits in the datapath maps (docs/ratelimit.md): the limit of every rate-limited rule is
//! written to `RATE_LIMITS` with the rest of a policy generation (slotted, so the flip changes
//! limits atomically); buckets are keyed by rule id and survive updates. The compiler converts
//! each `rateLimit` to its `RateLimitConfig` ([`Compiled::rate_limits`]): this module only
//! writes and reads them.

use std::{collections::BTreeSet, net::IpAddr};

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
    /// Packets dropped because no bucket could be created (the bucket table was full).
    pub no_bucket: u64,
}

impl Datapath {
    /// Check that the limits of `compiled` fit `RATE_LIMITS` (before anything is written).
    pub(super) fn check_rate_limits(compiled: &Compiled) -> Result<()> {
        let n = compiled.rate_limits().count();
        check_capacity(names::RATE_LIMITS, n, RATE_LIMIT_CAPACITY)
    }

    /// After the flip: drop the per-rule buckets of rules that no longer have a `per: rule`
    /// limit (per-source buckets age out of their LRU map).
    pub(super) fn prune_rule_buckets(&mut self, compiled: &Compiled) {
        let keep: BTreeSet<u32> = compiled
            .rate_limits()
            .filter(|(_, c)| !c.per_source())
            .map(|(rule, _)| rule)
            .collect();
        let map = &mut self.maps.rule_buckets;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for k in stale {
            let _ = map.remove(&k);
        }
    }

    /// The bucket of `rule` for `source` (`per: source`), or the rule's bucket (`None`).
    pub fn rate_bucket(&self, rule: u32, source: Option<IpAddr>) -> Option<RateBucket> {
        if let Some(addr) = source {
            let key = BucketKey {
                rule,
                addr: addr_bits(addr).to_be_bytes(),
            };
            self.maps.rate_buckets.get(&key, 0).ok()
        } else {
            self.maps.rule_buckets.get(&rule, 0).ok()
        }
    }

    /// Put a per-rule bucket into `RULE_BUCKETS`, for tests that fill the table (feature
    /// `test-access`).
    #[cfg(feature = "test-access")]
    pub fn insert_rule_bucket(&mut self, rule: u32, bucket: RateBucket) -> Result<()> {
        self.maps
            .rule_buckets
            .insert(rule, bucket, 0)
            .map_err(map_err(names::RULE_BUCKETS))
    }

    /// Bucket counts and the `RATE_STATS` counters.
    pub fn rate_limit_stats(&self) -> Result<RateLimitStats> {
        let stat = |i: u32| -> Result<u64> {
            Ok(self
                .maps
                .rate_stats
                .get(&i, 0)
                .map_err(map_err(names::RATE_STATS))?
                .iter()
                .sum())
        };
        let source_buckets = self.maps.rate_buckets.keys().flatten().count() as u64;
        let rule_buckets = self.maps.rule_buckets.keys().flatten().count() as u64;
        let created = stat(rate_stat::BUCKETS_CREATED)?;
        Ok(RateLimitStats {
            source_buckets,
            source_capacity: RATE_BUCKET_CAPACITY,
            created,
            evicted: created.saturating_sub(source_buckets),
            rule_buckets,
            contended: stat(rate_stat::CONTENDED)?,
            xdp_drops: stat(rate_stat::XDP_DROPS)?,
            no_bucket: stat(rate_stat::NO_BUCKET)?,
        })
    }
}
