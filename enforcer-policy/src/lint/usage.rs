//! Findings from what the agent saw: audit-mode policies older than the limit (EN030), deny
//! rules that never matched (EN031), rules without a match for the limit (EN032). The agent
//! reports, per rule in force, its packet count and when it first saw the rule and last saw it
//! match (kept across restarts in its state dir); per policy, when it first saw it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::{Mode, RuleRef};
use super::sides::RuleKey;
use super::Finding;
use super::{Check, Lint};

const DAY: u64 = 86_400;

/// What the agent knows about one rule (times in seconds since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleUsage {
    pub packets: u64,
    #[serde(default)]
    pub first_seen: Option<u64>,
    #[serde(default)]
    pub last_matched: Option<u64>,
}

/// What the agent knows about the policy in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub rules: BTreeMap<RuleRef, RuleUsage>,
    /// When each policy was first seen, by name.
    pub policies: BTreeMap<String, u64>,
}

fn days(seconds: u64) -> u64 {
    seconds / DAY
}

pub fn check(lint: &Lint<'_, '_>, usage: &Usage) -> Vec<Finding> {
    let now = lint.cfg.now;
    let mut out = Vec::new();
    for (pi, p) in lint.view.policies.iter().enumerate() {
        let name = lint.policy_name(pi);
        let seen = usage.policies.get(&name).copied();
        if let (Mode::Audit, Some(seen)) = (p.policy.mode, seen) {
            if now.saturating_sub(seen) > lint.cfg.audit_days * DAY {
                out.push(lint.policy_finding(
                    Check::StaleAudit,
                    pi,
                    format!(
                        "policy {name} has been in audit mode for {} days",
                        days(now - seen)
                    ),
                    "switch it to mode: enforce, or delete it",
                ));
            }
        }
    }
    for (key, _) in lint.rules() {
        let Some(u) = usage.rules.get(&lint.rule_ref(key)) else {
            continue;
        };
        out.extend(rule_usage(lint, key, u));
    }
    out
}

fn rule_usage(lint: &Lint<'_, '_>, key: RuleKey, u: &RuleUsage) -> Option<Finding> {
    let now = lint.cfg.now;
    let idle = u
        .last_matched
        .or(u.first_seen)
        .map(|t| now.saturating_sub(t));
    if let Some(idle) = idle.filter(|i| *i > lint.cfg.unused_days * DAY) {
        let what = if u.last_matched.is_some() {
            "no match"
        } else {
            "never matched"
        };
        return Some(lint.rule_finding(
            Check::Unused,
            key,
            format!("{what} for {} days", days(idle)),
            "remove the rule if the traffic it was written for is gone",
        ));
    }
    let since = idle.map_or_else(String::new, |i| format!(" ({} days)", days(i)));
    (key.section.is_deny() && u.packets == 0 && u.last_matched.is_none()).then(|| {
        lint.rule_finding(
            Check::DenyNeverMatched,
            key,
            format!("deny rule never matched since the agent first saw it{since}"),
            "keep it if it guards against traffic that must never happen; else remove it",
        )
    })
}
