//! What a starting agent restores: the documents applied with the CLI, the last install, and the
//! policy directory — or, when the directory has become invalid, its last good copy. Nothing a
//! starting agent reads is fatal: a bad input is reported (not ready, log, metric) and the
//! generation pinned in the datapath stays in force (fail-static), never less than it.

use std::path::Path;

use tracing::{error, warn};

use super::{
    health::Health,
    state::{self, Documents, Installed, Loaded, Quarantined, StateDir},
};
use crate::metrics::Metrics;

/// Report a quarantined state file.
pub fn report(q: &Quarantined, metrics: &Metrics, health: &mut Health) {
    error!(file = %q.file.display(), "corrupt state file quarantined: {q}");
    metrics
        .quarantined
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    health
        .quarantined
        .insert(q.file.display().to_string(), q.to_string());
}

/// Restore the documents and the last install from the state dir and the policy directory.
pub fn restore(
    policy_dir: Option<&Path>,
    state: &StateDir,
    metrics: &Metrics,
    health: &mut Health,
) -> (Documents, Installed) {
    let mut docs = Documents::default();
    match state.load_applied() {
        Loaded::Missing => {}
        Loaded::Valid(set) => docs.cli = set,
        Loaded::Quarantined(q) => {
            report(&q, metrics, health);
            health.applied_lost = true;
        }
    }
    let installed = match state.load_installed() {
        Loaded::Valid(i) => i,
        Loaded::Missing => Installed::default(),
        // Harmless: the next reconcile reinstalls (same policy, next generation).
        Loaded::Quarantined(q) => {
            report(&q, metrics, health);
            Installed::default()
        }
    };
    if let Some(dir) = policy_dir {
        let read = state::read_and_parse_dir(dir);
        docs.dir_fingerprint = read.fingerprint;
        match read.parsed {
            Ok((files, parsed)) => docs.set_dir(files, parsed),
            Err(e) => {
                metrics.apply_result(false);
                warn!(dir = %dir.display(), "policy directory rejected at startup; the last good copy stays in force:\n{e}");
                health.policy_dir = Some(e);
                restore_last_good_dir(&mut docs, state, metrics, health);
            }
        }
    }
    (docs, installed)
}

/// The policy directory is invalid: take its last good copy from the state dir, or hold installs
/// (the pinned generation stays in force) when there is none.
fn restore_last_good_dir(
    docs: &mut Documents,
    state: &StateDir,
    metrics: &Metrics,
    health: &mut Health,
) {
    match state.load_dir_snapshot() {
        Loaded::Valid(snapshot) => match state::parse_policy_dir(&snapshot.files) {
            Ok(parsed) => {
                docs.set_dir(snapshot.files, parsed);
                docs.dir_saved = true;
            }
            Err(e) => {
                warn!("the last good copy of the policy directory does not parse any more:\n{e}");
                health.hold_dir = true;
            }
        },
        Loaded::Missing => health.hold_dir = true,
        Loaded::Quarantined(q) => {
            report(&q, metrics, health);
            health.hold_dir = true;
        }
    }
}
