//! Token-bucket rate limits of ingress allow rules (policy rule 9).
//!
//! `RATE_LIMITS[(slot, rule)]` holds the limit of a rule of the active policy slot (written by the
//! agent with the rest of a generation, so a flip changes limits atomically). Buckets are keyed by
//! rule id (and the source address for `per: source`), not by slot: a policy update that keeps a
//! rule's id keeps its buckets, and the new limit applies from the next packet (tokens above a
//! lowered burst are clamped).
//!
//! Concurrency: bpf_spin_lock is not allowed in LRU hash values, so every bucket field is updated
//! with compare-and-swap (bounded loops). The CPU whose CAS moves `last_ns` from `last` to `now`
//! owns the refill of `(last, now]` and adds exactly those tokens; charges and refills of the
//! token counts are CAS loops, so no token is lost or spent twice. A loop that keeps losing (more
//! than `CAS_TRIES` rounds) gives up: the packet is dropped and `RATE_STATS[CONTENDED]` counted.
//!
//! The arithmetic (fixed point, clamping, debt for packets larger than the burst) is
//! `enforcer_common::ratelimit::RateDim`, shared with the userspace tests.

use core::{
    intrinsics::{atomic_cxchg, AtomicOrdering},
    ptr::read_volatile,
};

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use enforcer_common::{
    ratelimit::{rate_stat, EVENT_INTERVAL_NS, MAX_BYTE_COST, MAX_PACKET_COST},
    Addr, BucketKey, RateBucket, RateDim, RateLimitConfig, RateLimitKey, Reason, Verdict,
    CONFIG_RATE_LIMITS, DIR_INGRESS, IDF_LOCAL, VERDICT_ALLOW,
};

use crate::{
    conntrack::{tracked_ingress, Tracked},
    identity::identity_of,
    maps::{bump, config, RATE_BUCKETS, RATE_LIMITS, RATE_STATS, RULE_BUCKETS},
    parse::{Packet, FRAG_LATER},
    policy::{decide, Action, Decision, FlowRef},
    report::rate_limited,
};

/// Rounds of a compare-and-swap loop before giving up.
const CAS_TRIES: u32 = 8;

/// What to do with a packet charged to a bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Admit,
    /// Over the limit; `report`: this drop is the bucket's sampled event.
    Drop {
        report: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    Taken,
    Refused,
    Contended,
}

#[inline(always)]
fn stat(i: u32) {
    bump(&RATE_STATS, i);
}

/// Compare-and-swap; `true` if `*p` was `old` and is now `new`.
///
/// # Safety
/// `p` must point at a live, aligned `T` in a map value.
#[inline(always)]
unsafe fn cas<T: Copy>(p: *mut T, old: T, new: T) -> bool {
    // SeqCst with `-C target-cpu=v3` (set by the build) is what makes LLVM emit the fetching
    // BPF_CMPXCHG, whose old value we use; a Relaxed fetch compiles to the non-fetching form and
    // returns garbage.
    // SAFETY: the caller guarantees `p` points at a live, aligned `T`.
    unsafe {
        atomic_cxchg::<T, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, old, new).1
    }
}

/// The limit of `rule` in `slot`, if it has one.
#[inline(always)]
fn limit(slot: u32, rule: u32) -> Option<RateLimitConfig> {
    let key = RateLimitKey { slot, rule };
    // SAFETY: the reference into the map value is copied out at once; the agent writes limits
    // only into the inactive slot, so the entry of the active slot does not change under us.
    unsafe { RATE_LIMITS.get(&key) }.copied()
}

/// The bucket of a packet from `src` for `rule`; with `create`, a missing one is created full.
/// The pointer is a map lookup result: non-null, aligned, and valid until the program returns
/// (map values are freed after an RCU grace period, even when the LRU evicts the entry).
#[inline(always)]
fn bucket(
    c: &RateLimitConfig,
    rule: u32,
    src: &Addr,
    now: u64,
    create: bool,
) -> Option<*mut RateBucket> {
    if c.per_source() {
        let key = BucketKey { rule, addr: *src };
        if let Some(b) = RATE_BUCKETS.get_ptr_mut(&key) {
            return Some(b);
        }
        if !create {
            return None;
        }
        // Two CPUs may race to create it: one insert wins, both use the winner's bucket.
        if RATE_BUCKETS
            .insert(&key, &RateBucket::full(c, now), u64::from(BPF_NOEXIST))
            .is_ok()
        {
            stat(rate_stat::BUCKETS_CREATED);
        }
        RATE_BUCKETS.get_ptr_mut(&key)
    } else {
        if let Some(b) = RULE_BUCKETS.get_ptr_mut(rule) {
            return Some(b);
        }
        if !create {
            return None;
        }
        let _ = RULE_BUCKETS.insert(rule, &RateBucket::full(c, now), u64::from(BPF_NOEXIST));
        RULE_BUCKETS.get_ptr_mut(rule)
    }
}

