//! The layout of every struct shared with the kernel, checked twice (the Rust form of Cilium's
//! `bpf_alignchecker.c`):
//!
//! - at compile time, on both sides: each struct's size and each field's offset are asserted
//!   below, and so is the absence of implicit padding (the sum of the field sizes is the struct
//!   size), which the `aya::Pod` impls rely on;
//! - by the `fingerprint` test: a hash of every size, alignment, field offset and field size must
//!   equal `LAYOUT_FINGERPRINT`, recorded next to `LAYOUT_VERSION`. Changing a pinned struct
//!   without bumping `LAYOUT_VERSION` (which moves the pins to a new directory, so an agent never
//!   adopts maps it cannot read) fails that test.

// `shapes!` names every field, the `_pad` ones included.
#![allow(clippy::used_underscore_binding)]

use core::mem::{align_of, offset_of, size_of};

use crate::{
    ratelimit::{BucketKey, RateBucket, RateDim, RateLimitConfig, RateLimitKey},
    CidrKeyData, Config, CtKey, CtValue, EndpointKey, Event, FragKey, FragValue, IdentityKey,
    IdentityValue, PolicyKeyData, PolicyValue,
};

/// One field of a shared struct.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// The layout of one shared struct.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
    pub fields: &'static [Field],
}

/// The size of the field `f` selects, without naming its type.
const fn field_size<T, F>(_f: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Whether the fields of `s` cover it byte for byte (no implicit padding).
const fn no_padding(s: &Shape) -> bool {
    let mut sum = 0;
    let mut i = 0;
    while i < s.fields.len() {
        sum += s.fields[i].size;
        i += 1;
    }
    sum == s.size
}

macro_rules! shapes {
    ($( $ty:ident = $size:literal { $( $field:ident @ $offset:literal ),+ $(,)? } )+) => {
        $(
            const _: () = assert!(size_of::<$ty>() == $size);
            $( const _: () = assert!(offset_of!($ty, $field) == $offset); )+
        )+

        /// Every struct shared with the kernel, with its fields.
        pub const SHAPES: &[Shape] = &[$(
            Shape {
                name: stringify!($ty),
                size: size_of::<$ty>(),
                align: align_of::<$ty>(),
                fields: &[$(
                    Field {
                        name: stringify!($field),
                        offset: offset_of!($ty, $field),
                        size: field_size(|s: &$ty| &s.$field),
                    },
                )+],
            },
        )+];
    };
}

shapes! {
    Config = 16 { generation @ 0, slot @ 8, flags @ 12 }
    IdentityKey = 20 { slot @ 0, addr @ 4 }
    IdentityValue = 8 { id @ 0, flags @ 4 }
    EndpointKey = 20 { ifindex @ 0, addr @ 4 }
    PolicyValue = 16 {
        rule @ 0, audit_rule @ 4, ratelimit @ 8, verdict @ 12, audit_verdict @ 13, reason @ 14,
        audit_reason @ 15,
    }
    CtKey = 40 { a @ 0, b @ 16, a_port @ 32, b_port @ 34, protocol @ 36, _pad @ 37, _pad2 @ 38 }
    CtValue = 48 {
        generation @ 0, rule @ 16, flags @ 24, policy_port @ 28, origin @ 30, state @ 31,
        ifindex @ 32, seen @ 40, _pad @ 44,
    }
    FragKey = 40 { src @ 0, dst @ 16, id @ 32, protocol @ 36, direction @ 37, _pad @ 38 }
    FragValue = 8 { sport @ 0, dport @ 2, icmp_type @ 4, tcp_flags @ 5, _pad @ 6 }
    Event = 72 {
        timestamp_ns @ 0, src @ 8, dst @ 24, sport @ 40, dport @ 42, protocol @ 44,
        direction @ 45, verdict @ 46, reason @ 47, src_identity @ 48, dst_identity @ 52,
        rule @ 56, ifindex @ 60, generation @ 64,
    }
    RateLimitKey = 8 { slot @ 0, rule @ 4 }
    RateDim = 24 { rate @ 0, capacity @ 8, fill_ns @ 16 }
    RateLimitConfig = 56 { packets @ 0, bytes @ 24, flags @ 48, _pad @ 52 }
    BucketKey = 20 { rule @ 0, addr @ 4 }
    RateBucket = 32 { packet_tokens @ 0, byte_tokens @ 8, last_ns @ 16, last_event_ns @ 24 }
}

// The `aya::Pod` impls (feature `user`) promise that no byte of these is padding.
const _: () = {
    let mut i = 0;
    while i < SHAPES.len() {
        assert!(
            no_padding(&SHAPES[i]),
            "a shared struct has implicit padding"
        );
        i += 1;
    }
};

// The LPM key data, whose byte layout `PolicyKey` and `cidr_key_data` encode.
const _: () = assert!(size_of::<PolicyKeyData>() == 16);
const _: () = assert!(size_of::<CidrKeyData>() == 17);

/// FNV-1a over every size, alignment, field offset and field size of `SHAPES` and the key data.
pub const fn fingerprint() -> u64 {
    let mut h = Fnv::new()
        .usize(size_of::<PolicyKeyData>())
        .usize(size_of::<CidrKeyData>());
    let mut i = 0;
    while i < SHAPES.len() {
        let s = &SHAPES[i];
        h = h.usize(s.size).usize(s.align).usize(s.fields.len());
        let mut j = 0;
        while j < s.fields.len() {
            h = h.usize(s.fields[j].offset).usize(s.fields[j].size);
            j += 1;
        }
        i += 1;
    }
    h.0
}

struct Fnv(u64);

impl Fnv {
    const fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    const fn usize(self, v: usize) -> Fnv {
        let bytes = (v as u64).to_le_bytes();
        let mut h = self.0;
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        Fnv(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LAYOUT_FINGERPRINT, LAYOUT_VERSION};

    #[test]
    fn fingerprint_matches_layout_version() {
        let now = fingerprint();
        assert!(
            now == LAYOUT_FINGERPRINT,
            "the layout of a struct shared with the kernel changed (fingerprint {now:#018x}, \
             recorded {LAYOUT_FINGERPRINT:#018x} for LAYOUT_VERSION {LAYOUT_VERSION}): bump \
             LAYOUT_VERSION in enforcer-common/src/lib.rs and record the new fingerprint next to it"
        );
    }

    #[test]
    fn fingerprint_sees_one_offset_move() {
        // The check is only worth something if moving one field changes the hash.
        static MOVED: [Field; 2] = [
            Field {
                name: "a",
                offset: 0,
                size: 4,
            },
            Field {
                name: "b",
                offset: 8,
                size: 4,
            },
        ];
        static KEPT: [Field; 2] = [
            Field {
                name: "a",
                offset: 0,
                size: 4,
            },
            Field {
                name: "b",
                offset: 4,
                size: 4,
            },
        ];
        let hash = |fields: &[Field]| {
            fields
                .iter()
                .fold(Fnv::new(), |h, f| h.usize(f.offset).usize(f.size))
                .0
        };
        assert_ne!(hash(&MOVED), hash(&KEPT));
    }

    #[test]
    fn every_pod_struct_is_listed_without_padding() {
        assert_eq!(SHAPES.len(), 15);
        for s in SHAPES {
            assert!(no_padding(s), "{} has implicit padding", s.name);
        }
    }
}
