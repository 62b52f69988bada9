//! The enforcer datapath: tc (tcx) programs on both directions of every pod's host-side veth, and
//! XDP programs for early drops. One file per hook under `probes/`; one concern per module:
//!
//! - `maps`: every map, `config()`, per-CPU counters;
//! - `cursor`: bounds-checked header reads (the one `unsafe` of parsing);
//! - `parse`: headers → `Packet`;
//! - `identity`: address → identity, anti-spoofing;
//! - `policy`: `decide` (two trie lookups) and `judge_segs`, the tc hooks' entry;
//! - `conntrack`: tracked flows, re-judged after a policy change;
//! - `denied`: recently denied flows (dropped on one hash hit before the judgment) and their drop
//!   events aggregated per flow (first drop, then once per interval);
//! - `fragment`: later IP fragments judged with their first fragment's ports;
//! - `ratelimit`: token buckets (compare-and-swap), the uplink's early drop;
//! - `report`: counting and events, the one exit of every decision.
#![no_std]
#![no_main]
// Fetching atomics (compare-and-swap) for the rate-limit buckets: see `ratelimit`.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys are passed by reference: the helper gets a pointer to the one copy we built, instead
// of a second copy of a 40-byte key on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conntrack;
mod cursor;
mod denied;
mod fragment;
mod identity;
mod maps;
mod parse;
mod policy;
mod probes;
mod ratelimit;
mod report;

/// Never linked into a program: the verifier rejects any program that could reach it (an
/// endless loop), so a reachable panic fails the load instead of running.
#[cfg(not(test))]
#[panic_handler]
#[allow(clippy::empty_loop)]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
