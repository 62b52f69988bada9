//! The verdict for one packet: conntrack first, then identities and the policy trie, then one
//! exit (`finish`) that counts and reports every decision.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use enforcer_common::{
    identity, policy_key_data, Addr, CidrKeyData, Config, CtKey, CtValue, EndpointKey, Event,
    IdentityKey, IdentityValue, PolicyValue, CONFIG_ACTIVE, CONFIG_RATE_LIMITS, CT_AUDIT,
    CT_ORIGIN_A, CT_ORIGIN_B, CT_RATE_LIMITED, DIR_EGRESS, DIR_INGRESS, IDF_HOST, IDF_LOCAL,
    POLICY_KEY_FULL_BITS, REASON_CONTROL, REASON_ESTABLISHED, REASON_HOST, REASON_MALFORMED,
    REASON_NON_IP, REASON_NOT_ISOLATED, REASON_NO_POLICY, REASON_RATE_LIMITED, REASON_SPOOFED,
    VERDICT_ALLOW, VERDICT_AUDIT, VERDICT_DENY,
};

use crate::{
    maps::{
        CIDR_IDENTITIES, CONFIG, CONNTRACK, COUNTERS, ENDPOINTS, EVENTS, EVENT_STATS, IDENTITIES,
        POLICY, RULE_COUNTERS, SCRATCH,
    },
    parse::{
        is_link_control, opens_flow, Malformed, Packet, Parsed, FRAG_LATER, IPPROTO_ICMP,
        IPPROTO_ICMPV6,
    },
    ratelimit::{self, Charge},
};

/// What the hook does with the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
}

/// A decision with its attribution.
#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: u8,
    pub reason: u8,
    pub rule: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Rate-limit bucket of the deciding rule (0 = none).
    pub ratelimit: u32,
}

impl Decision {
    #[inline(always)]
    pub const fn new(verdict: u8, reason: u8) -> Self {
        Self {
            verdict,
            reason,
            rule: 0,
            src_identity: 0,
            dst_identity: 0,
            ratelimit: 0,
        }
    }

    #[inline(always)]
    fn action(&self) -> Action {
        if self.verdict == VERDICT_DENY {
            Action::Drop
        } else {
            Action::Pass
        }
    }
}

#[inline(always)]
fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// The identity of an address in the active slot: exact match first, then the CIDR classes.
#[inline(always)]
fn identity_of(slot: u32, addr: &Addr) -> IdentityValue {
    let key = IdentityKey { slot, addr: *addr };
    if let Some(v) = unsafe { IDENTITIES.get(&key) } {
        return *v;
    }
    let mut data: CidrKeyData = [0; 17];
    data[0] = slot as u8;
    let mut i = 0;
    while i < 16 {
        data[i + 1] = addr[i];
        i += 1;
    }
    match CIDR_IDENTITIES.get(Key::new(8 + 128, data)) {
        Some(v) => *v,
        None => IdentityValue {
            id: identity::WORLD,
            flags: 0,
        },
    }
}

#[inline(always)]
fn lookup_policy(
    slot: u32,
    direction: u8,
    subject: u32,
    peer: u32,
    protocol: u8,
    port: u16,
) -> Option<PolicyValue> {
    let key = Key::new(
        POLICY_KEY_FULL_BITS,
        policy_key_data(slot as u8, direction, subject, peer, protocol, port),
    );
    POLICY.get(&key).copied()
}

/// A flow in its original direction, as the policy judges it.
#[derive(Clone, Copy)]
struct FlowRef<'a> {
    src: &'a Addr,
    dst: &'a Addr,
    protocol: u8,
    /// The destination port, or the ICMP type.
    port: u16,
}

/// Judge a new flow `src → dst` for `direction` against the active policy.
#[inline(always)]
fn decide(cfg: &Config, direction: u8, t: &FlowRef) -> Decision {
    let policy_port = t.port;
    let src = identity_of(cfg.slot, t.src);
    let dst = identity_of(cfg.slot, t.dst);
    let mut d = Decision::new(VERDICT_ALLOW, REASON_NOT_ISOLATED);
    d.src_identity = src.id;
    d.dst_identity = dst.id;
    if direction == DIR_INGRESS && src.flags & IDF_HOST != 0 {
        // The node itself may always reach its workloads (health checks).
        d.reason = REASON_HOST;
        return d;
    }
    let (subject, peer) = if direction == DIR_INGRESS {
        (dst.id, src.id)
    } else {
        (src.id, dst.id)
    };
    let v = match lookup_policy(cfg.slot, direction, subject, peer, t.protocol, policy_port) {
        Some(v) => v,
        None => match lookup_policy(
            cfg.slot,
            direction,
            subject,
            identity::ANY,
            t.protocol,
            policy_port,
        ) {
            Some(v) => v,
            // No entry: the subject is not isolated and nothing denies.
            None => return d,
        },
    };
    if v.verdict == VERDICT_DENY {
        d.verdict = VERDICT_DENY;
        d.reason = v.reason;
        d.rule = v.rule;
    } else if v.audit_verdict == VERDICT_DENY {
        d.verdict = VERDICT_AUDIT;
        d.reason = v.audit_reason;
        d.rule = v.audit_rule;
    } else {
        d.reason = v.reason;
        d.rule = v.rule;
        d.ratelimit = v.ratelimit;
    }
    d
}

