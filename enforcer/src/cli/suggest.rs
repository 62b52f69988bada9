//! `enforcer suggest [--since SECONDS] [--mode enforce|audit] [--flows FILE]... [-o yaml|table|json]`:
//! the service inventory seen in the agent's flow history (who talks to whom, on which protocol
//! and port, how often, first and last seen, which rule allowed it), and `FlowPolicies` that allow
//! exactly those flows: per destination service `suggested-<svc>-ingress`, per source service
//! `suggested-<svc>-egress`. Both directions are isolated, so once applied in `enforce` mode every
//! flow that was not observed is denied.
//!
//! Everything here is a pure function of the events ([`inventory`], [`suggest`]); the command only
//! fetches them (`Flows` API, or `enforcer flows -o json` files to merge several nodes).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write as _},
    io::BufRead,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::Serialize;

use super::output::{Format, Table};
use crate::{
    api::{FlowEvent, Request},
    client,
    policy::{Document, FlowPolicy, Mode, Peer, PortSpec, Protocol, Rule, Source},
};

/// One end of an edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// A workload's service.
    Service(String),
    /// An address of the node itself (`host`).
    Host(IpAddr),
    /// An address of no workload (`world`).
    World(IpAddr),
}

impl Endpoint {
    /// The endpoint of an event side: its identity name and address.
    fn of(identity: &str, addr: &str) -> Option<Endpoint> {
        let ip = addr.parse::<IpAddr>().ok();
        if identity == "host" {
            return ip.map(Endpoint::Host);
        }
        if identity == "world"
            || identity.starts_with("world ")
            || identity.starts_with("identity ")
        {
            return ip.map(Endpoint::World);
        }
        if identity.is_empty() {
            return None;
        }
        Some(Endpoint::Service(identity.to_string()))
    }

    /// The policy peer that selects this endpoint: its service, or its address as a /32 (/128).
    pub fn peer(&self) -> Peer {
        match self {
            Endpoint::Service(s) => Peer::Service(s.clone()),
            Endpoint::Host(a) | Endpoint::World(a) => Peer::Cidr {
                cidr: IpNet::from(*a),
                except: Vec::new(),
            },
        }
    }

    pub fn service(&self) -> Option<&str> {
        match self {
            Endpoint::Service(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Service(s) => f.write_str(s),
            Endpoint::Host(a) => write!(f, "host ({a})"),
            Endpoint::World(a) => write!(f, "world ({a})"),
        }
    }
}

/// What the observed traffic of an edge says about the policy in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeStatus {
    /// Passed, allowed explicitly by a rule.
    Allowed,
    /// Passed only because no policy isolates its ends: no rule mentions it (a "shadow" API).
    Shadow,
    /// Passed, but an audit policy would deny it.
    Audit,
    /// From the node itself to a workload: always allowed, needs no rule.
    Host,
    /// Denied (never passed): left out of the suggestion.
    Denied,
}

impl EdgeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeStatus::Allowed => "allowed",
            EdgeStatus::Shadow => "shadow",
            EdgeStatus::Audit => "audit",
            EdgeStatus::Host => "host",
            EdgeStatus::Denied => "denied",
        }
    }

    /// Whether the suggested policy must allow the edge.
    pub fn suggested(self) -> bool {
        matches!(
            self,
            EdgeStatus::Allowed | EdgeStatus::Shadow | EdgeStatus::Audit
        )
    }
}

impl fmt::Display for EdgeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service-to-service traffic on one protocol and port, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub src: Endpoint,
    pub dst: Endpoint,
    /// TCP, UDP, SCTP, ICMP, or the IP protocol number.
    pub protocol: String,
    /// Destination port (`None` for ICMP and protocols without ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New flows seen (each flow is reported by every side that judges it; the busier side counts).
    pub flows: u64,
    /// Unix time in milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub status: EdgeStatus,
    /// `policy rule` of the rules that allowed it.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub allowed_by: BTreeSet<String>,
    /// `policy rule` of the rules that denied it (or would, in audit mode).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub denied_by: BTreeSet<String>,
}