/// Add `amount` tokens (clamped to the burst).
#[inline(always)]
fn add(t: *mut i64, d: &RateDim, amount: i64) -> bool {
    for _ in 0..CAS_TRIES {
        // SAFETY: `t` points at a token count of a live bucket (see `bucket`); both the
        // volatile read and the CAS are whole aligned i64 accesses.
        let cur = unsafe { read_volatile(t) };
        let new = d.add(cur, amount);
        // SAFETY: as above.
        if new == cur || unsafe { cas(t, cur, new) } {
            return true;
        }
    }
    false
}

/// Charge `cost` tokens if the bucket admits it.
#[inline(always)]
fn take(t: *mut i64, d: &RateDim, cost: i64) -> Take {
    for _ in 0..CAS_TRIES {
        // SAFETY: `t` points at a token count of a live bucket (see `bucket`); both the
        // volatile read and the CAS are whole aligned i64 accesses.
        let cur = unsafe { read_volatile(t) };
        let Some(new) = d.charge(cur, cost) else {
            return Take::Refused;
        };
        // SAFETY: as above.
        if unsafe { cas(t, cur, new) } {
            return Take::Taken;
        }
    }
    Take::Contended
}

/// Refill `b` up to `now`. The CPU that moves `last_ns` forward adds the tokens of the interval
/// it claimed; a CPU that loses that race adds nothing (the winner claimed up to its own clock,
/// and what remains up to ours is claimed by a later packet), so time is never counted twice.
#[inline(always)]
fn refill(b: *mut RateBucket, c: &RateLimitConfig, now: u64) {
    // SAFETY: `b` is a live bucket (see `bucket`); a volatile read and a CAS of one aligned
    // u64 field.
    let last = unsafe { read_volatile(&raw const (*b).last_ns) };
    // SAFETY: as above.
    if now <= last || !unsafe { cas(&raw mut (*b).last_ns, last, now) } {
        return;
    }
    let elapsed = now - last;
    let mut ok = true;
    if c.packets.rate != 0 {
        // SAFETY: the address of a field of the live bucket `b`; nothing is read.
        let t = unsafe { &raw mut (*b).packet_tokens };
        ok &= add(t, &c.packets, c.packets.refill(elapsed));
    }
    if c.bytes.rate != 0 {
        // SAFETY: as above.
        let t = unsafe { &raw mut (*b).byte_tokens };
        ok &= add(t, &c.bytes, c.bytes.refill(elapsed));
    }
    if !ok {
        stat(rate_stat::CONTENDED);
    }
}

/// Whether this drop is the bucket's sampled event (at most one per `EVENT_INTERVAL_NS`).
#[inline(always)]
fn sample(b: *mut RateBucket, now: u64) -> bool {
    // SAFETY: `b` is a live bucket (see `bucket`); a volatile read and a CAS of one aligned
    // u64 field.
    let last = unsafe { read_volatile(&raw const (*b).last_event_ns) };
    // SAFETY: as above.
    now >= last.saturating_add(EVENT_INTERVAL_NS)
        && unsafe { cas(&raw mut (*b).last_event_ns, last, now) }
}

/// The current time for bucket arithmetic.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: `bpf_ktime_get_ns` has no preconditions; it reads the monotonic clock.
    unsafe { bpf_ktime_get_ns() }
}

