//! One 16-byte address form for both families: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so
//! one identity map, one CIDR trie and one conntrack table serve IPv4 and IPv6 alike.

/// An address as the datapath keys it.
pub type Addr = [u8; 16];

/// Bits of an IPv4-mapped address before the IPv4 part (`::ffff:0:0/96`).
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// Map an IPv4 address into the 16-byte form.
#[inline(always)]
pub const fn from_v4(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// The IPv4 address inside a mapped address, if it is one.
#[inline(always)]
pub fn to_v4(a: &Addr) -> Option<[u8; 4]> {
    if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
        Some([a[12], a[13], a[14], a[15]])
    } else {
        None
    }
}
