//! The agent's API on its Unix socket: one JSON request per line, one JSON response per line
//! (`flows --follow` streams one JSON event per line until the client hangs up).

use serde::{Deserialize, Serialize};

use crate::policy::RuleRef;

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
        #[serde(default)]
        kind: Option<String>,
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
        protocol: String,
        #[serde(default)]
        port: Option<u16>,
    },
    Flows {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        verdict: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        Response {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
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

/// A flow or drop event, decoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowEvent {
    /// Unix time, milliseconds.
    pub time_ms: u64,
    pub src: String,
    pub dst: String,
    pub src_identity: crate::policy::IdentityRef,
    pub dst_identity: crate::policy::IdentityRef,
    pub protocol: String,
    pub sport: u16,
    pub dport: u16,
    pub direction: String,
    /// allowed | denied | audit
    pub verdict: String,
    pub reason: String,
    /// The deciding rule (JSON: `policy`, `rule` and the policy's `kind`).
    #[serde(flatten)]
    pub rule: Option<RuleRef>,
    pub interface: String,
    pub generation: u64,
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
    pub direction: String,
    pub verdict: String,
    pub reason: String,
    pub packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleCounter {
    /// The rule (JSON: `policy`, `rule` and the policy's `kind`).
    #[serde(flatten)]
    pub rule: RuleRef,
    /// `allow` or `deny`.
    pub verdict: String,
    pub packets: u64,
    /// When the agent first saw the rule (Unix seconds; kept across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<u64>,
    /// When the agent last saw its counter grow (Unix seconds; kept across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_matched: Option<u64>,
}