/// Charge a packet of `segs` segments (GSO aggregates count each) and `p.len` bytes to the
/// bucket of `rule` (authoritative: the tc hook).
#[inline(always)]
pub fn charge(slot: u32, rule: u32, p: &Packet, segs: u32) -> Charge {
    let Some(c) = limit(slot, rule) else {
        return Charge::Admit;
    };
    let now = now();
    let Some(b) = bucket(&c, rule, &p.src, now, true) else {
        // No bucket could be created (`RULE_BUCKETS` full, or a new per-source bucket evicted
        // at once): the limit cannot be checked, so the packet is not admitted (fail closed),
        // and the miss is counted.
        stat(rate_stat::NO_BUCKET);
        return Charge::Drop { report: false };
    };
    refill(b, &c, now);
    // SAFETY: addresses of fields of the live bucket `b`; nothing is read here.
    let (packets, bytes) = unsafe { (&raw mut (*b).packet_tokens, &raw mut (*b).byte_tokens) };
    let pcost = RateDim::cost(u64::from(segs), MAX_PACKET_COST);
    let bcost = RateDim::cost(u64::from(p.len), MAX_BYTE_COST);
    let mut result = Take::Taken;
    if c.packets.rate != 0 {
        result = take(packets, &c.packets, pcost);
    }
    if result == Take::Taken && c.bytes.rate != 0 {
        result = take(bytes, &c.bytes, bcost);
        if result != Take::Taken && c.packets.rate != 0 {
            // Give the packet tokens back: the packet does not pass.
            add(packets, &c.packets, pcost);
        }
    }
    match result {
        Take::Taken => Charge::Admit,
        Take::Refused => Charge::Drop {
            report: sample(b, now),
        },
        Take::Contended => {
            stat(rate_stat::CONTENDED);
            Charge::Drop {
                report: sample(b, now),
            }
        }
    }
}

/// Read-only check for the XDP hook: would the bucket of `rule` refuse this packet now? Drops
/// there are early drops of packets the tc hook would refuse anyway; packets that pass are
/// charged by the tc hook (microseconds later, with the tokens refilled since), so a packet is
/// never charged twice and the admitted rate is unchanged.
#[inline(always)]
fn would_refuse(slot: u32, rule: u32, p: &Packet) -> Charge {
    let Some(c) = limit(slot, rule) else {
        return Charge::Admit;
    };
    let now = now();
    // No bucket yet: it starts full.
    let Some(b) = bucket(&c, rule, &p.src, now, false) else {
        return Charge::Admit;
    };
    // SAFETY: `b` is a live bucket (see `bucket`); volatile reads of aligned u64/i64 fields.
    let (last, packet_tokens, byte_tokens) = unsafe {
        (
            read_volatile(&raw const (*b).last_ns),
            read_volatile(&raw const (*b).packet_tokens),
            read_volatile(&raw const (*b).byte_tokens),
        )
    };
    let elapsed = now.saturating_sub(last);
    if c.packets.rate != 0 {
        let tokens = c.packets.add(packet_tokens, c.packets.refill(elapsed));
        if c.packets
            .charge(tokens, RateDim::cost(1, MAX_PACKET_COST))
            .is_none()
        {
            return Charge::Drop {
                report: sample(b, now),
            };
        }
    }
    if c.bytes.rate != 0 {
        let tokens = c.bytes.add(byte_tokens, c.bytes.refill(elapsed));
        let cost = RateDim::cost(u64::from(p.len), MAX_BYTE_COST);
        if c.bytes.charge(tokens, cost).is_none() {
            return Charge::Drop {
                report: sample(b, now),
            };
        }
    }
    Charge::Admit
}

/// Early rate limiting on the uplink (XDP): a packet for a local workload whose flow is allowed
/// by a rate-limited ingress rule is dropped here if its bucket is empty; everything else passes
/// on (and is judged and charged by `to_pod`).
#[inline(always)]
pub fn uplink_rate_limit(p: &Packet, ifindex: u32) -> Action {
    let cfg = config();
    // A later fragment has no ports to find its bucket by: `to_pod` judges and charges it.
    if cfg.flags & CONFIG_RATE_LIMITS == 0 || p.is_icmp_error || p.fragment == FRAG_LATER {
        return Action::Pass;
    }
    if identity_of(cfg.slot, &p.dst).flags & IDF_LOCAL == 0 {
        return Action::Pass;
    }
    // The same lookups as `judge_active`, read-only: a reply passes, an established flow has its
    // bucket in conntrack, a new (or re-judged) flow gets the policy's.
    let d = match tracked_ingress(p, &cfg) {
        Some(Tracked::Reply) => return Action::Pass,
        Some(Tracked::Forward { rule, rate_limited }) => {
            let mut d = Decision::new(Verdict::Allow, Reason::Established);
            if rate_limited {
                d.rule = rule;
                d.ratelimit = rule;
            }
            d
        }
        None => {
            let d = decide(&cfg, DIR_INGRESS, &FlowRef::of(p));
            if d.verdict != VERDICT_ALLOW {
                return Action::Pass;
            }
            d
        }
    };
    if d.ratelimit == 0 {
        return Action::Pass;
    }
    match would_refuse(cfg.slot, d.ratelimit, p) {
        Charge::Admit => Action::Pass,
        Charge::Drop { report } => {
            stat(rate_stat::XDP_DROPS);
            rate_limited(p, DIR_INGRESS, ifindex, &cfg, d, report)
        }
    }
}
