//! Connection tracking: one `CONNTRACK` entry per flow, whichever way a packet goes, holding what
//! each side (the destination's ingress policy, the source's egress policy) was judged and under
//! which policy generation. A side judged under an older generation is judged again.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use enforcer_common::{
    tcp, Addr, Config, CtKey, CtValue, Reason, Verdict, CT_AUDIT, CT_ORIGIN_A, CT_ORIGIN_B,
    CT_RATE_LIMITED, CT_STATE_CLOSING, CT_STATE_REPLIED, DIR_EGRESS, DIR_INGRESS, VERDICT_AUDIT,
    VERDICT_DENY,
};

use crate::{
    denied,
    maps::CONNTRACK,
    parse::{opens_flow, Packet},
    policy::{decide, Decision, FlowRef},
};

/// An address as two native-endian words: two loads from an 8-byte aligned `Packet`/`Tuple`.
#[inline(always)]
fn words(a: &Addr) -> [u64; 2] {
    let w = u128::from_ne_bytes(*a);
    // Truncations pick the two halves.
    if cfg!(target_endian = "little") {
        [w as u64, (w >> 64) as u64]
    } else {
        [(w >> 64) as u64, w as u64]
    }
}

/// The address of `words` again: two stores into the 8-byte aligned `CtKey`.
#[inline(always)]
fn from_words(w: [u64; 2]) -> Addr {
    let v = if cfg!(target_endian = "little") {
        u128::from(w[0]) | (u128::from(w[1]) << 64)
    } else {
        (u128::from(w[0]) << 64) | u128::from(w[1])
    };
    v.to_ne_bytes()
}

/// Whether end (`x`, `xp`) orders before (`y`, `yp`): addresses byte by byte (compared as two
/// big-endian words), then ports.
#[inline(always)]
fn orders_before(x: [u64; 2], xp: u16, y: [u64; 2], yp: u16) -> bool {
    let be = |w: [u64; 2]| (u64::from_be(w[0]), u64::from_be(w[1]));
    (be(x), xp) <= (be(y), yp)
}

/// The conntrack key of a flow's packet, and whether its source is end `a` of the key.
#[inline(always)]
fn ct_key_of(src: &Addr, sport: u16, dst: &Addr, dport: u16, protocol: u8) -> (CtKey, bool) {
    let (s, d) = (words(src), words(dst));
    let src_is_a = orders_before(s, sport, d, dport);
    let (a, a_port, b, b_port) = if src_is_a {
        (s, sport, d, dport)
    } else {
        (d, dport, s, sport)
    };
    let k = CtKey {
        a: from_words(a),
        b: from_words(b),
        a_port,
        b_port,
        protocol,
        _pad: 0,
        _pad2: 0,
    };
    (k, src_is_a)
}

/// The conntrack key of a packet, and whether its source is end `a` of the key.
#[inline(always)]
pub fn ct_key(p: &Packet) -> (CtKey, bool) {
    ct_key_of(&p.src, p.sport, &p.dst, p.dport, p.protocol)
}

#[inline(always)]
const fn other(direction: u8) -> u8 {
    if direction == DIR_INGRESS {
        DIR_EGRESS
    } else {
        DIR_INGRESS
    }
}

/// One `CONNTRACK` lookup for a packet: its key, which end its source is, and the entry if any.
/// Made once per packet and shared by the fast path and the full judgment.
#[derive(Clone, Copy)]
pub struct Lookup {
    key: CtKey,
    src_is_a: bool,
    entry: Option<*mut CtValue>,
}

impl Lookup {
    #[inline(always)]
    pub fn of(p: &Packet) -> Self {
        let (key, src_is_a) = ct_key(p);
        let entry = CONNTRACK.get_ptr_mut(&key);
        Lookup {
            key,
            src_is_a,
            entry,
        }
    }

    /// Whether the flow has a `CONNTRACK` entry.
    #[inline(always)]
    pub fn tracked(&self) -> bool {
        self.entry.is_some()
    }
}

/// `CLOCK_MONOTONIC` (coarse) in whole seconds: what `CtValue::seen` holds.
#[inline(always)]
fn now_secs() -> u32 {
    // SAFETY: `bpf_ktime_get_coarse_ns` has no preconditions; it reads the coarse monotonic
    // clock.
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX)
}

