//! XDP on a pod's host-side veth (optional): drops malformed and spoofed packets before an skb
//! exists. Everything else passes on to `from_pod`, which judges the policy.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use enforcer_common::{DIR_EGRESS, VERDICT_DENY};

use crate::{
    identity::spoofed_from_pod,
    maps::scratch_packet,
    parse::parse,
    policy::{early_verdict, Action},
    report::{verdict_without_policy, SPOOFED},
};

#[xdp]
pub fn xdp_pod(ctx: XdpContext) -> u32 {
    match try_xdp_pod(&ctx) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn try_xdp_pod(ctx: &XdpContext) -> Action {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(p) = scratch_packet() else {
        return Action::Drop;
    };
    let parsed = parse(ctx.data(), ctx.data_end(), p);
    match early_verdict(&parsed, p) {
        // Drops are final and counted here; passes are counted by the tc hook.
        Some(d) if d.verdict == VERDICT_DENY => {
            verdict_without_policy(None, DIR_EGRESS, ifindex, d)
        }
        Some(_) => Action::Pass,
        None if spoofed_from_pod(p, ifindex) => {
            verdict_without_policy(Some(p), DIR_EGRESS, ifindex, SPOOFED)
        }
        None => Action::Pass,
    }
}