impl Edge {
    /// `TCP/8080`, `ICMP`.
    pub fn service_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}/{p}", self.protocol),
            None => self.protocol.clone(),
        }
    }

    /// The policy port entry of the edge, `None` if the protocol cannot be written in a policy.
    fn port_spec(&self) -> Option<PortSpec> {
        let protocol: Protocol = self.protocol.parse().ok()?;
        Some(PortSpec {
            protocol,
            port: if protocol.has_ports() {
                self.port
            } else {
                None
            },
            name: None,
            end_port: None,
        })
    }
}

/// The protocol name policies use, and whether it has ports.
fn canonical_protocol(p: &str) -> (String, bool) {
    match p.to_ascii_uppercase().as_str() {
        "ICMP" | "ICMPV6" => ("ICMP".into(), false),
        "TCP" => ("TCP".into(), true),
        "UDP" => ("UDP".into(), true),
        "SCTP" => ("SCTP".into(), true),
        other => (other.to_string(), false),
    }
}

#[derive(Default)]
struct Tally {
    /// Per judging direction: (passed, denied) events.
    by_direction: BTreeMap<String, (u64, u64)>,
    audit: bool,
    host_only: bool,
    first: u64,
    last: u64,
    allowed_by: BTreeSet<String>,
    denied_by: BTreeSet<String>,
}

fn attribution(e: &FlowEvent) -> Option<String> {
    match (&e.policy, &e.rule) {
        (Some(p), Some(r)) => Some(format!("{p} {r}")),
        _ => None,
    }
}

/// The edges seen in `events`, sorted by source, destination, protocol and port. Events that say
/// nothing about which flows the services need (spoofed, malformed, rate-limited drops) are left
/// out.
pub fn inventory(events: &[FlowEvent]) -> Vec<Edge> {
    type Key = (Endpoint, Endpoint, String, Option<u16>);
    let mut tallies: BTreeMap<Key, Tally> = BTreeMap::new();
    for e in events {
        let denied = match e.verdict.as_str() {
            "allowed" | "audit" => false,
            "denied" if matches!(e.reason.as_str(), "policy_denied" | "default_deny") => true,
            _ => continue,
        };
        let (Some(src), Some(dst)) = (
            Endpoint::of(&e.src_identity, &e.src),
            Endpoint::of(&e.dst_identity, &e.dst),
        ) else {
            continue;
        };
        let (protocol, has_ports) = canonical_protocol(&e.protocol);
        let port = has_ports.then_some(e.dport);
        let t = tallies.entry((src, dst, protocol, port)).or_insert(Tally {
            host_only: true,
            first: e.time_ms,
            last: e.time_ms,
            ..Tally::default()
        });
        t.first = t.first.min(e.time_ms);
        t.last = t.last.max(e.time_ms);
        let counts = t.by_direction.entry(e.direction.clone()).or_default();
        if denied {
            counts.1 += 1;
            t.denied_by.extend(attribution(e));
            continue;
        }
        counts.0 += 1;
        if e.verdict == "audit" {
            t.audit = true;
            t.denied_by.extend(attribution(e));
        } else if e.reason == "policy" {
            t.allowed_by.extend(attribution(e));
        }
        if e.reason != "host" {
            t.host_only = false;
        }
    }
    tallies
        .into_iter()
        .map(|((src, dst, protocol, port), t)| {
            // Blocked: some side that judged it never let it through.
            let blocked = t
                .by_direction
                .values()
                .any(|(passed, denied)| *passed == 0 && *denied > 0);
            let status = if blocked {
                EdgeStatus::Denied
            } else if t.audit {
                EdgeStatus::Audit
            } else if matches!(src, Endpoint::Host(_)) && t.host_only {
                EdgeStatus::Host
            } else if t.allowed_by.is_empty() {
                EdgeStatus::Shadow
            } else {
                EdgeStatus::Allowed
            };
            Edge {
                src,
                dst,
                protocol,
                port,
                flows: t
                    .by_direction
                    .values()
                    .map(|(p, d)| p + d)
                    .max()
                    .unwrap_or(0),
                first_seen_ms: t.first,
                last_seen_ms: t.last,
                status,
                allowed_by: t.allowed_by,
                denied_by: t.denied_by,
            }
        })
        .collect()
}

