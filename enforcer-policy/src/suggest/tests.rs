use std::net::IpAddr;

use super::*;
use crate::{
    explain, parse::parse_documents, Document, Flow, FlowPolicy, Mode, NodeContext, Peer,
    PolicySet, Protocol,
};

use Direction::{Egress, Ingress};

const OPEN: Outcome = Outcome::Passed(Passed::Unisolated);
const RULE: Outcome = Outcome::Passed(Passed::ByRule);
const HOST: Outcome = Outcome::Passed(Passed::FromHost);

fn side((addr, identity): (&str, IdentityRef)) -> Side {
    Side {
        addr: addr.parse().expect("ip"),
        identity,
    }
}

/// An observation: `port` is `PROTO/PORT`.
fn ev(
    t: u64,
    src: (&str, IdentityRef),
    dst: (&str, IdentityRef),
    port: &str,
    (direction, outcome): (Direction, Outcome),
) -> Observation {
    let (protocol, dport) = port.split_once('/').expect("PROTO/PORT");
    Observation {
        time_ms: t,
        src: side(src),
        dst: side(dst),
        protocol: protocol.into(),
        dport: dport.parse().expect("port"),
        direction,
        outcome,
        decided_by: None,
    }
}

/// `o` decided by `policy rule` (`db-in ingress[0]`, `default-deny db/ingress`).
fn by(mut o: Observation, rule: &str) -> Observation {
    let (policy, rule) = rule.split_once(' ').expect("POLICY RULE");
    let kind = (policy != crate::rule::DEFAULT_DENY).then_some(crate::document::Kind::FlowPolicy);
    let fields = crate::rule::RuleFields {
        policy: policy.into(),
        rule: rule.into(),
        kind,
    };
    o.decided_by = Some(RuleRef::try_from(fields).expect("rule"));
    o
}

fn wl(name: &str) -> IdentityRef {
    IdentityRef::Workload(name.into())
}

fn web() -> (&'static str, IdentityRef) {
    ("10.10.1.10", wl("web"))
}
fn api() -> (&'static str, IdentityRef) {
    ("10.10.2.10", wl("api"))
}
fn db() -> (&'static str, IdentityRef) {
    ("10.10.3.10", wl("db"))
}
fn ext() -> (&'static str, IdentityRef) {
    ("198.51.100.7", IdentityRef::World { cidr: None })
}
fn node() -> (&'static str, IdentityRef) {
    ("10.0.0.1", IdentityRef::Host)
}

/// web → api TCP 8080 (twice, seen by both sides), api → db TCP 5432 (allowed by a rule),
/// api → world UDP 53, world → web TCP 443, host → api (health check), api → host, web → db
/// denied, an `ICMPv6` ping.
pub(super) fn scenario() -> Vec<Observation> {
    let mut v = Vec::new();
    for t in [1000, 2000] {
        v.push(ev(t, web(), api(), "TCP/8080", (Egress, OPEN)));
        v.push(ev(t, web(), api(), "TCP/8080", (Ingress, OPEN)));
    }
    v.push(ev(3000, api(), db(), "TCP/5432", (Egress, OPEN)));
    let e = ev(3000, api(), db(), "TCP/5432", (Ingress, RULE));
    v.push(by(e, "db-in ingress[0]"));
    v.push(ev(4000, api(), ext(), "UDP/53", (Egress, OPEN)));
    v.push(ev(5000, ext(), web(), "TCP/443", (Ingress, OPEN)));
    v.push(ev(5500, node(), api(), "TCP/8080", (Ingress, HOST)));
    v.push(ev(5600, api(), node(), "TCP/10250", (Egress, OPEN)));
    v.push(ev(6000, web(), db(), "TCP/5432", (Egress, OPEN)));
    let e = ev(6000, web(), db(), "TCP/5432", (Ingress, Outcome::Denied));
    v.push(by(e, "default-deny db/ingress"));
    let (web6, api6) = (("fd00::10", wl("web")), ("fd00::20", wl("api")));
    v.push(ev(7000, web6, api6, "ICMPv6/128", (Egress, OPEN)));
    v
}

fn edge<'a>(edges: &'a [Edge], src: &str, dst: &str, port: &str) -> &'a Edge {
    edges
        .iter()
        .find(|e| e.src.to_string() == src && e.dst.to_string() == dst && e.service_port() == port)
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
        e.allowed_by.iter().map(label).collect::<Vec<_>>(),
        ["db-in ingress[0]"]
    );
    let e = edge(&edges, "api", "world (198.51.100.7)", "UDP/53");
    assert_eq!(e.status, EdgeStatus::Shadow);
    let e = edge(&edges, "host (10.0.0.1)", "api", "TCP/8080");
    assert_eq!(e.status, EdgeStatus::Host);
    let e = edge(&edges, "web", "db", "TCP/5432");
    assert_eq!(e.status, EdgeStatus::Denied);
    assert_eq!(
        e.denied_by.iter().map(label).collect::<Vec<_>>(),
        ["default-deny db/ingress"]
    );
    assert_eq!(e.flows, 1);
    assert_eq!(edge(&edges, "web", "api", "ICMP").port, None);
}

#[test]
fn classes_and_unknown_identities_are_world() {
    let class = IdentityRef::World {
        cidr: Some("198.51.100.0/24".parse().expect("net")),
    };
    let events = [
        ev(
            1,
            ("198.51.100.7", class),
            web(),
            "TCP/443",
            (Ingress, OPEN),
        ),
        ev(
            2,
            ("192.0.2.1", IdentityRef::Unknown(9)),
            web(),
            "TCP/443",
            (Ingress, OPEN),
        ),
    ];
    let edges = inventory(&events);
    assert_eq!(
        edge(&edges, "world (198.51.100.7)", "web", "TCP/443").flows,
        1
    );
    assert_eq!(edge(&edges, "world (192.0.2.1)", "web", "TCP/443").flows, 1);
}

#[test]
fn audit_events_are_suggested() {
    let a = ev(1, web(), db(), "TCP/5432", (Ingress, Outcome::Audit));
    let s = suggest(&[by(a, "default-deny db/ingress")], Mode::Enforce);
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
    let yaml = Document::to_yaml_stream(&s.documents).expect("yaml");
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
    let skipped: Vec<String> = s.skipped.iter().map(|(w, y)| format!("{w}: {y}")).collect();
    assert!(
        skipped.contains(&"web -> db TCP/5432: denied: it never passed".into()),
        "{skipped:?}"
    );
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
        ev(1, web(), db(), "TCP/5432", (Ingress, OPEN)),
        ev(2, api(), db(), "TCP/5432", (Ingress, OPEN)),
        ev(3, api(), db(), "TCP/9187", (Ingress, OPEN)),
        ev(4, api(), db(), "TCP/5432", (Ingress, OPEN)),
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
    assert!(s.documents.is_empty() && s.edges.is_empty() && s.skipped.is_empty());
}
