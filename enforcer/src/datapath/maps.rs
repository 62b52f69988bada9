//! The datapath's maps as typed handles, taken out of the eBPF object once at load: the object
//! keeps only its programs (and the maps userspace never reads), so no code outside
//! [`super::Datapath`] can reach a map by name.

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use enforcer_common::{
    maps::names, BucketKey, CidrKeyData, Config, CtKey, CtValue, EndpointKey, IdentityKey,
    IdentityValue, PolicyKeyData, PolicyValue, RateBucket, RateLimitConfig, RateLimitKey,
};

use super::{map_err, DatapathError, Result};

/// Every map userspace reads or writes, typed by its key and value.
pub(super) struct Maps {
    /// `CONFIG[0]`: the generation in force and its slot.
    pub config: Array<MapData, Config>,
    pub identities: HashMap<MapData, IdentityKey, IdentityValue>,
    pub cidrs: LpmTrie<MapData, CidrKeyData, IdentityValue>,
    pub policy: LpmTrie<MapData, PolicyKeyData, PolicyValue>,
    /// LRU.
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    /// (pod interface, address) pairs of local pods, plus one marker per interface.
    pub endpoints: HashMap<MapData, EndpointKey, u32>,
    /// Packets per `CounterIndex`.
    pub counters: PerCpuArray<MapData, u64>,
    /// Packets per rule id.
    pub rule_counters: PerCpuArray<MapData, u64>,
    /// The flow-event ring buffer, until the one event reader takes it.
    pub events: Option<RingBuf<MapData>>,
    /// `event_stat` counters.
    pub event_stats: PerCpuArray<MapData, u64>,
    pub rate_limits: HashMap<MapData, RateLimitKey, RateLimitConfig>,
    /// Per-source buckets (LRU).
    pub rate_buckets: HashMap<MapData, BucketKey, RateBucket>,
    /// Per-rule buckets (`per: rule`).
    pub rule_buckets: HashMap<MapData, u32, RateBucket>,
    /// `rate_stat` counters.
    pub rate_stats: PerCpuArray<MapData, u64>,
}

/// Take map `name` out of `ebpf` as `T`.
fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T> {
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Maps {
    /// The file descriptor of map `name`, if it is one of ours (and, for `EVENTS`, not taken).
    #[cfg(feature = "test-access")]
    pub fn fd(&self, name: &str) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;

        use aya::maps::IterableMap;
        fn of<K: aya::Pod, V>(m: &impl IterableMap<K, V>) -> std::os::fd::BorrowedFd<'_> {
            m.map().fd().as_fd()
        }
        Some(match name {
            names::CONFIG => of(&self.config),
            names::IDENTITIES => of(&self.identities),
            names::CIDR_IDENTITIES => of(&self.cidrs),
            names::POLICY => of(&self.policy),
            names::CONNTRACK => of(&self.conntrack),
            names::ENDPOINTS => of(&self.endpoints),
            names::COUNTERS => of(&self.counters),
            names::RULE_COUNTERS => of(&self.rule_counters),
            names::EVENTS => self.events.as_ref()?.as_fd(),
            names::EVENT_STATS => of(&self.event_stats),
            names::RATE_LIMITS => of(&self.rate_limits),
            names::RATE_BUCKETS => of(&self.rate_buckets),
            names::RULE_BUCKETS => of(&self.rule_buckets),
            names::RATE_STATS => of(&self.rate_stats),
            _ => return None,
        })
    }

    /// Take every map of [`Maps`] out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            config: take(ebpf, names::CONFIG)?,
            identities: take(ebpf, names::IDENTITIES)?,
            cidrs: take(ebpf, names::CIDR_IDENTITIES)?,
            policy: take(ebpf, names::POLICY)?,
            conntrack: take(ebpf, names::CONNTRACK)?,
            endpoints: take(ebpf, names::ENDPOINTS)?,
            counters: take(ebpf, names::COUNTERS)?,
            rule_counters: take(ebpf, names::RULE_COUNTERS)?,
            events: Some(take(ebpf, names::EVENTS)?),
            event_stats: take(ebpf, names::EVENT_STATS)?,
            rate_limits: take(ebpf, names::RATE_LIMITS)?,
            rate_buckets: take(ebpf, names::RATE_BUCKETS)?,
            rule_buckets: take(ebpf, names::RULE_BUCKETS)?,
            rate_stats: take(ebpf, names::RATE_STATS)?,
        })
    }
}
