//! This agent's Node object: its pod ranges (`spec.podCIDRs`, for `--pod-cidrs-from-node`) and
//! the taint `enforcer.dev/agent-not-ready:NoSchedule`, which the node pools carry from their
//! creation and which the agent removes once it is ready (as Cilium does with
//! `node.cilium.io/agent-not-ready`), so no pod is scheduled on a node that cannot enforce yet.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use crate::agent::Agent;

/// The taint's key (effect `NoSchedule`).
pub const NOT_READY_TAINT: &str = "enforcer.dev/agent-not-ready";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: {source}")]
    Api { node: String, source: kube::Error },
    #[error(
        "node {0} has no spec.podCIDRs (its CNI allocates addresses itself, e.g. Calico IPAM): \
         give this node's ranges with --pod-cidrs instead"
    )]
    NoPodCidrs(String),
    #[error("node {node}: spec.podCIDRs entry {value:?}: {source}")]
    BadCidr {
        node: String,
        value: String,
        source: ipnet::AddrParseError,
    },
}

/// The node's pod ranges: `spec.podCIDRs` (or the older `spec.podCIDR`).
pub async fn pod_cidrs(client: Client, node: &str) -> Result<Vec<ipnet::IpNet>, NodeError> {
    let object = Api::<Node>::all(client)
        .get(node)
        .await
        .map_err(|source| NodeError::Api {
            node: node.to_owned(),
            source,
        })?;
    let spec = object.spec.unwrap_or_default();
    let values = match spec.pod_cidrs {
        Some(list) if !list.is_empty() => list,
        _ => spec.pod_cidr.into_iter().collect(),
    };
    if values.is_empty() {
        return Err(NodeError::NoPodCidrs(node.to_owned()));
    }
    values
        .into_iter()
        .map(|value| {
            value.parse().map_err(|source| NodeError::BadCidr {
                node: node.to_owned(),
                value,
                source,
            })
        })
        .collect()
}

/// Remove the taint from `node` if it carries it. The patch sends the node's other taints with
/// the resourceVersion they were read at (a JSON merge patch replaces the list whole; a node
/// changed meanwhile answers 409 Conflict and the caller retries). Returns whether it patched.
pub async fn remove_taint(client: Client, node: &str) -> Result<bool, NodeError> {
    let api = Api::<Node>::all(client);
    let err = |source| NodeError::Api {
        node: node.to_owned(),
        source,
    };
    // A node object that does not exist (an agent outside a cluster's nodes) has no taint.
    let Some(object) = api.get_opt(node).await.map_err(err)? else {
        return Ok(false);
    };
    let taints: Vec<Taint> = object.spec.and_then(|s| s.taints).unwrap_or_default();
    if !taints.iter().any(|t| t.key == NOT_READY_TAINT) {
        return Ok(false);
    }
    let kept: Vec<&Taint> = taints.iter().filter(|t| t.key != NOT_READY_TAINT).collect();
    let patch = json!({
        "metadata": {"resourceVersion": object.metadata.resource_version},
        "spec": {"taints": kept},
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(err)?;
    Ok(true)
}

/// Once the agent is ready (what `/readyz` says: attached, a policy installed, every watch
/// synced; checked every `every`), remove the taint; a failure is retried with a delay doubling
/// up to 30 s. Ends once removed, or when the node has none.
pub async fn untaint_when_ready(client: Client, agent: Arc<Agent>, node: String, every: Duration) {
    let mut backoff = every;
    loop {
        tokio::time::sleep(every).await;
        if !crate::agent::http::not_ready(&agent).is_empty() {
            continue;
        }
        match remove_taint(client.clone(), &node).await {
            Ok(true) => {
                info!(
                    node,
                    taint = NOT_READY_TAINT,
                    "ready: removed the node's taint"
                );
                return;
            }
            Ok(false) => return,
            Err(e) => {
                warn!(
                    taint = NOT_READY_TAINT,
                    "removing the taint: {e} (retrying in {backoff:?})"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
