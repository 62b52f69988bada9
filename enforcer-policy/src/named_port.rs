//! Named ports: a workload's or pod's `{name, containerPort, protocol}` entries, and the
//! resolution of a rule's ports on a destination's named ports.

use serde::{Deserialize, Serialize};

use super::ports::{PortName, PortSpec, Protocol};

/// A named container port: what a policy's `port: NAME` resolves to on this workload or pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPort")]
pub struct NamedPort {
    pub name: String,
    #[serde(rename = "containerPort")]
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    #[serde(default)]
    name: Option<String>,
    container_port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

/// A container port, named or not (unnamed ones are read and dropped).
pub(crate) struct ContainerPort(pub(crate) Option<NamedPort>);

impl TryFrom<RawPort> for ContainerPort {
    type Error = String;

    fn try_from(raw: RawPort) -> Result<ContainerPort, String> {
        if raw.container_port == 0 {
            return Err("containerPort 0 out of range (1-65535)".into());
        }
        let protocol = kube_protocol(raw.protocol.as_deref())?;
        let Some(name) = raw.name else {
            return Ok(ContainerPort(None));
        };
        name.parse::<PortName>()?;
        Ok(ContainerPort(Some(NamedPort {
            name,
            port: raw.container_port,
            protocol,
        })))
    }
}

impl TryFrom<RawPort> for NamedPort {
    type Error = String;

    fn try_from(raw: RawPort) -> Result<NamedPort, String> {
        if raw.name.is_none() {
            return Err("a named port needs `name`".into());
        }
        ContainerPort::try_from(raw)?
            .0
            .ok_or_else(|| "a named port needs `name`".into())
    }
}

impl<'de> Deserialize<'de> for ContainerPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ContainerPort, D::Error> {
        ContainerPort::try_from(RawPort::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A Kubernetes protocol: `TCP` (default), `UDP` or `SCTP`, exactly.
pub fn kube_protocol(text: Option<&str>) -> Result<Protocol, String> {
    match text {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(format!(
            "unsupported protocol {other:?}: expected TCP, UDP or SCTP"
        )),
    }
}

/// A rule's ports once named ports are resolved on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResolvedPorts {
    /// `ports` omitted or empty: every protocol and port.
    All,
    /// These numeric entries (none left: the rule matches nothing).
    Only(Vec<PortSpec>),
}

impl ResolvedPorts {
    /// Whether protocol number `protocol` and `port` match.
    pub fn matches(&self, protocol: u8, port: u16) -> bool {
        match self {
            ResolvedPorts::All => true,
            ResolvedPorts::Only(specs) => {
                !specs.is_empty() && crate::ports_match(specs, protocol, port)
            }
        }
    }

    /// The numeric entries (none for `All`).
    pub fn specs(&self) -> &[PortSpec] {
        match self {
            ResolvedPorts::All => &[],
            ResolvedPorts::Only(specs) => specs,
        }
    }
}

/// Resolves a rule's ports for a destination with named ports `dst_ports` (`None`: the
/// destination is not a workload, so a named port matches nothing).
pub fn resolve_ports(ports: &[PortSpec], dst_ports: Option<&[NamedPort]>) -> ResolvedPorts {
    if ports.is_empty() {
        return ResolvedPorts::All;
    }
    let specs = ports
        .iter()
        .filter_map(|spec| match spec.name {
            None => Some(*spec),
            Some(name) => dst_ports?
                .iter()
                .find(|p| p.name == name.as_str() && p.protocol == spec.protocol)
                .map(|p| PortSpec::numeric(spec.protocol, Some(p.port), None)),
        })
        .collect();
    ResolvedPorts::Only(specs)
}
