//! Keys, values and capacities of every map the datapath uses. The map *definitions* live in
//! `enforcer-ebpf/src/maps.rs`; the names and capacities here are the contract between both sides.

use crate::addr::Addr;

/// Two policy slots: the agent writes the inactive one completely, then flips `Config::slot`.
pub const SLOTS: u32 = 2;

// Default capacities: they fit a cluster of 150 000 pods (dual-stack: 300 000 addresses) and
// 100 000 rules (about 3 `POLICY` entries and 2 rule ids per rule with its default deny). The
// agent sets the real sizes at load (`capacities` of its config).

/// Capacity of `IDENTITIES` (per slot): exact workload and node addresses.
pub const IDENTITY_CAPACITY: u32 = 327_680;
/// Capacity of `CIDR_IDENTITIES` (per slot).
pub const CIDR_CAPACITY: u32 = 16_384;
/// Capacity of `POLICY` (per slot; an LPM trie allocates entries as they are written).
pub const POLICY_CAPACITY: u32 = 524_288;
/// Capacity of `CONNTRACK` (LRU: the least recently used flow is evicted when full).
pub const CONNTRACK_CAPACITY: u32 = 262_144;
/// Capacity of `FRAGMENTS` (LRU: the least recently used datagram is forgotten when full, and
/// its later fragments are then dropped as orphans).
pub const FRAGMENT_CAPACITY: u32 = 8_192;
/// Capacity of `DENIED_FLOWS` (LRU: recently denied flows, dropped on one hash hit and their drop
/// events aggregated; not pinned: a forgotten flow's next packet is judged and reported again).
pub const DENIED_FLOW_CAPACITY: u32 = 16_384;
/// Drops of one denied flow are reported as events at most once per this interval (the first at
/// once; every drop is counted).
pub const DENIED_REPORT_INTERVAL_NS: u64 = 1_000_000_000;
/// Capacity of `ENDPOINTS` (pod interface, address) pairs for anti-spoofing.
pub const ENDPOINT_CAPACITY: u32 = 16_384;
/// Number of rule ids; rule counters are indexed by rule id (a per-CPU array: 8 bytes per id
/// and CPU).
pub const RULE_CAPACITY: u32 = 262_144;
/// Size of the event ring buffer in bytes.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Names of the maps, as the agent finds and pins them.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const IDENTITIES: &str = "IDENTITIES";
    pub const CIDR_IDENTITIES: &str = "CIDR_IDENTITIES";
    pub const POLICY: &str = "POLICY";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_STATS: &str = "EVENT_STATS";
    /// Rate-limit configuration per (slot, rule); see `crate::ratelimit`.
    pub const RATE_LIMITS: &str = "RATE_LIMITS";
    /// Token buckets per (rule, source address), LRU.
    pub const RATE_BUCKETS: &str = "RATE_BUCKETS";
    /// Token buckets per rule (`per: rule`).
    pub const RULE_BUCKETS: &str = "RULE_BUCKETS";
    /// Per-CPU counters about the buckets (`crate::ratelimit::rate_stat`).
    pub const RATE_STATS: &str = "RATE_STATS";
    /// Ports of first fragments that passed, per (direction, datagram); LRU, not pinned.
    pub const FRAGMENTS: &str = "FRAGMENTS";
    /// Recently denied flows per (flow, direction): the denial, its generation and when its drop
    /// was last reported; LRU, not pinned.
    pub const DENIED_FLOWS: &str = "DENIED_FLOWS";
    /// Every map that is pinned (and so survives agent restarts).
    pub const PINNED: &[&str] = &[
        CONFIG,
        IDENTITIES,
        CIDR_IDENTITIES,
        POLICY,
        CONNTRACK,
        ENDPOINTS,
        COUNTERS,
        RULE_COUNTERS,
        EVENTS,
        EVENT_STATS,
        RATE_LIMITS,
        RATE_BUCKETS,
        RULE_BUCKETS,
        RATE_STATS,
    ];
}

/// Names of the programs in the object.
pub mod programs {
    /// tc ingress of a pod's host-side veth: packets *from* the pod (its egress policy).
    pub const FROM_POD: &str = "from_pod";
    /// tc egress of a pod's host-side veth: packets *to* the pod (its ingress policy).
    pub const TO_POD: &str = "to_pod";
    /// XDP on a pod's host-side veth: early drop of spoofed and malformed packets.
    pub const XDP_POD: &str = "xdp_pod";
    /// XDP on the uplink: early drop of malformed packets arriving from other nodes.
    pub const XDP_UPLINK: &str = "xdp_uplink";
}

