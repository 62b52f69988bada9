//! Addresses and CIDR prefixes in the 16-byte (IPv4-mapped) space the datapath keys on.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// An IP prefix in the 16-byte (IPv4-mapped) address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: u128,
    /// 0..=128, in the mapped space (an IPv4 /24 is 120).
    pub len: u8,
}

/// An address in the 16-byte form, as an integer.
pub fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Prefix {
    pub fn from_net(net: &IpNet) -> Prefix {
        let (addr, len) = match net {
            IpNet::V4(n) => (addr_bits(IpAddr::V4(n.network())), 96 + n.prefix_len()),
            IpNet::V6(n) => (addr_bits(IpAddr::V6(n.network())), n.prefix_len()),
        };
        Prefix {
            addr: addr & mask(len),
            len,
        }
    }

    pub fn contains_addr(&self, addr: u128) -> bool {
        (addr ^ self.addr) & mask(self.len) == 0
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }

    /// The 16 address bytes of the prefix.
    pub fn octets(&self) -> [u8; 16] {
        self.addr.to_be_bytes()
    }

    /// The prefix as an `IpNet` (IPv4 for the IPv4-mapped part, as `Display` writes it).
    pub fn to_net(&self) -> IpNet {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => {
                IpNet::V4(ipnet::Ipv4Net::new(v4, self.len - 96).expect("prefix length ≤ 128"))
            }
            _ => IpNet::V6(ipnet::Ipv6Net::new(v6, self.len).expect("prefix length ≤ 128")),
        }
    }

    /// Whether the prefix lies in the IPv4 part of the mapped space (`::ffff:0:0/96`).
    pub fn is_ipv4(&self) -> bool {
        IPV4_MAPPED.contains(self)
    }
}

/// The IPv4 addresses in the 16-byte form (`::ffff:0:0/96`, i.e. `0.0.0.0/0`).
pub const IPV4_MAPPED: Prefix = Prefix {
    addr: 0xffff << 32,
    len: 96,
};

pub fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}
