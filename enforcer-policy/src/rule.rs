//! Which rule decided, as typed data: produced once by the compiler ([`RuleInfo`]) and by
//! `explain`, carried through flow events, metrics, the CLI, lint and report. Names are rendered
//! only at the edges: [`RuleRef::policy_label`] and [`RuleRef::rule_label`] are the `policy` and
//! `rule` of metrics labels and of the API's JSON, and [`RuleFields`] is that JSON form, read
//! back with the inverse of the same table.

use std::fmt;

use enforcer_common::RateLimitConfig;
use serde::{Deserialize, Serialize};

use super::{document::Kind, Direction, ObjectKey, Section, Verdict};

/// The `policy` label of a default deny.
pub const DEFAULT_DENY: &str = "default-deny";

/// A policy, by kind and (namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub kind: Kind,
    pub key: ObjectKey,
}

impl fmt::Display for PolicyId {
    /// `NAME`, or `NAMESPACE/NAME` for a namespaced policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

impl PolicyId {
    /// `kind` named `NAME` or `NAMESPACE/NAME` (the inverse of `Display`).
    pub fn parse(kind: Kind, text: &str) -> PolicyId {
        let key = match text.split_once('/') {
            Some((ns, name)) => ObjectKey::namespaced(ns, name),
            None => ObjectKey::cluster(text),
        };
        PolicyId { kind, key }
    }
}

/// What decided a flow: a rule of a policy, or the default deny of an isolated identity. Its
/// JSON form is [`RuleFields`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "RuleFields", try_from = "RuleFields")]
pub enum RuleRef {
    /// Rule `index` (from 0, in document order) of `section` of `policy`.
    Rule {
        policy: PolicyId,
        section: Section,
        index: usize,
    },
    /// The default deny of isolated identity `subject` (its service, `NAMESPACE/SERVICE` or its
    /// labels) in `direction`.
    DefaultDeny {
        subject: String,
        direction: Direction,
    },
}

/// The sections, in the order of their one name table (`Section::key`).
const SECTIONS: [Section; 4] = [
    Section::Ingress,
    Section::Egress,
    Section::IngressDeny,
    Section::EgressDeny,
];

impl RuleRef {
    /// The policy, `None` for a default deny.
    pub fn policy(&self) -> Option<&PolicyId> {
        match self {
            RuleRef::Rule { policy, .. } => Some(policy),
            RuleRef::DefaultDeny { .. } => None,
        }
    }

    /// The `policy` label: the policy's name, or `default-deny`.
    pub fn policy_label(&self) -> String {
        self.policy()
            .map_or_else(|| DEFAULT_DENY.to_string(), ToString::to_string)
    }

    /// The `rule` label: `section[index]`, or `subject/direction` for a default deny.
    pub fn rule_label(&self) -> String {
        match self {
            RuleRef::Rule { section, index, .. } => format!("{}[{index}]", section.key()),
            RuleRef::DefaultDeny { subject, direction } => {
                format!("{subject}/{}", direction.as_str())
            }
        }
    }

    /// The direction the rule is judged in.
    pub fn direction(&self) -> Direction {
        match self {
            RuleRef::Rule { section, .. } if section.is_ingress() => Direction::Ingress,
            RuleRef::Rule { .. } => Direction::Egress,
            RuleRef::DefaultDeny { direction, .. } => *direction,
        }
    }

    /// Whether the rule denies (a deny section or a default deny).
    pub fn is_deny(&self) -> bool {
        match self {
            RuleRef::Rule { section, .. } => section.is_deny(),
            RuleRef::DefaultDeny { .. } => true,
        }
    }

    /// What the rule decides: [`Verdict::Allow`] or [`Verdict::Deny`].
    pub fn verdict(&self) -> Verdict {
        if self.is_deny() {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// `allow` or `deny` (the `verdict` label of the rule's metrics).
    pub fn verdict_label(&self) -> &'static str {
        self.verdict().as_str()
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Rule { policy, .. } => {
                write!(f, "{} of {} {policy}", self.rule_label(), policy.kind)
            }
            RuleRef::DefaultDeny { subject, direction } => {
                write!(f, "default deny of {subject} ({})", direction.as_str())
            }
        }
    }
}

/// A rule as the API's JSON carries it: `policy`, `rule` and the policy's `kind` (absent for a
/// default deny).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFields {
    pub policy: String,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

/// The JSON form of a rule could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a rule: policy {policy:?}, rule {rule:?}")]
pub struct BadRule {
    pub policy: String,
    pub rule: String,
}

impl From<RuleRef> for RuleFields {
    fn from(r: RuleRef) -> Self {
        RuleFields::from(&r)
    }
}

impl From<&RuleRef> for RuleFields {
    fn from(r: &RuleRef) -> Self {
        RuleFields {
            policy: r.policy_label(),
            rule: r.rule_label(),
            kind: r.policy().map(|p| p.kind),
        }
    }
}

impl TryFrom<RuleFields> for RuleRef {
    type Error = BadRule;

