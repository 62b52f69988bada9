//! Kubernetes objects → the enforcer/v1 documents the policy engine parses, through its public
//! parser (`parse_documents`): the engine stays the only judge of what a policy means, and an
//! object it rejects is reported with the engine's own message.

use serde::Serialize;
use serde_json::json;

use super::crd::{ClusterFlowPolicy, FlowPolicy, FlowPolicySpec};
use crate::policy::{parse::parse_documents, Document, PolicyErrors};

/// Where a converted document came from, for error messages (`kind/namespace/name`).
pub fn origin(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// The engine document of a `ClusterFlowPolicy`: an enforcer/v1 `FlowPolicy` of the same name.
pub fn cluster_flow_policy(policy: &ClusterFlowPolicy) -> Result<Document, PolicyErrors> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    flow_policy_document(
        &origin("ClusterFlowPolicy", None, name),
        name,
        None,
        &policy.spec.0,
    )
}

/// The engine document of a namespaced `FlowPolicy`: an enforcer/v1 `FlowPolicy` of that
/// namespace (its selectors and services reach only that namespace's workloads).
pub fn namespaced_flow_policy(policy: &FlowPolicy) -> Result<Document, PolicyErrors> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
    flow_policy_document(
        &origin("FlowPolicy", Some(ns), name),
        name,
        Some(ns),
        &policy.spec,
    )
}

/// A Kubernetes object (`Namespace`, `NetworkPolicy`) through the engine's parser.
pub fn object<K: kube::Resource<DynamicType = ()> + Serialize>(
    object: &K,
) -> Result<Document, PolicyErrors> {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    one_document(
        &origin(&K::kind(&()), meta.namespace.as_deref(), name),
        object,
    )
}

/// Parse `spec` as the engine's `FlowPolicy` `name`; `origin` names the object in errors.
pub fn flow_policy_document(
    origin: &str,
    name: &str,
    namespace: Option<&str>,
    spec: &FlowPolicySpec,
) -> Result<Document, PolicyErrors> {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    one_document(
        origin,
        &json!({
            "apiVersion": "enforcer/v1",
            "kind": "FlowPolicy",
            "metadata": metadata,
            "spec": spec,
        }),
    )
}

/// Serialize `doc` to YAML and parse it with the engine; exactly one document comes out.
pub fn one_document(origin: &str, doc: &impl Serialize) -> Result<Document, PolicyErrors> {
    let yaml = serde_yaml_ng::to_string(doc).map_err(|e| {
        PolicyErrors(vec![crate::policy::PolicyError::new(
            origin,
            0,
            0,
            format!("cannot serialize: {e}"),
        )])
    })?;
    let mut docs = parse_documents(origin, &yaml)?;
    match (docs.pop(), docs.is_empty()) {
        (Some(doc), true) => Ok(doc),
        _ => Err(PolicyErrors(vec![crate::policy::PolicyError::new(
            origin,
            0,
            0,
            "expected exactly one document",
        )])),
    }
}