/// The suggestion: the documents, and the edges they leave out with why.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub edges: Vec<Edge>,
    #[serde(skip)]
    pub documents: Vec<Document>,
    /// Edges observed but not in the documents, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Rules with peers grouped by identical port lists.
fn rules_of(peers: BTreeMap<Endpoint, BTreeSet<PortSpec>>) -> Vec<Rule> {
    let mut by_ports: BTreeMap<Vec<PortSpec>, Vec<Endpoint>> = BTreeMap::new();
    for (peer, ports) in peers {
        by_ports
            .entry(ports.into_iter().collect())
            .or_default()
            .push(peer);
    }
    let mut rules: Vec<Rule> = by_ports
        .into_iter()
        .map(|(ports, peers)| Rule {
            peers: peers.iter().map(Endpoint::peer).collect(),
            ports,
            rate_limit: None,
            line: 0,
        })
        .collect();
    // Order by the first peer (services, then addresses), as a reader scans them.
    rules.sort_by_key(|r| format!("{:?}", r.peers.first()));
    rules
}

fn flow_policy(name: String, service: &str, mode: Mode) -> FlowPolicy {
    FlowPolicy {
        name,
        namespace: None,
        service: service.to_string(),
        selector: None,
        mode,
        ingress: None,
        egress: None,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
        source: Source::default(),
    }
}

/// `FlowPolicies` that allow exactly the passing edges of `events`: one ingress policy per
/// destination service and one egress policy per source service (peers that are not workloads are
/// written as /32 or /128 CIDRs).
pub fn suggest(events: &[FlowEvent], mode: Mode) -> Suggestion {
    let edges = inventory(events);
    let mut ingress: BTreeMap<String, BTreeMap<Endpoint, BTreeSet<PortSpec>>> = BTreeMap::new();
    let mut egress: BTreeMap<String, BTreeMap<Endpoint, BTreeSet<PortSpec>>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for e in &edges {
        let what = format!("{} -> {} {}", e.src, e.dst, e.service_port());
        if !e.status.suggested() {
            let why = match e.status {
                EdgeStatus::Host => "the node may always reach its workloads",
                _ => "denied: it never passed",
            };
            skipped.push((what, why.to_string()));
            continue;
        }
        let Some(port) = e.port_spec() else {
            skipped.push((
                what,
                format!("protocol {} cannot be written in a policy", e.protocol),
            ));
            continue;
        };
        if let Some(dst) = e.dst.service() {
            ingress
                .entry(dst.to_string())
                .or_default()
                .entry(e.src.clone())
                .or_default()
                .insert(port);
        }
        if let Some(src) = e.src.service() {
            egress
                .entry(src.to_string())
                .or_default()
                .entry(e.dst.clone())
                .or_default()
                .insert(port);
        }
        if e.src.service().is_none() && e.dst.service().is_none() {
            skipped.push((what, "neither end is a workload".into()));
        }
    }
    let mut documents = Vec::new();
    let services: BTreeSet<&String> = ingress.keys().chain(egress.keys()).collect();
    for svc in services {
        if let Some(peers) = ingress.get(svc) {
            let mut p = flow_policy(format!("suggested-{svc}-ingress"), svc, mode);
            p.ingress = Some(rules_of(peers.clone()));
            documents.push(Document::FlowPolicy(p));
        }
        if let Some(peers) = egress.get(svc) {
            let mut p = flow_policy(format!("suggested-{svc}-egress"), svc, mode);
            p.egress = Some(rules_of(peers.clone()));
            documents.push(Document::FlowPolicy(p));
        }
    }
    Suggestion {
        edges,
        documents,
        skipped,
    }
}