/// The aging facts of a tracked flow's entry, kept current by each of its packets: when it was
/// last seen (written only when the second changed, so an established flow does not write its
/// entry per packet), whether the responder answered, whether TCP is closing (a FIN or RST; a
/// new SYN on the same tuple starts over). The agent's sweep chooses idle timeouts from them.
#[inline(always)]
fn touch(ct: *mut CtValue, p: &Packet, src_is_a: bool) {
    let now = now_secs();
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; whole u32 and
    // u8 fields read and written (a concurrent writer writes the same kind of fact).
    unsafe {
        if (*ct).seen != now {
            (*ct).seen = now;
        }
        let old = (*ct).state;
        let mut state = old;
        if ((*ct).origin == CT_ORIGIN_A) != src_is_a {
            state |= CT_STATE_REPLIED;
        }
        // `tcp_flags` is 0 for every other protocol.
        if p.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
            state |= CT_STATE_CLOSING;
        } else if p.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN {
            state = 0;
        }
        if state != old {
            (*ct).state = state;
        }
    }
}

/// The established fast path: the decision for a packet of a flow whose side is judged under the
/// active generation, from the packet's one `CONNTRACK` lookup; `None` for anything else (no
/// entry, a side not judged yet or under an older generation, a rate-limited side), which takes
/// the full path. `from_pod` passes its interface: the entry must record it as the interface the
/// packet's source end was proven to send from (`CtValue::ifindex`), which stands in for the
/// `ENDPOINTS` lookup.
#[inline(always)]
pub fn established(
    l: &Lookup,
    p: &Packet,
    direction: u8,
    cfg: &Config,
    from_if: Option<u32>,
) -> Option<Decision> {
    let ct = l.entry?;
    touch(ct, p, l.src_is_a);
    let end = usize::from(!l.src_is_a);
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; `end` is 0 or
    // 1; the fields are integers read by value (another CPU may update the entry, which only
    // makes a read stale, never invalid).
    let (origin_is_a, proven_if) = unsafe { ((*ct).origin == CT_ORIGIN_A, (*ct).ifindex[end]) };
    if let Some(i) = from_if {
        if proven_if != i {
            return None;
        }
    }
    let forward = origin_is_a == l.src_is_a;
    let side = usize::from(if forward { direction } else { other(direction) } & 1);
    // SAFETY: as above; `side` is 0 or 1.
    let (generation, rule, flags) =
        unsafe { ((*ct).generation[side], (*ct).rule[side], (*ct).flags[side]) };
    if generation != cfg.generation || generation == 0 || (forward && flags & CT_RATE_LIMITED != 0)
    {
        return None;
    }
    let mut d = Decision::new(Verdict::Allow, Reason::Established);
    d.rule = rule;
    if flags & CT_AUDIT != 0 {
        d.verdict = VERDICT_AUDIT;
    }
    Some(d)
}

/// The decision for a packet under an active policy: related ICMP errors pass, tracked flows
/// pass on their judgment (re-judged after a policy change), new flows are judged and tracked.
/// `proven_if`: the pod interface `ENDPOINTS` proved the packet's source may send from (0 =
/// none), recorded in the entry for `established`. `pre`: the packet's lookup, if the hook made
/// it already.
#[inline(always)]
pub fn judge_active(
    p: &Packet,
    direction: u8,
    cfg: &Config,
    proven_if: u32,
    pre: Option<&Lookup>,
) -> Decision {
    if p.is_icmp_error && related_error(p, cfg) {
        return Decision::new(Verdict::Allow, Reason::Established);
    }
    let l = match pre {
        Some(l) => *l,
        None => Lookup::of(p),
    };
    let (k, src_is_a) = (&l.key, l.src_is_a);
    let Some(ct) = l.entry else {
        let mut d = judge_new(p, direction, cfg, k, src_is_a, proven_if);
        // Whole packets (the hook made the lookup): remembered as recently denied, drop events
        // aggregated per flow.
        if pre.is_some() && d.verdict == VERDICT_DENY {
            denied::remember(p, direction, cfg, proven_if, &mut d);
        }
        return d;
    };
    touch(ct, p, src_is_a);
    let d = judge_tracked(p, direction, cfg, k, src_is_a, ct);
    let end = usize::from(!src_is_a);
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; `end` is 0 or
    // 1; one whole u32 field read, and written only when it changes (a concurrent writer writes
    // the same kind of proof).
    unsafe {
        if proven_if != 0 && d.verdict != VERDICT_DENY && (*ct).ifindex[end] != proven_if {
            (*ct).ifindex[end] = proven_if;
        }
    }
    d
}

