//! The agent's API on its Unix socket: one JSON request per line, one JSON response per line
//! (`flows --follow` streams one JSON event per line until the client hangs up).

use std::net::IpAddr;

use enforcer_common::{Direction, Protocol, Reason, Verdict};
use serde::{Deserialize, Serialize};

use crate::policy::{Document, Explanation, IdentityRef, Kind, RuleRef};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Apply documents (kubectl-apply semantics: an existing name is replaced).
    Apply {
        /// Where the documents came from (file name), for error messages.
        source: String,
        yaml: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Delete the document(s) named `name` (kind optional) in `namespace` (default: the
    /// default namespace and cluster-wide documents).
    Delete {
        name: String,
        /// JSON: the kind's name; the agent also accepts what `--kind` accepts (`netpol`, ...).
        #[serde(default, deserialize_with = "kind_by_name")]
        kind: Option<Kind>,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// The documents in force (all, or those named `name`).
    Get {
        #[serde(default)]
        name: Option<String>,
    },
    Status,
    Stats,
    Explain {
        from: String,
        to: String,
        /// JSON: `TCP`, `UDP`, `SCTP` or `ICMP` (any case).
        protocol: crate::policy::Protocol,
        #[serde(default)]
        port: Option<u16>,
    },
    Flows {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        verdict: Option<Verdict>,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// CNI ADD (`enforcer-cni`): attach to the pod's interface and install its identity before
    /// answering; an error means the agent cannot enforce on the pod.
    EndpointAdd(EndpointRequest),
    /// CNI DEL: forget the registration of `container_id` (unknown ids are not an error).
    EndpointDel {
        container_id: String,
    },
    /// CNI CHECK: the registration of `container_id`, an error when there is none.
    EndpointCheck {
        container_id: String,
    },
}

/// A kind by any name [`Kind`]'s `FromStr` takes (case-insensitive, plural, kubectl's short
/// names).
fn kind_by_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Kind>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// A pod interface to register (CNI ADD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Host-side interfaces the CNI result names (interfaces without a sandbox); the agent takes
    /// the one that matches its pod interface globs.
    pub interfaces: Vec<String>,
    /// The pod's addresses (the CNI result's `ips`).
    pub addresses: Vec<std::net::IpAddr>,
    /// The pod's namespace (`K8S_POD_NAMESPACE`; `default` when absent).
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`): a Pod document's, or a Workload's.
    pub pod: String,
}

/// A registered pod interface and the generation that enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub container_id: String,
    pub interface: String,
    pub ifindex: u32,
    pub addresses: Vec<std::net::IpAddr>,
    /// Whether a Pod or Workload document gives the pod its identity (otherwise its traffic is
    /// dropped as `unknown_endpoint` until one does).
    pub identified: bool,
    pub generation: u64,
}

/// One response line: `data` on success, `error` on failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response<T> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Absent or `null` on failure (a missing `Option` field reads as `None`).
    pub data: Option<T>,
}

impl<T> Response<T> {
    pub fn ok(data: T) -> Response<T> {
        Response {
            ok: true,
            error: None,
            data: Some(data),
        }
    }

    pub fn error(message: impl Into<String>) -> Response<T> {
        Response {
            ok: false,
            error: Some(message.into()),
            data: None,
        }
    }
}

/// What the agent answers, by request: `apply`/`delete` an [`ApplyResult`], `get` the
/// documents, `status`, `stats`, `explain` an [`Explanation`], `flows` the events (one per line
/// with `follow`), the CNI requests an [`EndpointStatus`] or the generation.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Applied(ApplyResult),
    Documents(Vec<Document>),
    Status(Box<Status>),
    Stats(Stats),
    Explanation(Explanation),
    Flows(Vec<FlowEvent>),
    Flow(Box<FlowEvent>),
    /// `endpoint_add`, `endpoint_check` (CNI).
    Endpoint(EndpointStatus),
    /// `endpoint_del` (CNI): the generation in force after it.
    Generation(u64),
}

/// One applied document's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub kind: String,
    pub name: String,
    /// created | configured | unchanged | deleted
    pub outcome: String,
}

/// What `apply` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResult {
    pub applied: Vec<Applied>,
    pub warnings: Vec<String>,
    pub generation: u64,
}

/// What `status` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub generation: u64,
    pub uptime_seconds: u64,
    pub interfaces: Vec<Interface>,
    pub maps: Vec<MapUsage>,
    pub policies: usize,
    pub workloads: usize,
    pub bpffs: String,
    /// Why the agent is not ready (empty: ready; `/readyz` gives the same list).
    #[serde(default)]
    pub not_ready: Vec<String>,
    /// How the tc programs are attached: tcx, or netlink (legacy tc, kernels without tcx).
    pub tc_attach: crate::datapath::TcAttachMode,
    /// Problems that leave the agent ready: a configured uplink that does not exist.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// pod | uplink
    pub role: String,
    pub programs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapUsage {
    pub map: String,
    pub entries: usize,
    pub capacity: u32,
}

/// A flow or drop event, decoded with the policy in force. Its JSON (`flows -o json`) names
/// every code: see [`FlowEventJson`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(into = "FlowEventJson", try_from = "FlowEventJson")]
pub struct FlowEvent {
    /// Unix time, milliseconds.
    pub time_ms: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_identity: IdentityRef,
    pub dst_identity: IdentityRef,
    /// The IP protocol number.
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: Reason,
    /// The deciding rule.
    pub rule: Option<RuleRef>,
    pub interface: String,
    pub generation: u64,
}

impl FlowEvent {
    /// The protocol's name (`TCP`, `ICMPv6`, ...), or its number.
    pub fn protocol_name(&self) -> String {
        Protocol::from_u8(self.protocol)
            .map_or_else(|| self.protocol.to_string(), |p| p.as_str().into())
    }

    /// The reason as events name it (`policy_denied` for a packet a rule denied).
    pub fn reason_name(&self) -> &'static str {
        self.reason.event_name(self.verdict)
    }
}

/// The JSON form of a [`FlowEvent`]: codes by name (`reason` as [`FlowEvent::reason_name`]),
/// the rule as `policy`, `rule` and `kind` (absent when no rule decided).
#[derive(Serialize, Deserialize)]
pub struct FlowEventJson {
    time_ms: u64,
    src: IpAddr,
    dst: IpAddr,
    src_identity: IdentityRef,
    dst_identity: IdentityRef,
    protocol: String,
    sport: u16,
    dport: u16,
    direction: Direction,
    verdict: Verdict,
    reason: String,
    #[serde(flatten)]
    rule: Option<RuleRef>,
    interface: String,
    generation: u64,
}

/// A flow event's JSON that names an unknown code.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {name:?} in a flow event")]
pub struct BadEvent {
    what: &'static str,
    name: String,
}

impl From<FlowEvent> for FlowEventJson {
    fn from(e: FlowEvent) -> Self {
        FlowEventJson {
            protocol: e.protocol_name(),
            reason: e.reason_name().into(),
            time_ms: e.time_ms,
            src: e.src,
            dst: e.dst,
            src_identity: e.src_identity,
            dst_identity: e.dst_identity,
            sport: e.sport,
            dport: e.dport,
            direction: e.direction,
            verdict: e.verdict,
            rule: e.rule,
            interface: e.interface,
            generation: e.generation,
        }
    }
}

impl TryFrom<FlowEventJson> for FlowEvent {
    type Error = BadEvent;

    fn try_from(j: FlowEventJson) -> Result<Self, BadEvent> {
        let protocol = Protocol::from_name(&j.protocol)
            .map(u8::from)
            .or_else(|| j.protocol.parse().ok())
            .ok_or(BadEvent {
                what: "protocol",
                name: j.protocol,
            })?;
        let reason = Reason::from_event_name(&j.reason).ok_or(BadEvent {
            what: "reason",
            name: j.reason,
        })?;
        Ok(FlowEvent {
            time_ms: j.time_ms,
            src: j.src,
            dst: j.dst,
            src_identity: j.src_identity,
            dst_identity: j.dst_identity,
            protocol,
            sport: j.sport,
            dport: j.dport,
            direction: j.direction,
            verdict: j.verdict,
            reason,
            rule: j.rule,
            interface: j.interface,
            generation: j.generation,
        })
    }
}

/// Counters, as `stats` returns them.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Stats {
    pub packets: Vec<Counter>,
    pub rules: Vec<RuleCounter>,
    pub events_lost: u64,
    /// When the agent first saw each policy in force (Unix seconds), by name.
    #[serde(default)]
    pub policies_first_seen: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counter {
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: Reason,
    pub packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleCounter {
    /// The rule (JSON: `policy`, `rule` and the policy's `kind`).
    #[serde(flatten)]
    pub rule: RuleRef,
    /// `allow` or `deny` (the rule's own verdict, as `explain` names it).
    pub verdict: crate::policy::Verdict,
    pub packets: u64,
    /// When the agent first saw the rule (Unix seconds; kept across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<u64>,
    /// When the agent last saw its counter grow (Unix seconds; kept across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_matched: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::FlowEvent;

    /// The example of docs/cli.md reads into typed codes and writes back byte for byte.
    #[test]
    fn flow_event_json_round_trips() {
        let json = r#"{"time_ms":1795441769590,"src":"10.77.0.2","dst":"10.77.0.1","src_identity":"p","dst_identity":"host","protocol":"TCP","sport":38464,"dport":9,"direction":"egress","verdict":"allowed","reason":"policy","policy":"p-egress","rule":"egress[0]","kind":"FlowPolicy","interface":"epdoc0","generation":2}"#;
        let e: FlowEvent = serde_json::from_str(json).expect("event");
        assert_eq!(e.protocol, 6);
        assert_eq!(e.verdict, enforcer_common::Verdict::Allow);
        assert_eq!(serde_json::to_string(&e).expect("json"), json);
        let denied = json
            .replace(r#""verdict":"allowed""#, r#""verdict":"denied""#)
            .replace(r#""reason":"policy""#, r#""reason":"policy_denied""#)
            .replace(r#""protocol":"TCP""#, r#""protocol":"47""#);
        let d: FlowEvent = serde_json::from_str(&denied).expect("denied event");
        assert_eq!(
            (d.reason, d.protocol),
            (enforcer_common::Reason::Policy, 47)
        );
        assert_eq!(serde_json::to_string(&d).expect("json"), denied);
        let none = json.replace(
            r#","policy":"p-egress","rule":"egress[0]","kind":"FlowPolicy""#,
            "",
        );
        let n: FlowEvent = serde_json::from_str(&none).expect("no rule");
        assert_eq!(n.rule, None);
        assert_eq!(serde_json::to_string(&n).expect("json"), none);
    }

    /// The typed request fields write the JSON the CLI always sent, and read what it sent too.
    #[test]
    fn typed_requests_keep_their_json() {
        use super::{Kind, Request};
        use crate::policy::Protocol;
        let delete = r#"{"op":"delete","name":"db","kind":"NetworkPolicy","namespace":"prod"}"#;
        let del: Request = serde_json::from_str(delete).expect("delete");
        assert!(matches!(
            &del,
            Request::Delete {
                kind: Some(Kind::NetworkPolicy),
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&del).expect("json"), delete);
        let short = delete.replace("NetworkPolicy", "netpol");
        let by_short: Request = serde_json::from_str(&short).expect("a short kind name");
        assert_eq!(serde_json::to_string(&by_short).expect("json"), delete);
        let bad = delete.replace("NetworkPolicy", "Nope");
        let e = serde_json::from_str::<Request>(&bad).expect_err("unknown kind");
        assert!(e.to_string().contains("unknown kind \"Nope\""), "{e}");
        let without = r#"{"op":"delete","name":"db"}"#;
        let bare: Request = serde_json::from_str(without).expect("no kind");
        assert!(matches!(
            &bare,
            Request::Delete {
                kind: None,
                namespace: None,
                ..
            }
        ));
        let explain = r#"{"op":"explain","from":"web","to":"api","protocol":"TCP","port":8080}"#;
        let exp: Request = serde_json::from_str(explain).expect("explain");
        assert!(matches!(
            &exp,
            Request::Explain {
                protocol: Protocol::Tcp,
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&exp).expect("json"), explain);
        let lower: Request =
            serde_json::from_str(&explain.replace("TCP", "tcp")).expect("any case");
        assert_eq!(serde_json::to_string(&lower).expect("json"), explain);
    }

    /// A rule counter's `verdict` is `allow` or `deny`, as before it was typed.
    #[test]
    fn rule_counter_json_round_trips() {
        use super::RuleCounter;
        use crate::policy::Verdict;
        let json = r#"{"policy":"api-ingress","rule":"ingressDeny[0]","kind":"FlowPolicy","verdict":"deny","packets":3,"first_seen":1795441769}"#;
        let counter: RuleCounter = serde_json::from_str(json).expect("rule counter");
        assert_eq!(counter.verdict, Verdict::Deny);
        assert_eq!(counter.verdict, counter.rule.verdict());
        assert_eq!(serde_json::to_string(&counter).expect("json"), json);
    }
}
