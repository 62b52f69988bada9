//! The typed policy model: Workloads, `FlowPolicies` and the set of them.
//!
//! Every type serializes to the shape of the policy language (camelCase keys; Workload and
//! `FlowPolicy` as complete documents with `apiVersion`, `kind`, `metadata` and `spec`), so
//! `serde_yaml_ng::to_string(&document)` prints canonical YAML that parses back to the same model.
//! Deserialization goes through the same strict validation as the YAML parser (see
//! [`super::parse`]); positions are then unknown (file `""`, line 0). Source positions are never
//! serialized.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::parse;
use super::yaml::{Ctx, Node};

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "enforcer/v1";
/// `kind` of a [`Workload`] document.
pub const KIND_WORKLOAD: &str = "Workload";
/// `kind` of a [`FlowPolicy`] document.
pub const KIND_FLOW_POLICY: &str = "FlowPolicy";
/// The service name that stands for every service (`FlowPolicy` `spec.service`, peers).
pub const ANY_SERVICE: &str = "*";

/// Where a document was defined: file and 1-based line of its first line (`line` 0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Source {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, 0) => f.write_str("<input>"),
            (true, line) => write!(f, "<input>:{line}"),
            (false, 0) => f.write_str(&self.file),
            (false, line) => write!(f, "{}:{line}", self.file),
        }
    }
}

/// A rejected document or field: `file:line:column: reason`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 1-based line of the offending node; 0 when unknown.
    pub line: usize,
    /// 1-based column of the offending node; 0 when unknown.
    pub column: usize,
    pub reason: String,
}

impl PolicyError {
    pub fn new(file: &str, line: usize, column: usize, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            file: file.to_string(),
            line,
            column,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:", self.file)?;
        }
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
            if self.column > 0 {
                write!(f, "{}:", self.column)?;
            }
        }
        if !self.file.is_empty() || self.line > 0 {
            f.write_str(" ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Every error found in an input, in input order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(error: PolicyError) -> PolicyErrors {
        PolicyErrors(vec![error])
    }
}

impl PolicyErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Something suspicious that does not make a document invalid (e.g. an unknown service in a
/// peer): `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = Source {
            file: self.file.clone(),
            line: self.line,
        };
        write!(f, "{source}: {}", self.message)
    }
}

/// One pod: its addresses and its service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub service: String,
    pub addresses: Vec<IpAddr>,
    pub source: Source,
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

/// A `FlowPolicy`: the allow and deny rules of one service (or of every service, `"*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPolicy {
    pub name: String,
    /// The service it protects; `"*"` = every service.
    pub service: String,
    pub mode: Mode,
    /// `Some` (even empty) isolates the service for ingress.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` (even empty) isolates the service for egress.
    pub egress: Option<Vec<Rule>>,
    pub ingress_deny: Vec<Rule>,
    pub egress_deny: Vec<Rule>,
    pub source: Source,
}

impl FlowPolicy {
    /// Whether this policy applies to `service` (its own service or `"*"`).
    pub fn applies_to(&self, service: &str) -> bool {
        self.service == ANY_SERVICE || self.service == service
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
    /// The addresses of a service's workloads; `"*"` = any workload.
    Service(String),
    /// Any address inside `cidr` and outside every `except`.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
}

impl Peer {
    /// Whether `addr` lies in this CIDR peer (always false for a service peer).
    pub fn cidr_contains(&self, addr: IpAddr) -> bool {
        match self {
            Peer::Service(_) => false,
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
        }
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
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp if ipv6 => 58,
            Protocol::Icmp => 1,
        }
    }

    /// The protocol of an IP protocol number (1 and 58 are both ICMP).
    pub fn from_number(number: u8) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            1 | 58 => Some(Protocol::Icmp),
            _ => None,
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

/// A port entry: a protocol and a port, a range of ports (`endPort`) or every port (`port` omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

impl PortSpec {
    /// The inclusive port range: `(port, endPort or port)`, or `(0, 65535)` when `port` is omitted.
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

/// `per:` of a rate limit: one bucket per source address (default) or one for the whole rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateScope {
    #[default]
    Source,
    Rule,
}

impl RateScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Source => "source",
            RateScope::Rule => "rule",
        }
    }
}

