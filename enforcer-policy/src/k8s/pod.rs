//! `v1 Pod`: namespace, labels, host network, named container ports and IP addresses.

use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};

use super::super::errors::Source;
use super::super::labels::Labels;
use super::super::model::ObjectKey;
use super::super::named_port::{ContainerPort, NamedPort};
use super::meta::ObjectMeta;
use super::{CORE_V1, KIND_POD};

/// A pod as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    /// `spec.hostNetwork`: the pod uses the node's addresses (identity `host`).
    pub host_network: bool,
    pub ports: Vec<NamedPort>,
    /// `status.podIPs` (and `status.podIP`); empty before the pod has an IP and once it has
    /// finished (`status.phase` `Succeeded` or `Failed`: the kubelet has released its
    /// addresses, which a running pod may hold now, as `kubectl get pods -A` shows).
    pub addresses: Vec<IpAddr>,
    pub source: Source,
}

#[derive(Deserialize)]
pub struct RawPod {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<RawSpec>,
    #[serde(default)]
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    containers: Option<Vec<RawContainer>>,
}

#[derive(Deserialize)]
struct RawContainer {
    #[serde(default)]
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pod_ip: Option<PodIp>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Option<Vec<RawPodIp>>,
}

#[derive(Deserialize)]
struct RawPodIp {
    ip: PodIp,
}

/// A pod address, checked where it is read (an invalid one is reported at its own line).
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct PodIp(IpAddr);

impl TryFrom<String> for PodIp {
    type Error = String;

    fn try_from(text: String) -> Result<PodIp, String> {
        text.trim()
            .parse()
            .map(PodIp)
            .map_err(|_| format!("{text:?} is not a valid IP address"))
    }
}

impl Pod {
    pub fn from_raw(raw: RawPod, source: Source) -> Pod {
        let spec = raw.spec;
        let mut ports: Vec<NamedPort> = Vec::new();
        let containers = spec.as_ref().and_then(|s| s.containers.as_ref());
        for c in containers.into_iter().flatten() {
            for p in c.ports.iter().flatten().filter_map(|p| p.0.clone()) {
                if !ports.iter().any(|q| q.name == p.name) {
                    ports.push(p);
                }
            }
        }
        let mut addresses = Vec::new();
        let finished = |s: &RawStatus| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed"));
        if let Some(status) = raw.status.filter(|s| !finished(s)) {
            let ips = status
                .pod_ip
                .into_iter()
                .chain(status.pod_ips.into_iter().flatten().map(|p| p.ip));
            for PodIp(a) in ips {
                if !addresses.contains(&a) {
                    addresses.push(a);
                }
            }
        }
        Pod {
            namespace: raw.metadata.namespace_or_default(),
            name: raw.metadata.name,
            labels: raw.metadata.labels,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            ports,
            addresses,
            source,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::namespaced(&self.namespace, &self.name)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: SpecOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecOut<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    host_network: bool,
    containers: [ContainerOut<'a>; 1],
}

#[derive(Serialize)]
struct ContainerOut<'a> {
    name: &'static str,
    #[serde(skip_serializing_if = "<[NamedPort]>::is_empty")]
    ports: &'a [NamedPort],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusOut {
    #[serde(rename = "podIP")]
    pod_ip: String,
    #[serde(rename = "podIPs")]
    pod_ips: Vec<IpOut>,
}

#[derive(Serialize)]
struct IpOut {
    ip: String,
}

impl Serialize for Pod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let status = self.addresses.first().map(|first| StatusOut {
            pod_ip: first.to_string(),
            pod_ips: self
                .addresses
                .iter()
                .map(|a| IpOut { ip: a.to_string() })
                .collect(),
        });
        PodOut {
            api_version: CORE_V1,
            kind: KIND_POD,
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: Some(self.namespace.clone()),
                labels: self.labels.clone(),
            },
            spec: SpecOut {
                host_network: self.host_network,
                containers: [ContainerOut {
                    name: "main",
                    ports: &self.ports,
                }],
            },
            status,
        }
        .serialize(serializer)
    }
}
