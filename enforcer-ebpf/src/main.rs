//! The enforcer datapath: tc (tcx) programs on both directions of every pod's host-side veth, and
//! XDP programs for early drops. One file per hook under `probes/`; they parse with `parse` and
//! decide with `policy`, which reads the maps of `maps`.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod policy;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