/// The one entry of `CONFIG` (an array of one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Monotonic policy generation; conntrack entries of older generations are re-judged.
    pub generation: u64,
    /// The active slot of `IDENTITIES`, `CIDR_IDENTITIES` and `POLICY` (0 or 1).
    pub slot: u32,
    /// `CONFIG_*` flags.
    pub flags: u32,
}

/// `Config::flags`: a policy has been installed (before that, everything passes).
pub const CONFIG_ACTIVE: u32 = 1;
/// `Config::flags`: some rule of the active policy has a rate limit (`xdp_uplink` looks for
/// excess traffic only then).
pub const CONFIG_RATE_LIMITS: u32 = 2;

/// Key of `IDENTITIES`: an exact workload or node address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    pub slot: u32,
    pub addr: Addr,
}

/// Value of `IDENTITIES` and `CIDR_IDENTITIES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityValue {
    pub id: u32,
    /// `IDF_*` flags.
    pub flags: u32,
}

/// `IdentityValue::flags`: an address of this node (identity `host`, possibly a CIDR class of it).
pub const IDF_HOST: u32 = 1;
/// `IdentityValue::flags`: a workload running on this node (it cannot arrive on the uplink).
pub const IDF_LOCAL: u32 = 2;

/// Data part of the `CIDR_IDENTITIES` LPM key: slot byte, then the address (IPv4 mapped).
/// The prefix length covers `8 + 96 + v4 prefix` or `8 + v6 prefix` bits.
pub type CidrKeyData = [u8; 17];

/// Bits of the `CIDR_IDENTITIES` key before the address.
pub const CIDR_KEY_FIXED_BITS: u32 = 8;
/// Prefix length of a `CIDR_IDENTITIES` lookup of one whole address.
pub const CIDR_KEY_FULL_BITS: u32 = CIDR_KEY_FIXED_BITS + 128;

/// The data of a `CIDR_IDENTITIES` key: `slot`, then `addr`.
#[inline(always)]
pub const fn cidr_key_data(slot: u8, addr: &Addr) -> CidrKeyData {
    let mut data: CidrKeyData = [0; 17];
    data[0] = slot;
    let mut i = 0;
    while i < 16 {
        data[i + 1] = addr[i];
        i += 1;
    }
    data
}

/// Reserved identities.
pub mod identity {
    /// Wildcard peer in policy keys; never the identity of an address.
    pub const ANY: u32 = 0;
    /// The node's own addresses.
    pub const HOST: u32 = 1;
    /// Any address that is not a workload's nor the node's and matches no CIDR peer.
    pub const WORLD: u32 = 2;
    /// A local pod address the agent has not registered (inside the node's pod CIDRs, no
    /// identity yet or any more): every flow from or to it is dropped (`unknown_endpoint`).
    pub const UNKNOWN: u32 = 3;
    /// First identity the compiler allocates.
    pub const FIRST_DYNAMIC: u32 = 16;
}

/// Data part of the `POLICY` LPM key, as `PolicyKey::encode` writes it:
/// `slot(1) direction(1) subject(4, BE) peer(4, BE) protocol(1) port(2, BE)`, 3 bytes of zero.
///
/// The prefix always covers slot..peer (`POLICY_KEY_FIXED_BITS`); 8 more bits select one protocol,
/// and up to 16 more a port prefix, so port ranges are a handful of prefixes and the lookup cost
/// does not depend on the number of rules.
pub type PolicyKeyData = [u8; 16];

/// Bits of the policy key that are always matched exactly.
pub const POLICY_KEY_FIXED_BITS: u32 = 80;
/// Bits of the policy key with the protocol.
pub const POLICY_KEY_PROTO_BITS: u32 = 88;
/// Bits of the policy key with protocol and full port.
pub const POLICY_KEY_FULL_BITS: u32 = 104;

/// The fields of a `POLICY` key. `encode` and `decode` are the only code that knows the byte
/// layout of `PolicyKeyData`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Policy slot (0 or 1).
    pub slot: u8,
    /// `Direction` code.
    pub direction: u8,
    /// Identity whose policy this is.
    pub subject: u32,
    /// Identity of the other end (`identity::ANY` for any peer).
    pub peer: u32,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port (or ICMP type), host byte order.
    pub port: u16,
}

