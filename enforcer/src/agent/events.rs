//! Flow and drop events: read from the ring buffer, decoded with the policy in force (identity
//! names, deciding policy and rule), kept in a bounded history and broadcast to followers.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use enforcer_common::{Direction, Event, Reason, Verdict};
use tokio::{io::unix::AsyncFd, sync::broadcast};
use tracing::{debug, warn};

use super::{Agent, Snapshot};
use crate::api::FlowEvent;

/// Events kept for `enforcer flows` without `--follow`.
pub const HISTORY: usize = 10_000;

pub struct EventHub {
    history: Mutex<VecDeque<FlowEvent>>,
    sender: broadcast::Sender<FlowEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        EventHub {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            sender: broadcast::channel(4096).0,
        }
    }

    pub fn publish(&self, e: FlowEvent) {
        let mut h = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(e.clone());
        drop(h);
        let _ = self.sender.send(e);
    }

    pub fn history(&self) -> Vec<FlowEvent> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.sender.subscribe()
    }
}

/// Read the ring buffer until the agent stops.
pub async fn run(agent: Arc<Agent>, ring: RingBuf<MapData>) -> Result<()> {
    // SAFETY: the ring buffer owns its fd, which stays open (and registered) until `fd` drops.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer: {}", e.into_parts().1))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<Event>() {
                // SAFETY: the kernel wrote an `Event` (repr(C), no pointers); read unaligned.
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            }
        }
        guard.clear_ready();
        if batch.is_empty() {
            continue;
        }
        let snapshot = agent.snapshot();
        for e in &batch {
            if let Some(decoded) = decode(&snapshot, e) {
                if let Some(log) = &agent.flow_log {
                    log.offer(&decoded, &snapshot.set);
                }
                agent.events.publish(decoded);
            } else {
                debug!("event with an unknown code: {e:?}");
            }
        }
    }
}

fn addr(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Decode an event with the policy in force; `None` for an event with a code this agent does
/// not know (a newer kernel side).
pub fn decode(snapshot: &Snapshot, e: &Event) -> Option<FlowEvent> {
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Some(FlowEvent {
        time_ms,
        src: addr(e.src),
        dst: addr(e.dst),
        src_identity: snapshot.compiled.identity_ref(e.src_identity),
        dst_identity: snapshot.compiled.identity_ref(e.dst_identity),
        protocol: e.protocol,
        sport: e.sport,
        dport: e.dport,
        direction: Direction::from_u8(e.direction)?,
        verdict: Verdict::from_u8(e.verdict)?,
        reason: Reason::from_u8(e.reason)?,
        rule: snapshot.compiled.rule(e.rule).map(|r| r.rule.clone()),
        interface: snapshot
            .attached
            .get(&e.ifindex)
            .map_or_else(|| e.ifindex.to_string(), |(n, _)| n.clone()),
        generation: e.generation,
    })
}

/// Spawn the reader of the ring buffer (taken from the datapath at start).
pub fn spawn(agent: &Arc<Agent>, ring: Option<RingBuf<MapData>>) {
    let Some(ring) = ring else {
        warn!("no event ring buffer: flows will not be reported");
        return;
    };
    let a = agent.clone();
    tokio::spawn(async move {
        if let Err(e) = run(a, ring).await {
            warn!("event reader stopped: {e:#}");
        }
    });
}
