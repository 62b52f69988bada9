//! Header parsing shared by the XDP and tc hooks: Ethernet (and up to two VLAN tags), IPv4 or
//! IPv6 (with extension headers and fragments), then the layer 4 header, read through `Cursor`.

use core::mem::size_of;

use enforcer_common::{icmp, tcp, Addr, Protocol};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::cursor::{Cursor, Header, Malformed};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_ICMP: u8 = Protocol::Icmp as u8;
const IPPROTO_TCP: u8 = Protocol::Tcp as u8;
const IPPROTO_UDP: u8 = Protocol::Udp as u8;
const IPPROTO_SCTP: u8 = Protocol::Sctp as u8;
const IPPROTO_ICMPV6: u8 = Protocol::Icmpv6 as u8;

/// IPv6 extension headers skipped as `(len + 1) * 8` bytes: hop-by-hop, routing, destination
/// options.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_DSTOPTS: u8 = 60;
/// IPv6 fragment header (8 bytes).
const IPV6_FRAGMENT: u8 = 44;
/// IPv6 authentication header: `(len + 2) * 4` bytes.
const IPV6_AUTH: u8 = 51;

/// IPv4 `frags` field: fragment offset (8-byte units) and the more-fragments flag.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// The layer 3/4 facts the policy needs. Ports are in host byte order. `repr(C, align(8))` with
/// the addresses first: the compiler then knows they are 8-byte aligned and writes, compares and
/// copies them as words (not byte by byte, nor through a `memset` call).
#[repr(C, align(8))]
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

/// A flow's 5-tuple (aligned as `Packet`).
#[repr(C, align(8))]
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

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// The first 14 bytes of a TCP header: ports, sequence numbers, offset and flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHead {
    src: [u8; 2],
    dst: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    offset: u8,
    flags: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    ty: u8,
    code: u8,
    check: [u8; 2],
    id: [u8; 2],
    seq: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next: u8,
    len: u8,
}

// SAFETY: `repr(C)` structs of `u8` and `[u8; N]` fields only: alignment 1, every bit pattern
// valid.
unsafe impl Header for EthHdr {}
// SAFETY: as above.
unsafe impl Header for VlanHdr {}
// SAFETY: as above.
unsafe impl Header for Ports {}
// SAFETY: as above.
unsafe impl Header for TcpHead {}
// SAFETY: as above.
unsafe impl Header for IcmpHdr {}
// SAFETY: as above.
unsafe impl Header for ExtHdr {}

const MAX_VLAN_TAGS: usize = 2;
const MAX_EXT_HEADERS: usize = 6;

/// Parse an Ethernet frame between `data` and `data_end` into `p` (which lives in a per-CPU
/// scratch map: the BPF stack is too small for it).
#[inline(always)]
pub fn parse(data: usize, data_end: usize, p: &mut Packet) -> Result<Parsed, Malformed> {
    let mut c = Cursor::new(data, data_end);
    let eth: EthHdr = c.read()?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: VlanHdr = c.read()?;
        ether_type = u16::from_be_bytes(vlan.ether_type);
    }
    match ether_type {
        ETH_P_IP => parse_ipv4(&mut c, p).map(|()| Parsed::Ip),
        ETH_P_IPV6 => parse_ipv6(&mut c, p).map(|()| Parsed::Ip),
        ETH_P_8021Q | ETH_P_8021AD => Err(Malformed), // more tags than we look through
        _ => Ok(Parsed::NonIp),
    }
}

/// An IPv4 address IPv4-mapped (`enforcer_common::addr::from_v4`), built as one 128-bit value:
/// stored into the aligned `Packet`, it becomes two word stores instead of a `memset` call and
/// byte stores.
#[inline(always)]
fn mapped_v4(v4: [u8; 4]) -> Addr {
    let [a, b, c, d] = v4;
    let lo = u64::from_ne_bytes([0, 0, 0xff, 0xff, a, b, c, d]);
    let words: u128 = if cfg!(target_endian = "little") {
        u128::from(lo) << 64
    } else {
        u128::from(lo)
    };
    words.to_ne_bytes()
}

/// An IPv6 address read from the packet, passed through a 128-bit value so that storing it into
/// the aligned `Packet` is two word stores (a plain copy is a `memmove` call).
#[inline(always)]
fn via_words(a: Addr) -> Addr {
    u128::from_ne_bytes(a).to_ne_bytes()
}

#[inline(always)]
fn parse_ipv4(c: &mut Cursor, p: &mut Packet) -> Result<(), Malformed> {
    let start = c.pos;
    let ip: Ipv4Hdr = c.read()?;
    let frags = u16::from_be_bytes(ip.frags);
    let tot_len = u16::from_be_bytes(ip.tot_len);
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < size_of::<Ipv4Hdr>() || usize::from(tot_len) < ihl {
        return Err(Malformed);
    }
    c.pos = start;
    c.skip(ihl)?;
    p.src = mapped_v4(ip.src_addr);
    p.dst = mapped_v4(ip.dst_addr);
    p.protocol = ip.proto;
    p.len = u32::from(tot_len);
    p.frag_id = u32::from(u16::from_be_bytes(ip.id));
    let offset = frags & IPV4_OFFSET_MASK;
    p.fragment = if offset != 0 {
        FRAG_LATER
    } else if frags & IPV4_MORE_FRAGMENTS != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    parse_l4_or_fragment(c, p, false, offset)
}

/// Clear the layer 4 facts of `p` (a protocol without them, or before parsing them).
#[inline(always)]
fn clear_l4(p: &mut Packet) {
    p.icmp_type = 0;
    p.tcp_flags = 0;
    p.is_icmp_error = false;
    p.sport = 0;
    p.dport = 0;
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
    clear_l4(p);
    Ok(())
}

