//! Empty programs, one per hook, for benchmarks only: `cargo xtask bench datapath` divides the cost
//! of every real program by the cost of the empty program of the same hook (`BPF_PROG_TEST_RUN`).
//! The agent never loads or attaches them.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn bench_empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}
