//! Kubernetes objects as policy inputs, as `kubectl get -o yaml` prints them: `v1 Namespace`,
//! `v1 Pod`, `networking.k8s.io/v1 NetworkPolicy` and `v1 List`. They are serde types, read from
//! the marked YAML tree by the parser, so errors keep `file:line:column`; fields that
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
pub use self::pod::Pod;

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

#[cfg(test)]
mod tests;
