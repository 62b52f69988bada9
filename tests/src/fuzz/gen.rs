//! The fuzzer's frames: structured frames over a few addresses and ports (so flows, replies,
//! fragments and ICMP errors meet each other), then mutated: truncated at every offset, header
//! lengths and fields corrupted, bytes flipped. Seeded (`rand::rngs::StdRng`), so a run is
//! reproducible from its seed.

use std::net::IpAddr;

use rand::{rngs::StdRng, seq::IndexedRandom, RngExt, SeedableRng};

use super::decode::{ICMP, ICMPV6, SCTP, TCP, UDP};

/// Every this many frames, one frame is also sent truncated at every offset.
const SWEEP_EVERY: u64 = 500;
const PORTS: &[u16] = &[
    8080, 8081, 9000, 9005, 9010, 9011, 5432, 53, 80, 443, 0, 65535,
];
const FRAG_IDS: u32 = 6;

/// A flow recently generated, for replies and ICMP errors to refer to.
#[derive(Clone)]
struct Recent {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    sport: u16,
    dport: u16,
    /// The IP packet (header and the start of the payload), for errors to quote.
    ip: Vec<u8>,
}

pub struct Gen {
    rng: StdRng,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    recent: Vec<Recent>,
    tcp_flags: u8,
    count: u64,
    /// Source of the packet the last ICMP error quoted (errors are often sent back to it).
    quoted_src: Option<IpAddr>,
}

/// Layer 4 bytes and protocol number.
struct L4 {
    protocol: u8,
    bytes: Vec<u8>,
    sport: u16,
    dport: u16,
}

fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut b = sport.to_be_bytes().to_vec();
    b.extend_from_slice(&dport.to_be_bytes());
    b
}

