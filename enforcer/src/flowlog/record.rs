//! One flow-log line: a flow event with its source and destination resolved to pods, in the
//! shape of Hubble's exporter (`{"flow": {...}, "node_name", "time"}`, Hubble's field names), so
//! the pipelines and dashboards built for Hubble's JSON read it; what Hubble has no field for
//! (the typed rule, our reason and the generation) is under `flow.enforcer`, in the form
//! `enforcer flows -o json` uses. The schema is documented in docs/flowlog.md.

use std::net::IpAddr;

use enforcer_common::{Direction, Protocol, Verdict};
use serde::Serialize;

use super::endpoints::Endpoint;
use crate::{
    api::FlowEvent,
    policy::{rule::RuleFields, IdentityRef, RuleRef},
};

/// The exporter's envelope.
#[derive(Serialize)]
pub struct Line<'a> {
    pub flow: Flow<'a>,
    pub node_name: &'a str,
    /// RFC 3339, UTC.
    pub time: String,
}

#[derive(Serialize)]
pub struct Flow<'a> {
    pub time: String,
    /// `FORWARDED`, `DROPPED` or `AUDIT` (Hubble's verdicts).
    pub verdict: &'static str,
    /// Hubble's drop reason: our reason in upper case (`POLICY_DENIED`, `RATE_LIMITED`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    #[serde(rename = "IP")]
    pub ip: Ip,
    pub l4: L4,
    pub source: Peer<'a>,
    pub destination: Peer<'a>,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub node_name: &'a str,
    pub interface: Interface<'a>,
    /// `INGRESS` or `EGRESS`: the policy direction that judged the packet.
    pub traffic_direction: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_allowed_by: Vec<Policy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_allowed_by: Vec<Policy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_denied_by: Vec<Policy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_denied_by: Vec<Policy>,
    pub enforcer: Enforcer,
}

#[derive(Serialize)]
pub struct Ip {
    pub source: IpAddr,
    pub destination: IpAddr,
    #[serde(rename = "ipVersion")]
    pub ip_version: &'static str,
}

/// Hubble's `l4`: one key, the protocol.
#[derive(Serialize)]
pub enum L4 {
    #[serde(rename = "TCP")]
    Tcp(Ports),
    #[serde(rename = "UDP")]
    Udp(Ports),
    #[serde(rename = "SCTP")]
    Sctp(Ports),
    #[serde(rename = "ICMPv4")]
    Icmpv4 {},
    #[serde(rename = "ICMPv6")]
    Icmpv6 {},
    /// Another IP protocol, by number (Hubble has no field for it).
    #[serde(rename = "protocol")]
    Other(u8),
}

#[derive(Serialize)]
pub struct Ports {
    pub source_port: u16,
    pub destination_port: u16,
}

/// Hubble's endpoint: a pod's namespace, name and labels (`k8s:KEY=VALUE`), or the reserved
/// label of the node (`reserved:host`) or of the world (`reserved:world`).
#[derive(Serialize)]
pub struct Peer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<&'a str>,
    pub labels: Vec<String>,
    /// The identity's name as `enforcer flows` shows it (`web`, `prod/api`, `host`, `world`).
    pub identity_name: String,
}

#[derive(Serialize)]
pub struct Interface<'a> {
    pub name: &'a str,
}

/// Hubble's policy reference, with the rule that decided.
#[derive(Serialize)]
pub struct Policy {
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub rule: String,
    /// The generation in force (Hubble: the policy revision).
    pub revision: String,
}

/// What Hubble has no field for, named as `enforcer flows -o json` names it.
#[derive(Serialize)]
pub struct Enforcer {
    pub verdict: Verdict,
    pub reason: &'static str,
    pub direction: Direction,
    pub generation: u64,
    /// The deciding rule: `policy`, `rule` and `kind` (absent when no rule decided).
    #[serde(flatten)]
    pub rule: Option<RuleFields>,
}

/// The line for `e`, whose source and destination resolved to `src` and `dst`.
pub fn line<'a>(
    e: &'a FlowEvent,
    src: Option<&'a Endpoint>,
    dst: Option<&'a Endpoint>,
    node_name: &'a str,
) -> Line<'a> {
    let time = crate::cli::output::utc(e.time_ms).to_string();
    let policy = e.rule.as_ref().and_then(|r| policy(r, e.generation));
    let mut flow = Flow {
        time: time.clone(),
        verdict: match e.verdict {
            Verdict::Allow => "FORWARDED",
            Verdict::Deny => "DROPPED",
            Verdict::Audit => "AUDIT",
        },
        drop_reason_desc: (e.verdict == Verdict::Deny)
            .then(|| e.reason_name().to_ascii_uppercase()),
        ip: Ip {
            source: e.src,
            destination: e.dst,
            ip_version: if e.src.is_ipv4() { "IPv4" } else { "IPv6" },
        },
        l4: l4(e),
        source: peer(&e.src_identity, src),
        destination: peer(&e.dst_identity, dst),
        kind: "L3_L4",
        node_name,
        interface: Interface { name: &e.interface },
        traffic_direction: match e.direction {
            Direction::Ingress => "INGRESS",
            Direction::Egress => "EGRESS",
        },
        ingress_allowed_by: Vec::new(),
        egress_allowed_by: Vec::new(),
        ingress_denied_by: Vec::new(),
        egress_denied_by: Vec::new(),
        enforcer: Enforcer {
            verdict: e.verdict,
            reason: e.reason_name(),
            direction: e.direction,
            generation: e.generation,
            rule: e.rule.as_ref().map(RuleFields::from),
        },
    };
    if let Some(p) = policy {
        let denied = e.verdict != Verdict::Allow;
        match (e.direction, denied) {
            (Direction::Ingress, false) => flow.ingress_allowed_by.push(p),
            (Direction::Egress, false) => flow.egress_allowed_by.push(p),
            (Direction::Ingress, true) => flow.ingress_denied_by.push(p),
            (Direction::Egress, true) => flow.egress_denied_by.push(p),
        }
    }
    Line {
        flow,
        node_name,
        time,
    }
}

