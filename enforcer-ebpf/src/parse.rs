//! Bounds-checked header parsing shared by the XDP and tc hooks: each helper checks the header it
//! reads against `data_end` once and advances a cursor, as the verifier (and xdp-tools) like it.

use core::mem::size_of;

use enforcer_common::{addr::from_v4, Addr};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_ICMPV6: u8 = 58;

/// The layer 3/4 facts the policy needs. Ports are in host byte order.
#[derive(Clone, Copy)]
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    /// ICMP type (the policy "port" of ICMP), 0 otherwise.
    pub icmp_type: u8,
    /// Set for ICMP errors whose embedded header was parsed into `inner`.
    pub is_icmp_error: bool,
    pub sport: u16,
    pub dport: u16,
    /// Length of the IP packet in bytes (header included).
    pub len: u32,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10), 0 for other protocols.
    pub tcp_flags: u8,
    /// The flow an ICMP error reports about, in its original direction.
    pub inner: Tuple,
    /// `FRAG_NONE`, `FRAG_FIRST` (offset 0, more to come) or `FRAG_LATER` (no layer 4 header:
    /// ports, type and flags are those of its first fragment, see `fragment`).
    pub fragment: u8,
    /// IPv4 identification or IPv6 fragment header identification (0 if not a fragment).
    pub frag_id: u32,
}

/// `Packet::fragment`: a whole packet.
pub const FRAG_NONE: u8 = 0;
/// `Packet::fragment`: the first fragment of a datagram (it has the layer 4 header).
pub const FRAG_FIRST: u8 = 1;
/// `Packet::fragment`: a later fragment (offset > 0).
pub const FRAG_LATER: u8 = 2;

/// Later fragments starting in the first 24 bytes of a datagram are dropped: they could
/// overwrite the layer 4 header the first fragment was judged by (RFC 1858 overlap attacks), and
/// no real stack sends fragments that small.
const MIN_LATER_FRAGMENT_OFFSET: u16 = 3;

/// A flow's 5-tuple.
#[derive(Clone, Copy, Default)]
pub struct Tuple {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not IP (ARP, LLDP, ...): not ours to judge.
    NonIp,
    /// An IP packet, parsed into the `Packet` given to `parse`.
    Ip,
}

/// The packet could not be parsed (truncated, bad header, unsupported fragment).
pub struct Malformed;

struct Cursor {
    pos: usize,
    end: usize,
}

impl Cursor {
    /// A pointer to a `T` at the cursor, if it lies inside the packet; advances past it.
    #[inline(always)]
    fn take<T>(&mut self) -> Result<*const T, Malformed> {
        let p = self.pos;
        if p + size_of::<T>() > self.end {
            return Err(Malformed);
        }
        self.pos = p + size_of::<T>();
        Ok(p as *const T)
    }

    #[inline(always)]
    fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        if self.pos + n > self.end {
            return Err(Malformed);
        }
        self.pos += n;
        Ok(())
    }
}

#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// The first 14 bytes of a TCP header: ports, sequence numbers, offset and flags.
#[repr(C)]
struct TcpHead {
    src: [u8; 2],
    dst: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    offset: u8,
    flags: u8,
}

#[repr(C)]
struct IcmpHdr {
    ty: u8,
    code: u8,
    check: [u8; 2],
    id: [u8; 2],
    seq: [u8; 2],
}

#[repr(C)]
struct ExtHdr {
    next: u8,
    len: u8,
}

const MAX_VLAN_TAGS: usize = 2;
const MAX_EXT_HEADERS: usize = 6;

