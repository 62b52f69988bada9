//! One document of the policy language, of any kind, and its canonical serialization.
//!
//! Every document serializes to the shape it is written in (enforcer/v1 kinds with camelCase
//! keys, Kubernetes kinds as the API prints them), so `serde_yaml_ng::to_string(&document)`
//! prints YAML that parses back to the same model. Deserialization ([`super::de`]) goes
//! through the same validation as the YAML parser. Source positions are never serialized.

use serde::{Deserialize, Serialize, Serializer};

use super::errors::Source;
use super::k8s::{Namespace, NetworkPolicy, Pod};
use super::k8s::{KIND_NAMESPACE, KIND_NETWORK_POLICY, KIND_POD};
use super::model::{
    FlowPolicy, Mode, ObjectKey, Peer, Rule, Section, Workload, API_VERSION, DEFAULT_NAMESPACE,
    KIND_FLOW_POLICY, KIND_WORKLOAD,
};
use super::named_port::NamedPort;
use super::ports::PortSpec;
use super::rate_limit::RateLimit;

/// The kind of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Workload,
    FlowPolicy,
    Namespace,
    Pod,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Workload,
        Kind::FlowPolicy,
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workload => KIND_WORKLOAD,
            Kind::FlowPolicy => KIND_FLOW_POLICY,
            Kind::Namespace => KIND_NAMESPACE,
            Kind::Pod => KIND_POD,
            Kind::NetworkPolicy => KIND_NETWORK_POLICY,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// A kind name, case-insensitively, also plural or kubectl's short name (`netpol`, `ns`,
    /// `po`).
    fn from_str(s: &str) -> Result<Kind, String> {
        let lower = s.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "netpol" | "networkpolicies" => Some(Kind::NetworkPolicy),
            "ns" | "namespaces" => Some(Kind::Namespace),
            "po" | "pods" => Some(Kind::Pod),
            "workloads" => Some(Kind::Workload),
            "flowpolicies" => Some(Kind::FlowPolicy),
            _ => Kind::ALL
                .into_iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(&lower)),
        };
        kind.ok_or_else(|| {
            format!("unknown kind {s:?}: expected Workload, FlowPolicy, Namespace, Pod or NetworkPolicy")
        })
    }
}

/// A document of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Workload(Workload),
    FlowPolicy(FlowPolicy),
    Namespace(Namespace),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
}

impl Document {
    pub fn name(&self) -> &str {
        match self {
            Document::Workload(w) => &w.name,
            Document::FlowPolicy(p) => &p.name,
            Document::Namespace(n) => &n.name,
            Document::Pod(p) => &p.name,
            Document::NetworkPolicy(p) => &p.name,
        }
    }

    /// The namespace of a namespaced document (`None` for Namespaces and cluster-wide
    /// `FlowPolicies`).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Document::Workload(w) => Some(&w.namespace),
            Document::FlowPolicy(p) => p.namespace.as_deref(),
            Document::Namespace(_) => None,
            Document::Pod(p) => Some(&p.namespace),
            Document::NetworkPolicy(p) => Some(&p.namespace),
        }
    }

    /// Namespace and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }

    /// How the document is named in messages: `NAME`, or `NAMESPACE/NAME` outside `default`.
    pub fn display_name(&self) -> String {
        match self.namespace() {
            Some(ns) if ns != DEFAULT_NAMESPACE || self.is_kubernetes() => {
                format!("{ns}/{}", self.name())
            }
            _ => self.name().to_string(),
        }
    }

    /// Whether it is a Kubernetes kind (not enforcer/v1).
    pub fn is_kubernetes(&self) -> bool {
        matches!(
            self,
            Document::Namespace(_) | Document::Pod(_) | Document::NetworkPolicy(_)
        )
    }

    pub fn kind_enum(&self) -> Kind {
        match self {
            Document::Workload(_) => Kind::Workload,
            Document::FlowPolicy(_) => Kind::FlowPolicy,
            Document::Namespace(_) => Kind::Namespace,
            Document::Pod(_) => Kind::Pod,
            Document::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    /// `Workload`, `FlowPolicy`, `Namespace`, `Pod` or `NetworkPolicy`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Workload(_) => KIND_WORKLOAD,
            Document::FlowPolicy(_) => KIND_FLOW_POLICY,
            Document::Namespace(_) => KIND_NAMESPACE,
            Document::Pod(_) => KIND_POD,
            Document::NetworkPolicy(_) => KIND_NETWORK_POLICY,
        }
    }

    pub fn source(&self) -> &Source {
        match self {
            Document::Workload(w) => &w.source,
            Document::FlowPolicy(p) => &p.source,
            Document::Namespace(n) => &n.source,
            Document::Pod(p) => &p.source,
            Document::NetworkPolicy(p) => &p.source,
        }
    }

    pub fn source_mut(&mut self) -> &mut Source {
        match self {
            Document::Workload(w) => &mut w.source,
            Document::FlowPolicy(p) => &mut p.source,
            Document::Namespace(n) => &mut n.source,
            Document::Pod(p) => &mut p.source,
            Document::NetworkPolicy(p) => &mut p.source,
        }
    }

    /// A copy without positions (source and rule lines cleared), for comparing content.
    #[must_use]
    pub fn without_positions(&self) -> Document {
        let mut doc = self.clone();
        *doc.source_mut() = Source::default();
        if let Document::FlowPolicy(p) = &mut doc {
            let sections = [
                p.ingress.as_mut(),
                p.egress.as_mut(),
                Some(&mut p.ingress_deny),
                Some(&mut p.egress_deny),
            ];
            for rule in sections.into_iter().flatten().flatten() {
                rule.line = 0;
            }
        }
        doc
    }

    /// Whether both documents say the same thing (positions ignored).
    pub fn same_content(&self, other: &Document) -> bool {
        self.without_positions() == other.without_positions()
    }

    /// Canonical YAML of this document (no leading `---`).
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    /// Canonical YAML of several documents, separated by `---`.
    pub fn to_yaml_stream(docs: &[Document]) -> Result<String, serde_yaml_ng::Error> {
        let mut out = String::new();
        for (i, doc) in docs.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&doc.to_yaml()?);
        }
        Ok(out)
    }
}

