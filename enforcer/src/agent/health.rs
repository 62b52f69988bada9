//! Why the agent is not ready. Each problem is kept until what fixes it happens, and `/readyz`,
//! `enforcer status` and the metrics all report the same list.

use std::collections::BTreeMap;

/// Problems that make the agent not ready (the datapath keeps enforcing the generation in force).
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// The policy directory is rejected (`file:line:column: reason`); cleared when it parses.
    pub policy_dir: Option<String>,
    /// The policy directory's documents are unknown (rejected at startup and no last good copy
    /// in the state dir): nothing is installed until the directory is valid, so the generation
    /// pinned in the datapath stays in force.
    pub hold_dir: bool,
    /// `applied.yaml` was corrupt and quarantined: the documents applied with the CLI are unknown,
    /// so reconciling installs nothing until an `apply` or `delete` says what they are.
    pub applied_lost: bool,
    /// The last install failed; reconcile retries it.
    pub install: Option<String>,
    /// Another layout version's pins are there and our maps hold no policy yet: its programs
    /// keep enforcing and its links are not taken over.
    pub upgrade_held: bool,
    /// State files found corrupt and quarantined: file → message. Cleared by the next successful
    /// install (which rewrites them).
    pub quarantined: BTreeMap<String, String>,
    /// Programs found at startup that deliver into pods past the veth (`node::bypass`): the
    /// ingress policy is not enforced for what they deliver.
    pub bypass: Vec<crate::node::bypass::Bypass>,
}

impl Health {
    /// Why installs are held, if they are (`from_cli`: an `apply` or `delete`, which restores
    /// the CLI documents).
    pub fn hold(&self, from_cli: bool) -> Option<String> {
        if self.hold_dir {
            return Some(format!(
                "the policy directory is invalid and no last good copy of it is known; the \
                 policy in force stays until the directory is fixed: {}",
                self.policy_dir.as_deref().unwrap_or("rejected")
            ));
        }
        if self.applied_lost && !from_cli {
            return Some(
                "the documents applied with the CLI were lost (corrupt state file, quarantined); \
                 the policy in force stays until they are applied again"
                    .into(),
            );
        }
        None
    }

    /// Every reason the agent is not ready, empty when it is.
    pub fn reasons(
        &self,
        attach_errors: &BTreeMap<String, String>,
        generation: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.policy_dir {
            out.push(format!("policy directory rejected: {e}"));
        }
        if let Some(h) = self.hold(false) {
            out.push(format!("installs held: {h}"));
        }
        if let Some(e) = &self.install {
            out.push(format!("policy not installed: {e}"));
        }
        if self.upgrade_held {
            out.push(
                "upgrade held: the previous layout version's programs keep enforcing its policy \
                 until a policy installs into this version's maps"
                    .into(),
            );
        }
        for (file, why) in &self.quarantined {
            out.push(format!("state file {file} quarantined: {why}"));
        }
        out.extend(self.bypass.iter().map(ToString::to_string));
        for (name, why) in attach_errors {
            out.push(format!("not attached to {name}: {why}"));
        }
        if generation == 0 {
            out.push("no policy installed yet".into());
        }
        out
    }
}