/// The decision for a packet of a tracked flow (entry `ct`).
#[inline(always)]
fn judge_tracked(
    p: &Packet,
    direction: u8,
    cfg: &Config,
    k: &CtKey,
    src_is_a: bool,
    ct: *mut CtValue,
) -> Decision {
    // SAFETY: `ct` is the non-null lookup result, a live `CtValue` in the map; the field is a
    // plain byte read by value (another CPU may update the entry, which only makes the read
    // stale, never invalid).
    let origin_is_a = unsafe { (*ct).origin } == CT_ORIGIN_A;
    let forward = origin_is_a == src_is_a;
    // A packet of the flow's opener is judged by this hook's direction; a reply passes on the
    // judgment of the other direction (made where the flow's packets went the other way).
    let side = if forward { direction } else { other(direction) };
    // SAFETY: as above; a u64 read by value.
    let judged = unsafe { (*ct).generation[usize::from(side & 1)] } != 0;
    if judged {
        let mut d = revalidate(cfg, side, k, origin_is_a, ct);
        if !forward {
            d.ratelimit = 0; // replies are not rate limited
        }
        return d;
    }
    // Not judged on this side yet (the second hook on the way of a new flow, or a side cut by an
    // earlier policy change): judge this packet as the start of a flow in its own direction.
    let d = decide(cfg, direction, &FlowRef::of(p));
    if forward && d.verdict != VERDICT_DENY && opens_flow(p) {
        record(ct, direction, cfg, &d);
    }
    d
}

/// A packet of no tracked flow: judge it, and track the flow if it is allowed and the packet may
/// open one.
#[inline(always)]
fn judge_new(
    p: &Packet,
    direction: u8,
    cfg: &Config,
    k: &CtKey,
    src_is_a: bool,
    proven_if: u32,
) -> Decision {
    let flow = FlowRef::of(p);
    let d = decide(cfg, direction, &flow);
    if d.verdict != VERDICT_DENY && opens_flow(p) {
        let mut v = CtValue {
            generation: [0; 2],
            rule: [0; 2],
            flags: [0; 2],
            policy_port: flow.port,
            origin: if src_is_a { CT_ORIGIN_A } else { CT_ORIGIN_B },
            state: 0,
            ifindex: [0; 2],
            seen: now_secs(),
            _pad: 0,
        };
        v.ifindex[usize::from(!src_is_a)] = proven_if;
        let side = usize::from(direction & 1);
        v.generation[side] = cfg.generation;
        v.rule[side] = d.rule;
        v.flags[side] = ct_flags(&d);
        let _ = CONNTRACK.insert(k, &v, 0);
    }
    d
}

/// Record the judgment `d` of one side of a tracked flow.
#[inline(always)]
fn record(ct: *mut CtValue, side: u8, cfg: &Config, d: &Decision) {
    let s = usize::from(side & 1);
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; `s` is 0 or
    // 1, inside both arrays. Concurrent writers of the same entry write whole fields, and the
    // next packet re-judges whatever mix it finds (the design accepts a stale judgment).
    unsafe {
        (*ct).generation[s] = cfg.generation;
        (*ct).rule[s] = d.rule;
        (*ct).flags[s] = ct_flags(d);
    }
}

