//! The fuzzer's reference decoder: what the datapath documents it reads from a frame
//! (docs/architecture.md, "Parsing"), written over byte slices for userspace. The oracle judges
//! each frame a program passed by these facts, not by anything the program reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// Up to this many VLAN tags are looked through; one more is malformed.
const MAX_VLAN_TAGS: usize = 2;
/// Rounds of the IPv6 extension-header walk; a chain still going after them is malformed.
const EXT_HEADER_ROUNDS: usize = 6;
/// Later fragments starting before this offset (8-byte units) are malformed (RFC 1858).
const MIN_LATER_FRAGMENT_OFFSET: u16 = 3;

/// A flow's 5-tuple (ports in host order; ICMP: the echo identifier as a port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Whether and how an IP packet is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    None,
    First,
    Later,
}

/// The layer 3/4 facts of an IP packet.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub tuple: Tuple,
    pub icmp_type: u8,
    pub tcp_flags: u8,
    pub fragment: Fragment,
    pub frag_id: u32,
    /// The quoted flow of an ICMP error whose quoted headers could be read.
    pub error_of: Option<Tuple>,
}

#[derive(Debug, Clone, Copy)]
pub enum Decoded {
    NonIp,
    Malformed,
    Ip(Facts),
}

/// A bounds-checked reader over a frame.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn peek(&self, n: usize) -> Option<&'a [u8]> {
        self.data.get(self.pos..self.pos.checked_add(n)?)
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn v4(b: &[u8], i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]))
}

fn v6(b: &[u8], i: usize) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[i..i + 16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

/// Decode an Ethernet frame.
pub fn decode(frame: &[u8]) -> Decoded {
    let mut r = Reader {
        data: frame,
        pos: 0,
    };
    let Some(eth) = r.take(14) else {
        return Decoded::Malformed;
    };
    let mut ether_type = be16(eth, 12);
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(tag) = r.take(4) else {
            return Decoded::Malformed;
        };
        ether_type = be16(tag, 2);
    }
    let facts = match ether_type {
        0x0800 => ipv4(&mut r),
        0x86dd => ipv6(&mut r),
        0x8100 | 0x88a8 => None,
        _ => return Decoded::NonIp,
    };
    facts.map_or(Decoded::Malformed, Decoded::Ip)
}

fn empty(src: IpAddr, dst: IpAddr, protocol: u8) -> Facts {
    Facts {
        tuple: Tuple {
            src,
            dst,
            protocol,
            sport: 0,
            dport: 0,
        },
        icmp_type: 0,
        tcp_flags: 0,
        fragment: Fragment::None,
        frag_id: 0,
        error_of: None,
    }
}

fn ipv4(r: &mut Reader) -> Option<Facts> {
    let h = r.peek(20)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 || usize::from(be16(h, 2)) < ihl {
        return None;
    }
    r.take(ihl)?;
    let mut f = empty(v4(h, 12), v4(h, 16), h[9]);
    f.frag_id = u32::from(be16(h, 4));
    let frags = be16(h, 6);
    let offset = frags & 0x1fff;
    f.fragment = match (offset, frags & 0x2000 != 0) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    l4_or_fragment(r, f, false, offset)
}

fn ipv6(r: &mut Reader) -> Option<Facts> {
    let h = r.take(40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut f = empty(v6(h, 8), v6(h, 24), 0);
    let mut next = h[6];
    for _ in 0..EXT_HEADER_ROUNDS {
        match next {
            0 | 43 | 60 => {
                let e = r.peek(2)?;
                r.take((usize::from(e[1]) + 1) * 8)?;
                next = e[0];
            }
            44 => {
                let e = r.take(8)?;
                f.frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                let offset = be16(e, 2) >> 3;
                if offset != 0 {
                    f.fragment = Fragment::Later;
                    f.tuple.protocol = e[0];
                    return l4_or_fragment(r, f, true, offset);
                }
                if be16(e, 2) & 1 != 0 {
                    f.fragment = Fragment::First;
                }
                next = e[0];
            }
            51 => {
                let e = r.peek(2)?;
                r.take((usize::from(e[1]) + 2) * 4)?;
                next = e[0];
            }
            upper => {
                f.tuple.protocol = upper;
                return l4_or_fragment(r, f, true, 0);
            }
        }
    }
    None
}

fn l4_or_fragment(r: &mut Reader, f: Facts, v6: bool, offset: u16) -> Option<Facts> {
    if f.fragment != Fragment::Later {
        return l4(r, f, v6);
    }
    (offset >= MIN_LATER_FRAGMENT_OFFSET).then_some(f)
}

fn l4(r: &mut Reader, mut f: Facts, v6: bool) -> Option<Facts> {
    match f.tuple.protocol {
        TCP => {
            let h = r.take(20)?;
            f.tuple.sport = be16(h, 0);
            f.tuple.dport = be16(h, 2);
            f.tcp_flags = h[13];
        }
        UDP | SCTP => {
            let h = r.take(if f.tuple.protocol == UDP { 8 } else { 12 })?;
            f.tuple.sport = be16(h, 0);
            f.tuple.dport = be16(h, 2);
        }
        ICMP | ICMPV6 => {
            let h = r.take(8)?;
            f.icmp_type = h[0];
            let id = be16(h, 4);
            match (v6, h[0]) {
                (false, 8) | (true, 128) => f.tuple.sport = id,
                (false, 0) | (true, 129) => f.tuple.dport = id,
                (false, 3 | 11 | 12) | (true, 1..=4) => f.error_of = quoted(r, v6),
                _ => {}
            }
        }
        _ => {}
    }
    Some(f)
}

/// The headers an ICMP error quotes: an IP header of the outer family and 4 (ports) or 8 (ICMP)
/// bytes after it.
fn quoted(r: &mut Reader, v6: bool) -> Option<Tuple> {
    let mut t = if v6 {
        let h = r.take(40)?;
        Tuple {
            src: v6_addr(h, 8),
            dst: v6_addr(h, 24),
            protocol: h[6],
            sport: 0,
            dport: 0,
        }
    } else {
        let h = r.peek(20)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        r.take(ihl)?;
        Tuple {
            src: v4(h, 12),
            dst: v4(h, 16),
            protocol: h[9],
            sport: 0,
            dport: 0,
        }
    };
    match t.protocol {
        TCP | UDP | SCTP => {
            let p = r.take(4)?;
            t.sport = be16(p, 0);
            t.dport = be16(p, 2);
        }
        ICMP | ICMPV6 => t.sport = be16(r.take(8)?, 4),
        _ => {}
    }
    Some(t)
}

fn v6_addr(b: &[u8], i: usize) -> IpAddr {
    v6(b, i)
}