    fn try_from(f: RuleFields) -> Result<Self, BadRule> {
        let rule = |kind| {
            parse_index(&f.rule).map(|(section, index)| RuleRef::Rule {
                policy: PolicyId::parse(kind, &f.policy),
                section,
                index,
            })
        };
        // Without `kind` (written by an agent older than the field): a default deny, or else a
        // rule of a FlowPolicy (its names read the same whatever the kind).
        let parsed = match f.kind {
            Some(kind) => rule(kind),
            None if f.policy == DEFAULT_DENY => {
                parse_default(&f.rule).or_else(|| rule(Kind::FlowPolicy))
            }
            None => rule(Kind::FlowPolicy),
        };
        parsed.ok_or(BadRule {
            policy: f.policy,
            rule: f.rule,
        })
    }
}

/// `section[index]`.
fn parse_index(text: &str) -> Option<(Section, usize)> {
    let (key, rest) = text.split_once('[')?;
    let index = rest.strip_suffix(']')?.parse().ok()?;
    let section = SECTIONS.into_iter().find(|s| s.key() == key)?;
    Some((section, index))
}

/// `subject/direction`.
fn parse_default(text: &str) -> Option<RuleRef> {
    let (subject, direction) = text.rsplit_once('/')?;
    let direction = Direction::BOTH
        .into_iter()
        .find(|d| d.as_str() == direction)?;
    Some(RuleRef::DefaultDeny {
        subject: subject.to_string(),
        direction,
    })
}

/// What the metrics of a rule say besides its policy and rule: computed once by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLabels {
    /// The service the rule protects (`*` = every service; for a default deny, the isolated
    /// identity's name).
    pub service: String,
    /// The rule's peers, comma-separated (`*` = any peer).
    pub peers: String,
}

/// What a rule id stands for: the rule, its labels and its rate limit in the datapath's form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: u32,
    pub rule: RuleRef,
    pub labels: RuleLabels,
    /// The `RATE_LIMITS` value of the rule (converted from its `rateLimit` here, once).
    pub rate_limit: Option<RateLimitConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_round_trips() {
        let cases = [
            RuleRef::Rule {
                policy: PolicyId::parse(Kind::NetworkPolicy, "shop/allow-web"),
                section: Section::Ingress,
                index: 3,
            },
            RuleRef::Rule {
                policy: PolicyId::parse(Kind::FlowPolicy, "api-ingress"),
                section: Section::EgressDeny,
                index: 0,
            },
            RuleRef::DefaultDeny {
                subject: "shop/api".into(),
                direction: Direction::Egress,
            },
        ];
        for r in cases {
            let fields = RuleFields::from(&r);
            assert_eq!(
                RuleRef::try_from(fields.clone()),
                Ok(r.clone()),
                "{fields:?}"
            );
            let json = serde_json::to_string(&r).expect("json");
            assert_eq!(
                serde_json::from_str::<RuleRef>(&json).expect("back"),
                r,
                "{json}"
            );
        }
        let bad = RuleFields {
            policy: "p".into(),
            rule: "sideways[1]".into(),
            kind: Some(Kind::FlowPolicy),
        };
        assert!(RuleRef::try_from(bad).is_err());
        // An older agent's JSON, without `kind`.
        let old = RuleFields {
            policy: "batch-egress".into(),
            rule: "egress[0]".into(),
            kind: None,
        };
        assert_eq!(
            RuleRef::try_from(old),
            Ok(RuleRef::Rule {
                policy: PolicyId::parse(Kind::FlowPolicy, "batch-egress"),
                section: Section::Egress,
                index: 0,
            })
        );
    }
}