impl fmt::Display for RateScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `rateLimit:` of an ingress rule. At least one of the rates is set (and > 0); `burst` ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    pub per: RateScope,
}

/// One document of the policy language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Workload(Workload),
    FlowPolicy(FlowPolicy),
}

impl Document {
    pub fn name(&self) -> &str {
        match self {
            Document::Workload(w) => &w.name,
            Document::FlowPolicy(p) => &p.name,
        }
    }

    /// `Workload` or `FlowPolicy`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Workload(_) => KIND_WORKLOAD,
            Document::FlowPolicy(_) => KIND_FLOW_POLICY,
        }
    }

    pub fn source(&self) -> &Source {
        match self {
            Document::Workload(w) => &w.source,
            Document::FlowPolicy(p) => &p.source,
        }
    }

    pub fn source_mut(&mut self) -> &mut Source {
        match self {
            Document::Workload(w) => &mut w.source,
            Document::FlowPolicy(p) => &mut p.source,
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
}

#[derive(Serialize)]
struct WorkloadSpecOut<'a> {
    service: &'a str,
    addresses: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlowPolicySpecOut<'a> {
    service: &'a str,
    mode: Mode,
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
            metadata: MetaOut { name: &self.name },
            spec: WorkloadSpecOut {
                service: &self.service,
                addresses: self.addresses.iter().map(ToString::to_string).collect(),
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
            metadata: MetaOut { name: &self.name },
            spec: FlowPolicySpecOut {
                service: &self.service,
                mode: self.mode,
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
        }
    }
}

// ---- deserialization through the strict parser ----

fn from_node<'de, D, T>(
    deserializer: D,
    read: impl FnOnce(&mut Ctx, &Node) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let node = Node::deserialize(deserializer)?;
    let mut ctx = Ctx::new("");
    let value = read(&mut ctx, &node);
    match value {
        Some(value) if ctx.errors.is_empty() => Ok(value),
        _ if !ctx.errors.is_empty() => Err(D::Error::custom(PolicyErrors(ctx.errors))),
        _ => Err(D::Error::custom("invalid value")),
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        from_node(deserializer, |ctx, node| {
            if node.is_null() {
                ctx.error(node.pos, "empty document");
                return None;
            }
            parse::read_document(ctx, node)
        })
    }
}

impl<'de> Deserialize<'de> for Workload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Workload, D::Error> {
        match Document::deserialize(deserializer)? {
            Document::Workload(w) => Ok(w),
            Document::FlowPolicy(_) => Err(D::Error::custom("expected kind Workload")),
        }
    }
}

impl<'de> Deserialize<'de> for FlowPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FlowPolicy, D::Error> {
        match Document::deserialize(deserializer)? {
            Document::FlowPolicy(p) => Ok(p),
            Document::Workload(_) => Err(D::Error::custom("expected kind FlowPolicy")),
        }
    }
}

impl<'de> Deserialize<'de> for Rule {
    /// Accepts the peers under `peers`, `from` or `to` (one of them), and `rateLimit`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
        from_node(deserializer, |ctx, node| {
            parse::read_rule(ctx, node, None, "")
        })
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Peer, D::Error> {
        from_node(deserializer, |ctx, node| parse::read_peer(ctx, node, ""))
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PortSpec, D::Error> {
        from_node(deserializer, |ctx, node| parse::read_port(ctx, node, ""))
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RateLimit, D::Error> {
        from_node(deserializer, |ctx, node| {
            parse::read_rate_limit(ctx, node, None, "")
        })
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Protocol, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RateScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RateScope, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "source" => Ok(RateScope::Source),
            "rule" => Ok(RateScope::Rule),
            other => Err(D::Error::custom(format!(
                "invalid rateLimit.per {other:?}: expected source or rule"
            ))),
        }
    }
}

// ---- the set of documents ----

/// What `apply` did with one document (kubectl wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// All Workloads and `FlowPolicies`, by name. Names are unique per kind; no address is held by
/// two workloads. Serialized as a list of documents (workloads first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    pub workloads: BTreeMap<String, Workload>,
    pub policies: BTreeMap<String, FlowPolicy>,
}