fn l4(e: &FlowEvent) -> L4 {
    let ports = Ports {
        source_port: e.sport,
        destination_port: e.dport,
    };
    match Protocol::from_u8(e.protocol) {
        Some(Protocol::Tcp) => L4::Tcp(ports),
        Some(Protocol::Udp) => L4::Udp(ports),
        Some(Protocol::Sctp) => L4::Sctp(ports),
        Some(Protocol::Icmp) => L4::Icmpv4 {},
        Some(Protocol::Icmpv6) => L4::Icmpv6 {},
        None => L4::Other(e.protocol),
    }
}

fn peer<'a>(identity: &IdentityRef, endpoint: Option<&'a Endpoint>) -> Peer<'a> {
    let labels = match (endpoint, identity) {
        (Some(ep), _) => ep
            .labels
            .iter()
            .map(|(k, v)| format!("k8s:{k}={v}"))
            .collect(),
        (None, IdentityRef::Host) => vec!["reserved:host".into()],
        (None, IdentityRef::World { .. }) => vec!["reserved:world".into()],
        (None, _) => Vec::new(),
    };
    Peer {
        namespace: endpoint.map(|e| e.namespace.as_str()),
        pod_name: endpoint.map(|e| e.name.as_str()),
        labels,
        identity_name: identity.to_string(),
    }
}

/// The policy that decided, `None` for a default deny (no policy: Hubble lists none either).
fn policy(rule: &RuleRef, generation: u64) -> Option<Policy> {
    let id = rule.policy()?;
    Some(Policy {
        kind: id.kind.as_str(),
        name: id.key.name.clone(),
        namespace: id.key.namespace.clone(),
        rule: rule.rule_label(),
        revision: generation.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{document::Kind, ObjectKey, PolicyId, Section};

    fn event(verdict: Verdict, rule: Option<RuleRef>) -> FlowEvent {
        FlowEvent {
            time_ms: 1_796_680_800_123,
            src: "10.0.0.1".parse().expect("ip"),
            dst: "10.0.0.2".parse().expect("ip"),
            src_identity: IdentityRef::Workload("web".into()),
            dst_identity: IdentityRef::World { cidr: None },
            protocol: 6,
            sport: 40000,
            dport: 8080,
            direction: Direction::Ingress,
            verdict,
            reason: enforcer_common::Reason::Policy,
            rule,
            interface: "ep1".into(),
            generation: 7,
        }
    }

    #[test]
    fn a_denied_flow_reads_as_hubble_names_it() {
        let web = Endpoint {
            namespace: "default".into(),
            name: "web-0".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
        };
        let rule = RuleRef::Rule {
            policy: PolicyId {
                kind: Kind::FlowPolicy,
                key: ObjectKey::cluster("api-ingress"),
            },
            section: Section::IngressDeny,
            index: 0,
        };
        let e = event(Verdict::Deny, Some(rule));
        let v = serde_json::to_value(line(&e, Some(&web), None, "n1")).expect("json");
        let f = &v["flow"];
        assert_eq!(v["node_name"], "n1");
        assert_eq!(v["time"], "2026-12-07T22:00:00.123Z");
        assert_eq!(f["verdict"], "DROPPED");
        assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
        assert_eq!(f["IP"]["source"], "10.0.0.1");
        assert_eq!(f["IP"]["ipVersion"], "IPv4");
        assert_eq!(f["l4"]["TCP"]["destination_port"], 8080);
        assert_eq!(f["source"]["pod_name"], "web-0");
        assert_eq!(f["source"]["namespace"], "default");
        assert_eq!(f["source"]["labels"][0], "k8s:app=web");
        assert_eq!(f["destination"]["labels"][0], "reserved:world");
        assert!(f["destination"].get("pod_name").is_none());
        assert_eq!(f["traffic_direction"], "INGRESS");
        assert_eq!(f["ingress_denied_by"][0]["name"], "api-ingress");
        assert_eq!(f["ingress_denied_by"][0]["rule"], "ingressDeny[0]");
        assert_eq!(f["enforcer"]["verdict"], "denied");
        assert_eq!(f["enforcer"]["reason"], "policy_denied");
        assert_eq!(f["enforcer"]["generation"], 7);
        assert_eq!(f["enforcer"]["policy"], "api-ingress");
        assert_eq!(f["enforcer"]["kind"], "FlowPolicy");
    }

    #[test]
    fn an_allowed_flow_has_no_drop_reason() {
        let e = event(Verdict::Allow, None);
        let v = serde_json::to_value(line(&e, None, None, "n1")).expect("json");
        assert_eq!(v["flow"]["verdict"], "FORWARDED");
        assert!(v["flow"].get("drop_reason_desc").is_none());
        assert!(v["flow"]["enforcer"].get("policy").is_none());
        assert_eq!(v["flow"]["source"]["identity_name"], "web");
    }
}
