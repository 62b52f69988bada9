//! Every map of the datapath, with its capacity from `enforcer_common`, and the two accessors
//! every program uses: the active `Config` and per-CPU counter increments. The map names are the
//! contract with the agent (`enforcer_common::maps::names`), which pins them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    event_stat,
    ratelimit::{rate_stat, RATE_BUCKET_CAPACITY, RATE_LIMIT_CAPACITY},
    BucketKey, CidrKeyData, Config, CtKey, CtValue, EndpointKey, FragKey, FragValue, IdentityKey,
    IdentityValue, PolicyKeyData, PolicyValue, RateBucket, RateLimitConfig, RateLimitKey,
    CIDR_CAPACITY, CONNTRACK_CAPACITY, COUNTER_ENTRIES, DENIED_FLOW_CAPACITY, ENDPOINT_CAPACITY,
    EVENTS_BYTES, FRAGMENT_CAPACITY, IDENTITY_CAPACITY, POLICY_CAPACITY, RULE_CAPACITY, SLOTS,
};

use crate::{
    denied::{DeniedKey, DeniedValue},
    parse::Packet,
};

/// One entry: active slot, generation, flags.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Exact workload and node addresses → identity (both slots).
#[map]
pub static IDENTITIES: HashMap<IdentityKey, IdentityValue> =
    HashMap::with_max_entries(IDENTITY_CAPACITY * SLOTS, 0);

/// CIDR peers → local identity (both slots).
#[map]
pub static CIDR_IDENTITIES: LpmTrie<CidrKeyData, IdentityValue> =
    LpmTrie::with_max_entries(CIDR_CAPACITY * SLOTS, 0);

/// (slot, direction, subject, peer, protocol, port prefix) → decision.
#[map]
pub static POLICY: LpmTrie<PolicyKeyData, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_CAPACITY * SLOTS, 0);

/// Flows judged allowed, per side; least recently used evicted.
#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> =
    LruHashMap::with_max_entries(CONNTRACK_CAPACITY, 0);

/// (pod interface, address) pairs a pod may send from.
#[map]
pub static ENDPOINTS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(ENDPOINT_CAPACITY, 0);

/// Packets per (direction, verdict, reason).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

/// Packets per rule id.
#[map]
pub static RULE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(RULE_CAPACITY, 0);

/// Flow and drop events for the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Counters about the event stream (`event_stat::*`: lost, sampled out).
#[map]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event_stat::COUNT, 0);

/// (direction, datagram) → layer 4 facts of its first fragment; least recently used evicted.
/// Not pinned: see `fragment`.
#[map]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(FRAGMENT_CAPACITY, 0);

/// Recently denied flows (see `denied`); least recently used evicted. Not pinned.
#[map]
pub static DENIED_FLOWS: LruHashMap<DeniedKey, DeniedValue> =
    LruHashMap::with_max_entries(DENIED_FLOW_CAPACITY, 0);

/// (slot, rule) → rate limit, written by the agent.
#[map]
pub static RATE_LIMITS: HashMap<RateLimitKey, RateLimitConfig> =
    HashMap::with_max_entries(RATE_LIMIT_CAPACITY * SLOTS, 0);

/// (rule, source address) → bucket, for `per: source`; the least recently used is evicted when
/// full (a new bucket starts full).
#[map]
pub static RATE_BUCKETS: LruHashMap<BucketKey, RateBucket> =
    LruHashMap::with_max_entries(RATE_BUCKET_CAPACITY, 0);

/// rule → bucket, for `per: rule`; the agent removes the buckets of rules that lost their limit.
#[map]
pub static RULE_BUCKETS: HashMap<u32, RateBucket> =
    HashMap::with_max_entries(RATE_LIMIT_CAPACITY * SLOTS, 0);

/// Counters about the buckets (`rate_stat::*`).
#[map]
pub static RATE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(rate_stat::COUNT, 0);

/// Per-CPU scratch space for the packet being judged (the BPF stack is 512 bytes).
#[map]
pub static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// The active configuration (all zero, so no policy, if the agent has not written it).
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// The per-CPU scratch `Packet` a hook parses into.
#[inline(always)]
pub fn scratch_packet() -> Option<&'static mut Packet> {
    // SAFETY: the pointer is the non-null lookup result for this CPU's one `SCRATCH` slot. A BPF
    // program runs to completion on its CPU without preemption by another program of ours, so
    // this is the only reference to the slot while the hook runs.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Add one to entry `index` of a per-CPU counter array (out-of-range indices count nothing).
#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: `c` is the non-null lookup result for this CPU's copy of the entry; no other
        // program touches this CPU's copy while we run, so a plain increment is not racy.
        unsafe { *c += 1 };
    }
}