impl PolicySet {
    pub fn new() -> PolicySet {
        PolicySet::default()
    }

    /// Builds a set from documents, reporting every duplicate name and shared address.
    pub fn from_documents(docs: Vec<Document>) -> Result<PolicySet, PolicyErrors> {
        let mut set = PolicySet::new();
        let mut errors = Vec::new();
        // Addresses are checked with one index for all documents (not a scan per workload).
        let mut held: HashMap<IpAddr, (String, Source)> = HashMap::new();
        for doc in docs {
            if let Document::Workload(w) = &doc {
                if let Err(error) = claim_addresses(&mut held, w) {
                    errors.push(error);
                    continue;
                }
            }
            if let Err(error) = set.insert_named(doc) {
                errors.push(error);
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// Adds a document. A name already used by a document of the same kind, or a workload
    /// address already held by another workload, is an error naming both locations.
    pub fn insert(&mut self, doc: Document) -> Result<(), PolicyError> {
        if let Document::Workload(w) = &doc {
            if !self.workloads.contains_key(&w.name) {
                self.check_addresses(w)?;
            }
        }
        self.insert_named(doc)
    }

    /// `insert` without the address check (done by the caller).
    fn insert_named(&mut self, doc: Document) -> Result<(), PolicyError> {
        match doc {
            Document::Workload(w) => {
                if let Some(existing) = self.workloads.get(&w.name) {
                    return Err(duplicate_error(
                        KIND_WORKLOAD,
                        &w.name,
                        &w.source,
                        &existing.source,
                    ));
                }
                self.workloads.insert(w.name.clone(), w);
            }
            Document::FlowPolicy(p) => {
                if let Some(existing) = self.policies.get(&p.name) {
                    return Err(duplicate_error(
                        KIND_FLOW_POLICY,
                        &p.name,
                        &p.source,
                        &existing.source,
                    ));
                }
                self.policies.insert(p.name.clone(), p);
            }
        }
        Ok(())
    }

    fn check_addresses(&self, workload: &Workload) -> Result<(), PolicyError> {
        let mut held = HashMap::new();
        for o in self.workloads.values().filter(|o| o.name != workload.name) {
            let _ = claim_addresses(&mut held, o);
        }
        claim_addresses(&mut held, workload)
    }
}

/// Record `workload`'s addresses in `held`; an address another workload holds is an error
/// naming both (and nothing of `workload` is recorded then).
fn claim_addresses(
    held: &mut HashMap<IpAddr, (String, Source)>,
    workload: &Workload,
) -> Result<(), PolicyError> {
    for addr in &workload.addresses {
        if let Some((other, source)) = held.get(addr).filter(|(o, _)| *o != workload.name) {
            return Err(PolicyError::new(
                &workload.source.file,
                workload.source.line,
                0,
                format!(
                    "address {addr} of Workload {:?} is already held by Workload {other:?} ({source})",
                    workload.name
                ),
            ));
        }
    }
    for addr in &workload.addresses {
        held.insert(*addr, (workload.name.clone(), workload.source.clone()));
    }
    Ok(())
}

impl PolicySet {
    /// Removes every document named `name` (a Workload and a `FlowPolicy` may share a name).
    pub fn remove(&mut self, name: &str) -> Vec<Document> {
        let mut removed = Vec::new();
        if let Some(w) = self.workloads.remove(name) {
            removed.push(Document::Workload(w));
        }
        if let Some(p) = self.policies.remove(name) {
            removed.push(Document::FlowPolicy(p));
        }
        removed
    }

    /// Removes the document of `kind` (`Workload` or `FlowPolicy`) named `name`.
    pub fn remove_kind(&mut self, kind: &str, name: &str) -> Option<Document> {
        match kind {
            KIND_WORKLOAD => self.workloads.remove(name).map(Document::Workload),
            KIND_FLOW_POLICY => self.policies.remove(name).map(Document::FlowPolicy),
            _ => None,
        }
    }

    /// The document of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<Document> {
        match kind {
            KIND_WORKLOAD => self.workloads.get(name).cloned().map(Document::Workload),
            KIND_FLOW_POLICY => self.policies.get(name).cloned().map(Document::FlowPolicy),
            _ => None,
        }
    }

    /// kubectl-apply semantics: each document creates or replaces the one of the same kind and
    /// name. All or nothing: on any error (a name twice in `docs`, an address held by two
    /// workloads afterwards) the set is unchanged.
    pub fn apply(
        &mut self,
        docs: Vec<Document>,
    ) -> Result<Vec<(Document, ApplyOutcome)>, PolicyErrors> {
        let mut seen: BTreeMap<(&'static str, String), Source> = BTreeMap::new();
        let mut errors = Vec::new();
        for doc in &docs {
            let key = (doc.kind(), doc.name().to_string());
            if let Some(first) = seen.get(&key) {
                errors.push(duplicate_error(doc.kind(), doc.name(), doc.source(), first));
            } else {
                seen.insert(key, doc.source().clone());
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let mut next = self.clone();
        let mut outcomes = Vec::with_capacity(docs.len());
        for doc in docs {
            let previous = next.remove_kind(doc.kind(), doc.name());
            let outcome = match previous {
                None => ApplyOutcome::Created,
                Some(prev) if prev.same_content(&doc) => ApplyOutcome::Unchanged,
                Some(_) => ApplyOutcome::Configured,
            };
            outcomes.push((doc, outcome));
        }
        let mut held: HashMap<IpAddr, (String, Source)> = HashMap::new();
        for w in next.workloads.values() {
            // The remaining workloads were valid together already.
            let _ = claim_addresses(&mut held, w);
        }
        for (doc, _) in &outcomes {
            if let Document::Workload(w) = doc {
                if let Err(error) = claim_addresses(&mut held, w) {
                    errors.push(error);
                    continue;
                }
            }
            if let Err(error) = next.insert_named(doc.clone()) {
                errors.push(error);
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        *self = next;
        Ok(outcomes)
    }

    /// Every document: workloads then policies, each sorted by name.
    pub fn documents(&self) -> Vec<Document> {
        self.workloads
            .values()
            .cloned()
            .map(Document::Workload)
            .chain(self.policies.values().cloned().map(Document::FlowPolicy))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.policies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.workloads.len() + self.policies.len()
    }

    /// The services of the workloads, sorted, without duplicates.
    pub fn services(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .workloads
            .values()
            .map(|w| w.service.as_str())
            .collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The workload holding `addr`.
    pub fn workload_of(&self, addr: IpAddr) -> Option<&Workload> {
        self.workloads
            .values()
            .find(|w| w.addresses.contains(&addr))
    }

    /// The policies that apply to `service` (its own and the `"*"` ones), sorted by name.
    pub fn policies_for<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a FlowPolicy> {
        self.policies
            .values()
            .filter(move |p| p.applies_to(service))
    }

    /// Non-fatal findings: a peer `{service: X}` naming a service that no Workload has.
    pub fn warnings(&self) -> Vec<Warning> {
        let services: BTreeSet<&str> = self
            .workloads
            .values()
            .map(|w| w.service.as_str())
            .collect();
        let mut warnings = Vec::new();
        for policy in self.policies.values() {
            for (_, _, rule) in policy.rules() {
                for peer in &rule.peers {
                    if let Peer::Service(name) = peer {
                        if name != ANY_SERVICE && !services.contains(name.as_str()) {
                            warnings.push(Warning {
                                file: policy.source.file.clone(),
                                line: if rule.line > 0 { rule.line } else { policy.source.line },
                                message: format!(
                                    "unknown service {name} (no Workload has it) in FlowPolicy {:?}",
                                    policy.name
                                ),
                            });
                        }
                    }
                }
            }
        }
        warnings
    }
}

fn duplicate_error(kind: &str, name: &str, at: &Source, first: &Source) -> PolicyError {
    PolicyError::new(
        &at.file,
        at.line,
        0,
        format!("duplicate {kind} name {name:?} (first defined at {first})"),
    )
}

impl Serialize for PolicySet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for w in self.workloads.values() {
            seq.serialize_element(w)?;
        }
        for p in self.policies.values() {
            seq.serialize_element(p)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PolicySet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PolicySet, D::Error> {
        let docs = Vec::<Document>::deserialize(deserializer)?;
        PolicySet::from_documents(docs).map_err(D::Error::custom)
    }
}