/// RFC 3339 UTC time of a Unix time in milliseconds (`1970-01-01T00:00:00Z` style, seconds).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The inventory as a table.
pub fn table(edges: &[Edge]) -> Table {
    let mut t = Table::new(vec![
        "SOURCE",
        "DESTINATION",
        "PORT",
        "FLOWS",
        "FIRST SEEN",
        "LAST SEEN",
        "STATUS",
        "RULE",
    ]);
    for e in edges {
        let rule = match e.status {
            EdgeStatus::Allowed => e.allowed_by.iter().cloned().collect::<Vec<_>>().join(", "),
            EdgeStatus::Audit | EdgeStatus::Denied => {
                e.denied_by.iter().cloned().collect::<Vec<_>>().join(", ")
            }
            EdgeStatus::Shadow => "(no rule: nothing isolates it)".into(),
            EdgeStatus::Host => "(host traffic, always allowed)".into(),
        };
        t.row(vec![
            e.src.to_string(),
            e.dst.to_string(),
            e.service_port(),
            e.flows.to_string(),
            rfc3339(e.first_seen_ms),
            rfc3339(e.last_seen_ms),
            e.status.to_string().to_uppercase(),
            rule,
        ]);
    }
    t
}

/// The suggestion as a reviewable YAML stream: the inventory as comments, then the documents.
pub fn to_yaml(s: &Suggestion, events: usize) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `enforcer suggest` from {events} flow events: {} edges observed.",
        s.edges.len()
    );
    if let (Some(first), Some(last)) = (
        s.edges.iter().map(|e| e.first_seen_ms).min(),
        s.edges.iter().map(|e| e.last_seen_ms).max(),
    ) {
        let _ = writeln!(
            out,
            "# Observed between {} and {}.",
            rfc3339(first),
            rfc3339(last)
        );
    }
    out.push_str(
        "# Review before applying: these policies isolate every service below in the direction\n\
         # listed, so any flow that was not observed (a job that runs monthly, a failover path)\n\
         # is denied once they are enforced. Apply with `--mode audit` first to watch for that.\n#\n",
    );
    for line in table(&s.edges).render().lines() {
        let _ = writeln!(out, "#   {line}");
    }
    if !s.skipped.is_empty() {
        out.push_str("#\n# Not in the policies:\n");
        for (what, why) in &s.skipped {
            let _ = writeln!(out, "#   {what}: {why}");
        }
    }
    if s.documents.is_empty() {
        out.push_str("#\n# No flow to allow: no document suggested.\n");
        return Ok(out);
    }
    out.push_str("---\n");
    out.push_str(&Document::to_yaml_stream(&s.documents)?);
    Ok(out)
}

pub struct SuggestArgs {
    /// Only events of the last SECONDS.
    pub since: Option<u64>,
    pub mode: Mode,
    /// Read events from these files (`enforcer flows -o json` output, `-` = stdin) instead of
    /// asking the agent.
    pub flows: Vec<PathBuf>,
    pub format: Format,
}

