//! The reference semantics of DESIGN.md ("Policy language", rules 1–8), evaluated directly on the
//! model for one flow. `enforcer policy explain` and offline scenarios use it; the compiler's
//! output is tested against it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    ports_match, Direction, Flow, FlowPolicy, Mode, NodeContext, Peer, PolicySet, Rule, Section,
    Verdict, Workload, ANY_SERVICE,
};

/// A verdict with what decided it (`explain -o json` prints exactly these four fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The deciding policy (`None` for "not isolated", default deny and host traffic).
    pub policy: Option<String>,
    /// The deciding rule, as `section[index]`, e.g. `ingress[0]`.
    pub rule: Option<String>,
    pub reason: String,
}

/// What an address is (rule 1).
#[derive(Debug, Clone, Copy)]
pub enum Party<'a> {
    Workload(&'a Workload),
    Host,
    World,
}

impl Party<'_> {
    pub fn classify<'a>(set: &'a PolicySet, ctx: &NodeContext, addr: IpAddr) -> Party<'a> {
        if let Some(w) = set.workloads.values().find(|w| w.addresses.contains(&addr)) {
            Party::Workload(w)
        } else if ctx.host_addresses.contains(&addr) {
            Party::Host
        } else {
            Party::World
        }
    }
}

/// The decision of one side (one service's ingress or egress policy).
#[derive(Debug, Clone)]
struct SideDecision {
    allowed: bool,
    by_rule: bool,
    policy: Option<String>,
    rule: Option<String>,
    reason: String,
}

impl SideDecision {
    fn into_explanation(self, verdict: Verdict) -> Explanation {
        Explanation {
            verdict,
            policy: self.policy,
            rule: self.rule,
            reason: self.reason,
        }
    }
}

/// Explain the verdict of `flow` under `set` as seen by a node with context `ctx`.
pub fn explain(set: &PolicySet, ctx: &NodeContext, flow: &Flow) -> Explanation {
    let src = Party::classify(set, ctx, flow.src);
    let dst = Party::classify(set, ctx, flow.dst);
    // Rule 6: only the sides that are workloads are judged; host → workload always passes.
    let mut sides = Vec::new();
    if let Party::Workload(w) = src {
        sides.push((Direction::Egress, w, flow.dst, dst));
    }
    let host_to_workload = matches!((src, dst), (Party::Host, Party::Workload(_)));
    if let (Party::Workload(w), false) = (dst, host_to_workload) {
        sides.push((Direction::Ingress, w, flow.src, src));
    }
    let judge = |audit: bool| -> Vec<SideDecision> {
        sides
            .iter()
            .map(|(dir, w, peer, party)| {
                judge_side(set, &w.service, *dir, *peer, *party, flow, audit)
            })
            .collect()
    };
    // Rule 8: E with enforce-mode policies only decides drops; A with all decides audit.
    let enforce = judge(false);
    if let Some(denied) = enforce.iter().find(|d| !d.allowed) {
        return denied.clone().into_explanation(Verdict::Deny);
    }
    let all = judge(true);
    if let Some(denied) = all.into_iter().find(|d| !d.allowed) {
        let mut e = denied.into_explanation(Verdict::Audit);
        e.reason = format!("audit: {}", e.reason);
        return e;
    }
    // Allowed: name the rule that allowed it, the destination's first.
    if let Some(by_rule) = enforce.iter().rev().find(|d| d.by_rule) {
        return by_rule.clone().into_explanation(Verdict::Allow);
    }
    let reason = if host_to_workload {
        "host traffic to a local workload is always allowed".to_string()
    } else if sides.is_empty() {
        "neither side is a workload".to_string()
    } else {
        "not isolated".to_string()
    };
    Explanation {
        verdict: Verdict::Allow,
        policy: None,
        rule: None,
        reason,
    }
}

/// Judge `service`'s `dir` policy for a flow whose other end is `peer`.
fn judge_side(
    set: &PolicySet,
    service: &str,
    dir: Direction,
    peer: IpAddr,
    party: Party<'_>,
    flow: &Flow,
    include_audit: bool,
) -> SideDecision {
    let policies: Vec<&FlowPolicy> = set
        .policies
        .values()
        .filter(|p| p.applies_to(service) && (include_audit || p.mode == Mode::Enforce))
        .collect();
    let matching = |section: Section| {
        policies.iter().find_map(|p| {
            rules_of(p, section)
                .iter()
                .position(|r| rule_matches(r, peer, party, flow))
                .map(|i| (*p, i))
        })
    };
    // Rule 5: deny wins.
    if let Some((p, i)) = matching(dir.deny_section()) {
        let rule = format!("{}[{i}]", dir.deny_section().key());
        return SideDecision {
            allowed: false,
            by_rule: true,
            reason: format!("denied by {rule} of policy {}", p.name),
            policy: Some(p.name.clone()),
            rule: Some(rule),
        };
    }
    // Rule 4: isolation.
    if !policies.iter().any(|p| p.isolates(dir)) {
        return SideDecision {
            allowed: true,
            by_rule: false,
            policy: None,
            rule: None,
            reason: "not isolated".into(),
        };
    }
    if let Some((p, i)) = matching(dir.allow_section()) {
        let rule = format!("{}[{i}]", dir.allow_section().key());
        return SideDecision {
            allowed: true,
            by_rule: true,
            reason: format!("allowed by {rule} of policy {}", p.name),
            policy: Some(p.name.clone()),
            rule: Some(rule),
        };
    }
    SideDecision {
        allowed: false,
        by_rule: false,
        policy: None,
        rule: None,
        reason: format!(
            "default deny of isolated service {service} ({})",
            dir.as_str()
        ),
    }
}

/// The rules of a section of a policy.
pub fn rules_of(p: &FlowPolicy, section: Section) -> &[Rule] {
    match section {
        Section::Ingress => p.ingress.as_deref().unwrap_or(&[]),
        Section::Egress => p.egress.as_deref().unwrap_or(&[]),
        Section::IngressDeny => &p.ingress_deny,
        Section::EgressDeny => &p.egress_deny,
    }
}

fn rule_matches(rule: &Rule, peer: IpAddr, party: Party<'_>, flow: &Flow) -> bool {
    let peer_ok = rule.peers.is_empty()
        || rule.peers.iter().any(|p| match p {
            Peer::Service(name) => {
                matches!(party, Party::Workload(w) if name == ANY_SERVICE || *name == w.service)
            }
            Peer::Cidr { .. } => p.cidr_contains(peer),
        });
    peer_ok && ports_match(&rule.ports, flow.protocol, flow.port)
}
