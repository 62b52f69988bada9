//! The conntrack sweep: every `conntrack.sweepInterval`, remove the `CONNTRACK` entries idle
//! for longer than their timeout (`datapath::CtTimeouts`) and publish what was found in the
//! metrics. It runs on its own handle of the pinned map, never waiting for the owner.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::{debug, warn};

use super::Agent;
use crate::datapath::ConntrackSweeper;

/// Sweep forever.
pub async fn sweep_loop(agent: Arc<Agent>, sweeper: ConntrackSweeper) {
    let timeouts = agent.config.conntrack;
    let sweeper = Arc::new(Mutex::new(sweeper));
    let mut tick = tokio::time::interval(timeouts.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = sweeper.clone();
        let swept = tokio::task::spawn_blocking(move || {
            s.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sweep(&timeouts)
        })
        .await;
        match swept {
            Ok(Ok(s)) => {
                debug!(entries = s.entries, expired = s.expired, "conntrack sweep");
                agent.metrics.conntrack.swept(&s);
            }
            Ok(Err(e)) => warn!("conntrack sweep: {e:#}"),
            Err(e) => warn!("conntrack sweep task: {e}"),
        }
    }
}
