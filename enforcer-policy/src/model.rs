//! The typed policy model: Workloads, `FlowPolicies`, their rules, peers and ports. The
//! Kubernetes kinds live in [`super::k8s`], the document enum in [`super::document`], the set
//! in [`super::set`]; all are re-exported here.
//!
//! Every type serializes to the shape of the policy language (camelCase keys; Workload and
//! `FlowPolicy` as complete documents with `apiVersion`, `kind`, `metadata` and `spec`), so
//! `serde_yaml_ng::to_string(&document)` prints canonical YAML that parses back to the same model.
//! Deserialization ([`super::de`]) goes through the same strict validation as the YAML
//! parser; positions are then unknown (file `""`, line 0). Source positions are never
//! serialized.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::errors::Source;
use super::labels::{LabelSelector, Labels};
use super::named_port::NamedPort;
use super::ports::PortSpec;
use super::rate_limit::RateLimit;

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "enforcer/v1";
/// `kind` of a [`Workload`] document.
pub const KIND_WORKLOAD: &str = "Workload";
/// `kind` of a [`FlowPolicy`] document.
pub const KIND_FLOW_POLICY: &str = "FlowPolicy";
/// The service name that stands for every service (`FlowPolicy` `spec.service`, peers).
pub const ANY_SERVICE: &str = "*";
/// The namespace of an object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The label whose value is a workload's service (a Workload's `spec.service` sets it).
pub const SERVICE_LABEL: &str = "app.kubernetes.io/name";
/// The label read for the service when [`SERVICE_LABEL`] is absent.
pub const SERVICE_LABEL_FALLBACK: &str = "app";

/// One pod: its namespace, labels, addresses, named ports and service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    /// `metadata.namespace`, `default` when omitted.
    pub namespace: String,
    /// `metadata.labels` (without the service label, which `service` sets).
    pub labels: Labels,
    /// `spec.service`: sets the label [`SERVICE_LABEL`].
    pub service: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// `spec.ports`: named ports, resolved by policies that name them.
    pub ports: Vec<NamedPort>,
    pub source: Source,
}

impl Workload {
    /// The labels that make its identity: `labels` plus the service under `service_label`
    /// (the first of the configured service labels, [`SERVICE_LABEL`] by default).
    pub fn identity_labels(&self, service_label: &str) -> Labels {
        let mut labels = self.labels.clone();
        if let Some(service) = &self.service {
            labels.insert(service_label.to_string(), service.clone());
        }
        labels
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::namespaced(&self.namespace, &self.name)
    }
}

/// The service of an object with these labels: the value of [`SERVICE_LABEL`], else of
/// [`SERVICE_LABEL_FALLBACK`].
pub fn service_of(labels: &Labels) -> Option<&str> {
    labels
        .get(SERVICE_LABEL)
        .or_else(|| labels.get(SERVICE_LABEL_FALLBACK))
        .map(String::as_str)
}

/// The name of a document: its namespace (none for cluster-wide kinds) and name. Displayed
/// `NAMESPACE/NAME`, or `NAME` without a namespace.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn namespaced(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }

    pub fn cluster(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: None,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `mode:` of a `FlowPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    /// `enforce` or `audit` (exact).
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            _ => Err(format!("invalid mode {s:?}: expected enforce or audit")),
        }
    }
}

/// A `FlowPolicy`: the allow and deny rules of the workloads it selects: those of `service`
/// (`"*"` = every service) that match `selector` (if any), in `namespace` (if any; every
/// namespace otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPolicy {
    pub name: String,
    /// `metadata.namespace`: the policy selects workloads of this namespace only, and its
    /// `selector` peers without `namespaceSelector` mean this namespace. `None`: cluster-wide.
    pub namespace: Option<String>,
    /// The service it protects; `"*"` = every service.
    pub service: String,
    /// `spec.selector`: only the workloads whose labels match.
    pub selector: Option<LabelSelector>,
    pub mode: Mode,
    /// `spec.sensitive`: the workloads it selects hold what must not leak (lint ranks findings
    /// about them first, the report marks them). `false` when omitted.
    pub sensitive: bool,
    /// `Some` (even empty) isolates the service for ingress.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` (even empty) isolates the service for egress.
    pub egress: Option<Vec<Rule>>,
    pub ingress_deny: Vec<Rule>,
    pub egress_deny: Vec<Rule>,
    pub source: Source,
}