/// Events in JSON lines (`enforcer flows -o json`), or a JSON array.
fn read_events(path: &Path) -> Result<Vec<FlowEvent>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            out.extend(
                serde_json::from_str::<Vec<FlowEvent>>(line)
                    .with_context(|| format!("{}:{}", path.display(), i + 1))?,
            );
        } else {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a flow event", path.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

pub fn run(socket: &Path, a: &SuggestArgs) -> Result<()> {
    let mut events: Vec<FlowEvent> = Vec::new();
    if a.flows.is_empty() {
        events = serde_json::from_value(client::call(
            socket,
            &Request::Flows {
                follow: false,
                verdict: None,
                service: None,
                limit: None,
            },
        )?)?;
    } else {
        for f in &a.flows {
            events.extend(read_events(f)?);
        }
    }
    if let Some(since) = a.since {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let cutoff = now.saturating_sub(since.saturating_mul(1000));
        events.retain(|e| e.time_ms >= cutoff);
    }
    let s = suggest(&events, a.mode);
    match a.format {
        Format::Yaml => print!("{}", to_yaml(&s, events.len())?),
        Format::Table => print!("{}", table(&s.edges).render()),
        Format::Json => {
            let docs: Vec<serde_json::Value> = s
                .documents
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "edges": s.edges,
                    "skipped": s.skipped,
                    "documents": docs,
                }))?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{explain, parse::parse_documents, Flow, NodeContext, PolicySet, Protocol};

    /// An event: `port` is `PROTO/PORT`, `what` is `direction verdict reason`.
    fn ev(
        t: u64,
        (src, si): (&str, &str),
        (dst, di): (&str, &str),
        port: &str,
        what: &str,
    ) -> FlowEvent {
        let (protocol, dport) = port.split_once('/').expect("PROTO/PORT");
        let what: Vec<&str> = what.split(' ').collect();
        FlowEvent {
            time_ms: t,
            src: src.into(),
            dst: dst.into(),
            src_identity: si.into(),
            dst_identity: di.into(),
            protocol: protocol.into(),
            sport: 40000,
            dport: dport.parse().expect("port"),
            direction: what[0].into(),
            verdict: what[1].into(),
            reason: what[2].into(),
            policy: None,
            rule: None,
            interface: "ep1".into(),
            generation: 1,
        }
    }

    fn by(mut e: FlowEvent, policy: &str, rule: &str) -> FlowEvent {
        e.policy = Some(policy.into());
        e.rule = Some(rule.into());
        e
    }

    const WEB: (&str, &str) = ("10.10.1.10", "web");
    const API: (&str, &str) = ("10.10.2.10", "api");
    const DB: (&str, &str) = ("10.10.3.10", "db");
    const EXT: (&str, &str) = ("198.51.100.7", "world");
    const NODE: (&str, &str) = ("10.0.0.1", "host");
    const WEB6: (&str, &str) = ("fd00::10", "web");
    const API6: (&str, &str) = ("fd00::20", "api");
    const SPOOF: (&str, &str) = ("10.99.0.1", "world");

    /// web → api TCP 8080 (twice, seen by both sides), api → db TCP 5432 (allowed by a rule),
    /// api → world UDP 53, world → web TCP 443, host → api (health check), api → host, web → db
    /// denied, an `ICMPv6` ping, a spoofed drop.
    fn scenario() -> Vec<FlowEvent> {
        let mut v = Vec::new();
        for t in [1000, 2000] {
            v.push(ev(t, WEB, API, "TCP/8080", "egress allowed not_isolated"));
            v.push(ev(t, WEB, API, "TCP/8080", "ingress allowed not_isolated"));
        }
        v.push(ev(3000, API, DB, "TCP/5432", "egress allowed not_isolated"));
        let e = ev(3000, API, DB, "TCP/5432", "ingress allowed policy");
        v.push(by(e, "db-in", "ingress[0]"));
        v.push(ev(4000, API, EXT, "UDP/53", "egress allowed not_isolated"));
        v.push(ev(
            5000,
            EXT,
            WEB,
            "TCP/443",
            "ingress allowed not_isolated",
        ));
        v.push(ev(5500, NODE, API, "TCP/8080", "ingress allowed host"));
        v.push(ev(
            5600,
            API,
            NODE,
            "TCP/10250",
            "egress allowed not_isolated",
        ));
        v.push(ev(6000, WEB, DB, "TCP/5432", "egress allowed not_isolated"));
        let e = ev(6000, WEB, DB, "TCP/5432", "ingress denied default_deny");
        v.push(by(e, "default-deny", "db/ingress"));
        v.push(ev(
            7000,
            WEB6,
            API6,
            "ICMPv6/128",
            "egress allowed not_isolated",
        ));
        v.push(ev(8000, SPOOF, API, "UDP/1", "egress denied spoofed"));
        v
    }

    fn edge<'a>(edges: &'a [Edge], src: &str, dst: &str, port: &str) -> &'a Edge {
        edges
            .iter()
            .find(|e| {
                e.src.to_string() == src && e.dst.to_string() == dst && e.service_port() == port
            })
            .unwrap_or_else(|| panic!("no edge {src} -> {dst} {port} in {edges:#?}"))
    }

    fn policy<'a>(s: &'a Suggestion, name: &str) -> &'a FlowPolicy {
        s.documents
            .iter()
            .find_map(|d| match d {
                Document::FlowPolicy(p) if p.name == name => Some(p),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no policy {name} in {:#?}", s.documents))
    }

    #[test]
    fn inventory_merges_sides_and_classifies_edges() {
        let edges = inventory(&scenario());
        assert_eq!(edges.len(), 8, "{edges:#?}");
        let e = edge(&edges, "web", "api", "TCP/8080");
        assert_eq!((e.flows, e.first_seen_ms, e.last_seen_ms), (2, 1000, 2000));
        assert_eq!(e.status, EdgeStatus::Shadow);
        let e = edge(&edges, "api", "db", "TCP/5432");
        assert_eq!(e.status, EdgeStatus::Allowed);
        assert_eq!(
            e.allowed_by.iter().collect::<Vec<_>>(),
            ["db-in ingress[0]"]
        );
        let e = edge(&edges, "api", "world (198.51.100.7)", "UDP/53");
        assert_eq!(e.status, EdgeStatus::Shadow);
        let e = edge(&edges, "host (10.0.0.1)", "api", "TCP/8080");
        assert_eq!(e.status, EdgeStatus::Host);
        let e = edge(&edges, "web", "db", "TCP/5432");
        assert_eq!(e.status, EdgeStatus::Denied);
        assert_eq!(
            e.denied_by.iter().collect::<Vec<_>>(),
            ["default-deny db/ingress"]
        );
        assert_eq!(e.flows, 1);
        assert_eq!(edge(&edges, "web", "api", "ICMP").port, None);
        assert!(
            !edges
                .iter()
                .any(|e| e.src.to_string().contains("10.99.0.1")),
            "spoofed drops are not edges"
        );
        let table = table(&edges).render();
        assert!(table.contains("SHADOW"), "{table}");
        assert!(table.contains("db-in ingress[0]"), "{table}");
    }

    #[test]
    fn audit_events_are_suggested() {
        let a = ev(1, WEB, DB, "TCP/5432", "ingress audit default_deny");
        let s = suggest(&[by(a, "default-deny", "db/ingress")], Mode::Enforce);
        assert_eq!(s.edges[0].status, EdgeStatus::Audit);
        let names: Vec<&str> = s.documents.iter().map(Document::name).collect();
        assert_eq!(names, ["suggested-db-ingress", "suggested-web-egress"]);
    }

    const WORKLOADS: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10, fd00::10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10, fd00::20]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0}
