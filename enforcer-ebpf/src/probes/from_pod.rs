//! tc ingress of a pod's host-side veth: packets leaving the pod, judged by its egress policy.

use aya_ebpf::{macros::classifier, programs::TcContext};
use enforcer_common::DIR_EGRESS;

use super::{pull_headers, skb_fields, tc_action};
use crate::{
    conntrack::established,
    denied, fragment,
    identity::{source_from_pod, Source},
    maps::{config, scratch_packet},
    parse::parse,
    policy::{ct_lookup, early_verdict, Action},
    report::{finish, verdict_without_policy, SPOOFED},
};

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    tc_action(try_from_pod(&ctx))
}

#[inline(always)]
fn try_from_pod(ctx: &TcContext) -> Action {
    pull_headers(ctx);
    let ifindex = skb_fields(ctx).ifindex;
    let Some(p) = scratch_packet() else {
        return Action::Drop;
    };
    let parsed = parse(ctx.data(), ctx.data_end(), p);
    if let Some(d) = early_verdict(&parsed, p) {
        return verdict_without_policy(None, DIR_EGRESS, ifindex, d);
    }
    let cfg = config();
    // One conntrack lookup decides a packet of an established flow; the entry also proves the
    // source was checked against `ENDPOINTS` on this interface.
    let ct = ct_lookup(p, &cfg);
    if let Some(d) = ct
        .as_ref()
        .and_then(|l| established(l, p, DIR_EGRESS, &cfg, Some(ifindex)))
    {
        return finish(p, DIR_EGRESS, ifindex, &cfg, d);
    }
    // A flow denied under the active generation is dropped on one `DENIED_FLOWS` hit (its entry
    // also proves the source on this interface).
    if let Some(d) = ct
        .as_ref()
        .filter(|l| !l.tracked())
        .and_then(|_| denied::recent(p, DIR_EGRESS, &cfg, Some(ifindex)))
    {
        return finish(p, DIR_EGRESS, ifindex, &cfg, d);
    }
    let proven_if = match source_from_pod(p, ifindex, &cfg) {
        Source::Spoofed => return verdict_without_policy(Some(p), DIR_EGRESS, ifindex, SPOOFED),
        Source::Proven => ifindex,
        Source::Unchecked => 0,
    };
    fragment::judge(p, DIR_EGRESS, ifindex, 1, proven_if, ct.as_ref())
}