impl FlowPolicy {
    /// Whether this policy applies to a workload of `service` (its own service or `"*"`).
    pub fn applies_to(&self, service: &str) -> bool {
        self.service == ANY_SERVICE || self.service == service
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The rules of one section.
    pub fn section(&self, section: Section) -> &[Rule] {
        match section {
            Section::Ingress => self.ingress.as_deref().unwrap_or(&[]),
            Section::Egress => self.egress.as_deref().unwrap_or(&[]),
            Section::IngressDeny => &self.ingress_deny,
            Section::EgressDeny => &self.egress_deny,
        }
    }

    /// Every rule with its section, in document order.
    pub fn rules(&self) -> impl Iterator<Item = (Section, usize, &Rule)> {
        let sections = [
            (Section::Ingress, self.ingress.as_deref().unwrap_or(&[])),
            (Section::Egress, self.egress.as_deref().unwrap_or(&[])),
            (Section::IngressDeny, &self.ingress_deny[..]),
            (Section::EgressDeny, &self.egress_deny[..]),
        ];
        sections.into_iter().flat_map(|(section, rules)| {
            rules.iter().enumerate().map(move |(i, r)| (section, i, r))
        })
    }
}

/// A section of rules in a `FlowPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Ingress,
    Egress,
    IngressDeny,
    EgressDeny,
}

impl Section {
    /// The YAML key of the section (`ingress`, `egress`, `ingressDeny`, `egressDeny`).
    pub fn key(self) -> &'static str {
        match self {
            Section::Ingress => "ingress",
            Section::Egress => "egress",
            Section::IngressDeny => "ingressDeny",
            Section::EgressDeny => "egressDeny",
        }
    }

    /// The key that lists the peers of a rule in this section (`from` or `to`).
    pub fn peer_key(self) -> &'static str {
        match self {
            Section::Ingress | Section::IngressDeny => "from",
            Section::Egress | Section::EgressDeny => "to",
        }
    }

    pub fn is_deny(self) -> bool {
        matches!(self, Section::IngressDeny | Section::EgressDeny)
    }

    pub fn is_ingress(self) -> bool {
        matches!(self, Section::Ingress | Section::IngressDeny)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One rule. Serialized on its own with the direction-neutral key `peers`; inside a `FlowPolicy`
/// the peers are written under `from` (ingress sections) or `to` (egress sections).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `from:` or `to:`; empty or omitted = any peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// Empty = all protocols and ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// 1-based line of the rule (0 when unknown).
    #[serde(skip)]
    pub line: usize,
}

/// A peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The addresses of a service's workloads (in every namespace); `"*"` = any workload.
    Service(String),
    /// Any address inside `cidr` and outside every `except`.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
    /// Workloads by labels: `pods` (`selector:`) selects workloads, `namespaces`
    /// (`namespaceSelector:`) their namespaces. `pods` alone means the policy's namespace (every
    /// namespace for a cluster-wide policy); `namespaces` alone, every workload of them; both,
    /// the workloads matching `pods` in the namespaces matching `namespaces`.
    Selector {
        pods: Option<LabelSelector>,
        namespaces: Option<LabelSelector>,
    },
}

impl Peer {
    /// Whether `addr` lies in this CIDR peer (always false for other peers).
    pub fn cidr_contains(&self, addr: IpAddr) -> bool {
        match self {
            Peer::Service(_) | Peer::Selector { .. } => false,
            Peer::Cidr { cidr, except } => {
                cidr.contains(&addr) && !except.iter().any(|e| e.contains(&addr))
            }
        }
    }
}

impl Serialize for Peer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Peer::Service(service) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("service", service)?;
                map.end()
            }
            Peer::Cidr { cidr, except } => {
                let len = if except.is_empty() { 1 } else { 2 };
                let mut map = serializer.serialize_map(Some(len))?;
                map.serialize_entry("cidr", &cidr.to_string())?;
                if !except.is_empty() {
                    let except: Vec<String> = except.iter().map(ToString::to_string).collect();
                    map.serialize_entry("except", &except)?;
                }
                map.end()
            }
            Peer::Selector { pods, namespaces } => {
                let len = usize::from(pods.is_some()) + usize::from(namespaces.is_some());
                let mut map = serializer.serialize_map(Some(len))?;
                if let Some(pods) = pods {
                    map.serialize_entry("selector", pods)?;
                }
                if let Some(namespaces) = namespaces {
                    map.serialize_entry("namespaceSelector", namespaces)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Peer {
    /// `web`, `10.0.0.0/8 except 10.1.0.0/16`, `selector app=web in namespaces team=a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Service(s) => f.write_str(s),
            Peer::Cidr { cidr, except } if except.is_empty() => write!(f, "{cidr}"),
            Peer::Cidr { cidr, except } => {
                let except: Vec<String> = except.iter().map(ToString::to_string).collect();
                write!(f, "{cidr} except {}", except.join(" "))
            }
            Peer::Selector { pods, namespaces } => {
                match pods {
                    Some(p) => write!(f, "selector {p}")?,
                    None => f.write_str("every workload")?,
                }
                match namespaces {
                    Some(n) => write!(f, " in namespaces {n}"),
                    None => Ok(()),
                }
            }
        }
    }
}