/// Parse an Ethernet frame between `data` and `data_end` into `p` (which lives in a per-CPU
/// scratch map: the BPF stack is too small for it).
#[inline(always)]
pub fn parse(data: usize, data_end: usize, p: &mut Packet) -> Result<Parsed, Malformed> {
    let mut c = Cursor {
        pos: data,
        end: data_end,
    };
    let eth: *const EthHdr = c.take()?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = c.take()?;
        ether_type = u16::from_be_bytes(unsafe { (*vlan).ether_type });
    }
    match ether_type {
        ETH_P_IP => parse_ipv4(&mut c, p).map(|()| Parsed::Ip),
        ETH_P_IPV6 => parse_ipv6(&mut c, p).map(|()| Parsed::Ip),
        ETH_P_8021Q | ETH_P_8021AD => Err(Malformed), // more tags than we look through
        _ => Ok(Parsed::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(c: &mut Cursor, p: &mut Packet) -> Result<(), Malformed> {
    let start = c.pos;
    let ip: *const Ipv4Hdr = c.take()?;
    let (vihl, protocol, frags, id, tot_len, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).id),
            u16::from_be_bytes((*ip).tot_len),
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < size_of::<Ipv4Hdr>() || usize::from(tot_len) < ihl {
        return Err(Malformed);
    }
    c.pos = start;
    c.skip(ihl)?;
    p.src = from_v4(src);
    p.dst = from_v4(dst);
    p.protocol = protocol;
    p.len = u32::from(tot_len);
    p.frag_id = u32::from(id);
    let offset = frags & 0x1fff;
    p.fragment = if offset != 0 {
        FRAG_LATER
    } else if frags & 0x2000 != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    parse_l4_or_fragment(c, p, false, offset)
}

/// A later fragment has no layer 4 header (its first fragment's is used); anything else has one.
#[inline(always)]
fn parse_l4_or_fragment(
    c: &mut Cursor,
    p: &mut Packet,
    v6: bool,
    offset: u16,
) -> Result<(), Malformed> {
    if p.fragment != FRAG_LATER {
        return parse_l4(c, p, v6);
    }
    if offset < MIN_LATER_FRAGMENT_OFFSET {
        return Err(Malformed);
    }
    p.icmp_type = 0;
    p.tcp_flags = 0;
    p.is_icmp_error = false;
    p.sport = 0;
    p.dport = 0;
    Ok(())
}

#[inline(always)]
fn parse_ipv6(c: &mut Cursor, p: &mut Packet) -> Result<(), Malformed> {
    let ip: *const Ipv6Hdr = c.take()?;
    let (vcf, next, payload_len) = unsafe {
        (
            (*ip).vcf[0],
            (*ip).next_hdr,
            u16::from_be_bytes((*ip).payload_len),
        )
    };
    if vcf >> 4 != 6 {
        return Err(Malformed);
    }
    unsafe {
        p.src = (*ip).src_addr;
        p.dst = (*ip).dst_addr;
    }
    p.fragment = FRAG_NONE;
    p.frag_id = 0;
    let (protocol, offset) = skip_ext_headers(c, next, p)?;
    p.protocol = protocol;
    p.len = u32::from(payload_len) + size_of::<Ipv6Hdr>() as u32;
    parse_l4_or_fragment(c, p, true, offset)
}

/// Skip IPv6 extension headers (bounded); returns the upper-layer protocol and the fragment
/// offset (in 8-byte units; 0 unless `p` is a later fragment). A fragment header sets
/// `p.fragment` and `p.frag_id`; after the one of a later fragment comes no header, only data.
#[inline(always)]
fn skip_ext_headers(c: &mut Cursor, mut next: u8, p: &mut Packet) -> Result<(u8, u16), Malformed> {
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let start = c.pos;
                let h: *const ExtHdr = c.take()?;
                let (n, len) = unsafe { ((*h).next, (*h).len) };
                c.pos = start;
                c.skip((usize::from(len) + 1) * 8)?;
                next = n;
            }
            // Fragment header: 8 bytes; only the first fragment has the layer 4 header.
            44 => {
                let h: *const [u8; 8] = c.take()?;
                let (n, off, id) = unsafe {
                    (
                        (*h)[0],
                        u16::from_be_bytes([(*h)[2], (*h)[3]]),
                        u32::from_be_bytes([(*h)[4], (*h)[5], (*h)[6], (*h)[7]]),
                    )
                };
                p.frag_id = id;
                let offset = off >> 3;
                if offset != 0 {
                    p.fragment = FRAG_LATER;
                    return Ok((n, offset));
                }
                if off & 1 != 0 {
                    p.fragment = FRAG_FIRST;
                }
                next = n;
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let start = c.pos;
                let h: *const ExtHdr = c.take()?;
                let (n, len) = unsafe { ((*h).next, (*h).len) };
                c.pos = start;
                c.skip((usize::from(len) + 2) * 4)?;
                next = n;
            }
            _ => return Ok((next, 0)),
        }
    }
    // Too many extension headers to judge.
    Err(Malformed)
}

