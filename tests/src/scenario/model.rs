//! The scenario file model (docs/design.md, "Scenario files"): a topology of workloads and externals
//! on nodes, and steps that apply or delete policy documents and then run probes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use enforcer_policy::labels::Labels;
use enforcer_policy::set::Selector;
use enforcer_policy::{
    Document, NamedPort, Namespace, Protocol, Source, Workload, DEFAULT_NAMESPACE,
};

/// The name that stands for the node's own addresses in probes.
pub const HOST: &str = "host";

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    /// Node names; `[n1]` when omitted.
    pub nodes: Vec<String>,
    /// Declared namespaces and their labels (`namespaces:`).
    pub namespaces: Vec<Namespace>,
    pub workloads: Vec<ScenarioWorkload>,
    pub externals: Vec<External>,
    pub steps: Vec<Step>,
    /// The file and the line of the scenario's first key.
    pub source: Source,
}

/// A workload (pod) of the scenario topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioWorkload {
    pub name: String,
    /// `default` when omitted.
    pub namespace: String,
    pub labels: Labels,
    /// Optional when `labels` are given.
    pub service: Option<String>,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
    /// The node it runs on (the first node when omitted).
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub line: usize,
}

impl ScenarioWorkload {
    /// How probes name it: `NAME` in the default namespace, `NAMESPACE/NAME` elsewhere.
    pub fn endpoint_name(&self) -> String {
        if self.namespace == DEFAULT_NAMESPACE {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// A host outside the cluster (its addresses are `world`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub line: usize,
}

/// One step: apply documents, delete documents, then run the probes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    pub apply: Vec<Document>,
    /// A plain name (the default namespace and cluster-wide documents), or
    /// `{kind, namespace, name}`.
    pub delete: Vec<Selector>,
    pub probes: Vec<Probe>,
    pub line: usize,
}

/// The expected outcome of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Allow,
    Deny,
    /// Passes, reported as audit.
    Audit,
    /// About the configured rate passes (`packets` sent at once, `ratePerSecond` expected).
    RateLimited,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Audit => "audit",
            Expect::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Expect, String> {
        match s {
            "allow" => Ok(Expect::Allow),
            "deny" => Ok(Expect::Deny),
            "audit" => Ok(Expect::Audit),
            "rate_limited" => Ok(Expect::RateLimited),
            _ => Err(format!(
                "invalid expect {s:?}: expected allow, deny, audit or rate_limited"
            )),
        }
    }
}

/// The address family a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// Whether `addr` is of this family.
    pub fn matches(self, addr: &IpAddr) -> bool {
        match self {
            Family::Ipv4 => addr.is_ipv4(),
            Family::Ipv6 => addr.is_ipv6(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Family, String> {
        match s {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            _ => Err(format!("invalid family {s:?}: expected ipv4 or ipv6")),
        }
    }
}

/// One probe: real traffic from `from` to `to`, and the expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A workload (`NAME`, or `NAMESPACE/NAME` outside the default namespace), an external or
    /// `host`.
    pub from: String,
    /// Like `from`.
    pub to: String,
    /// TCP (default), UDP, SCTP or ICMP.
    pub protocol: Protocol,
    /// Set for TCP, UDP and SCTP; `None` for ICMP.
    pub port: Option<u16>,
    pub expect: Expect,
    pub family: Family,
    /// Packets to send (required for `rate_limited`).
    pub packets: Option<u32>,
    /// The rate the packets are sent at (required with `packets`).
    pub rate_per_second: Option<u64>,
    /// The rate a `rate_limited` probe expects to get through, in packets per second, measured
    /// at the receiver (`admittedPerSecond`; when omitted, the live runner takes the binding
    /// rule's `rateLimit`).
    pub admitted_per_second: Option<u64>,
    pub line: usize,
}

impl fmt::Display for Probe {
    /// `web-0 -> api-0 TCP/8080 expect allow` (family shown when ipv6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} {}", self.from, self.to, self.protocol)?;
        if let Some(port) = self.port {
            write!(f, "/{port}")?;
        }
        if self.family == Family::Ipv6 {
            f.write_str(" ipv6")?;
        }
        write!(f, " expect {}", self.expect)
    }
}

/// What a probe endpoint name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Host,
    Workload(&'a ScenarioWorkload),
    External(&'a External),
}

impl Endpoint<'_> {
    /// The first address of `family` (`None` for `host`, whose addresses are the node's).
    pub fn address(&self, family: Family) -> Option<IpAddr> {
        let addresses = match self {
            Endpoint::Host => return None,
            Endpoint::Workload(w) => &w.addresses,
            Endpoint::External(e) => &e.addresses,
        };
        addresses.iter().copied().find(|a| family.matches(a))
    }
}

impl Scenario {
    /// The workload, external or `host` named `name`.
    pub fn endpoint(&self, name: &str) -> Option<Endpoint<'_>> {
        if name == HOST {
            return Some(Endpoint::Host);
        }
        if let Some(w) = self.workloads.iter().find(|w| w.endpoint_name() == name) {
            return Some(Endpoint::Workload(w));
        }
        self.externals
            .iter()
            .find(|e| e.name == name)
            .map(Endpoint::External)
    }

    /// The namespaces and workloads of the topology as documents (positions of the scenario
    /// file).
    pub fn workload_documents(&self) -> Vec<Document> {
        let namespaces = self.namespaces.iter().cloned().map(Document::Namespace);
        let workloads = self.workloads.iter().map(|w| {
            Document::Workload(Workload {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                labels: w.labels.clone(),
                service: w.service.clone(),
                addresses: w.addresses.clone(),
                ports: w.ports.clone(),
                source: Source {
                    file: self.source.file.clone(),
                    line: w.line,
                },
            })
        });
        namespaces.chain(workloads).collect()
    }

    /// Every probe with its step index, in order.
    pub fn probes(&self) -> impl Iterator<Item = (usize, &Probe)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.probes.iter().map(move |p| (i, p)))
    }
}
