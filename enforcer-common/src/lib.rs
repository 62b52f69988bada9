//! The contract between the eBPF programs (`enforcer-ebpf`) and the userspace agent (`enforcer`).
//!
//! - `codes`: `Direction`, `Verdict`, `Reason`, `Protocol` (`#[repr(u8)]`, one name table each);
//! - `counters`: the layout of `COUNTERS` (`CounterIndex` encode/decode);
//! - `maps`: map names, capacities, keys and values (`PolicyKey` encode/decode), `Event`;
//! - `ratelimit`: the token-bucket arithmetic both sides run;
//! - `layout`: size/offset assertions and the layout fingerprint of every shared struct.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so the kernel hashes exactly the
//! bytes we mean and both sides agree on the layout. The userspace side gets `aya::Pod` impls behind
//! the `user` feature.
#![no_std]
// The kernel side needs these small functions inlined (no BPF-to-BPF calls for them).
#![allow(clippy::inline_always)]
// Explicit padding fields (`_pad`) are public so that both sides can build the structs.
#![allow(clippy::pub_underscore_fields)]

pub mod addr;
pub mod codes;
pub mod counters;
pub mod layout;
pub mod maps;
pub mod ratelimit;

pub use addr::Addr;
pub use codes::*;
pub use counters::*;
pub use maps::*;
pub use ratelimit::{BucketKey, RateBucket, RateDim, RateLimitConfig, RateLimitKey};

/// Bumped whenever the layout of a pinned map or of `Event` changes; part of the bpffs pin path
/// (`<bpffs>/v<LAYOUT_VERSION>/`), so an agent never adopts maps whose layout it does not
/// understand. 3: `Event.generation` is a u64 (was a u32 followed by 4 bytes of padding). 4:
/// `CtValue.ifindex` (anti-spoofing proof per end), `CtKey` 8-byte aligned with two pad fields.
/// 5: `CtValue.seen` and `CtValue.state` (conntrack aging).
pub const LAYOUT_VERSION: u32 = 5;

/// `layout::fingerprint()` of `LAYOUT_VERSION`: the `layout` test fails when they disagree.
pub const LAYOUT_FINGERPRINT: u64 = 0x54a9_6167_e281_2ca4;

#[cfg(feature = "user")]
mod user {
    use super::{
        BucketKey, Config, CtKey, CtValue, EndpointKey, Event, FragKey, FragValue, IdentityKey,
        IdentityValue, PolicyValue, RateBucket, RateLimitConfig, RateLimitKey,
    };
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, contain no pointers, and have no implicit
    // padding: `layout` asserts at compile time that their fields cover them byte for byte.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for IdentityKey {}
    unsafe impl aya::Pod for IdentityValue {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for RateLimitKey {}
    unsafe impl aya::Pod for RateLimitConfig {}
    unsafe impl aya::Pod for BucketKey {}
    unsafe impl aya::Pod for RateBucket {}
}