#[inline(always)]
fn parse_ipv6(c: &mut Cursor, p: &mut Packet) -> Result<(), Malformed> {
    let ip: Ipv6Hdr = c.read()?;
    if ip.vcf[0] >> 4 != 6 {
        return Err(Malformed);
    }
    p.src = via_words(ip.src_addr);
    p.dst = via_words(ip.dst_addr);
    p.fragment = FRAG_NONE;
    p.frag_id = 0;
    let (protocol, offset) = skip_ext_headers(c, ip.next_hdr, p)?;
    p.protocol = protocol;
    p.len = u32::from(u16::from_be_bytes(ip.payload_len)) + size_of::<Ipv6Hdr>() as u32;
    parse_l4_or_fragment(c, p, true, offset)
}

/// Skip IPv6 extension headers (bounded); returns the upper-layer protocol and the fragment
/// offset (in 8-byte units; 0 unless `p` is a later fragment). A fragment header sets
/// `p.fragment` and `p.frag_id`; after the one of a later fragment comes no header, only data.
#[inline(always)]
fn skip_ext_headers(c: &mut Cursor, mut next: u8, p: &mut Packet) -> Result<(u8, u16), Malformed> {
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let start = c.pos;
                let h: ExtHdr = c.read()?;
                c.pos = start;
                c.skip((usize::from(h.len) + 1) * 8)?;
                next = h.next;
            }
            // Only the first fragment has the layer 4 header.
            IPV6_FRAGMENT => {
                let h: [u8; 8] = c.read()?;
                let off = u16::from_be_bytes([h[2], h[3]]);
                p.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let offset = off >> 3;
                if offset != 0 {
                    p.fragment = FRAG_LATER;
                    return Ok((h[0], offset));
                }
                if off & 1 != 0 {
                    p.fragment = FRAG_FIRST;
                }
                next = h[0];
            }
            IPV6_AUTH => {
                let start = c.pos;
                let h: ExtHdr = c.read()?;
                c.pos = start;
                c.skip((usize::from(h.len) + 2) * 4)?;
                next = h.next;
            }
            _ => return Ok((next, 0)),
        }
    }
    // Too many extension headers to judge.
    Err(Malformed)
}

#[inline(always)]
fn parse_l4(c: &mut Cursor, p: &mut Packet, v6: bool) -> Result<(), Malformed> {
    clear_l4(p);
    match p.protocol {
        IPPROTO_TCP => {
            let tcp: TcpHead = c.read()?;
            p.sport = u16::from_be_bytes(tcp.src);
            p.dport = u16::from_be_bytes(tcp.dst);
            p.tcp_flags = tcp.flags;
            // The rest of the fixed header must be there too.
            c.skip(6)?;
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: Ports = c.read()?;
            p.sport = u16::from_be_bytes(ports.src);
            p.dport = u16::from_be_bytes(ports.dst);
            // The rest of the fixed header must be there too.
            c.skip(if p.protocol == IPPROTO_UDP { 4 } else { 8 })?;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h: IcmpHdr = c.read()?;
            let id = u16::from_be_bytes(h.id);
            p.icmp_type = h.ty;
            match (v6, h.ty) {
                // Echo request: the identifier is the "source port" of the flow.
                (false, icmp::ECHO_REQUEST) | (true, icmp::V6_ECHO_REQUEST) => p.sport = id,
                // Echo reply: the identifier comes back as the "destination port".
                (false, icmp::ECHO_REPLY) | (true, icmp::V6_ECHO_REPLY) => p.dport = id,
                // Errors about another flow: destination unreachable, time exceeded,
                // parameter problem (and packet too big for v6).
                (false, icmp::DEST_UNREACH | icmp::TIME_EXCEEDED | icmp::PARAMETER_PROBLEM)
                | (true, icmp::V6_ERROR_FIRST..=icmp::V6_ERROR_LAST) => {
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
        let ip: Ipv6Hdr = c.read()?;
        t.src = via_words(ip.src_addr);
        t.dst = via_words(ip.dst_addr);
        t.protocol = ip.next_hdr;
    } else {
        let start = c.pos;
        let ip: Ipv4Hdr = c.read()?;
        t.src = mapped_v4(ip.src_addr);
        t.dst = mapped_v4(ip.dst_addr);
        t.protocol = ip.proto;
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ihl < size_of::<Ipv4Hdr>() {
            return Err(Malformed);
        }
        c.pos = start;
        c.skip(ihl)?;
    }
    match t.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: Ports = c.read()?;
            t.sport = u16::from_be_bytes(ports.src);
            t.dport = u16::from_be_bytes(ports.dst);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h: IcmpHdr = c.read()?;
            t.sport = u16::from_be_bytes(h.id);
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
        IPPROTO_TCP => p.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN,
        IPPROTO_ICMP => p.icmp_type != icmp::ECHO_REPLY,
        IPPROTO_ICMPV6 => p.icmp_type != icmp::V6_ECHO_REPLY,
        _ => true,
    }
}

/// ICMPv6 messages the link needs whatever the policy says: MLD and neighbour discovery.
#[inline(always)]
pub fn is_link_control(p: &Packet) -> bool {
    p.protocol == IPPROTO_ICMPV6
        && matches!(
            p.icmp_type,
            icmp::V6_LINK_CONTROL_FIRST..=icmp::V6_LINK_CONTROL_LAST | icmp::V6_MLD2_REPORT
        )
}

/// The policy "port" of a packet that starts a flow: the destination port, or the ICMP type.
#[inline(always)]
pub fn policy_port(p: &Packet) -> u16 {
    if Protocol::is_icmp(p.protocol) {
        u16::from(p.icmp_type)
    } else {
        p.dport
    }
}
