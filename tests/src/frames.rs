//! Hand-built Ethernet frames for `BPF_PROG_TEST_RUN` datapath tests and benchmarks.

use std::net::IpAddr;

/// What to put above IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with flags (0x02 = SYN, 0x10 = ACK).
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP/ICMPv6 echo request (`reply: false`) or reply.
    Echo {
        id: u16,
        reply: bool,
    },
}

/// A frame under construction.
#[derive(Debug, Clone)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// 802.1Q tags to insert (VLAN ids).
    pub vlans: Vec<u16>,
    /// IPv6 extension headers to insert before L4: (next-header code, total length in bytes).
    pub ipv6_ext: Vec<u8>,
    /// Fragment offset in 8-byte units (non-zero = non-first fragment: no layer 4 header).
    pub fragment_offset: u16,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// IPv4 identification (low 16 bits) or IPv6 fragment identification.
    pub frag_id: u32,
    pub payload: usize,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Frame {
            src,
            dst,
            l4,
            vlans: Vec::new(),
            ipv6_ext: Vec::new(),
            fragment_offset: 0,
            more_fragments: false,
            frag_id: 1,
            payload: 0,
        }
    }

    pub fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Frame::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags: 0x02,
            },
        )
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Frame::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn echo(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        Frame::new(src, dst, L4::Echo { id, reply: false })
    }

    #[must_use]
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    /// Add an IPv6 extension header: 0 hop-by-hop, 43 routing, 60 destination options.
    #[must_use]
    pub fn ipv6_ext(mut self, code: u8) -> Self {
        self.ipv6_ext.push(code);
        self
    }

    #[must_use]
    pub fn fragment(mut self, offset: u16) -> Self {
        self.fragment_offset = offset;
        self
    }

    /// The first fragment of datagram `id` (offset 0, more fragments follow).
    #[must_use]
    pub fn first_fragment(mut self, id: u32) -> Self {
        self.fragment_offset = 0;
        self.more_fragments = true;
        self.frag_id = id;
        self
    }

    /// A later fragment of datagram `id` at `offset` (8-byte units): payload bytes only.
    #[must_use]
    pub fn later_fragment(mut self, id: u32, offset: u16, more: bool) -> Self {
        self.fragment_offset = offset;
        self.more_fragments = more;
        self.frag_id = id;
        self
    }

    fn is_fragment(&self) -> bool {
        self.fragment_offset != 0 || self.more_fragments
    }

    /// Serialize to bytes.
    pub fn build(&self) -> Vec<u8> {
        let v6 = self.src.is_ipv6();
        let mut l4 = Vec::new();
        let proto = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                l4.extend_from_slice(&[
                    0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
                ]);
                6
            }
            L4::Udp { sport, dport } => {
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                let len = u16::try_from(8 + self.payload).unwrap_or(u16::MAX);
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                17
            }
            L4::Echo { id, reply } => {
                let ty = match (v6, reply) {
                    (false, false) => 8,
                    (false, true) => 0,
                    (true, false) => 128,
                    (true, true) => 129,
                };
                l4.extend_from_slice(&[ty, 0, 0, 0]);
                l4.extend_from_slice(&id.to_be_bytes());
                l4.extend_from_slice(&[0, 1]);
                if v6 {
                    58
                } else {
                    1
                }
            }
        };
        l4.extend(std::iter::repeat_n(0xab, self.payload));
        if self.fragment_offset != 0 {
            // A later fragment carries only data.
            l4 = vec![0xab; self.payload.max(8)];
        }
        let mut out = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for id in &self.vlans {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&[0x45, 0]);
                out.extend_from_slice(&total.to_be_bytes());
                #[allow(clippy::cast_possible_truncation)] // IPv4 ids are 16 bits
                out.extend_from_slice(&(self.frag_id as u16).to_be_bytes());
                let more = if self.more_fragments { 0x2000 } else { 0 };
                out.extend_from_slice(&((self.fragment_offset & 0x1fff) | more).to_be_bytes());
                out.extend_from_slice(&[64, proto, 0, 0]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&0x86DDu16.to_be_bytes());
                let mut ext = self.ipv6_ext.clone();
                if self.is_fragment() {
                    ext.push(44);
                }
                let payload = u16::try_from(ext.len() * 8 + l4.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&payload.to_be_bytes());
                out.push(ext.first().copied().unwrap_or(proto));
                out.push(64);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                for (i, code) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).copied().unwrap_or(proto);
                    if *code == 44 {
                        let more = u16::from(self.more_fragments);
                        let off = (self.fragment_offset << 3) | more;
                        out.extend_from_slice(&[next, 0]);
                        out.extend_from_slice(&off.to_be_bytes());
                        out.extend_from_slice(&self.frag_id.to_be_bytes());
                    } else {
                        // 8 bytes: next header, length 0 (= 8 bytes), PadN option.
                        out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
            }
            _ => panic!("source and destination of a frame must be of one family"),
        }
        out.extend_from_slice(&l4);
        out
    }
}

/// An ICMP (or `ICMPv6`) destination-unreachable error from `from` to `to`, quoting the first
/// bytes of `original` (a frame built by [`Frame::build`]) as routers and hosts do.
pub fn icmp_unreachable(from: IpAddr, to: IpAddr, original: &[u8]) -> Vec<u8> {
    let v6 = from.is_ipv6();
    // The quoted IP packet: the original frame without its Ethernet header, IP header + 8 bytes.
    let ip_len = if v6 { 40 } else { 20 };
    let quoted = &original[14..(14 + ip_len + 8).min(original.len())];
    let mut l4 = if v6 {
        vec![1, 4, 0, 0, 0, 0, 0, 0]
    } else {
        vec![3, 3, 0, 0, 0, 0, 0, 0]
    };
    l4.extend_from_slice(quoted);
    let mut out = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (from, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&0x86DDu16.to_be_bytes());
            let payload = u16::try_from(l4.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&[58, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => panic!("source and destination of a frame must be of one family"),
    }
    out.extend_from_slice(&l4);
    out
}

/// An ARP request frame.
pub fn arp_request() -> Vec<u8> {
    let mut out = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06,
    ];
    out.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ]);
    out
}
