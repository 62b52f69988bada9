//! Pods → enforcer/v1 `Workload` documents: a pod's identity is the value of its service label
//! (`app.kubernetes.io/name`, else `app`), its addresses are `status.podIPs`.
//!
//! Skipped: pods without an address, on the host network (their address is the node's: `host`),
//! finished (`Succeeded`/`Failed`: the address may already be another pod's) or without a
//! service label. When two pods report the same address (a recycled IP whose old pod object
//! lingers), the newest pod holds it, so a new pod never inherits the old one's identity.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tracing::debug;

use super::convert::{one_document, origin};
use crate::policy::Document;

/// Labels whose value is a pod's service, in order.
pub const SERVICE_LABELS: &[&str] = &["app.kubernetes.io/name", "app"];

/// One pod's identity and addresses, before address conflicts are settled.
struct Candidate<'a> {
    pod: &'a Pod,
    service: &'a str,
    addresses: Vec<IpAddr>,
}

fn candidate(pod: &Pod) -> Option<Candidate<'_>> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    let service = SERVICE_LABELS.iter().find_map(|l| labels.get(*l))?;
    let mut addresses: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if addresses.is_empty() {
        addresses.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    addresses.dedup();
    (!addresses.is_empty()).then_some(Candidate {
        pod,
        service,
        addresses,
    })
}

/// Newest first: by creation time, then by name for a stable order.
fn newer(a: &Pod, b: &Pod) -> bool {
    let key = |p: &Pod| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.metadata.name.clone(),
        )
    };
    key(a) > key(b)
}

/// The Workload documents of `pods`; a pod the engine rejects is logged and skipped.
pub fn workloads<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Document> {
    let candidates: Vec<Candidate<'_>> = pods.into_iter().filter_map(candidate).collect();
    let mut holder: HashMap<IpAddr, usize> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        for addr in &c.addresses {
            let entry = holder.entry(*addr).or_insert(i);
            if newer(c.pod, candidates[*entry].pod) {
                *entry = i;
            }
        }
    }
    let mut docs = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let addresses: Vec<String> = c
            .addresses
            .iter()
            .filter(|a| holder.get(a) == Some(&i))
            .map(ToString::to_string)
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let ns = c.pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod = c.pod.metadata.name.as_deref().unwrap_or_default();
        let name = format!("{ns}.{pod}");
        let doc = json!({
            "apiVersion": "enforcer/v1",
            "kind": "Workload",
            "metadata": {"name": name},
            "spec": {"service": c.service, "addresses": addresses},
        });
        match one_document(&origin("Pod", Some(ns), pod), &doc) {
            Ok(doc) => {
                docs.insert(name, doc);
            }
            Err(e) => debug!("pod skipped: {e}"),
        }
    }
    docs.into_values().collect()
}
