//! The one exit of every decision: count it (per direction, verdict and reason, and per rule)
//! and report drops and new flows as `Event`s in the ring buffer.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use enforcer_common::{
    counter_index, event_stat, Config, Event, Reason, Verdict, REASON_ESTABLISHED,
    REASON_NO_POLICY, VERDICT_DENY,
};

use crate::{
    maps::{bump, config, COUNTERS, EVENTS, EVENT_STATS, RULE_COUNTERS},
    parse::{policy_port, Packet},
    policy::{Action, Decision},
};

/// The decision for a packet from a pod that is not allowed to use its source address.
pub const SPOOFED: Decision = Decision::new(Verdict::Deny, Reason::Spoofed);

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

/// The one exit of a policy decision: count it, report it if it is a drop or a new flow (a
/// denied flow's drops only once per interval: see `denied`).
#[inline(always)]
pub fn finish(p: &Packet, direction: u8, ifindex: u32, cfg: &Config, d: Decision) -> Action {
    count(direction, d.verdict, d.reason, d.rule);
    if d.reason != REASON_ESTABLISHED && d.reason != REASON_NO_POLICY {
        if d.report {
            report(p, direction, ifindex, cfg, &d);
        } else {
            bump(&EVENT_STATS, event_stat::SAMPLED_OUT);
        }
    }
    d.action()
}

/// A packet over its rule's rate limit: dropped, counted as `rate_limited` (and for its rule),
/// reported if it is its bucket's sampled event.
#[inline(always)]
pub fn rate_limited(
    p: &Packet,
    direction: u8,
    ifindex: u32,
    cfg: &Config,
    mut d: Decision,
    report_it: bool,
) -> Action {
    d.verdict = Verdict::Deny as u8;
    d.reason = Reason::RateLimited as u8;
    count(direction, d.verdict, d.reason, d.rule);
    if report_it {
        report(p, direction, ifindex, cfg, &d);
    } else {
        bump(&EVENT_STATS, event_stat::SAMPLED_OUT);
    }
    Action::Drop
}

#[inline(always)]
fn count(direction: u8, verdict: u8, reason: u8, rule: u32) {
    bump(&COUNTERS, counter_index(direction, verdict, reason));
    if rule != 0 {
        bump(&RULE_COUNTERS, rule);
    }
}

#[inline(always)]
fn report(p: &Packet, direction: u8, ifindex: u32, cfg: &Config, d: &Decision) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(&EVENT_STATS, event_stat::LOST);
        return;
    };
    // Fill the reserved record in place (an `Event` on the stack would not fit).
    let e = entry.as_mut_ptr();
    // SAFETY: `bpf_ktime_get_ns` has no preconditions. `e` points at the
    // `size_of::<Event>()` bytes just reserved in the ring buffer,
    // which only this program writes until `submit`; `Event` has no padding (see
    // `enforcer_common::layout`), so writing every field initialises every byte the agent reads.
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
        (*e).generation = cfg.generation;
    }
    entry.submit(0);
}