#[inline(always)]
const fn other(direction: u8) -> u8 {
    if direction == DIR_INGRESS {
        DIR_EGRESS
    } else {
        DIR_INGRESS
    }
}

/// The policy "port" of a packet that starts a flow: the destination port, or the ICMP type.
#[inline(always)]
fn policy_port(p: &Packet) -> u16 {
    if p.protocol == IPPROTO_ICMP || p.protocol == IPPROTO_ICMPV6 {
        u16::from(p.icmp_type)
    } else {
        p.dport
    }
}

/// Judge a parsed IP packet of `segs` segments (a GSO aggregate counts each against rate limits)
/// for `direction` (tc hooks): conntrack, then policy. Fragments go through `fragment::judge`.
#[inline(always)]
pub fn judge_segs(p: &Packet, direction: u8, ifindex: u32, segs: u32) -> Action {
    let cfg = config();
    if cfg.flags & CONFIG_ACTIVE == 0 {
        return finish(
            p,
            direction,
            ifindex,
            &cfg,
            Decision::new(VERDICT_ALLOW, REASON_NO_POLICY),
        );
    }
    let d = judge_active(p, direction, &cfg);
    // Rule 9: packets in the original direction of a flow allowed by a rate-limited rule.
    if d.ratelimit != 0 && d.verdict == VERDICT_ALLOW {
        if let Charge::Drop { report } = ratelimit::charge(cfg.slot, d.ratelimit, p, segs) {
            return rate_limited(p, direction, ifindex, &cfg, d, report);
        }
    }
    finish(p, direction, ifindex, &cfg, d)
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
    let (k, src_is_a) = ct_key(p);
    let mut d = Decision::new(VERDICT_ALLOW, REASON_ESTABLISHED);
    let mut tracked = false;
    if let Some(ct) = CONNTRACK.get_ptr(&k) {
        let (origin, generation, rule, flags) = unsafe {
            (
                (*ct).origin,
                (*ct).generation[DIR_INGRESS as usize],
                (*ct).rule[DIR_INGRESS as usize],
                (*ct).flags[DIR_INGRESS as usize],
            )
        };
        if (origin == CT_ORIGIN_A) != src_is_a {
            return Action::Pass; // a reply
        }
        if generation == cfg.generation {
            tracked = true;
            if flags & CT_RATE_LIMITED != 0 {
                d.rule = rule;
                d.ratelimit = rule;
            }
        }
    }
    if !tracked {
        let flow = FlowRef {
            src: &p.src,
            dst: &p.dst,
            protocol: p.protocol,
            port: policy_port(p),
        };
        d = decide(&cfg, DIR_INGRESS, &flow);
        if d.verdict != VERDICT_ALLOW {
            return Action::Pass;
        }
    }
    if d.ratelimit == 0 {
        return Action::Pass;
    }
    match ratelimit::precheck(cfg.slot, d.ratelimit, p) {
        Charge::Admit => Action::Pass,
        Charge::Drop { report } => {
            ratelimit::count_xdp_drop();
            rate_limited(p, DIR_INGRESS, ifindex, &cfg, d, report)
        }
    }
}

/// A packet over its rule's rate limit: dropped, counted as `rate_limited` (and for its rule),
/// reported if it is its bucket's sampled event.
#[inline(always)]
fn rate_limited(
    p: &Packet,
    direction: u8,
    ifindex: u32,
    cfg: &Config,
    mut d: Decision,
    report_it: bool,
) -> Action {
    d.verdict = VERDICT_DENY;
    d.reason = REASON_RATE_LIMITED;
    count(direction, d.verdict, d.reason, d.rule);
    if report_it {
        report(p, direction, ifindex, cfg, &d);
    } else if let Some(c) = EVENT_STATS.get_ptr_mut(enforcer_common::event_stat::SAMPLED_OUT) {
        unsafe { *c += 1 };
    }
    Action::Drop
}

