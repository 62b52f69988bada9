//! One file per hook. Each is a thin entry point around a `try_` function; every path ends in
//! `policy::judge` or `policy::verdict_without_policy`, which count and report the decision.

mod empty;
mod from_pod;
mod to_pod;
mod xdp_pod;
mod xdp_uplink;

use aya_ebpf::{bindings::TC_ACT_SHOT, bindings::TC_ACT_UNSPEC, programs::TcContext};

use crate::policy::Action;

/// tc verdict: drops are final; allowed packets go on to the next tcx program (the CNI's), so we
/// never bypass it.
#[inline(always)]
fn tc_action(a: Action) -> i32 {
    match a {
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT,
    }
}

/// Make sure the headers we parse are in the linear part of the skb.
#[inline(always)]
fn pull_headers(ctx: &TcContext) {
    const WANT: u32 = 128;
    let len = ctx.len();
    let want = if len < WANT { len } else { WANT };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
}

/// The `__sk_buff` fields the tc hooks need.
struct SkbFields {
    ifindex: u32,
    /// Segments of a GSO aggregate (0 for a plain packet).
    gso_segs: u32,
}

#[inline(always)]
fn skb_fields(ctx: &TcContext) -> SkbFields {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the context pointer the kernel passed to this tc program, valid for the
    // whole run; reads of `__sk_buff` fields are rewritten by the verifier into reads of the
    // real skb, and both fields are readable by tc programs.
    unsafe {
        SkbFields {
            ifindex: (*skb).ifindex,
            gso_segs: (*skb).gso_segs,
        }
    }
}
