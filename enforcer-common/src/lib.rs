//! Types shared by the eBPF programs (`enforcer-ebpf`) and the userspace agent (`enforcer`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so the kernel hashes exactly the
//! bytes we mean and both sides agree on the layout. The userspace side gets `aya::Pod` impls behind
//! the `user` feature.
#![no_std]

pub mod addr;
pub mod maps;
pub mod ratelimit;
pub mod verdict;

pub use addr::Addr;
pub use maps::*;
pub use ratelimit::{BucketKey, RateBucket, RateDim, RateLimitConfig, RateLimitKey};
pub use verdict::*;

/// Bumped whenever the layout of a pinned map changes; part of the bpffs pin path, so an agent never
/// adopts maps whose layout it does not understand.
pub const LAYOUT_VERSION: u32 = 2;

#[cfg(feature = "user")]
mod user {
    use super::{
        Config, CtKey, CtValue, EndpointKey, Event, IdentityKey, IdentityValue, PolicyValue,
    };
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, contain no pointers and have no implicit padding.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for IdentityKey {}
    unsafe impl aya::Pod for IdentityValue {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::RateLimitKey {}
    unsafe impl aya::Pod for super::RateLimitConfig {}
    unsafe impl aya::Pod for super::BucketKey {}
    unsafe impl aya::Pod for super::RateBucket {}
}
