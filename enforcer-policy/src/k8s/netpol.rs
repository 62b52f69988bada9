//! `networking.k8s.io/v1 NetworkPolicy`, validated as the API server does, and its exact
//! `FlowPolicy` equivalent ([`NetworkPolicy::to_flow_policy`]), which the engine evaluates.

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};

use super::super::errors::Source;
use super::super::labels::LabelSelector;
use super::super::model::{FlowPolicy, Mode, ObjectKey, Peer, Rule, ANY_SERVICE};
use super::super::named_port::kube_protocol;
use super::super::ports::{PortName, PortSpec};
use super::meta::ObjectMeta;
use super::{KIND_NETWORK_POLICY, NETWORKING_V1};

/// A `NetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub name: String,
    pub namespace: String,
    pub spec: NetworkPolicySpec,
    pub source: Source,
}

/// `policyTypes` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// `spec`: strict, as the API server with strict field validation (a typo like `podSelecter`
/// or `ingres` in a security policy is an error, not an allow-everything).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, deserialize_with = "null_is_default")]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// A peer: `podSelector` and/or `namespaceSelector`, or `ipBlock` alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPeer")]
pub struct NetworkPolicyPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPeer {
    #[serde(default)]
    pod_selector: Option<LabelSelector>,
    #[serde(default)]
    namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    ip_block: Option<IpBlock>,
}

impl TryFrom<RawPeer> for NetworkPolicyPeer {
    type Error = String;

    fn try_from(raw: RawPeer) -> Result<NetworkPolicyPeer, String> {
        let selectors = raw.pod_selector.is_some() || raw.namespace_selector.is_some();
        match (selectors, raw.ip_block.is_some()) {
            (false, false) => {
                Err("a peer needs podSelector, namespaceSelector or ipBlock".to_string())
            }
            (true, true) => {
                Err("a peer with ipBlock may not have podSelector or namespaceSelector".to_string())
            }
            _ => Ok(NetworkPolicyPeer {
                pod_selector: raw.pod_selector,
                namespace_selector: raw.namespace_selector,
                ip_block: raw.ip_block,
            }),
        }
    }
}

/// `ipBlock`: a CIDR (host bits are ignored, as the API server does) and exceptions inside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawIpBlock")]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpBlock {
    cidr: String,
    #[serde(default)]
    except: Option<Vec<String>>,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid CIDR {text:?}"))?;
    if let IpNet::V6(v6) = net {
        if net.prefix_len() >= 96 && v6.network().to_ipv4_mapped().is_some() {
            return Err(format!(
                "{net} is IPv4-mapped IPv6 space; write the IPv4 CIDR instead"
            ));
        }
    }
    Ok(net.trunc())
}

impl TryFrom<RawIpBlock> for IpBlock {
    type Error = String;

    fn try_from(raw: RawIpBlock) -> Result<IpBlock, String> {
        let cidr = parse_net(&raw.cidr)?;
        let mut except = Vec::new();
        for e in raw.except.unwrap_or_default() {
            let net = parse_net(&e)?;
            let same_family = matches!(
                (cidr, net),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            );
            if !same_family || !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
                return Err(format!(
                    "except {e:?} must be a strict subset of cidr {}",
                    raw.cidr
                ));
            }
            except.push(net);
        }
        Ok(IpBlock { cidr, except })
    }
}

impl Serialize for IpBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out {
            cidr: String,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            except: Vec<String>,
        }
        Out {
            cidr: self.cidr.to_string(),
            except: self.except.iter().map(ToString::to_string).collect(),
        }
        .serialize(serializer)
    }
}