impl From<Workload> for Document {
    fn from(w: Workload) -> Document {
        Document::Workload(w)
    }
}

impl From<FlowPolicy> for Document {
    fn from(p: FlowPolicy) -> Document {
        Document::FlowPolicy(p)
    }
}

impl From<Pod> for Document {
    fn from(p: Pod) -> Document {
        Document::Pod(p)
    }
}

impl From<Namespace> for Document {
    fn from(n: Namespace) -> Document {
        Document::Namespace(n)
    }
}

impl From<NetworkPolicy> for Document {
    fn from(p: NetworkPolicy) -> Document {
        Document::NetworkPolicy(p)
    }
}

// ---- serialization as documents ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DocOut<'a, S: Serialize> {
    api_version: &'static str,
    kind: &'static str,
    metadata: MetaOut<'a>,
    spec: S,
}

#[derive(Serialize)]
struct MetaOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a super::labels::Labels>,
}

#[derive(Serialize)]
struct WorkloadSpecOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "<[NamedPort]>::is_empty")]
    ports: &'a [NamedPort],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlowPolicySpecOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<&'a super::labels::LabelSelector>,
    mode: Mode,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sensitive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress: Option<Vec<RuleOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    egress: Option<Vec<RuleOut<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ingress_deny: Vec<RuleOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    egress_deny: Vec<RuleOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a [Peer]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a [Peer]>,
    #[serde(skip_serializing_if = "<[PortSpec]>::is_empty")]
    ports: &'a [PortSpec],
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<&'a RateLimit>,
}

fn rules_out(rules: &[Rule], section: Section) -> Vec<RuleOut<'_>> {
    rules
        .iter()
        .map(|rule| {
            let peers = (!rule.peers.is_empty()).then_some(&rule.peers[..]);
            let (from, to) = if section.is_ingress() {
                (peers, None)
            } else {
                (None, peers)
            };
            RuleOut {
                from,
                to,
                ports: &rule.ports,
                rate_limit: rule.rate_limit.as_ref(),
            }
        })
        .collect()
}

impl Serialize for Workload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DocOut {
            api_version: API_VERSION,
            kind: KIND_WORKLOAD,
            metadata: MetaOut {
                name: &self.name,
                namespace: Some(self.namespace.as_str()).filter(|ns| *ns != DEFAULT_NAMESPACE),
                labels: Some(&self.labels).filter(|l| !l.is_empty()),
            },
            spec: WorkloadSpecOut {
                service: self.service.as_deref(),
                addresses: self.addresses.iter().map(ToString::to_string).collect(),
                ports: &self.ports,
            },
        }
        .serialize(serializer)
    }
}

impl Serialize for FlowPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DocOut {
            api_version: API_VERSION,
            kind: KIND_FLOW_POLICY,
            metadata: MetaOut {
                name: &self.name,
                namespace: self.namespace.as_deref(),
                labels: None,
            },
            spec: FlowPolicySpecOut {
                service: Some(self.service.as_str())
                    .filter(|s| self.selector.is_none() || *s != super::model::ANY_SERVICE),
                selector: self.selector.as_ref(),
                mode: self.mode,
                sensitive: self.sensitive,
                ingress: self
                    .ingress
                    .as_deref()
                    .map(|r| rules_out(r, Section::Ingress)),
                egress: self
                    .egress
                    .as_deref()
                    .map(|r| rules_out(r, Section::Egress)),
                ingress_deny: rules_out(&self.ingress_deny, Section::IngressDeny),
                egress_deny: rules_out(&self.egress_deny, Section::EgressDeny),
            },
        }
        .serialize(serializer)
    }
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Document::Workload(w) => w.serialize(serializer),
            Document::FlowPolicy(p) => p.serialize(serializer),
            Document::Namespace(n) => n.serialize(serializer),
            Document::Pod(p) => p.serialize(serializer),
            Document::NetworkPolicy(p) => p.serialize(serializer),
        }
    }
}
