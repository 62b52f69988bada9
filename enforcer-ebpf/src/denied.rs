//! Recently denied flows: a cache of policy denials, and drop-event aggregation (as Cilium's
//! monitor aggregation does).
//!
//! `DENIED_FLOWS` is an LRU keyed by the flow as the hook judged it (source, destination, source
//! port, policy port, protocol, direction), holding the decision it was denied with, the policy
//! generation it was denied under, and when its drop was last reported. A whole packet (not a
//! fragment, not an ICMP error) without a conntrack entry looks it up before anything else: an
//! entry of the active generation decides the drop on that one hash hit (`recent`), so a flood of
//! one denied flow costs no judgment. An entry of an older generation is ignored (the packet is
//! judged again, and a new denial overwrites it); only denials are written, so the cache never
//! allows anything. In `from_pod`, the entry must also record this interface as the one the
//! packet's source was proven to send from (`ENDPOINTS`), as a conntrack entry does for the
//! established fast path.
//!
//! Events: the first drop of a flow under the active generation is reported at once; later drops
//! of the same flow are counted (`COUNTERS`, `RULE_COUNTERS`, every packet) and reported at most
//! once per `DENIED_REPORT_INTERVAL_NS`; the drops not reported count in
//! `EVENT_STATS[SAMPLED_OUT]`. The map is not pinned: after an agent restart or upgrade each
//! flow's next drop is judged and reported again.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use enforcer_common::{Addr, Config, DENIED_REPORT_INTERVAL_NS, VERDICT_DENY};

use crate::{
    maps::DENIED_FLOWS,
    parse::{policy_port, Packet},
    policy::Decision,
};

/// Key of `DENIED_FLOWS`: a flow as one hook judged it. Aligned like `CtKey`, for word stores.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct DeniedKey {
    src: Addr,
    dst: Addr,
    sport: u16,
    /// The policy port (destination port, or ICMP type).
    port: u16,
    protocol: u8,
    direction: u8,
    _pad: u16,
}

/// Value of `DENIED_FLOWS`: the denial, and when it was last reported.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeniedValue {
    /// The generation the flow was denied under.
    generation: u64,
    /// When its last drop event was reported (`bpf_ktime_get_ns`).
    reported_ns: u64,
    /// The deciding rule, and the identities of both ends (for counters and events).
    rule: u32,
    src_identity: u32,
    dst_identity: u32,
    /// The pod interface `ENDPOINTS` proved the source may send from (0 = none).
    proven_if: u32,
    /// `Reason` code of the denial.
    reason: u8,
    _pad: [u8; 7],
}

#[inline(always)]
fn key(p: &Packet, direction: u8) -> DeniedKey {
    DeniedKey {
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        port: policy_port(p),
        protocol: p.protocol,
        direction,
        _pad: 0,
    }
}

/// Whether a drop last reported at `reported_ns` is reported again now (and if so, note `now`).
#[inline(always)]
fn due(reported_ns: &mut u64) -> bool {
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let due = now.wrapping_sub(*reported_ns) >= DENIED_REPORT_INTERVAL_NS;
    if due {
        *reported_ns = now;
    }
    due
}

/// The drop of a packet of a flow denied under the active generation, from one `DENIED_FLOWS`
/// lookup; `None` if the cache does not know the flow under this generation (or, with `from_if`,
/// from this interface), which takes the full judgment. For whole packets without a conntrack
/// entry under an active policy only.
#[inline(always)]
pub fn recent(p: &Packet, direction: u8, cfg: &Config, from_if: Option<u32>) -> Option<Decision> {
    let v = DENIED_FLOWS.get_ptr_mut(&key(p, direction))?;
    // SAFETY: `v` is the non-null lookup result of `DENIED_FLOWS`, a live `DeniedValue`; its
    // fields are integers read and written whole (two CPUs racing on one flow report one event
    // more, never fewer; a concurrent rewrite is a denial too).
    unsafe {
        if (*v).generation != cfg.generation {
            return None;
        }
        if let Some(i) = from_if {
            if (*v).proven_if != i {
                return None;
            }
        }
        Some(Decision {
            verdict: VERDICT_DENY,
            reason: (*v).reason,
            rule: (*v).rule,
            src_identity: (*v).src_identity,
            dst_identity: (*v).dst_identity,
            ratelimit: 0,
            report: due(&mut (*v).reported_ns),
        })
    }
}

/// Remember the denial `d` of `p`'s flow (judged in full) and decide whether it is reported as an
/// event (`d.report`): yes for the flow's first drop under the active generation and once per
/// interval after that. `proven_if`: see `DeniedValue::proven_if`.
#[inline(always)]
pub fn remember(p: &Packet, direction: u8, cfg: &Config, proven_if: u32, d: &mut Decision) {
    let key = key(p, direction);
    let mut last = None;
    if let Some(v) = DENIED_FLOWS.get_ptr(&key) {
        // SAFETY: `v` is the non-null lookup result of `DENIED_FLOWS`, a live `DeniedValue`; the
        // fields are integers read by value.
        unsafe {
            if (*v).generation == cfg.generation {
                last = Some((*v).reported_ns);
            }
        }
    }
    let (report, reported_ns) = match last {
        Some(mut ns) => {
            let report = due(&mut ns);
            (report, ns)
        }
        // First drop under this generation: reported at once.
        // SAFETY: `bpf_ktime_get_ns` has no preconditions.
        None => (true, unsafe { bpf_ktime_get_ns() }),
    };
    d.report = report;
    let v = DeniedValue {
        generation: cfg.generation,
        reported_ns,
        rule: d.rule,
        src_identity: d.src_identity,
        dst_identity: d.dst_identity,
        proven_if,
        reason: d.reason,
        _pad: [0; 7],
    };
    let _ = DENIED_FLOWS.insert(&key, &v, 0);
}