/// A port: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IntOrString, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or name")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(IntOrString::Int(p)),
                    _ => Err(E::custom(format!("port {v} out of range (1-65535)"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                v.parse::<PortName>().map_err(E::custom)?;
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A port entry: protocol (TCP by default), a port number or name, an `endPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPort")]
pub struct NetworkPolicyPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPort {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port: Option<IntOrString>,
    #[serde(default)]
    end_port: Option<i64>,
}

impl TryFrom<RawPort> for NetworkPolicyPort {
    type Error = String;

    fn try_from(raw: RawPort) -> Result<NetworkPolicyPort, String> {
        kube_protocol(raw.protocol.as_deref())?;
        let end_port = match (raw.end_port, &raw.port) {
            (None, _) => None,
            (Some(_), None) => return Err("endPort requires port".into()),
            (Some(_), Some(IntOrString::String(_))) => {
                return Err("endPort requires a numeric port, not a named one".into())
            }
            (Some(end), Some(IntOrString::Int(port))) => match u16::try_from(end) {
                Ok(end) if end >= *port => Some(end),
                Ok(end) => return Err(format!("endPort {end} is less than port {port}")),
                Err(_) => return Err(format!("endPort {end} out of range (1-65535)")),
            },
        };
        Ok(NetworkPolicyPort {
            protocol: raw.protocol,
            port: raw.port,
            end_port,
        })
    }
}

#[derive(Deserialize)]
pub struct RawNetworkPolicy {
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_is_default")]
    spec: NetworkPolicySpec,
}

impl NetworkPolicy {
    pub fn from_raw(raw: RawNetworkPolicy, source: Source) -> NetworkPolicy {
        NetworkPolicy {
            namespace: raw.metadata.namespace_or_default(),
            name: raw.metadata.name,
            spec: raw.spec,
            source,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::namespaced(&self.namespace, &self.name)
    }

    /// The policy types in effect: as listed, or (absent or empty, as the API server defaults
    /// them) Ingress, plus Egress when `egress` has rules.
    pub fn types(&self) -> (bool, bool) {
        match self.spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => (
                types.contains(&PolicyType::Ingress),
                types.contains(&PolicyType::Egress),
            ),
            _ => (
                true,
                self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            ),
        }
    }

    /// The `FlowPolicy` that says exactly the same: the pods of this namespace matching
    /// `podSelector`, isolated per policy type, with the rules of the listed types.
    pub fn to_flow_policy(&self) -> FlowPolicy {
        let (ingress, egress) = self.types();
        let rules = |peers: Option<&Vec<NetworkPolicyPeer>>,
                     ports: Option<&Vec<NetworkPolicyPort>>| Rule {
            peers: peers.into_iter().flatten().map(peer).collect(),
            ports: ports.into_iter().flatten().map(port).collect(),
            rate_limit: None,
            line: 0,
        };
        FlowPolicy {
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
            service: ANY_SERVICE.to_string(),
            selector: Some(self.spec.pod_selector.clone()),
            mode: Mode::Enforce,
            sensitive: false,
            ingress: ingress.then(|| {
                let list = self.spec.ingress.iter().flatten();
                list.map(|r| rules(r.from.as_ref(), r.ports.as_ref()))
                    .collect()
            }),
            egress: egress.then(|| {
                let list = self.spec.egress.iter().flatten();
                list.map(|r| rules(r.to.as_ref(), r.ports.as_ref()))
                    .collect()
            }),
            ingress_deny: Vec::new(),
            egress_deny: Vec::new(),
            source: self.source.clone(),
        }
    }
}

fn peer(p: &NetworkPolicyPeer) -> Peer {
    match &p.ip_block {
        Some(block) => Peer::Cidr {
            cidr: block.cidr,
            except: block.except.clone(),
        },
        None => Peer::Selector {
            pods: p.pod_selector.clone(),
            namespaces: p.namespace_selector.clone(),
        },
    }
}

fn port(p: &NetworkPolicyPort) -> PortSpec {
    // Validated when read: the protocol is known and a name is a valid port name.
    let protocol = kube_protocol(p.protocol.as_deref()).unwrap_or_default();
    match &p.port {
        None => PortSpec::numeric(protocol, None, None),
        Some(IntOrString::Int(n)) => PortSpec::numeric(protocol, Some(*n), p.end_port),
        Some(IntOrString::String(name)) => PortSpec {
            protocol,
            port: None,
            end_port: None,
            name: name.parse().ok(),
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkPolicyOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: &'a NetworkPolicySpec,
}

impl Serialize for NetworkPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NetworkPolicyOut {
            api_version: NETWORKING_V1,
            kind: KIND_NETWORK_POLICY,
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: Some(self.namespace.clone()),
                labels: std::collections::BTreeMap::default(),
            },
            spec: &self.spec,
        }
        .serialize(serializer)
    }
}
