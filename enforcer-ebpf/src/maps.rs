//! Every map of the datapath, with its capacity from `enforcer_common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    CidrKeyData, Config, CtKey, CtValue, IdentityKey, IdentityValue, PolicyKeyData, PolicyValue,
    CIDR_CAPACITY, CONNTRACK_CAPACITY, COUNTER_ENTRIES, ENDPOINT_CAPACITY, EVENTS_BYTES,
    IDENTITY_CAPACITY, POLICY_CAPACITY, RULE_CAPACITY, SLOTS,
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

/// Counters about the event stream (lost, sampled out).
#[map]
pub static EVENT_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(enforcer_common::event_stat::COUNT, 0);

pub use enforcer_common::EndpointKey;

/// Per-CPU scratch space for the packet being judged (the BPF stack is 512 bytes).
#[map]
pub static SCRATCH: PerCpuArray<crate::parse::Packet> = PerCpuArray::with_max_entries(1, 0);
