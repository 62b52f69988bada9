//! The suggestion: `FlowPolicies` that allow exactly the passing edges of the inventory.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{inventory, Edge, EdgeStatus, Endpoint, Observation};
use crate::{Document, FlowPolicy, Mode, PortSpec, Rule, Source};

/// The suggestion: the documents, and the edges they leave out with why.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub edges: Vec<Edge>,
    #[serde(skip)]
    pub documents: Vec<Document>,
    /// Edges observed but not in the documents, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Per service: its peers and the ports it talks to each on.
type PeerPorts = BTreeMap<String, BTreeMap<Endpoint, BTreeSet<PortSpec>>>;

/// Rules with peers grouped by identical port lists.
fn rules_of(peers: &BTreeMap<Endpoint, BTreeSet<PortSpec>>) -> Vec<Rule> {
    let mut by_ports: BTreeMap<Vec<PortSpec>, Vec<&Endpoint>> = BTreeMap::new();
    for (peer, ports) in peers {
        by_ports
            .entry(ports.iter().copied().collect())
            .or_default()
            .push(peer);
    }
    let mut rules: Vec<Rule> = by_ports
        .into_iter()
        .map(|(ports, peers)| Rule {
            peers: peers.into_iter().map(Endpoint::peer).collect(),
            ports,
            rate_limit: None,
            line: 0,
        })
        .collect();
    // Order by the first peer (services, then addresses), as a reader scans them.
    rules.sort_by_key(|r| format!("{:?}", r.peers.first()));
    rules
}

fn flow_policy(name: String, service: &str, mode: Mode) -> FlowPolicy {
    FlowPolicy {
        sensitive: false,
        name,
        namespace: None,
        service: service.to_string(),
        selector: None,
        mode,
        ingress: None,
        egress: None,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
        source: Source::default(),
    }
}

/// Sorts the edges into the peers each service must allow, and the edges left out with why.
fn peer_ports(edges: &[Edge]) -> (PeerPorts, PeerPorts, Vec<(String, String)>) {
    let (mut ingress, mut egress) = (PeerPorts::new(), PeerPorts::new());
    let mut skipped = Vec::new();
    for e in edges {
        let what = format!("{} -> {} {}", e.src, e.dst, e.service_port());
        if !e.status.suggested() {
            let why = match e.status {
                EdgeStatus::Host => "the node may always reach its workloads",
                _ => "denied: it never passed",
            };
            skipped.push((what, why.to_string()));
            continue;
        }
        let Some(port) = e.port_spec() else {
            let why = format!("protocol {} cannot be written in a policy", e.protocol);
            skipped.push((what, why));
            continue;
        };
        let add = |map: &mut PeerPorts, service: &str, peer: &Endpoint| {
            let peers = map.entry(service.to_string()).or_default();
            peers.entry(peer.clone()).or_default().insert(port);
        };
        if let Some(dst) = e.dst.service() {
            add(&mut ingress, dst, &e.src);
        }
        if let Some(src) = e.src.service() {
            add(&mut egress, src, &e.dst);
        }
        if e.src.service().is_none() && e.dst.service().is_none() {
            skipped.push((what, "neither end is a workload".into()));
        }
    }
    (ingress, egress, skipped)
}

/// `FlowPolicies` that allow exactly the passing edges of `observations`: one ingress policy per
/// destination service and one egress policy per source service (peers that are not workloads are
/// written as /32 or /128 CIDRs).
pub fn suggest(observations: &[Observation], mode: Mode) -> Suggestion {
    let edges = inventory(observations);
    let (ingress, egress, skipped) = peer_ports(&edges);
    let mut documents = Vec::new();
    let services: BTreeSet<&String> = ingress.keys().chain(egress.keys()).collect();
    for svc in services {
        if let Some(peers) = ingress.get(svc) {
            let mut p = flow_policy(format!("suggested-{svc}-ingress"), svc, mode);
            p.ingress = Some(rules_of(peers));
            documents.push(Document::FlowPolicy(p));
        }
        if let Some(peers) = egress.get(svc) {
            let mut p = flow_policy(format!("suggested-{svc}-egress"), svc, mode);
            p.egress = Some(rules_of(peers));
            documents.push(Document::FlowPolicy(p));
        }
    }
    Suggestion {
        edges,
        documents,
        skipped,
    }
}