/// Whether an ICMP error is related to a flow allowed under the active generation, as Linux's
/// `nf_conntrack_inet_error` decides it: the quoted packet must belong to a tracked flow, and the
/// error must be addressed to the quoted packet's source (its outer source may be any router on
/// the path, so it is not checked). Without the destination check a pod could send "errors"
/// quoting any tracked flow to a pod it may not reach. An error that is not related is judged
/// as a new ICMP flow.
#[inline(always)]
fn related_error(p: &Packet, cfg: &Config) -> bool {
    let i = &p.inner;
    if p.dst != i.src {
        return false;
    }
    let (k, _) = ct_key_of(&i.src, i.sport, &i.dst, i.dport, i.protocol);
    let Some(ct) = CONNTRACK.get_ptr(&k) else {
        return false;
    };
    // SAFETY: `ct` is a non-null pointer to a live `CtValue` returned by the map lookup; the
    // fields are plain integers read by value.
    let (ingress, egress) = unsafe { ((*ct).generation[0], (*ct).generation[1]) };
    ingress == cfg.generation || egress == cfg.generation
}

/// A side of a tracked flow: pass it if it was judged under the active generation, else judge
/// the flow (in its original direction) again.
#[inline(always)]
fn revalidate(cfg: &Config, side: u8, k: &CtKey, origin_is_a: bool, ct: *mut CtValue) -> Decision {
    let s = usize::from(side & 1);
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; `s` is 0 or
    // 1; the fields are integers read by value.
    let (generation, rule, flags, port) = unsafe {
        (
            (*ct).generation[s],
            (*ct).rule[s],
            (*ct).flags[s],
            (*ct).policy_port,
        )
    };
    if generation == cfg.generation {
        let mut d = Decision::new(Verdict::Allow, Reason::Established);
        d.rule = rule;
        if flags & CT_AUDIT != 0 {
            d.verdict = VERDICT_AUDIT;
        }
        if flags & CT_RATE_LIMITED != 0 {
            // The bucket of a rate-limited rule is its rule id (see the compiler).
            d.ratelimit = rule;
        }
        return d;
    }
    // The sources' proofs are renewed under the new generation too (an endpoint may be gone).
    // SAFETY: as above; whole u32 fields written.
    unsafe { (*ct).ifindex = [0; 2] };
    let (src, dst) = if origin_is_a {
        (&k.a, &k.b)
    } else {
        (&k.b, &k.a)
    };
    let flow = FlowRef {
        src,
        dst,
        protocol: k.protocol,
        port,
    };
    let d = decide(cfg, side, &flow);
    if d.verdict == VERDICT_DENY {
        // This side is cut; the next packet that needs it is judged as a new flow.
        // SAFETY: as above; one whole u64 field written.
        unsafe { (*ct).generation[s] = 0 };
    } else {
        record(ct, side, cfg, &d);
    }
    d
}

/// `CtValue::flags` of a flow allowed by `d`.
#[inline(always)]
fn ct_flags(d: &Decision) -> u16 {
    let mut flags = 0;
    if d.verdict == VERDICT_AUDIT {
        flags |= CT_AUDIT;
    }
    if d.ratelimit != 0 {
        flags |= CT_RATE_LIMITED;
    }
    flags
}

/// What conntrack says about the ingress side of a packet's flow, read-only (the uplink's early
/// rate limit): `None` for no entry judged under the active generation.
pub enum Tracked {
    /// A reply: it is not rate limited.
    Reply,
    /// The flow's opener, judged under the active generation by `rule`, rate limited or not.
    Forward { rule: u32, rate_limited: bool },
}

/// The ingress side of the flow of `p`, if conntrack knows it under the active generation.
#[inline(always)]
pub fn tracked_ingress(p: &Packet, cfg: &Config) -> Option<Tracked> {
    let (k, src_is_a) = ct_key(p);
    let ct = CONNTRACK.get_ptr(&k)?;
    let i = DIR_INGRESS as usize;
    // SAFETY: `ct` is the non-null lookup result of `CONNTRACK`, a live `CtValue`; the fields
    // are integers read by value.
    let (origin, generation, rule, flags) = unsafe {
        (
            (*ct).origin,
            (*ct).generation[i],
            (*ct).rule[i],
            (*ct).flags[i],
        )
    };
    if (origin == CT_ORIGIN_A) != src_is_a {
        return Some(Tracked::Reply);
    }
    if generation != cfg.generation {
        return None;
    }
    Some(Tracked::Forward {
        rule,
        rate_limited: flags & CT_RATE_LIMITED != 0,
    })
}
