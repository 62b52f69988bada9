//! The verdict for one packet: conntrack first (`conntrack`), then identities (`identity`) and
//! the policy trie (two lookups: the peer's table, then any peer's), then one exit
//! (`report::finish`) that counts and reports every decision.

use aya_ebpf::maps::lpm_trie::Key;
use enforcer_common::{
    identity, Config, PolicyKey, PolicyValue, Reason, Verdict, CONFIG_ACTIVE, DIR_INGRESS,
    IDF_HOST, POLICY_KEY_FULL_BITS, REASON_HOST, VERDICT_ALLOW, VERDICT_AUDIT, VERDICT_DENY,
};

use crate::{
    conntrack::{judge_active, Lookup},
    cursor::Malformed,
    identity::identity_of,
    maps::{config, POLICY},
    parse::{is_link_control, policy_port, Packet, Parsed, FRAG_NONE},
    ratelimit::{self, Charge},
    report::{finish, rate_limited},
};

/// What the hook does with the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
}

/// A decision with its attribution. `verdict` and `reason` are `Verdict` and `Reason` codes
/// (bytes, as `PolicyValue` carries them from the agent).
#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: u8,
    pub reason: u8,
    pub rule: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Rate-limit bucket of the deciding rule (0 = none).
    pub ratelimit: u32,
    /// Whether `finish` reports it as an event (if it is a kind that is reported): false for a
    /// denial whose flow was reported less than an interval ago (`denied`).
    pub report: bool,
}

impl Decision {
    #[inline(always)]
    pub const fn new(verdict: Verdict, reason: Reason) -> Self {
        Self {
            verdict: verdict as u8,
            reason: reason as u8,
            rule: 0,
            src_identity: 0,
            dst_identity: 0,
            ratelimit: 0,
            report: true,
        }
    }

    #[inline(always)]
    pub fn action(&self) -> Action {
        if self.verdict == VERDICT_DENY {
            Action::Drop
        } else {
            Action::Pass
        }
    }
}

/// A flow in its original direction, as the policy judges it.
#[derive(Clone, Copy)]
pub struct FlowRef<'a> {
    pub src: &'a enforcer_common::Addr,
    pub dst: &'a enforcer_common::Addr,
    pub protocol: u8,
    /// The destination port, or the ICMP type.
    pub port: u16,
}

impl<'a> FlowRef<'a> {
    /// The flow a packet starts.
    #[inline(always)]
    pub fn of(p: &'a Packet) -> Self {
        FlowRef {
            src: &p.src,
            dst: &p.dst,
            protocol: p.protocol,
            port: policy_port(p),
        }
    }
}

#[inline(always)]
fn lookup_policy(
    slot: u32,
    direction: u8,
    subject: u32,
    peer: u32,
    t: &FlowRef,
) -> Option<PolicyValue> {
    let key = PolicyKey {
        slot: slot as u8,
        direction,
        subject,
        peer,
        protocol: t.protocol,
        port: t.port,
    };
    POLICY
        .get(&Key::new(POLICY_KEY_FULL_BITS, key.encode()))
        .copied()
}

/// Judge a new flow `src → dst` for `direction` against the active policy.
#[inline(always)]
pub fn decide(cfg: &Config, direction: u8, t: &FlowRef) -> Decision {
    let src = identity_of(cfg.slot, t.src);
    let dst = identity_of(cfg.slot, t.dst);
    let mut d = Decision::new(Verdict::Allow, Reason::NotIsolated);
    d.src_identity = src.id;
    d.dst_identity = dst.id;
    if src.id == identity::UNKNOWN || dst.id == identity::UNKNOWN {
        // A pod the agent has not registered: nothing is allowed to or from it, not even the
        // node (fail closed until its identity is known).
        d.verdict = VERDICT_DENY;
        d.reason = Reason::UnknownEndpoint as u8;
        return d;
    }
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
    let v = match lookup_policy(cfg.slot, direction, subject, peer, t) {
        Some(v) => v,
        None => match lookup_policy(cfg.slot, direction, subject, identity::ANY, t) {
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

/// The packet's one `CONNTRACK` lookup, for whole packets (not fragments, whose ports may come
/// from their first fragment; not ICMP errors) under an active policy; `None` otherwise.
#[inline(always)]
pub fn ct_lookup(p: &Packet, cfg: &Config) -> Option<Lookup> {
    if cfg.flags & CONFIG_ACTIVE == 0 || p.fragment != FRAG_NONE || p.is_icmp_error {
        return None;
    }
    Some(Lookup::of(p))
}

/// Judge a parsed IP packet of `segs` segments (a GSO aggregate counts each against rate limits)
/// for `direction` (tc hooks): conntrack, then policy. Fragments go through `fragment::judge`.
/// `proven_if`: the pod interface anti-spoofing proved the source may send from (0 = none);
/// `pre`: the packet's conntrack lookup, if the hook made it (`ct_lookup`).
#[inline(always)]
pub fn judge_segs(
    p: &Packet,
    direction: u8,
    ifindex: u32,
    segs: u32,
    proven_if: u32,
    pre: Option<&Lookup>,
) -> Action {
    let cfg = config();
    if cfg.flags & CONFIG_ACTIVE == 0 {
        let d = Decision::new(Verdict::Allow, Reason::NoPolicy);
        return finish(p, direction, ifindex, &cfg, d);
    }
    let d = judge_active(p, direction, &cfg, proven_if, pre);
    // Rule 9: packets in the original direction of a flow allowed by a rate-limited rule.
    if d.ratelimit != 0 && d.verdict == VERDICT_ALLOW {
        if let Charge::Drop { report } = ratelimit::charge(cfg.slot, d.ratelimit, p, segs) {
            return rate_limited(p, direction, ifindex, &cfg, d, report);
        }
    }
    finish(p, direction, ifindex, &cfg, d)
}

/// The decision for packets that must not reach the policy, shared by the XDP hooks and
/// `from_pod`: malformed (drop), non-IP and link control (pass); `None` for packets the policy
/// should judge.
#[inline(always)]
pub fn early_verdict(parsed: &Result<Parsed, Malformed>, p: &Packet) -> Option<Decision> {
    match parsed {
        Err(Malformed) => Some(Decision::new(Verdict::Deny, Reason::Malformed)),
        Ok(Parsed::NonIp) => Some(Decision::new(Verdict::Allow, Reason::NonIp)),
        Ok(Parsed::Ip) if is_link_control(p) => {
            Some(Decision::new(Verdict::Allow, Reason::Control))
        }
        Ok(Parsed::Ip) => None,
    }
}
