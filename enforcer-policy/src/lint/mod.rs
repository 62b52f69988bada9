//! `enforcer policy lint`: least-privilege findings on a policy set, computed with the engine's
//! semantics. Pure: the CLI reads the files (or asks the agent) and prints.
//!
//! - [`shadow`]: shadowed and redundant rules, exactly, over the equivalence classes
//!   ([`classes`], [`sides`]);
//! - [`broad`]: over-broad rules; [`exposure`]: what is reachable and what is not isolated;
//! - [`refs`]: selectors, named ports and namespaces that resolve to nothing;
//! - [`usage`]: findings from the agent's per-rule counters and first-seen times;
//! - [`suppress`]: `# enforcer:ignore=ID reason` comments; [`sarif`]: SARIF 2.1.0 output.

pub mod broad;
pub mod classes;
pub mod exposure;
pub mod findings;
pub mod refs;
pub mod sarif;
pub mod shadow;
pub mod sides;
pub mod suppress;
#[cfg(test)]
mod tests;
pub mod usage;

use std::collections::BTreeSet;

use self::classes::Classes;
pub use self::findings::{rank, Check, Finding, Location, Severity};
use self::sides::RuleKey;
pub use self::usage::Usage;
use super::identity::{Identity, View};
use super::{PolicyId, PolicySet, Rule, RuleRef};

/// The label marking a crown-jewel service (on its Workloads or Pods): `"true"`.
pub const SENSITIVE_LABEL: &str = "enforcer.dev/sensitive";

/// Limits of the checks.
#[derive(Debug, Clone)]
pub struct LintConfig {
    /// IPv4 CIDR peers shorter than this prefix (but not /0) are too wide.
    pub min_prefix_v4: u8,
    /// IPv6 CIDR peers shorter than this prefix (but not /0) are too wide.
    pub min_prefix_v6: u8,
    /// Audit-mode policies older than this are stale.
    pub audit_days: u64,
    /// Rules without a match for this long are unused.
    pub unused_days: u64,
    /// Now, in seconds since the Unix epoch.
    pub now: u64,
}

impl Default for LintConfig {
    fn default() -> LintConfig {
        LintConfig {
            min_prefix_v4: 8,
            min_prefix_v6: 32,
            audit_days: 30,
            unused_days: 30,
            now: 0,
        }
    }
}

/// Whether an identity is marked sensitive: by its label [`SENSITIVE_LABEL`]`: "true"`, or by a
/// `FlowPolicy` with `sensitive: true` that selects it.
pub fn is_sensitive(view: &View, identity: &Identity) -> bool {
    identity
        .labels
        .get(SENSITIVE_LABEL)
        .is_some_and(|v| v == "true")
        || view
            .policies
            .iter()
            .any(|p| p.policy.sensitive && view.selects(&p.policy, identity))
}

/// What the checks share.
pub struct Lint<'v, 'a> {
    pub view: &'v View<'a>,
    pub set: &'a PolicySet,
    pub classes: Classes<'v, 'a>,
    pub cfg: &'v LintConfig,
}

impl Lint<'_, '_> {
    /// The policy's name as findings report it.
    pub fn policy_name(&self, policy: usize) -> String {
        self.view.policies[policy].display()
    }

    /// The rule's typed identity, as the compiler and the agent name it.
    pub fn rule_ref(&self, key: RuleKey) -> RuleRef {
        let p = &self.view.policies[key.policy];
        RuleRef::Rule {
            policy: PolicyId {
                kind: p.kind,
                key: p.key.clone(),
            },
            section: key.section,
            index: key.index,
        }
    }

    pub fn rule(&self, key: RuleKey) -> &Rule {
        &self.view.policies[key.policy].policy.section(key.section)[key.index]
    }

    /// Where a policy is.
    pub fn policy_location(&self, policy: usize) -> Location {
        let source = &self.view.policies[policy].policy.source;
        Location {
            file: source.file.clone(),
            line: source.line,
        }
    }

    /// A finding about a rule (at its line, or its policy's when the rule has none).
    pub fn rule_finding(&self, check: Check, key: RuleKey, message: String, fix: &str) -> Finding {
        let mut location = self.policy_location(key.policy);
        let line = self.rule(key).line;
        let policy_line = location.line;
        if line > 0 {
            location.line = line;
        }
        let rule = self.rule_ref(key);
        let mut f = Finding::new(check, location, message, fix)
            .on(Some(rule.policy_label()), Some(rule.rule_label()));
        f.policy_line = policy_line;
        f.sensitive(self.selects_sensitive(key.policy))
    }

