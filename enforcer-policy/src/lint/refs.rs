//! References that resolve to nothing: policies selecting no pod (EN040), peers selecting no
//! pod (EN041), named ports no pod has (EN042), policies for namespaces that do not exist
//! (EN043).

use std::collections::BTreeSet;

use super::super::identity::Identity;
use super::super::{Peer, Rule, Section};
use super::sides::RuleKey;
use super::{Check, Finding, Lint};

/// The findings, and the rules they explain (no shadowed/redundant finding repeats them).
pub fn check(lint: &Lint<'_, '_>) -> (Vec<Finding>, BTreeSet<RuleKey>) {
    let known = namespaces_with_objects(lint);
    let mut out = Vec::new();
    let mut explained = BTreeSet::new();
    let mut dead_policies = BTreeSet::new();
    for (pi, p) in lint.view.policies.iter().enumerate() {
        let name = lint.policy_name(pi);
        if let Some(ns) = p
            .policy
            .namespace
            .as_deref()
            .filter(|ns| !known.contains(*ns))
        {
            out.push(lint.policy_finding(
                Check::UnknownNamespace,
                pi,
                format!("policy {name} is for namespace {ns}, which does not exist (no Namespace, pod or workload in it)"),
                "fix metadata.namespace, or delete the policy",
            ));
            dead_policies.insert(pi);
        } else if lint.selected(pi).next().is_none() {
            out.push(lint.policy_finding(
                Check::SelectsNoPod,
                pi,
                format!("policy {name} selects no pod or workload"),
                "fix spec.service / spec.selector / podSelector to match the workloads' labels",
            ));
            dead_policies.insert(pi);
        }
    }
    for (key, rule) in lint.rules() {
        if dead_policies.contains(&key.policy) {
            explained.insert(key);
            continue;
        }
        let (found, dead) = rule_refs(lint, key, rule);
        if dead {
            explained.insert(key);
        }
        out.extend(found);
    }
    (out, explained)
}

/// Namespaces declared or holding an endpoint.
fn namespaces_with_objects(lint: &Lint<'_, '_>) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = lint.set.namespaces.keys().cloned().collect();
    all.extend(
        lint.view
            .endpoints
            .iter()
            .map(|e| e.identity.namespace.clone()),
    );
    all
}

/// The findings of one rule's peers and named ports, and whether the rule matches nothing.
fn rule_refs(lint: &Lint<'_, '_>, key: RuleKey, rule: &Rule) -> (Vec<Finding>, bool) {
    let ns = lint.view.policies[key.policy].policy.namespace.as_deref();
    let ids: Vec<&Identity> = lint.classes.subjects.iter().map(|e| &e.identity).collect();
    let mut out = Vec::new();
    let mut dead_peers = 0;
    for peer in &rule.peers {
        if matches!(peer, Peer::Cidr { .. })
            || ids.iter().any(|id| lint.view.peer_selects(peer, ns, id))
        {
            continue;
        }
        dead_peers += 1;
        out.push(lint.rule_finding(
            Check::PeerSelectsNoPod,
            key,
            format!("peer {peer} selects no pod or workload"),
            "fix the peer's service or labels, or remove it",
        ));
    }
    // Named ports resolve on the destination: the subject (ingress) or the peer (egress).
    let destinations: Vec<&Identity> = match key.section {
        Section::Ingress | Section::IngressDeny => lint.selected(key.policy).collect(),
        Section::Egress | Section::EgressDeny => ids
            .iter()
            .copied()
            .filter(|id| {
                rule.peers.is_empty()
                    || rule.peers.iter().any(|p| lint.view.peer_selects(p, ns, id))
            })
            .collect(),
    };
    let mut dead_ports = 0;
    for spec in &rule.ports {
        let Some(name) = spec.name else { continue };
        let found = destinations.iter().any(|id| {
            id.ports
                .iter()
                .any(|p| p.name == name.as_str() && p.protocol == spec.protocol)
        });
        if !found {
            dead_ports += 1;
            out.push(lint.rule_finding(
                Check::NamedPortUnresolved,
                key,
                format!(
                    "named port {name}/{} resolves on no destination pod",
                    spec.protocol
                ),
                "use the container port's name as the pods declare it, or a number",
            ));
        }
    }
    let dead = (!rule.peers.is_empty() && dead_peers == rule.peers.len())
        || (!rule.ports.is_empty() && dead_ports == rule.ports.len());
    (out, dead)
}
