//! Drop-event aggregation for denied flows (as Cilium's monitor aggregation does): the first drop
//! of a flow is reported at once; later drops of the same flow are counted (`COUNTERS`,
//! `RULE_COUNTERS`, every packet) and reported at most once per `DENIED_REPORT_INTERVAL_NS`; the
//! drops not reported count in `EVENT_STATS[SAMPLED_OUT]`. A flood of one denied flow then costs
//! its judgment and one hash lookup per packet instead of a ring-buffer event per packet.
//!
//! `DENIED_FLOWS` is an LRU keyed by the flow as the hook judged it (source, destination, source
//! port, policy port, protocol, direction), holding the generation it was denied under and when
//! it was last reported: under a new generation its next drop is reported at once. Only whole
//! packets (not fragments, not ICMP errors) without a conntrack entry are aggregated. The map is
//! not pinned: after an agent restart or upgrade each flow's next drop is reported again.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use enforcer_common::{Addr, Config, DENIED_REPORT_INTERVAL_NS};

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

/// Value of `DENIED_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeniedValue {
    /// The generation the flow was denied under.
    generation: u64,
    /// When its last drop event was reported (`bpf_ktime_get_ns`).
    reported_ns: u64,
}

/// Decide whether the denial `d` of `p`'s flow is reported as an event (`d.report`): yes for the
/// flow's first drop under the active generation and once per interval after that.
#[inline(always)]
pub fn aggregate(p: &Packet, direction: u8, cfg: &Config, d: &mut Decision) {
    let key = DeniedKey {
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        port: policy_port(p),
        protocol: p.protocol,
        direction,
        _pad: 0,
    };
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(v) = DENIED_FLOWS.get_ptr_mut(&key) {
        // SAFETY: `v` is the non-null lookup result of `DENIED_FLOWS`, a live `DeniedValue`; its
        // fields are u64s read and written whole (two CPUs racing on one flow report one event
        // more, never fewer).
        unsafe {
            if (*v).generation == cfg.generation {
                d.report = now.wrapping_sub((*v).reported_ns) >= DENIED_REPORT_INTERVAL_NS;
                if d.report {
                    (*v).reported_ns = now;
                }
                return;
            }
        }
    }
    let v = DeniedValue {
        generation: cfg.generation,
        reported_ns: now,
    };
    let _ = DENIED_FLOWS.insert(&key, &v, 0);
    d.report = true;
}