    /// A finding about a whole policy.
    pub fn policy_finding(
        &self,
        check: Check,
        policy: usize,
        message: String,
        fix: &str,
    ) -> Finding {
        let location = self.policy_location(policy);
        let line = location.line;
        let mut f =
            Finding::new(check, location, message, fix).on(Some(self.policy_name(policy)), None);
        f.policy_line = line;
        f
    }

    /// The subjects (one endpoint per identity) a policy selects.
    pub fn selected(&self, policy: usize) -> impl Iterator<Item = &Identity> + '_ {
        let p = &self.view.policies[policy].policy;
        self.classes
            .subjects
            .iter()
            .map(|e| &e.identity)
            .filter(move |id| self.view.selects(p, id))
    }

    pub fn selects_sensitive(&self, policy: usize) -> bool {
        self.selected(policy).any(|id| is_sensitive(self.view, id))
    }

    /// Every rule of the view.
    pub fn rules(&self) -> impl Iterator<Item = (RuleKey, &Rule)> + '_ {
        self.view.policies.iter().enumerate().flat_map(|(pi, p)| {
            p.policy.rules().map(move |(section, index, rule)| {
                (
                    RuleKey {
                        policy: pi,
                        section,
                        index,
                    },
                    rule,
                )
            })
        })
    }

    /// Whether the input has endpoints to evaluate against.
    pub fn has_inventory(&self) -> bool {
        !self.view.endpoints.is_empty()
    }
}

/// Lints a set (and the agent's usage of its rules, when given). Findings are ranked.
pub fn lint(set: &PolicySet, usage: Option<&Usage>, cfg: &LintConfig) -> Vec<Finding> {
    let view = View::new(set);
    let lint = Lint {
        view: &view,
        set,
        classes: Classes::new(&view),
        cfg,
    };
    let mut out = broad::check(&lint);
    out.extend(exposure::no_default_deny(&lint));
    if lint.has_inventory() {
        let (found, explained) = refs::check(&lint);
        out.extend(found);
        out.extend(shadowed(&lint, &explained));
        out.extend(exposure::check(&lint));
    } else {
        out.push(Finding::new(
            Check::NoInventory,
            Location { file: String::new(), line: 0 },
            "no Workload or Pod in the input: shadowed, redundant, reachability and selector checks did not run".into(),
            "lint the policies together with the workloads or pods they select (kubectl get pods -A -o yaml)",
        ));
    }
    if let Some(u) = usage {
        out.extend(usage::check(&lint, u));
    }
    rank(&mut out);
    out
}

/// EN001 and EN002, except for the rules `explained` already has a finding for.
fn shadowed(lint: &Lint<'_, '_>, explained: &BTreeSet<RuleKey>) -> Vec<Finding> {
    let used = shadow::rule_use(lint.view, &lint.classes);
    let mut out = Vec::new();
    for (key, _) in lint.rules() {
        if explained.contains(&key) {
            continue;
        }
        let others: Vec<String> = used
            .decided_by
            .get(&key)
            .into_iter()
            .flatten()
            .map(|k| format!("{} of {}", rule_name(k), lint.policy_name(k.policy)))
            .collect();
        let by = if others.is_empty() {
            String::new()
        } else {
            format!(" (decided by {})", others.join(", "))
        };
        if used.shadowed(&key) {
            out.push(lint.rule_finding(
                Check::Shadowed,
                key,
                format!("rule never decides a flow: other rules decide everything it matches{by}"),
                "remove the rule, or narrow the rules that decide its flows",
            ));
        } else if used.redundant(&key) {
            out.push(lint.rule_finding(
                Check::Redundant,
                key,
                "removing this rule changes no verdict: other rules give the same verdicts".into(),
                "remove the rule (or keep it deliberately with an enforcer:ignore comment)",
            ));
        }
    }
    out
}

/// `section[index]`.
pub fn rule_name(key: &RuleKey) -> String {
    format!("{}[{}]", key.section.key(), key.index)
}
