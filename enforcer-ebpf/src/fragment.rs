//! IP fragments: only the first fragment of a datagram carries the layer 4 header. When it
//! passes a hook, its ports (ICMP type, TCP flags) are remembered per (direction, datagram) in
//! `FRAGMENTS`; the later fragments are judged with them, through conntrack and the policy like
//! any packet, so a fragment never passes where its first fragment would not. A later fragment
//! with nothing remembered (first fragment denied, never seen, or forgotten by the LRU) is
//! dropped with reason `fragment`. A denied first fragment erases what an earlier datagram with
//! the same identification left, so its later fragments cannot ride on it.

use enforcer_common::{FragKey, FragValue, Reason, Verdict};

use crate::{
    conntrack::Lookup,
    maps::FRAGMENTS,
    parse::{Packet, FRAG_FIRST, FRAG_LATER},
    policy::{judge_segs, Action, Decision},
    report::verdict_without_policy,
};

const ORPHAN: Decision = Decision::new(Verdict::Deny, Reason::Fragment);

#[inline(always)]
fn key(p: &Packet, direction: u8) -> FragKey {
    FragKey {
        src: p.src,
        dst: p.dst,
        id: p.frag_id,
        protocol: p.protocol,
        direction,
        _pad: [0; 2],
    }
}

/// Judge a parsed IP packet for `direction` (tc hooks), fragments included (`proven_if`, `pre`:
/// see `judge_segs`; a later fragment's lookup is made here, with its first fragment's ports).
#[inline(always)]
pub fn judge(
    p: &mut Packet,
    direction: u8,
    ifindex: u32,
    segs: u32,
    proven_if: u32,
    pre: Option<&Lookup>,
) -> Action {
    if p.fragment == FRAG_LATER {
        let Some(v) = FRAGMENTS.get_ptr(&key(p, direction)) else {
            return verdict_without_policy(Some(p), direction, ifindex, ORPHAN);
        };
        // SAFETY: `v` points at a live map value of type `FragValue` (the verifier checked the
        // lookup result is non-null); it is copied out field by field.
        unsafe {
            p.sport = (*v).sport;
            p.dport = (*v).dport;
            p.icmp_type = (*v).icmp_type;
            p.tcp_flags = (*v).tcp_flags;
        }
        return judge_segs(p, direction, ifindex, segs, proven_if, None);
    }
    let action = judge_segs(p, direction, ifindex, segs, proven_if, pre);
    if p.fragment == FRAG_FIRST {
        let k = key(p, direction);
        if action == Action::Pass {
            let v = FragValue {
                sport: p.sport,
                dport: p.dport,
                icmp_type: p.icmp_type,
                tcp_flags: p.tcp_flags,
                _pad: [0; 2],
            };
            let _ = FRAGMENTS.insert(&k, &v, 0);
        } else {
            let _ = FRAGMENTS.remove(&k);
        }
    }
    action
}