impl PolicyKey {
    /// The key bytes.
    #[inline(always)]
    pub const fn encode(&self) -> PolicyKeyData {
        let s = self.subject.to_be_bytes();
        let p = self.peer.to_be_bytes();
        let port = self.port.to_be_bytes();
        [
            self.slot,
            self.direction,
            s[0],
            s[1],
            s[2],
            s[3],
            p[0],
            p[1],
            p[2],
            p[3],
            self.protocol,
            port[0],
            port[1],
            0,
            0,
            0,
        ]
    }

    /// The fields of key bytes (the 3 bytes of padding are not looked at: `encode` of the result
    /// gives `data` back exactly when they are zero).
    pub const fn decode(data: &PolicyKeyData) -> PolicyKey {
        PolicyKey {
            slot: data[0],
            direction: data[1],
            subject: u32::from_be_bytes([data[2], data[3], data[4], data[5]]),
            peer: u32::from_be_bytes([data[6], data[7], data[8], data[9]]),
            protocol: data[10],
            port: u16::from_be_bytes([data[11], data[12]]),
        }
    }

    /// Protocol and port as the 24 bits after the fixed part: `protocol << 16 | port`.
    pub const fn point(&self) -> u32 {
        (self.protocol as u32) << 16 | self.port as u32
    }

    /// Whether an entry of this key with prefix length `prefix_len` matches the (protocol,
    /// port) `point` (the fixed part is assumed to match).
    pub const fn covers(&self, prefix_len: u32, point: u32) -> bool {
        let bits = prefix_len.saturating_sub(POLICY_KEY_FIXED_BITS);
        bits == 0 || (bits <= 24 && (self.point() ^ point) >> (24 - bits) == 0)
    }
}

/// Value of `POLICY`: the decision for a (subject, direction, peer, protocol, port) point, both
/// with `mode: enforce` policies only (`verdict`) and with all policies (`audit_verdict`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// Rule id deciding `verdict`.
    pub rule: u32,
    /// Rule id deciding `audit_verdict`.
    pub audit_rule: u32,
    /// Rate-limit bucket id (0 = none): the id of the deciding allow rule if it has a
    /// `rateLimit` (conntrack keeps only the rule id, so the two must be equal).
    pub ratelimit: u32,
    /// `VERDICT_ALLOW` or `VERDICT_DENY`, enforce-mode policies only.
    pub verdict: u8,
    /// `VERDICT_ALLOW` or `VERDICT_DENY`, all policies (audit included).
    pub audit_verdict: u8,
    /// `REASON_*` of `verdict`.
    pub reason: u8,
    /// `REASON_*` of `audit_verdict`.
    pub audit_reason: u8,
}

/// Key of `ENDPOINTS`: a pod's host-side interface and one address the pod owns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ifindex: u32,
    pub addr: Addr,
}

/// Key of `CONNTRACK`: one entry per flow, whichever way a packet goes. The two ends are
/// ordered, (`a`, `a_port`) ≤ (`b`, `b_port`), so a packet and its reply find the same entry with
/// one lookup. Aligned to 8 bytes, with single-field padding, so the datapath builds it with word
/// stores (no `memmove`/`memset` calls).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub a: Addr,
    pub b: Addr,
    /// Host byte order. For ICMP echo: the identifier at the requester's end, 0 at the other.
    pub a_port: u16,
    pub b_port: u16,
    pub protocol: u8,
    pub _pad: u8,
    pub _pad2: u16,
}

