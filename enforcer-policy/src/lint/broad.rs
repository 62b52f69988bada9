//! Over-broad rules: ingress from the world on every port (EN010), any-workload peers into
//! sensitive services (EN011), CIDR peers wider than the limit (EN012), egress to the world on
//! every port (EN013).

use super::super::labels::LabelSelector;
use super::super::{Peer, Rule, Section, ANY_SERVICE};
use super::{Check, Finding, Lint};

/// Whether a peer is the whole world (a `/0`).
fn is_world(peer: &Peer) -> bool {
    matches!(peer, Peer::Cidr { cidr, .. } if cidr.prefix_len() == 0)
}

/// Whether a rule admits the world: no peers (anyone) or a `/0` peer.
fn from_world(rule: &Rule) -> bool {
    rule.peers.is_empty() || rule.peers.iter().any(is_world)
}

fn empty(s: Option<&LabelSelector>) -> bool {
    s.is_none_or(LabelSelector::is_empty)
}

/// Whether a peer is any workload: `service: "*"`, or a selector peer without labels.
fn is_wildcard(peer: &Peer) -> bool {
    match peer {
        Peer::Service(s) => s == ANY_SERVICE,
        Peer::Selector { pods, namespaces } => empty(pods.as_ref()) && empty(namespaces.as_ref()),
        Peer::Cidr { .. } => false,
    }
}

pub fn check(lint: &Lint<'_, '_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, rule) in lint.rules() {
        match key.section {
            Section::Ingress => {
                if rule.ports.is_empty() && from_world(rule) {
                    out.push(lint.rule_finding(
                        Check::WorldAllPorts,
                        key,
                        "allows ingress from anyone, including the world, on every port".into(),
                        "name the peers (services, selectors, CIDRs) and the ports the service serves",
                    ));
                }
                let wildcard = rule.peers.is_empty() || rule.peers.iter().any(is_wildcard);
                if wildcard && lint.selects_sensitive(key.policy) {
                    out.push(lint.rule_finding(
                        Check::WildcardIntoSensitive,
                        key,
                        "allows every workload into a service marked sensitive".into(),
                        "replace the any-workload peer by the services that need access",
                    ));
                }
            }
            Section::Egress if rule.ports.is_empty() && from_world(rule) => {
                out.push(lint.rule_finding(
                    Check::EgressWorldAllPorts,
                    key,
                    "allows egress to the world on every port".into(),
                    "name the destinations and ports the service calls",
                ));
            }
            _ => {}
        }
        if !key.section.is_deny() {
            out.extend(wide_cidrs(lint, key, rule));
        }
    }
    out
}

fn wide_cidrs(lint: &Lint<'_, '_>, key: super::sides::RuleKey, rule: &Rule) -> Vec<Finding> {
    let mut out = Vec::new();
    for peer in &rule.peers {
        let Peer::Cidr { cidr, .. } = peer else {
            continue;
        };
        let limit = match cidr {
            ipnet::IpNet::V4(_) => lint.cfg.min_prefix_v4,
            ipnet::IpNet::V6(_) => lint.cfg.min_prefix_v6,
        };
        if cidr.prefix_len() > 0 && cidr.prefix_len() < limit {
            out.push(lint.rule_finding(
                Check::WideCidr,
                key,
                format!("CIDR peer {cidr} is wider than /{limit}"),
                "narrow the CIDR to the networks that need access",
            ));
        }
    }
    out
}