#[inline(always)]
fn parse_l4(c: &mut Cursor, p: &mut Packet, v6: bool) -> Result<(), Malformed> {
    p.icmp_type = 0;
    p.tcp_flags = 0;
    p.is_icmp_error = false;
    p.sport = 0;
    p.dport = 0;
    match p.protocol {
        IPPROTO_TCP => {
            let tcp: *const TcpHead = c.take()?;
            p.sport = u16::from_be_bytes(unsafe { (*tcp).src });
            p.dport = u16::from_be_bytes(unsafe { (*tcp).dst });
            p.tcp_flags = unsafe { (*tcp).flags };
            // The rest of the fixed header must be there too.
            c.skip(6)?;
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: *const Ports = c.take()?;
            p.sport = u16::from_be_bytes(unsafe { (*ports).src });
            p.dport = u16::from_be_bytes(unsafe { (*ports).dst });
            // The rest of the fixed header must be there too.
            c.skip(if p.protocol == IPPROTO_UDP { 4 } else { 8 })?;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: *const IcmpHdr = c.take()?;
            let (ty, id) = unsafe { ((*icmp).ty, u16::from_be_bytes((*icmp).id)) };
            p.icmp_type = ty;
            match (v6, ty) {
                // Echo request: the identifier is the "source port" of the flow.
                (false, 8) | (true, 128) => p.sport = id,
                // Echo reply: the identifier comes back as the "destination port".
                (false, 0) | (true, 129) => p.dport = id,
                // Errors about another flow: destination unreachable, time exceeded,
                // parameter problem (and packet too big for v6).
                (false, 3 | 11 | 12) | (true, 1..=4) => {
                    p.is_icmp_error = parse_inner(c, &mut p.inner, v6).is_ok();
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parse the IP header and ports embedded in an ICMP error.
#[inline(always)]
fn parse_inner(c: &mut Cursor, t: &mut Tuple, v6: bool) -> Result<(), Malformed> {
    t.sport = 0;
    t.dport = 0;
    if v6 {
        let ip: *const Ipv6Hdr = c.take()?;
        unsafe {
            t.src = (*ip).src_addr;
            t.dst = (*ip).dst_addr;
            t.protocol = (*ip).next_hdr;
        }
    } else {
        let start = c.pos;
        let ip: *const Ipv4Hdr = c.take()?;
        let vihl = unsafe { (*ip).vihl };
        unsafe {
            t.src = from_v4((*ip).src_addr);
            t.dst = from_v4((*ip).dst_addr);
            t.protocol = (*ip).proto;
        }
        let ihl = usize::from(vihl & 0x0f) * 4;
        if ihl < size_of::<Ipv4Hdr>() {
            return Err(Malformed);
        }
        c.pos = start;
        c.skip(ihl)?;
    }
    match t.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: *const Ports = c.take()?;
            t.sport = u16::from_be_bytes(unsafe { (*ports).src });
            t.dport = u16::from_be_bytes(unsafe { (*ports).dst });
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: *const IcmpHdr = c.take()?;
            t.sport = u16::from_be_bytes(unsafe { (*icmp).id });
        }
        _ => {}
    }
    Ok(())
}

/// Whether a packet may open a flow (and so create conntrack state): a TCP SYN without ACK, any
/// UDP/SCTP/other packet, an ICMP message that is not an echo reply. A mid-stream TCP packet or
/// an echo reply without state is still judged, but never becomes state: otherwise the replies
/// of a flow that was just cut could open the reverse direction.
#[inline(always)]
pub fn opens_flow(p: &Packet) -> bool {
    match p.protocol {
        IPPROTO_TCP => p.tcp_flags & 0x12 == 0x02,
        IPPROTO_ICMP => p.icmp_type != 0,
        IPPROTO_ICMPV6 => p.icmp_type != 129,
        _ => true,
    }
}

/// ICMPv6 messages the link needs whatever the policy says: MLD and neighbour discovery.
#[inline(always)]
pub fn is_link_control(p: &Packet) -> bool {
    p.protocol == IPPROTO_ICMPV6 && matches!(p.icmp_type, 130..=137 | 143)
}
