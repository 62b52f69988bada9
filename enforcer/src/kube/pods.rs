//! Pods → the v1 Pod documents the policy engine parses (its identity model: namespace, labels,
//! named ports, `status.podIPs`; host-network pods are `host`).
//!
//! Before that, two things only the API's view can settle: finished pods (`Succeeded`/`Failed`)
//! are left out, since their address may already be another pod's; and when two pod objects
//! report the same address (a recycled IP whose old pod object lingers), the newest pod holds
//! it and the address is removed from the others, so a new pod never inherits the old one's
//! identity.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tracing::debug;

use super::convert::{one_document, origin};
use crate::policy::Document;

fn running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

fn addresses(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// Newest first: by creation time, then by namespace and name for a stable order.
fn newer(a: &Pod, b: &Pod) -> bool {
    let key = |p: &Pod| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    };
    key(a) > key(b)
}

/// The Pod documents of `pods`; a pod the engine rejects is logged and left out.
pub fn documents<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Document> {
    let pods: Vec<&Pod> = pods.into_iter().filter(|p| running(p)).collect();
    let mut holder: HashMap<IpAddr, usize> = HashMap::new();
    for (i, pod) in pods.iter().enumerate() {
        if host_network(pod) {
            continue; // the node's addresses
        }
        for addr in addresses(pod) {
            let entry = holder.entry(addr).or_insert(i);
            if newer(pod, pods[*entry]) {
                *entry = i;
            }
        }
    }
    let mut docs = Vec::with_capacity(pods.len());
    for (i, pod) in pods.iter().enumerate() {
        let mut value = match serde_json::to_value(pod) {
            Ok(v) => v,
            Err(e) => {
                debug!("pod not serializable: {e}");
                continue;
            }
        };
        if !host_network(pod) {
            let held: Vec<Value> = addresses(pod)
                .into_iter()
                .filter(|a| holder.get(a) == Some(&i))
                .map(|a| json!({"ip": a.to_string()}))
                .collect();
            value["status"]["podIP"] = held.first().map_or(Value::Null, |a| a["ip"].clone());
            value["status"]["podIPs"] = Value::Array(held);
        }
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        let ns = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match one_document(&origin("Pod", ns, name), &value) {
            Ok(doc) => docs.push(doc),
            Err(e) => debug!("pod left out: {e}"),
        }
    }
    docs
}