/// Whether end (`x`, `xp`) orders before (`y`, `yp`): addresses byte by byte, then ports.
#[inline(always)]
fn orders_before(x: &Addr, xp: u16, y: &Addr, yp: u16) -> bool {
    let mut i = 0;
    while i < 16 {
        if x[i] != y[i] {
            return x[i] < y[i];
        }
        i += 1;
    }
    xp <= yp
}

/// The conntrack key of a flow's packet, and whether its source is end `a` of the key.
#[inline(always)]
fn ct_key_of(src: &Addr, sport: u16, dst: &Addr, dport: u16, protocol: u8) -> (CtKey, bool) {
    if orders_before(src, sport, dst, dport) {
        let k = CtKey {
            a: *src,
            b: *dst,
            a_port: sport,
            b_port: dport,
            protocol,
            _pad: [0; 3],
        };
        (k, true)
    } else {
        let k = CtKey {
            a: *dst,
            b: *src,
            a_port: dport,
            b_port: sport,
            protocol,
            _pad: [0; 3],
        };
        (k, false)
    }
}

#[inline(always)]
fn ct_key(p: &Packet) -> (CtKey, bool) {
    ct_key_of(&p.src, p.sport, &p.dst, p.dport, p.protocol)
}

#[inline(always)]
fn judge_active(p: &Packet, direction: u8, cfg: &Config) -> Decision {
    if p.is_icmp_error && related_error(p, cfg) {
        return Decision::new(VERDICT_ALLOW, REASON_ESTABLISHED);
    }
    let (k, src_is_a) = ct_key(p);
    let Some(ct) = CONNTRACK.get_ptr_mut(&k) else {
        // A new flow.
        let flow = FlowRef {
            src: &p.src,
            dst: &p.dst,
            protocol: p.protocol,
            port: policy_port(p),
        };
        let d = decide(cfg, direction, &flow);
        if d.verdict != VERDICT_DENY && opens_flow(p) {
            let mut v = CtValue {
                generation: [0; 2],
                rule: [0; 2],
                flags: [0; 2],
                policy_port: flow.port,
                origin: if src_is_a { CT_ORIGIN_A } else { CT_ORIGIN_B },
                _pad: 0,
            };
            let side = usize::from(direction & 1);
            v.generation[side] = cfg.generation;
            v.rule[side] = d.rule;
            v.flags[side] = ct_flags(&d);
            let _ = CONNTRACK.insert(&k, &v, 0);
        }
        return d;
    };
    let origin_is_a = unsafe { (*ct).origin } == CT_ORIGIN_A;
    let forward = origin_is_a == src_is_a;
    // A packet of the flow's opener is judged by this hook's direction; a reply passes on the
    // judgment of the other direction (made where the flow's packets went the other way).
    let side = if forward { direction } else { other(direction) };
    let judged = unsafe { (*ct).generation[usize::from(side & 1)] } != 0;
    if judged {
        let mut d = revalidate(cfg, side, &k, origin_is_a, ct);
        if !forward {
            d.ratelimit = 0; // replies are not rate limited
        }
        return d;
    }
    // Not judged on this side yet (the second hook on the way of a new flow, or a side cut by an
    // earlier policy change): judge this packet as the start of a flow in its own direction.
    let flow = FlowRef {
        src: &p.src,
        dst: &p.dst,
        protocol: p.protocol,
        port: policy_port(p),
    };
    let d = decide(cfg, direction, &flow);
    if forward && d.verdict != VERDICT_DENY && opens_flow(p) {
        let s = usize::from(direction & 1);
        unsafe {
            (*ct).generation[s] = cfg.generation;
            (*ct).rule[s] = d.rule;
            (*ct).flags[s] = ct_flags(&d);
        }
    }
    d
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
    let (generation, rule, flags, port) = unsafe {
        (
            (*ct).generation[s],
            (*ct).rule[s],
            (*ct).flags[s],
            (*ct).policy_port,
        )
    };
    if generation == cfg.generation {
        let mut d = Decision::new(VERDICT_ALLOW, REASON_ESTABLISHED);
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
    let flow = if origin_is_a {
        FlowRef {
            src: &k.a,
            dst: &k.b,
            protocol: k.protocol,
            port,
        }
    } else {
        FlowRef {
            src: &k.b,
            dst: &k.a,
            protocol: k.protocol,
            port,
        }
    };
    let d = decide(cfg, side, &flow);
    unsafe {
        if d.verdict == VERDICT_DENY {
            // This side is cut; the next packet that needs it is judged as a new flow.
            (*ct).generation[s] = 0;
        } else {
            (*ct).generation[s] = cfg.generation;
            (*ct).rule[s] = d.rule;
            (*ct).flags[s] = ct_flags(&d);
        }
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

/// Early checks shared by the XDP hooks and `from_pod`: returns a drop decision for packets
/// that must not go further, `None` for packets the policy should judge.
#[inline(always)]
pub fn precheck(parsed: &Result<Parsed, Malformed>, p: &Packet) -> Option<Decision> {
    match parsed {
        Err(Malformed) => Some(Decision::new(VERDICT_DENY, REASON_MALFORMED)),
        Ok(Parsed::NonIp) => Some(Decision::new(VERDICT_ALLOW, REASON_NON_IP)),
        Ok(Parsed::Ip) if is_link_control(p) => Some(Decision::new(VERDICT_ALLOW, REASON_CONTROL)),
        Ok(Parsed::Ip) => None,
    }
}

/// The per-CPU scratch `Packet` a hook parses into.
#[inline(always)]
pub fn scratch_packet() -> Option<&'static mut Packet> {
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Anti-spoofing at a pod's interface: once a policy is installed, a pod interface the agent
/// manages (it has a marker entry with the zero address) may only send from its pod's addresses.
#[inline(always)]
pub fn spoofed_from_pod(p: &Packet, ifindex: u32) -> bool {
    if config().flags & CONFIG_ACTIVE == 0 {
        return false;
    }
    let mut key = EndpointKey {
        ifindex,
        addr: p.src,
    };
    if ENDPOINTS.get_ptr(&key).is_some() {
        return false;
    }
    key.addr = [0; 16];
    ENDPOINTS.get_ptr(&key).is_some()
}

/// Anti-spoofing at the uplink: a packet from another node cannot carry a local pod's source.
#[inline(always)]
pub fn spoofed_from_uplink(p: &Packet) -> bool {
    let cfg = config();
    cfg.flags & CONFIG_ACTIVE != 0 && identity_of(cfg.slot, &p.src).flags & IDF_LOCAL != 0
}

/// Decisions made before the policy (malformed, spoofed, control, non-IP), counted and reported.
#[inline(always)]
pub fn verdict_without_policy(
    p: Option<&Packet>,
    direction: u8,
    ifindex: u32,
    d: Decision,
) -> Action {
    count(direction, d.verdict, d.reason, 0);
    if d.verdict == VERDICT_DENY {
        if let Some(p) = p {
            let cfg = config();
            report(p, direction, ifindex, &cfg, &d);
        }
    }
    d.action()
}

pub const SPOOFED: Decision = Decision::new(VERDICT_DENY, REASON_SPOOFED);

/// The one exit of a policy decision: count it, report it if it is a drop or a new flow.
#[inline(always)]
fn finish(p: &Packet, direction: u8, ifindex: u32, cfg: &Config, d: Decision) -> Action {
    count(direction, d.verdict, d.reason, d.rule);
    if d.reason != REASON_ESTABLISHED && d.reason != REASON_NO_POLICY {
        report(p, direction, ifindex, cfg, &d);
    }
    d.action()
}

#[inline(always)]
fn count(direction: u8, verdict: u8, reason: u8, rule: u32) {
    let i = enforcer_common::counter_index(direction, verdict, reason);
    if let Some(c) = COUNTERS.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
    if rule != 0 {
        if let Some(c) = RULE_COUNTERS.get_ptr_mut(rule) {
            unsafe { *c += 1 };
        }
    }
}

#[inline(always)]
fn report(p: &Packet, direction: u8, ifindex: u32, cfg: &Config, d: &Decision) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(c) = EVENT_STATS.get_ptr_mut(enforcer_common::event_stat::LOST) {
            unsafe { *c += 1 };
        }
        return;
    };
    // Fill the reserved record in place (an `Event` on the stack would not fit).
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).timestamp_ns = bpf_ktime_get_ns();
        (*e).src = p.src;
        (*e).dst = p.dst;
        (*e).sport = p.sport;
        (*e).dport = policy_port(p);
        (*e).protocol = p.protocol;
        (*e).direction = direction;
        (*e).verdict = d.verdict;
        (*e).reason = d.reason;
        (*e).src_identity = d.src_identity;
        (*e).dst_identity = d.dst_identity;
        (*e).rule = d.rule;
        (*e).ifindex = ifindex;
        (*e).generation = cfg.generation as u32;
    }
    entry.submit(0);
}
