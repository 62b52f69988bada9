//! Counters of the API watches (per resource and event kind) and whether every watch has synced,
//! rendered with the agent's metrics and used by `/readyz`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use prometheus::{core::Collector, IntCounterVec, IntGauge, Opts};

/// What a watch stream reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WatchEvent {
    /// An object added or changed (`ADDED`/`MODIFIED`, or listed during a (re)list).
    Apply,
    Delete,
    /// A (re)list started: at startup, after `410 Gone` or when a watch could not resume.
    Relist,
    /// A (re)list completed.
    Synced,
    /// `410 Gone`: the resourceVersion is too old to resume; the watcher relists.
    Gone,
    /// The watch failed (connection lost, API error); it is retried with backoff.
    Error,
}

impl WatchEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEvent::Apply => "apply",
            WatchEvent::Delete => "delete",
            WatchEvent::Relist => "relist",
            WatchEvent::Synced => "synced",
            WatchEvent::Gone => "gone",
            WatchEvent::Error => "error",
        }
    }
}

/// Shared by the watch tasks and the scrape; cheap to update.
#[derive(Default)]
pub struct KubeMetrics {
    /// Whether the agent runs with `--kubernetes` at all.
    enabled: AtomicBool,
    /// Every watch has listed once and the cluster's documents are installed.
    synced: AtomicBool,
    events: Mutex<BTreeMap<(&'static str, WatchEvent), u64>>,
}

impl KubeMetrics {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn count(&self, resource: &'static str, event: WatchEvent) {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *events.entry((resource, event)).or_default() += 1;
    }

    /// Why the agent is not ready on the Kubernetes side, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        (self.enabled.load(Ordering::Relaxed) && !self.synced.load(Ordering::Relaxed))
            .then_some("Kubernetes watches not synced yet")
    }

    /// `enforcer_kube_watch_events_total` and `enforcer_kube_synced` for a scrape (nothing
    /// without `--kubernetes`).
    pub fn collectors(&self) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let events = IntCounterVec::new(
            Opts::new(
                "enforcer_kube_watch_events_total",
                "Events of the Kubernetes API watches, by resource and kind (apply, delete, \
                 relist, synced, gone, error).",
            ),
            &["resource", "event"],
        )?;
        let counts = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((resource, event), n) in counts.iter() {
            events
                .with_label_values(&[resource, event.as_str()])
                .inc_by(*n);
        }
        let synced = IntGauge::new(
            "enforcer_kube_synced",
            "1 once every Kubernetes watch has listed and their documents are installed.",
        )?;
        synced.set(i64::from(self.synced.load(Ordering::Relaxed)));
        Ok(vec![Box::new(events), Box::new(synced)])
    }
}