/// Value of `CONNTRACK`: what each side of the flow was judged, indexed by policy direction
/// (`DIR_INGRESS` = the destination's ingress policy, `DIR_EGRESS` = the source's egress policy).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Policy generation each side was last judged under; 0 = not judged (yet, or any more).
    pub generation: [u64; 2],
    /// Rule that allowed each side (for per-rule counters and rate-limit buckets).
    pub rule: [u32; 2],
    /// `CT_*` flags of each side.
    pub flags: [u16; 2],
    /// The policy "port" the flow was judged with (the destination port, or the ICMP type).
    pub policy_port: u16,
    /// `CT_ORIGIN_A` if end `a` opened the flow, `CT_ORIGIN_B` if `b` did.
    pub origin: u8,
    /// `CT_STATE_*` bits: what the sweep needs to choose the entry's idle timeout.
    pub state: u8,
    /// Per end (`a`, `b`): the pod interface (`from_pod`'s ifindex) that end's packets were last
    /// proven by `ENDPOINTS` to come from, 0 = none. A packet of the flow leaving a pod through
    /// that interface needs no second anti-spoofing lookup; cleared when a side is re-judged under
    /// a new policy generation.
    pub ifindex: [u32; 2],
    /// When a packet of the flow was last seen: `CLOCK_MONOTONIC` (coarse) in whole seconds.
    /// Written at most once per second per entry; the agent's sweep removes idle entries.
    pub seen: u32,
    pub _pad: u32,
}

/// `CtValue::state`: a packet went from the flow's responder to its opener.
pub const CT_STATE_REPLIED: u8 = 1;
/// `CtValue::state`: a TCP FIN or RST was seen (a new SYN clears it).
pub const CT_STATE_CLOSING: u8 = 2;

/// `CtValue::origin`: end `a` of the key opened the flow.
pub const CT_ORIGIN_A: u8 = 1;
/// `CtValue::origin`: end `b` of the key opened the flow.
pub const CT_ORIGIN_B: u8 = 2;

/// `CtValue::flags`: the flow passes only because its policy is in audit mode.
pub const CT_AUDIT: u16 = 1;
/// `CtValue::flags`: the deciding rule has a rate limit (its bucket id is `CtValue::rule`), so
/// later packets in the original direction are charged to it.
pub const CT_RATE_LIMITED: u16 = 2;

/// Key of `FRAGMENTS`: one IP datagram as one hook direction saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub protocol: u8,
    /// `DIR_*` of the hook that judged the first fragment.
    pub direction: u8,
    pub _pad: [u8; 2],
}

/// Value of `FRAGMENTS`: the layer 4 facts of the datagram's first fragment (host byte order),
/// which its later fragments are judged with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
}

/// A flow or drop event in the `EVENTS` ring buffer. Fields are ordered so that there is no
/// padding at all (checked in `layout`): every byte the agent reads was written by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ns: u64,
    pub src: Addr,
    pub dst: Addr,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order; the ICMP type for ICMP (the policy "port").
    pub dport: u16,
    pub protocol: u8,
    /// `Direction` code.
    pub direction: u8,
    /// `Verdict` code.
    pub verdict: u8,
    /// `Reason` code.
    pub reason: u8,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub rule: u32,
    pub ifindex: u32,
    /// `Config::generation` the packet was judged under (the whole u64).
    pub generation: u64,
}

/// Index of `EVENT_STATS` (per-CPU array of counters about the event stream itself).
pub mod event_stat {
    /// Events that could not be reserved in the ring buffer (it was full).
    pub const LOST: u32 = 0;
    /// Events skipped by sampling.
    pub const SAMPLED_OUT: u32 = 1;
    pub const COUNT: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_key_round_trip() {
        let k = PolicyKey {
            slot: 1,
            direction: 1,
            subject: 0x0102_0304,
            peer: 0xa0b0_c0d0,
            protocol: 17,
            port: 0x1f90,
        };
        let data = k.encode();
        assert_eq!(
            data,
            [1, 1, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 17, 0x1f, 0x90, 0, 0, 0]
        );
        assert_eq!(PolicyKey::decode(&data), k);
        assert_eq!(k.point(), 17 << 16 | 0x1f90);
        // Full key: one point; protocol only: every port; fixed part only: everything.
        assert!(k.covers(POLICY_KEY_FULL_BITS, k.point()));
        assert!(!k.covers(POLICY_KEY_FULL_BITS, k.point() + 1));
        assert!(k.covers(POLICY_KEY_PROTO_BITS, 17 << 16 | 0x16));
        assert!(!k.covers(POLICY_KEY_PROTO_BITS, 6 << 16 | 0x1f90));
        assert!(k.covers(POLICY_KEY_FIXED_BITS, 6 << 16));
    }

    #[test]
    fn cidr_key_is_slot_then_address() {
        let a = crate::addr::from_v4([10, 1, 2, 3]);
        let d = cidr_key_data(1, &a);
        assert_eq!(d[0], 1);
        assert_eq!(&d[1..], &a[..]);
    }
}
