//! tc egress of a pod's host-side veth: packets about to enter the pod, judged by its ingress
//! policy (whether they come from a local pod, the node, another node or the world).

use aya_ebpf::{macros::classifier, programs::TcContext};
use enforcer_common::DIR_INGRESS;

use super::{pull_headers, skb_fields, tc_action};
use crate::{
    conntrack::established,
    denied, fragment,
    maps::{config, scratch_packet},
    parse::parse,
    policy::{ct_lookup, early_verdict, Action},
    report::{finish, verdict_without_policy},
};

#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    tc_action(try_to_pod(&ctx))
}

#[inline(always)]
fn try_to_pod(ctx: &TcContext) -> Action {
    pull_headers(ctx);
    let skb = skb_fields(ctx);
    let Some(p) = scratch_packet() else {
        return Action::Drop;
    };
    let parsed = parse(ctx.data(), ctx.data_end(), p);
    if let Some(d) = early_verdict(&parsed, p) {
        return verdict_without_policy(None, DIR_INGRESS, skb.ifindex, d);
    }
    // One conntrack lookup decides a packet of an established flow.
    let cfg = config();
    let ct = ct_lookup(p, &cfg);
    if let Some(d) = ct
        .as_ref()
        .and_then(|l| established(l, p, DIR_INGRESS, &cfg, None))
    {
        return finish(p, DIR_INGRESS, skb.ifindex, &cfg, d);
    }
    // A flow denied under the active generation is dropped on one `DENIED_FLOWS` hit.
    if let Some(d) = ct
        .as_ref()
        .filter(|l| !l.tracked())
        .and_then(|_| denied::recent(p, DIR_INGRESS, &cfg, None))
    {
        return finish(p, DIR_INGRESS, skb.ifindex, &cfg, d);
    }
    // A GSO aggregate counts as its segments against packet rate limits.
    let segs = skb.gso_segs.max(1);
    fragment::judge(p, DIR_INGRESS, skb.ifindex, segs, 0, ct.as_ref())
}
