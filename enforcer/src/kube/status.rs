//! The status of `FlowPolicy` and `ClusterFlowPolicy` objects, as this node judged them: its entry in
//! `status.nodes` and the `Accepted` condition, written with server-side apply (field manager
//! `enforcer-<node>`, so agents never overwrite each other's entries). Written only when this
//! node's verdict changes.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::crd::{ClusterFlowPolicy, FlowPolicy, GROUP, VERSION};
use crate::policy::PolicyErrors;

/// One object's verdict on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    kind: &'static str,
    namespace: Option<String>,
    name: String,
    generation: i64,
    /// `None` = accepted; otherwise (reason, message).
    rejected: Option<(&'static str, String)>,
}

impl Verdict {
    pub fn cluster(policy: &ClusterFlowPolicy, error: Option<PolicyErrors>) -> Verdict {
        Verdict {
            kind: "ClusterFlowPolicy",
            namespace: None,
            name: policy.name_any(),
            generation: policy.metadata.generation.unwrap_or_default(),
            rejected: error.map(|e| ("Invalid", e.to_string())),
        }
    }

    pub fn namespaced(policy: &FlowPolicy, error: Option<PolicyErrors>) -> Verdict {
        Verdict {
            kind: "FlowPolicy",
            namespace: policy.namespace(),
            name: policy.name_any(),
            generation: policy.metadata.generation.unwrap_or_default(),
            rejected: error.map(|e| ("Invalid", e.to_string())),
        }
    }

    fn key(&self) -> (Option<String>, String, &'static str) {
        (self.namespace.clone(), self.name.clone(), self.kind)
    }
}

/// This node's entry of `status.nodes` (`reason` only when rejected).
fn node_entry(node: &str, v: &Verdict, policy_generation: u64) -> serde_json::Value {
    let mut entry = json!({
        "node": node,
        "observedGeneration": v.generation,
        "accepted": v.rejected.is_none(),
        "policyGeneration": policy_generation,
    });
    if let Some((_, message)) = &v.rejected {
        entry["reason"] = json!(message);
    }
    entry
}

/// Writes statuses, remembering what it wrote.
pub struct StatusWriter {
    client: Client,
    node: String,
    written: HashMap<(Option<String>, String, &'static str), (Verdict, u64)>,
}

impl StatusWriter {
    pub fn new(client: Client, node: String) -> StatusWriter {
        StatusWriter {
            client,
            node,
            written: HashMap::new(),
        }
    }

    /// Write every verdict that changed since the last call; failures are retried next time.
    pub async fn write(&mut self, verdicts: &[Verdict], policy_generation: u64) {
        for verdict in verdicts {
            let key = verdict.key();
            if self.written.get(&key) == Some(&(verdict.clone(), policy_generation)) {
                continue;
            }
            match self.patch(verdict, policy_generation).await {
                Ok(()) => {
                    self.written
                        .insert(key, (verdict.clone(), policy_generation));
                }
                Err(e) => warn!(
                    kind = verdict.kind,
                    name = %verdict.name,
                    "writing status: {e}"
                ),
            }
        }
        let live: std::collections::HashSet<_> = verdicts.iter().map(Verdict::key).collect();
        self.written.retain(|k, _| live.contains(k));
    }

    async fn patch(&self, v: &Verdict, policy_generation: u64) -> kube::Result<()> {
        let (reason, message) = v
            .rejected
            .clone()
            .unwrap_or(("Accepted", format!("enforced on node {}", self.node)));
        let status = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": v.kind,
            "status": {
                "conditions": [{
                    "type": "Accepted",
                    "status": if v.rejected.is_none() { "True" } else { "False" },
                    "observedGeneration": v.generation,
                    "lastTransitionTime": Timestamp::now().to_string(),
                    "reason": reason,
                    "message": message,
                }],
                "nodes": [node_entry(&self.node, v, policy_generation)],
            },
        });
        let params = PatchParams::apply(&format!("enforcer-{}", self.node)).force();
        let patch = Patch::Apply(&status);
        match &v.namespace {
            Some(ns) => {
                Api::<FlowPolicy>::namespaced(self.client.clone(), ns)
                    .patch_status(&v.name, &params, &patch)
                    .await?;
            }
            None => {
                Api::<ClusterFlowPolicy>::all(self.client.clone())
                    .patch_status(&v.name, &params, &patch)
                    .await?;
            }
        }
        Ok(())
    }
}
