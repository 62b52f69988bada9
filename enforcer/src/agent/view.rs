//! What `/readyz` and `/metrics` read: a snapshot the agent publishes after every reconcile,
//! apply and delete. Probes and scrapes take only this snapshot's short lock, never the agent's.

use std::sync::{Arc, Mutex};

use crate::{
    api::MapUsage,
    metrics::{rule_info, RuleLabels},
    policy::{compile::RuleInfo, PolicySet},
};

/// One rule in force, with every label its metrics carry.
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub id: u32,
    pub policy: String,
    pub rule: String,
    pub verdict: &'static str,
    pub labels: RuleLabels,
    pub rate_limited: bool,
}

/// The rows of the rules in force (computed once per install, not per scrape).
pub fn rule_rows(rules: &[RuleInfo], set: &PolicySet) -> Vec<RuleRow> {
    rules
        .iter()
        .map(|r| RuleRow {
            id: r.id,
            policy: r.policy_name().to_string(),
            rule: r.rule.clone(),
            verdict: r.verdict,
            labels: rule_info(r, set),
            rate_limited: r.rate_limit.is_some(),
        })
        .collect()
}

/// The agent's state as probes and scrapes see it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The generation in force in the datapath.
    pub generation: u64,
    /// Why the agent is not ready (empty: ready).
    pub reasons: Vec<String>,
    /// The rules of the generation in force.
    pub rules: Arc<Vec<RuleRow>>,
    /// Entries of the policy maps, counted after the last install.
    pub maps: Arc<Vec<MapUsage>>,
    pub attached: usize,
    /// Whether the policy directory parses (`None`: no directory configured).
    pub policy_dir_valid: Option<bool>,
}

/// The published view.
#[derive(Default)]
pub struct Published(Mutex<Arc<View>>);

impl Published {
    pub fn get(&self) -> Arc<View> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, view: View) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(view);
    }
}
