//! The enforcer CRDs, `FlowPolicy` (namespaced) and `ClusterFlowPolicy`, as Rust types: kube-derive
//! and schemars generate their `CustomResourceDefinitions` (`enforcer crds`), and the agent converts
//! each object into the enforcer/v1 `FlowPolicy` document the policy engine parses
//! ([`super::convert`]). The spec mirrors the engine's `FlowPolicy` spec field for field; a test
//! holds the two key sets equal, and every field's validation stays the engine's (a rejected
//! object gets a `Rejected` status with the engine's message).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the enforcer CRDs.
pub const GROUP: &str = "enforcer.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";

/// Allow and deny rules of one service (or of every service, `"*"`); `docs/policy.md`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "enforcer.dev",
    version = "v1alpha1",
    kind = "FlowPolicy",
    namespaced,
    status = "FlowPolicyStatus",
    shortname = "fp",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "PartialEq")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowPolicySpec {
    /// The service the policy applies to, or `"*"` for every service (required unless
    /// `selector` is given, then `"*"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A label selector of the protected workloads (with `service`: both must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// `enforce` (default) or `audit` (what this policy would drop passes and is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `true`: the workloads it selects hold what must not leak (lint ranks findings about them
    /// first, the report marks them). `false` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<bool>,
    /// Allow rules into the service; present (even `[]`) = the service is isolated for ingress.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ingress: Option<Vec<IngressRule>>,
    /// Allow rules out of the service; present (even `[]`) = isolated for egress.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub egress: Option<Vec<EgressRule>>,
    /// Deny rules into the service; they win over every allow.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ingress_deny: Option<Vec<IngressDenyRule>>,
    /// Deny rules out of the service; they win over every allow.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub egress_deny: Option<Vec<EgressRule>>,
}

/// A rule list whose key is present: `ingress: null` (what `ingress:` with no value reads as)
/// isolates like `ingress: []`, as in the engine, so it must not become "absent".
fn present<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default()))
}

/// The same spec, cluster-scoped.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "enforcer.dev",
    version = "v1alpha1",
    kind = "ClusterFlowPolicy",
    status = "FlowPolicyStatus",
    shortname = "cfp",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "PartialEq")]
#[serde(transparent)]
pub struct ClusterFlowPolicySpec(pub FlowPolicySpec);

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
}

/// An `ingress` rule: who may connect (`from`), to what (`ports`), how fast (`rateLimit`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Peers; omitted or `[]` = any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Ports; omitted or `[]` = every protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// An `ingressDeny` rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressDenyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
}

/// An `egress` or `egressDeny` rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
}

/// Exactly one of `service` or `cidr` (with optional `except`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    /// Workloads by labels (the policy's namespace unless `namespaceSelector` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Namespaces by labels (every workload of them, or those matching `selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` AND `matchExpressions`; `{}` selects all).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelRequirement>>,
}

/// One `matchExpressions` entry: `operator` `In`, `NotIn`, `Exists` or `DoesNotExist`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// TCP (default), UDP, SCTP or ICMP, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub end_port: Option<u16>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub packets_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u64>,
    /// `source` (default): one bucket per source address; `rule`: one for the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<RateScope>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateScope {
    Source,
    Rule,
}

/// What the agents made of the object. Each agent owns its entry of `nodes` (server-side apply,
/// field manager `enforcer/<node>`); `conditions` holds `Accepted`, written by the agents too.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per node whose agent has seen this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodeStatus>,
}

/// The usual Kubernetes condition (`metav1.Condition` shape).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// `metadata.generation` the condition was computed from.
    pub observed_generation: i64,
    /// RFC 3339.
    pub last_transition_time: String,
    /// `Accepted` or `Invalid`.
    pub reason: String,
    pub message: String,
}

/// One node's view.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    /// `metadata.generation` this node last judged.
    pub observed_generation: i64,
    pub accepted: bool,
    /// The engine's message when rejected (`file:line:column: reason`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The policy generation in force on the node when the status was written.
    pub policy_generation: u64,
}
