//! What is exposed: services reachable from outside the cluster (EN020), services no policy
//! isolates (EN021), namespaces without a default deny (EN022).

use std::collections::{BTreeMap, BTreeSet};

use super::super::identity::{Identity, Party};
use super::super::{Direction, Mode, Protocol, ANY_SERVICE};
use super::sides::{for_each_side, Point, RuleKey};
use super::{is_sensitive, Check, Finding, Lint, Location};

/// `TCP 80-90`, `ICMP`, `any other protocol`.
pub fn point_text(p: &Point) -> String {
    match Protocol::from_number(p.protocol) {
        Some(proto) if proto.has_ports() && p.low == p.high => format!("{proto} {}", p.low),
        Some(proto) if proto.has_ports() && (p.low, p.high) == (0, u16::MAX) => {
            format!("{proto} (every port)")
        }
        Some(proto) if proto.has_ports() => format!("{proto} {}-{}", p.low, p.high),
        Some(proto) => proto.to_string(),
        None => "other protocols".into(),
    }
}

/// EN020 and EN021.
pub fn check(lint: &Lint<'_, '_>) -> Vec<Finding> {
    // (subject, deciding rule) → what the world reaches.
    let mut reached: BTreeMap<(&Identity, RuleKey), BTreeSet<String>> = BTreeMap::new();
    let mut open: BTreeSet<&Identity> = BTreeSet::new();
    for_each_side(lint.view, &lint.classes, |side| {
        if side.dir != Direction::Ingress {
            return;
        }
        if !side.isolated.1 {
            open.insert(&side.subject.identity);
        }
        if !matches!(side.peer.party, Party::World) {
            return;
        }
        for p in side.points.iter() {
            let (e, _) = side.decisions(p);
            if let (true, Some(by)) = (e.allow, e.by) {
                let ports = reached.entry((&side.subject.identity, by)).or_default();
                ports.insert(format!("{} (e.g. from {})", point_text(p), side.peer.addr));
            }
        }
    });
    let mut out = Vec::new();
    for ((identity, key), what) in reached {
        let what: Vec<String> = what.into_iter().take(4).collect();
        out.push(
            lint.rule_finding(
                Check::ReachableFromOutside,
                key,
                format!(
                    "{identity} is reachable from outside the cluster ({})",
                    what.join(", ")
                ),
                "allow only the sources that need it (an ingress controller, a load balancer CIDR)",
            )
            .sensitive(is_sensitive(lint.view, identity)),
        );
    }
    for identity in open {
        out.push(
            Finding::new(
                Check::NotIsolated,
                endpoint_location(lint, identity),
                format!("{identity} is not isolated for ingress: no policy selecting it has an ingress section"),
                "add a policy selecting it with the ingress it needs (or a namespace default deny)",
            )
            .sensitive(is_sensitive(lint.view, identity)),
        );
    }
    out
}

/// The document of the first endpoint of `identity`.
fn endpoint_location(lint: &Lint<'_, '_>, identity: &Identity) -> Location {
    let key = lint
        .view
        .endpoints
        .iter()
        .find(|e| e.identity == *identity)
        .map(|e| e.key.clone());
    let source = key.and_then(|k| {
        lint.set
            .workloads
            .get(&k)
            .map(|w| w.source.clone())
            .or_else(|| lint.set.pods.get(&k).map(|p| p.source.clone()))
    });
    source.map_or(
        Location {
            file: String::new(),
            line: 0,
        },
        |s| Location {
            file: s.file,
            line: s.line,
        },
    )
}

/// The namespaces the input knows: declared, holding an endpoint, or named by a policy.
pub fn namespaces(lint: &Lint<'_, '_>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = lint.set.namespaces.keys().cloned().collect();
    out.extend(
        lint.view
            .endpoints
            .iter()
            .map(|e| e.identity.namespace.clone()),
    );
    out.extend(
        lint.view
            .policies
            .iter()
            .filter_map(|p| p.policy.namespace.clone()),
    );
    out
}

/// EN022: a namespace is default-deny when an enforce policy of it (or a cluster-wide one)
/// selects every workload in it and isolates their ingress.
pub fn no_default_deny(lint: &Lint<'_, '_>) -> Vec<Finding> {
    let covers = |ns: &str| {
        lint.view.policies.iter().any(|p| {
            let p = &p.policy;
            p.mode == Mode::Enforce
                && p.namespace.as_deref().is_none_or(|n| n == ns)
                && p.service == ANY_SERVICE
                && p.selector
                    .as_ref()
                    .is_none_or(super::super::labels::LabelSelector::is_empty)
                && p.ingress.is_some()
        })
    };
    let mut out = Vec::new();
    for ns in namespaces(lint) {
        if covers(&ns) {
            continue;
        }
        let location = match lint.set.namespaces.get(&ns) {
            Some(n) => Location {
                file: n.source.file.clone(),
                line: n.source.line,
            },
            None => first_document_in(lint, &ns),
        };
        out.push(Finding::new(
            Check::NoDefaultDeny,
            location,
            format!("namespace {ns} has no default deny: a new workload in it accepts any ingress"),
            "add a NetworkPolicy with podSelector: {} and policyTypes: [Ingress] in it",
        ));
    }
    out
}

/// The location of the first endpoint or policy in namespace `ns`.
fn first_document_in(lint: &Lint<'_, '_>, ns: &str) -> Location {
    let endpoint = lint
        .view
        .endpoints
        .iter()
        .find(|e| e.identity.namespace == ns)
        .map(|e| endpoint_location(lint, &e.identity));
    let policy = || {
        (0..lint.view.policies.len())
            .find(|i| lint.view.policies[*i].policy.namespace.as_deref() == Some(ns))
            .map(|i| lint.policy_location(i))
    };
    endpoint.or_else(policy).unwrap_or(Location {
        file: String::new(),
        line: 0,
    })
}
