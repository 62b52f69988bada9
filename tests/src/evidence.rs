//! Datapath evidence for probe verdicts: the flow and drop events the agents report
//! (`enforcer flows -o json`, the `flows` API request), matched against the flow a probe sent.
//!
//! A `deny` probe passes only with a `denied` event of its own flow (source, destination,
//! protocol, destination port or ICMP type, sent after the probe started) that names the deciding
//! policy and rule the reference semantics expect; an `audit` probe only with an `audit` event of
//! its flow. The event stream is read from the agents' history and waited for with a deadline: the
//! agent decodes the ring buffer asynchronously.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use enforcer::api::{FlowEvent, Request};
use enforcer_common::Verdict;

use crate::cluster::AgentProcess;

/// How long to wait for an agent to report the event of a probe.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(2);

/// The flow a probe sent, as the datapath reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowKey {
    /// `None` when the kernel picks the source (probes from `host`).
    pub src: Option<IpAddr>,
    pub dst: IpAddr,
    /// `TCP`, `UDP`, `ICMP` or `ICMPv6`, as in [`FlowEvent::protocol`].
    pub protocol: &'static str,
    /// Destination port, or the ICMP type for ICMP.
    pub dport: u16,
    /// Unix time in milliseconds when the probe started: older events are someone else's.
    pub since_ms: u64,
}

/// Unix time in milliseconds (the clock of [`FlowEvent::time_ms`]).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FlowKey {
    /// Whether `e` reports a packet of this flow, in the probe's direction.
    pub fn matches(&self, e: &FlowEvent) -> bool {
        e.time_ms >= self.since_ms
            && e.protocol_name() == self.protocol
            && e.dport == self.dport
            && e.dst.to_canonical() == self.dst.to_canonical()
            && self
                .src
                .is_none_or(|s| e.src.to_canonical() == s.to_canonical())
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.src {
            Some(s) => write!(f, "{s}")?,
            None => f.write_str("host")?,
        }
        write!(f, " -> {} {}/{}", self.dst, self.protocol, self.dport)
    }
}

/// The events with `verdict` of every agent, oldest first.
pub fn events(agents: &[AgentProcess], verdict: Verdict) -> Result<Vec<FlowEvent>> {
    let mut all = Vec::new();
    for a in agents {
        all.extend(a.call::<Vec<FlowEvent>>(&Request::Flows {
            follow: false,
            verdict: Some(verdict),
            service: None,
            limit: None,
        })?);
    }
    Ok(all)
}

/// Waits until some agent reports an event with `verdict` for `key`, for at most `deadline`;
/// returns every matching event (empty if none came).
pub fn wait_for_events(
    agents: &[AgentProcess],
    key: &FlowKey,
    verdict: Verdict,
    deadline: Duration,
) -> Result<Vec<FlowEvent>> {
    let start = Instant::now();
    loop {
        let found: Vec<FlowEvent> = events(agents, verdict)?
            .into_iter()
            .filter(|e| key.matches(e))
            .collect();
        if !found.is_empty() || start.elapsed() > deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The policy and rule an event names, as `policy/rule` or `default deny`.
pub fn attribution(e: &FlowEvent) -> String {
    match &e.rule {
        Some(r) => format!(
            "{} {} ({})",
            r.policy_label(),
            r.rule_label(),
            e.reason_name()
        ),
        None => e.reason_name().to_string(),
    }
}