spec: {service: db, addresses: [10.10.3.10]}
";

    fn verdict(set: &PolicySet, src: &str, dst: &str, protocol: Protocol, port: u16) -> String {
        let ctx = NodeContext {
            host_addresses: ["10.0.0.1".parse().expect("ip")].into(),
            ..NodeContext::default()
        };
        let src: IpAddr = src.parse().expect("ip");
        let dst: IpAddr = dst.parse().expect("ip");
        let flow = Flow {
            src,
            dst,
            protocol: protocol.number(dst.is_ipv6()),
            port,
        };
        explain(set, &ctx, &flow).verdict.to_string()
    }

    #[test]
    fn suggested_policies_allow_exactly_the_observed_flows() {
        let s = suggest(&scenario(), Mode::Enforce);
        let yaml = to_yaml(&s, 14).expect("yaml");
        let names: Vec<&str> = s.documents.iter().map(Document::name).collect();
        assert_eq!(
            names,
            [
                "suggested-api-ingress",
                "suggested-api-egress",
                "suggested-db-ingress",
                "suggested-web-ingress",
                "suggested-web-egress",
            ],
            "{yaml}"
        );
        assert!(yaml.contains("198.51.100.7/32"), "{yaml}");
        assert!(yaml.contains("web -> db TCP/5432: denied"), "{yaml}");
        // The output parses, and with the workloads it is a valid set.
        let mut docs = parse_documents("w.yaml", WORKLOADS).expect("workloads");
        let suggested =
            parse_documents("suggested.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        docs.extend(suggested);
        let set = PolicySet::from_documents(docs).expect("set");
        let v = |src, dst, p, port| verdict(&set, src, dst, p, port);
        assert_eq!(v("10.10.1.10", "10.10.2.10", Protocol::Tcp, 8080), "allow");
        assert_eq!(v("10.10.2.10", "10.10.3.10", Protocol::Tcp, 5432), "allow");
        assert_eq!(v("10.10.2.10", "198.51.100.7", Protocol::Udp, 53), "allow");
        assert_eq!(v("198.51.100.7", "10.10.1.10", Protocol::Tcp, 443), "allow");
        assert_eq!(v("fd00::10", "fd00::20", Protocol::Icmp, 128), "allow");
        // A pod calling its node: a /32 of the node's address.
        assert_eq!(v("10.10.2.10", "10.0.0.1", Protocol::Tcp, 10250), "allow");
        assert_eq!(v("10.10.1.10", "10.0.0.1", Protocol::Tcp, 10250), "deny");
        // Host traffic needs no rule.
        assert_eq!(v("10.0.0.1", "10.10.2.10", Protocol::Tcp, 8080), "allow");
        // Not observed: denied.
        assert_eq!(v("10.10.1.10", "10.10.3.10", Protocol::Tcp, 5432), "deny");
        assert_eq!(v("10.10.1.10", "10.10.2.10", Protocol::Tcp, 8081), "deny");
        assert_eq!(v("10.10.2.10", "10.10.1.10", Protocol::Tcp, 8080), "deny");
        assert_eq!(v("10.10.2.10", "198.51.100.8", Protocol::Udp, 53), "deny");
        assert_eq!(v("198.51.100.7", "10.10.1.10", Protocol::Tcp, 80), "deny");
    }

    #[test]
    fn peers_with_the_same_ports_share_a_rule() {
        let events = vec![
            ev(1, WEB, DB, "TCP/5432", "ingress allowed not_isolated"),
            ev(2, API, DB, "TCP/5432", "ingress allowed not_isolated"),
            ev(3, API, DB, "TCP/9187", "ingress allowed not_isolated"),
            ev(4, API, DB, "TCP/5432", "ingress allowed not_isolated"),
        ];
        let s = suggest(&events, Mode::Audit);
        let p = policy(&s, "suggested-db-ingress");
        assert_eq!(p.mode, Mode::Audit);
        let rules = p.ingress.as_ref().expect("ingress");
        assert_eq!(rules.len(), 2, "{rules:#?}");
        assert_eq!(rules[0].peers, vec![Peer::Service("api".into())]);
        assert_eq!(rules[0].ports.len(), 2);
        assert_eq!(rules[1].peers, vec![Peer::Service("web".into())]);
        assert_eq!(edge(&s.edges, "api", "db", "TCP/5432").flows, 2);
        let p = policy(&s, "suggested-api-egress");
        assert_eq!(p.egress.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn nothing_observed_suggests_nothing() {
        let s = suggest(&[], Mode::Enforce);
        assert!(s.documents.is_empty());
        let yaml = to_yaml(&s, 0).expect("yaml");
        assert!(yaml.contains("No flow to allow"), "{yaml}");
        assert!(parse_documents("empty.yaml", &yaml)
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199_000), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
