//! Kubernetes objects as policy inputs, as `kubectl get -o yaml` prints them: `v1 Namespace`,
//! `v1 Pod`, `networking.k8s.io/v1 NetworkPolicy` and `v1 List`. They are serde types read from
//! the marked YAML tree ([`super::node_de`]), so errors keep `file:line:column`; fields that
//! kubectl prints and the engine does not use (managedFields, annotations, status conditions,
//! ...) are ignored.

mod meta;
pub mod namespace;
pub mod netpol;
mod pod;

pub use self::meta::ObjectMeta;
pub use self::namespace::Namespace;
pub use self::netpol::{
    EgressRule, IngressRule, IntOrString, IpBlock, NetworkPolicy, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, PolicyType,
};
pub use self::pod::{NamedPort, Pod};
use super::document::Document;
use super::errors::Source;
use super::node_de::{from_node, DeError};
use super::yaml::{Ctx, Node};

/// `apiVersion` of the core kinds.
pub const CORE_V1: &str = "v1";
/// `apiVersion` of `NetworkPolicy`.
pub const NETWORKING_V1: &str = "networking.k8s.io/v1";
pub const KIND_NAMESPACE: &str = "Namespace";
pub const KIND_POD: &str = "Pod";
pub const KIND_NETWORK_POLICY: &str = "NetworkPolicy";
pub const KIND_LIST: &str = "List";

/// Whether `(api_version, kind)` names a Kubernetes kind this module reads.
pub fn is_kubernetes(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        (CORE_V1, KIND_NAMESPACE | KIND_POD | KIND_LIST) | (NETWORKING_V1, KIND_NETWORK_POLICY)
    )
}

/// Records a deserialization error at its node (or at `fallback`).
pub fn report(ctx: &mut Ctx, fallback: &Node, what: &str, e: &DeError) {
    let pos = e.pos.unwrap_or(fallback.pos);
    ctx.error(pos, format!("{what}: {}", e.message));
}

/// Reads one Kubernetes object (not a `List`: see [`super::parse::read_documents`]).
pub fn read(ctx: &mut Ctx, node: &Node, kind: &str) -> Option<Document> {
    let source = Source {
        file: ctx.file.to_string(),
        line: node.pos.line,
    };
    let result = match kind {
        KIND_NAMESPACE => {
            from_node(node).map(|n| Document::Namespace(Namespace::from_raw(n, source)))
        }
        KIND_POD => from_node(node).map(|p| Document::Pod(Pod::from_raw(p, source))),
        KIND_NETWORK_POLICY => {
            from_node(node).map(|p| Document::NetworkPolicy(NetworkPolicy::from_raw(p, source)))
        }
        _ => {
            ctx.error(node.pos, format!("{kind} is not a single document"));
            return None;
        }
    };
    match result {
        Ok(doc) => Some(doc),
        Err(e) => {
            report(ctx, node, kind, &e);
            None
        }
    }
}
#[cfg(test)]
mod tests;
