//! The enforcer datapath: tc (tcx) programs on both directions of every pod's host-side veth, and
//! XDP programs for early drops. One file per hook under `probes/`; they parse with `parse` and
//! decide with `policy`, which reads the maps of `maps`.
#![no_std]
#![no_main]
// Fetching atomics (compare-and-swap) for the rate-limit buckets: see `ratelimit`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod fragment;
mod maps;
mod parse;
mod policy;
mod probes;
mod ratelimit;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
