//! Port entries of rules: protocol and port, named ports, ranges, and their resolution on a
//! destination's named ports.

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A port entry: a protocol and a port, a named port (`name`), a range of ports (`endPort`) or
/// every port (`port` and `name` omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub end_port: Option<u16>,
    /// A named port (written as `port: NAME`): the destination's container port of that name
    /// and protocol.
    pub name: Option<PortName>,
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 1
            + usize::from(self.port.is_some() || self.name.is_some())
            + usize::from(self.end_port.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("protocol", &self.protocol)?;
        match (self.name, self.port) {
            (Some(name), _) => map.serialize_entry("port", &name)?,
            (None, Some(port)) => map.serialize_entry("port", &port)?,
            (None, None) => {}
        }
        if let Some(end) = self.end_port {
            map.serialize_entry("endPort", &end)?;
        }
        map.end()
    }
}

impl PortSpec {
    /// A numeric entry.
    pub fn numeric(protocol: Protocol, port: Option<u16>, end_port: Option<u16>) -> PortSpec {
        PortSpec {
            protocol,
            port,
            end_port,
            name: None,
        }
    }

    /// The inclusive port range: `(port, endPort or port)`, or `(0, 65535)` when `port` is omitted.
    /// A named entry must be resolved first ([`resolve_ports`]).
    pub fn range(&self) -> (u16, u16) {
        match (self.port, self.end_port) {
            (None, _) => (0, u16::MAX),
            (Some(port), None) => (port, port),
            (Some(port), Some(end)) => (port, end),
        }
    }

    /// Whether a packet of `protocol` to `port` matches (ICMP ignores the port).
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        let (low, high) = self.range();
        self.protocol == protocol && (!protocol.has_ports() || (low..=high).contains(&port))
    }
}

/// A port name (`IANA_SVC_NAME`: 1–15 lowercase letters, digits and `-`, at least one letter,
/// no `-` at either end nor `--`). Stored inline so that [`PortSpec`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortName {
    bytes: [u8; 15],
    len: u8,
}

impl PortName {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl FromStr for PortName {
    type Err = String;

    fn from_str(s: &str) -> Result<PortName, String> {
        let ok = (1..=15).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.chars().any(|c| c.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if !ok {
            return Err(format!(
                "invalid port name {s:?}: named ports are 1-15 lowercase letters, digits and '-', with at least one letter"
            ));
        }
        let mut bytes = [0u8; 15];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(PortName {
            bytes,
            len: u8::try_from(s.len()).unwrap_or(15),
        })
    }
}

impl fmt::Debug for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PortName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A protocol of a port entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Protocol {
    /// The IP protocol number: 6, 17, 132, and 1 (ICMP) or 58 (`ICMPv6`).
    pub fn number(self, ipv6: bool) -> u8 {
        use enforcer_common::Protocol as Ip;
        let ip = match self {
            Protocol::Tcp => Ip::Tcp,
            Protocol::Udp => Ip::Udp,
            Protocol::Sctp => Ip::Sctp,
            Protocol::Icmp if ipv6 => Ip::Icmpv6,
            Protocol::Icmp => Ip::Icmp,
        };
        ip as u8
    }

    /// The protocol of an IP protocol number (1 and 58 are both ICMP).
    pub fn from_number(number: u8) -> Option<Protocol> {
        use enforcer_common::Protocol as Ip;
        match Ip::from_u8(number)? {
            Ip::Tcp => Some(Protocol::Tcp),
            Ip::Udp => Some(Protocol::Udp),
            Ip::Sctp => Some(Protocol::Sctp),
            Ip::Icmp | Ip::Icmpv6 => Some(Protocol::Icmp),
        }
    }

    /// Whether the protocol has ports (everything but ICMP).
    pub fn has_ports(self) -> bool {
        self != Protocol::Icmp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// TCP, UDP, SCTP or ICMP, case-insensitively.
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ICMP" => Ok(Protocol::Icmp),
            _ => Err(format!(
                "unknown protocol {s:?}: expected TCP, UDP, SCTP or ICMP"
            )),
        }
    }
}
