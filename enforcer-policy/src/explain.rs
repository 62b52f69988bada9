//! The reference semantics of docs/design.md ("Policy semantics", rules 1–8), evaluated directly
//! on the model for one flow. `enforcer policy explain` and offline scenarios use it; the
//! compiler's output is tested against it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::document::Kind;
use super::identity::{Endpoint, Party, PolicyRef, View};
use super::rule::{BadRule, PolicyId, RuleFields, RuleRef};
use super::{Direction, Flow, Mode, NodeContext, PolicySet, Section, Verdict};

/// A verdict with what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ExplanationJson", try_from = "ExplanationJson")]
pub struct Explanation {
    pub verdict: Verdict,
    /// The deciding rule (`None` for "not isolated", default deny and host traffic).
    pub rule: Option<RuleRef>,
    pub reason: String,
}

impl Explanation {
    /// The deciding policy's name (`NAME` or `NAMESPACE/NAME`).
    pub fn policy_label(&self) -> Option<String> {
        self.rule
            .as_ref()
            .and_then(RuleRef::policy)
            .map(ToString::to_string)
    }

    /// The deciding rule as `section[index]`, e.g. `ingress[0]`.
    pub fn rule_label(&self) -> Option<String> {
        self.rule.as_ref().map(RuleRef::rule_label)
    }
}

/// `explain -o json` prints exactly these fields.
#[derive(Serialize, Deserialize)]
struct ExplanationJson {
    verdict: Verdict,
    policy: Option<String>,
    rule: Option<String>,
    reason: String,
    #[serde(default)]
    kind: Option<Kind>,
}

impl From<Explanation> for ExplanationJson {
    fn from(e: Explanation) -> Self {
        let fields = e.rule.as_ref().map(RuleFields::from);
        ExplanationJson {
            verdict: e.verdict,
            kind: fields.as_ref().and_then(|f| f.kind),
            policy: fields.as_ref().map(|f| f.policy.clone()),
            rule: fields.map(|f| f.rule),
            reason: e.reason,
        }
    }
}

impl TryFrom<ExplanationJson> for Explanation {
    type Error = BadRule;

    fn try_from(j: ExplanationJson) -> Result<Self, BadRule> {
        let rule = match (j.policy, j.rule) {
            (Some(policy), Some(rule)) => Some(RuleRef::try_from(RuleFields {
                policy,
                rule,
                kind: j.kind,
            })?),
            _ => None,
        };
        Ok(Explanation {
            verdict: j.verdict,
            rule,
            reason: j.reason,
        })
    }
}

/// The decision of one side (one endpoint's ingress or egress policy).
#[derive(Debug, Clone)]
struct SideDecision {
    allowed: bool,
    by_rule: bool,
    rule: Option<RuleRef>,
    reason: String,
}

impl SideDecision {
    fn into_explanation(self, verdict: Verdict) -> Explanation {
        Explanation {
            verdict,
            rule: self.rule,
            reason: self.reason,
        }
    }
}

/// Explain the verdict of `flow` under `set` as seen by a node with context `ctx`.
pub fn explain(set: &PolicySet, ctx: &NodeContext, flow: &Flow) -> Explanation {
    explain_in(&View::new(set), ctx, flow)
}

/// [`explain`] over an already built view.
pub fn explain_in(view: &View<'_>, ctx: &NodeContext, flow: &Flow) -> Explanation {
    let src = view.classify(ctx, flow.src);
    let dst = view.classify(ctx, flow.dst);
    // Rule 6: only the sides that are workloads are judged; host → workload always passes.
    let mut sides = Vec::new();
    if let Party::Endpoint(e) = src {
        sides.push((Direction::Egress, e, flow.dst, dst));
    }
    let host_to_workload = matches!((src, dst), (Party::Host, Party::Endpoint(_)));
    if let (Party::Endpoint(e), false) = (dst, host_to_workload) {
        sides.push((Direction::Ingress, e, flow.src, src));
    }
    let judge = |audit: bool| -> Vec<SideDecision> {
        sides
            .iter()
            .map(|(dir, e, peer, party)| {
                let side = Side {
                    view,
                    subject: e,
                    dir: *dir,
                    peer: (*party, *peer),
                };
                side.judge(flow, audit)
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
        rule: None,
        reason,
    }
}

/// One side of a flow: `subject`'s policy in direction `dir`, the other end being `peer`.
struct Side<'v, 'a> {
    view: &'v View<'a>,
    subject: &'v Endpoint<'a>,
    dir: Direction,
    peer: (Party<'v, 'a>, IpAddr),
}

impl<'a> Side<'_, 'a> {
    fn judge(&self, flow: &Flow, include_audit: bool) -> SideDecision {
        let view = self.view;
        let policies: Vec<&PolicyRef> = view
            .policies
            .iter()
            .filter(|p| include_audit || p.policy.mode == Mode::Enforce)
            .filter(|p| view.selects(&p.policy, &self.subject.identity))
            .collect();
        // Rule 5: deny wins.
        if let Some(found) = self.matching(&policies, flow, self.dir.deny_section()) {
            return decided(false, self.dir.deny_section(), found);
        }
        // Rule 4: isolation.
        if !policies.iter().any(|p| p.policy.isolates(self.dir)) {
            return SideDecision {
                allowed: true,
                by_rule: false,
                rule: None,
                reason: "not isolated".into(),
            };
        }
        if let Some(found) = self.matching(&policies, flow, self.dir.allow_section()) {
            return decided(true, self.dir.allow_section(), found);
        }
        SideDecision {
            allowed: false,
            by_rule: false,
            rule: None,
            reason: format!(
                "default deny of isolated service {} ({})",
                self.subject.identity,
                self.dir.as_str()
            ),
        }
    }

    /// The first rule of `section` in `policies` that matches `flow`, with its policy.
    fn matching<'p>(
        &self,
        policies: &[&'p PolicyRef<'a>],
        flow: &Flow,
        section: Section,
    ) -> Option<(&'p PolicyRef<'a>, usize)> {
        // Named ports resolve on the destination: the subject for ingress, the peer for egress.
        let dst_ports = match (self.dir, self.peer.0) {
            (Direction::Ingress, _) => Some(&self.subject.identity.ports[..]),
            (Direction::Egress, Party::Endpoint(e)) => Some(&e.identity.ports[..]),
            (Direction::Egress, _) => None,
        };
        policies.iter().find_map(|p| {
            p.policy
                .section(section)
                .iter()
                .position(|r| {
                    let ns = p.policy.namespace.as_deref();
                    let point = (flow.protocol, flow.port);
                    self.view.rule_matches(r, ns, self.peer, dst_ports, point)
                })
                .map(|i| (*p, i))
        })
    }
}

/// The decision of rule `index` of `section` of `p`.
fn decided(allowed: bool, section: Section, (p, index): (&PolicyRef, usize)) -> SideDecision {
    let rule = RuleRef::Rule {
        policy: PolicyId {
            kind: p.kind,
            key: p.key.clone(),
        },
        section,
        index,
    };
    let verb = if allowed { "allowed" } else { "denied" };
    let kind = match p.kind {
        Kind::NetworkPolicy => "NetworkPolicy",
        _ => "policy",
    };
    SideDecision {
        allowed,
        by_rule: true,
        reason: format!("{verb} by {} of {kind} {}", rule.rule_label(), p.display()),
        rule: Some(rule),
    }
}
