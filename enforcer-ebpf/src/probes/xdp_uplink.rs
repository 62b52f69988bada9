//! XDP on the node's uplink: drops, before an skb exists, packets from other nodes that claim
//! the source address of a pod of this node, and packets for local pods over the rate limit of
//! the ingress rule allowing their flow. Everything else passes; packets for local pods are
//! judged (and charged to their rate-limit bucket) by their ingress policy in `to_pod`.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use enforcer_common::DIR_INGRESS;

use crate::{
    identity::spoofed_from_uplink,
    maps::scratch_packet,
    parse::{parse, Parsed},
    policy::Action,
    ratelimit::uplink_rate_limit,
    report::{verdict_without_policy, SPOOFED},
};

#[xdp]
pub fn xdp_uplink(ctx: XdpContext) -> u32 {
    match try_xdp_uplink(&ctx) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn try_xdp_uplink(ctx: &XdpContext) -> Action {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(p) = scratch_packet() else {
        return Action::Pass;
    };
    // Malformed packets may be for the node itself: not ours to drop here; `to_pod` drops the
    // ones headed for a pod.
    match parse(ctx.data(), ctx.data_end(), p) {
        Ok(Parsed::Ip) if spoofed_from_uplink(p) => {
            verdict_without_policy(Some(p), DIR_INGRESS, ifindex, SPOOFED)
        }
        // Excess of rate-limited flows into local pods is dropped here, before an skb exists.
        Ok(Parsed::Ip) => uplink_rate_limit(p, ifindex),
        _ => Action::Pass,
    }
}