impl Gen {
    pub fn new(seed: u64, addresses: &[IpAddr]) -> Self {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            v4: addresses.iter().copied().filter(IpAddr::is_ipv4).collect(),
            v6: addresses.iter().copied().filter(IpAddr::is_ipv6).collect(),
            recent: Vec::new(),
            tcp_flags: 0,
            count: 0,
            quoted_src: None,
        }
    }

    /// The next frames: usually one, sometimes a frame and all its truncations.
    pub fn next_frames(&mut self) -> Vec<Vec<u8>> {
        self.count += 1;
        let frame = self.structured();
        if self.count.is_multiple_of(SWEEP_EVERY) {
            return (0..=frame.len()).map(|n| frame[..n].to_vec()).collect();
        }
        if self.rng.random_bool(0.3) {
            return vec![self.mutate(frame)];
        }
        vec![frame]
    }

    fn port(&mut self) -> u16 {
        if self.rng.random_bool(0.8) {
            *PORTS.choose(&mut self.rng).unwrap_or(&0)
        } else {
            self.rng.random()
        }
    }

    fn addr(&mut self, v6: bool) -> IpAddr {
        let pool = if v6 { &self.v6 } else { &self.v4 };
        *pool.choose(&mut self.rng).expect("address pool")
    }

    fn structured(&mut self) -> Vec<u8> {
        let reply = !self.recent.is_empty() && self.rng.random_bool(0.3);
        let (v6, src, dst, l4) = if reply {
            let r = self.recent[self.rng.random_range(0..self.recent.len())].clone();
            let l4 = self.reply_l4(&r);
            (r.src.is_ipv6(), r.dst, r.src, l4)
        } else {
            let v6 = self.rng.random_bool(0.4);
            let (src, mut dst) = (self.addr(v6), self.addr(v6));
            let l4 = self.l4(v6);
            if let Some(q) = self.quoted_src.take() {
                if self.rng.random_bool(0.6) {
                    dst = q;
                }
            }
            (v6, src, dst, l4)
        };
        let frag = self.fragment();
        let ip = if v6 {
            self.ipv6(src, dst, &l4, frag)
        } else {
            self.ipv4(src, dst, &l4, frag)
        };
        if frag.is_none() && self.recent.len() < 64 {
            self.recent.push(Recent {
                src,
                dst,
                protocol: l4.protocol,
                sport: l4.sport,
                dport: l4.dport,
                ip: ip.clone(),
            });
        } else if frag.is_none() {
            let i = self.rng.random_range(0..self.recent.len());
            self.recent[i] = Recent {
                src,
                dst,
                protocol: l4.protocol,
                sport: l4.sport,
                dport: l4.dport,
                ip: ip.clone(),
            };
        }
        self.ethernet(v6, &ip)
    }

    /// (first, later offset, more, id) of a fragment, or `None` for a whole packet.
    fn fragment(&mut self) -> Option<(bool, u16, bool, u32)> {
        if !self.rng.random_bool(0.15) {
            return None;
        }
        let id = self.rng.random_range(1..=FRAG_IDS);
        if self.rng.random_bool(0.5) {
            return Some((true, 0, true, id));
        }
        let offset = *[1, 2, 3, 185, 370].choose(&mut self.rng).unwrap_or(&185);
        Some((false, offset, self.rng.random_bool(0.5), id))
    }

    fn tcp(&mut self, sport: u16, dport: u16) -> L4 {
        // Every flag combination, in turn.
        self.tcp_flags = self.tcp_flags.wrapping_add(1);
        let mut b = ports(sport, dport);
        b.extend_from_slice(&[
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0x50,
            self.tcp_flags,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
        L4 {
            protocol: TCP,
            bytes: b,
            sport,
            dport,
        }
    }

    fn l4(&mut self, v6: bool) -> L4 {
        let (sport, dport) = (self.port(), self.port());
        let icmp = if v6 { ICMPV6 } else { ICMP };
        match self.rng.random_range(0..10) {
            0..=2 => self.tcp(sport, dport),
            3 | 4 => {
                let mut b = ports(sport, dport);
                b.extend_from_slice(&[0, 16, 0, 0]);
                L4 {
                    protocol: UDP,
                    bytes: b,
                    sport,
                    dport,
                }
            }
            5 => {
                let mut b = ports(sport, dport);
                b.extend_from_slice(&[0; 8]);
                L4 {
                    protocol: SCTP,
                    bytes: b,
                    sport,
                    dport,
                }
            }
            6 => {
                let ty = if v6 { 128 } else { 8 };
                let mut b = vec![ty, 0, 0, 0];
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&[0, 1]);
                L4 {
                    protocol: icmp,
                    bytes: b,
                    sport,
                    dport: 0,
                }
            }
            7 => self.icmp_error(v6),
            8 => {
                // Any ICMP type (ND and MLD included for v6).
                let ty = if v6 && self.rng.random_bool(0.3) {
                    *[133, 134, 135, 136, 143]
                        .choose(&mut self.rng)
                        .unwrap_or(&135)
                } else {
                    self.rng.random()
                };
                L4 {
                    protocol: icmp,
                    bytes: vec![ty, 0, 0, 0, 0, 7, 0, 1],
                    sport: 0,
                    dport: 0,
                }
            }
            _ => {
                let protocol = *[47u8, 51, 50, 103, 255, 0, 43]
                    .choose(&mut self.rng)
                    .unwrap_or(&47);
                let mut bytes = vec![0u8; self.rng.random_range(0..24)];
                self.rng.fill(&mut bytes[..]);
                L4 {
                    protocol,
                    bytes,
                    sport: 0,
                    dport: 0,
                }
            }
        }
    }

    /// A reply to `r`: swapped ends, any TCP flags, an echo reply for an echo request.
    fn reply_l4(&mut self, r: &Recent) -> L4 {
        match r.protocol {
            TCP => self.tcp(r.dport, r.sport),
            ICMP | ICMPV6 => {
                let ty = if r.protocol == ICMP { 0 } else { 129 };
                let mut b = vec![ty, 0, 0, 0];
                b.extend_from_slice(&r.sport.to_be_bytes());
                b.extend_from_slice(&[0, 1]);
                L4 {
                    protocol: r.protocol,
                    bytes: b,
                    sport: 0,
                    dport: r.sport,
                }
            }
            p => {
                let mut b = ports(r.dport, r.sport);
                b.extend_from_slice(&[0; 8]);
                L4 {
                    protocol: p,
                    bytes: b,
                    sport: r.dport,
                    dport: r.sport,
                }
            }
        }
    }

    /// An ICMP error quoting a recent packet of the same family (or random bytes).
    fn icmp_error(&mut self, v6: bool) -> L4 {
        let (protocol, ty) = if v6 {
            (ICMPV6, self.rng.random_range(1..=4))
        } else {
            (ICMP, *[3u8, 11, 12].choose(&mut self.rng).unwrap_or(&3))
        };
        let mut b = vec![ty, 0, 0, 0, 0, 0, 0, 0];
        let same_family: Vec<&Recent> = self
            .recent
            .iter()
            .filter(|r| r.src.is_ipv6() == v6)
            .collect();
        if let Some(r) = same_family.choose(&mut self.rng) {
            let keep = if v6 { 48 } else { 28 };
            b.extend_from_slice(&r.ip[..keep.min(r.ip.len())]);
            self.quoted_src = Some(r.src);
        } else {
            let mut junk = vec![0u8; 28];
            self.rng.fill(&mut junk[..]);
            b.extend_from_slice(&junk);
        }
        L4 {
            protocol,
            bytes: b,
            sport: 0,
            dport: 0,
        }
    }

    fn ipv4(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        l4: &L4,
        frag: Option<(bool, u16, bool, u32)>,
    ) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
            unreachable!("v4 pool")
        };
        let options = if self.rng.random_bool(0.1) {
            self.rng.random_range(1..=10) * 4
        } else {
            0
        };
        let payload = self.payload(l4, frag);
        let ihl = 20 + options;
        let total = u16::try_from(ihl + payload.len()).unwrap_or(u16::MAX);
        let (id, flags) = match frag {
            None => (1, 0x4000u16),
            Some((_, offset, more, id)) => (id, offset | if more { 0x2000 } else { 0 }),
        };
        let mut b = vec![0x40 | u8::try_from(ihl / 4).unwrap_or(5), 0];
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&u16::try_from(id).unwrap_or(1).to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&[64, l4.protocol, 0, 0]);
        b.extend_from_slice(&s.octets());
        b.extend_from_slice(&d.octets());
        b.extend(std::iter::repeat_n(1u8, options)); // NOP options
        b.extend_from_slice(&payload);
        b
    }

    fn payload(&mut self, l4: &L4, frag: Option<(bool, u16, bool, u32)>) -> Vec<u8> {
        let mut p = match frag {
            Some((false, ..)) => vec![0xab; 16],
            _ => l4.bytes.clone(),
        };
        let extra = self.rng.random_range(0..16);
        p.extend(std::iter::repeat_n(0xcd, extra));
        p
    }

    fn ipv6(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        l4: &L4,
        frag: Option<(bool, u16, bool, u32)>,
    ) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
            unreachable!("v6 pool")
        };
        // An extension-header chain, sometimes past the parser's bound.
        let n = if self.rng.random_bool(0.3) {
            self.rng.random_range(1..=8)
        } else {
            0
        };
        let mut codes: Vec<u8> = (0..n)
            .map(|_| *[0u8, 43, 60, 51].choose(&mut self.rng).unwrap_or(&60))
            .collect();
        if frag.is_some() {
            codes.push(44);
        }
        let payload = self.payload(l4, frag);
        let mut ext = Vec::new();
        for (i, code) in codes.iter().enumerate() {
            let next = codes.get(i + 1).copied().unwrap_or(l4.protocol);
            match (*code, frag) {
                (44, Some((_, offset, more, id))) => {
                    ext.extend_from_slice(&[next, 0]);
                    ext.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                    ext.extend_from_slice(&id.to_be_bytes());
                }
                (51, _) => ext.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                _ => {
                    let len = self.rng.random_range(0..=1u8);
                    ext.extend_from_slice(&[next, len, 1, 4, 0, 0, 0, 0]);
                    ext.extend(std::iter::repeat_n(0, usize::from(len) * 8));
                }
            }
        }
        let first = codes.first().copied().unwrap_or(l4.protocol);
        let len = u16::try_from(ext.len() + payload.len()).unwrap_or(u16::MAX);
        let mut b = vec![0x60, 0, 0, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[first, 64]);
        b.extend_from_slice(&s.octets());
        b.extend_from_slice(&d.octets());
        b.extend_from_slice(&ext);
        b.extend_from_slice(&payload);
        b
    }

    fn ethernet(&mut self, v6: bool, ip: &[u8]) -> Vec<u8> {
        let mut b = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        let tags = *[0usize, 0, 0, 0, 0, 1, 2, 3]
            .choose(&mut self.rng)
            .unwrap_or(&0);
        for _ in 0..tags {
            let tpid: u16 = if self.rng.random_bool(0.5) {
                0x8100
            } else {
                0x88a8
            };
            b.extend_from_slice(&tpid.to_be_bytes());
            b.extend_from_slice(&self.rng.random::<u16>().to_be_bytes());
        }
        let ether_type: u16 = if self.rng.random_bool(0.02) {
            *[0x0806u16, 0x88cc, 0x8847]
                .choose(&mut self.rng)
                .unwrap_or(&0x0806)
        } else if v6 {
            0x86dd
        } else {
            0x0800
        };
        b.extend_from_slice(&ether_type.to_be_bytes());
        b.extend_from_slice(ip);
        b
    }

    /// Corrupt a frame: truncate it, break its IP header lengths, or flip bytes.
    fn mutate(&mut self, mut f: Vec<u8>) -> Vec<u8> {
        let ip = 14;
        match self.rng.random_range(0..5) {
            0 => {
                let n = self.rng.random_range(0..=f.len());
                f.truncate(n);
            }
            1 if f.len() > ip => f[ip] = (f[ip] & 0xf0) | self.rng.random_range(0..16u8),
            2 if f.len() > ip + 4 => {
                let v: u16 = self.rng.random();
                f[ip + 2..ip + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if f.len() > ip => f[ip] = self.rng.random(),
            _ => {
                for _ in 0..self.rng.random_range(1..=3) {
                    let i = self.rng.random_range(0..f.len().max(1));
                    if let Some(b) = f.get_mut(i) {
                        *b = self.rng.random();
                    }
                }
            }
        }
        f
    }
}
