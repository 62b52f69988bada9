//! The flow log: every flow and drop event the agent decodes, written as one JSON line
//! ([`record`]) to stdout or a size-rotated file ([`sink`]), with sources and destinations
//! resolved to pods ([`endpoints`]).
//!
//! Memory stays bounded when the sink is slow: the event reader hands each event to a bounded
//! queue without waiting ([`FlowLog::offer`]); an event that does not fit is dropped and counted
//! (`enforcer_flowlog_dropped_total`). One writer thread resolves, encodes and writes, and only
//! it ever blocks on the sink (a full pipe, a FIFO nobody reads, a slow disk).

pub mod endpoints;
pub mod record;
pub mod sink;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread,
};

use prometheus::{core::Collector, IntCounter};
use tracing::{info, warn};

pub use self::sink::Target;
use self::{endpoints::Endpoints, sink::Sink};
use crate::{api::FlowEvent, policy::PolicySet};

/// Events waiting for the writer at most; more are dropped and counted.
pub const QUEUE: usize = 8192;

/// The flow log's settings: `flowLog`, `flowLogMaxSize` and `flowLogFiles` of the agent's
/// config, and their flags.
#[derive(Debug, Clone)]
pub struct FlowLogConfig {
    /// A file, or stdout.
    pub path: Target,
    /// A file that would grow past this size is rotated.
    pub max_size: bytesize::ByteSize,
    /// Rotated files kept besides the current one (`PATH.1` ... `PATH.N`).
    pub files: usize,
}

/// Defaults of `--flow-log-max-size` and `--flow-log-files`.
pub const DEFAULT_MAX_SIZE: bytesize::ByteSize = bytesize::ByteSize::mib(100);
pub const DEFAULT_FILES: usize = 5;

/// One event for the writer, with the policy set it was decoded under.
struct Entry {
    event: FlowEvent,
    set: Arc<PolicySet>,
}

/// The event reader's end: never blocks.
pub struct FlowLog {
    queue: SyncSender<Entry>,
    metrics: Arc<FlowLogMetrics>,
}

/// The writer's end, started once the agent has dropped its privileges.
pub struct Writer {
    queue: Receiver<Entry>,
    sink: Sink,
    target: Target,
    metrics: Arc<FlowLogMetrics>,
}

/// Lines written, dropped (queue full) and lost to write errors.
#[derive(Default)]
pub struct FlowLogMetrics {
    enabled: AtomicBool,
    lines: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
}

impl FlowLog {
    /// The queue and its writer (nothing is opened yet).
    pub fn new(config: &FlowLogConfig, metrics: Arc<FlowLogMetrics>) -> (FlowLog, Writer) {
        metrics.enabled.store(true, Ordering::Relaxed);
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let writer = Writer {
            queue: rx,
            sink: Sink::new(&config.path, config.max_size.as_u64(), config.files),
            target: config.path.clone(),
            metrics: metrics.clone(),
        };
        (FlowLog { queue, metrics }, writer)
    }

    /// Queue `event` for the log, or drop and count it if the queue is full.
    pub fn offer(&self, event: &FlowEvent, set: &Arc<PolicySet>) {
        let entry = Entry {
            event: event.clone(),
            set: set.clone(),
        };
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Writer {
    /// Run the writer on its own thread until the agent exits.
    pub fn spawn(self, node_name: String) -> std::io::Result<()> {
        thread::Builder::new()
            .name("flowlog".into())
            .spawn(move || self.run(&node_name))
            .map(drop)
    }

    fn run(mut self, node_name: &str) {
        info!(target = %self.target, "flow log");
        let mut endpoints = Endpoints::default();
        let mut failing = false;
        let mut buf = Vec::with_capacity(1024);
        for Entry { event, set } in &self.queue {
            let src = endpoints.resolve(&set, event.src);
            let dst = endpoints.resolve(&set, event.dst);
            buf.clear();
            let line = record::line(&event, src.as_deref(), dst.as_deref(), node_name);
            if let Err(e) = serde_json::to_writer(&mut buf, &line) {
                warn!("flow log: encoding a line: {e}");
                continue;
            }
            buf.push(b'\n');
            match self.sink.write_line(&buf) {
                Ok(()) => {
                    self.metrics.lines.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        info!(target = %self.target, "flow log: writing again");
                        failing = false;
                    }
                }
                Err(e) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(target = %self.target, "flow log: {e}; lines are lost (counted) until it works again");
                        failing = true;
                    }
                }
            }
        }
    }
}

impl FlowLogMetrics {
    /// `enforcer_flowlog_lines_total`, `enforcer_flowlog_dropped_total` and
    /// `enforcer_flowlog_write_errors_total` (nothing when the flow log is off).
    pub fn collectors(&self) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let counter =
            |name: &str, help: &str, n: &AtomicU64| -> prometheus::Result<Box<dyn Collector>> {
                let c = IntCounter::new(name, help)?;
                c.inc_by(n.load(Ordering::Relaxed));
                Ok(Box::new(c))
            };
        Ok(vec![
            counter(
                "enforcer_flowlog_lines_total",
                "Flow-log lines written.",
                &self.lines,
            )?,
            counter(
                "enforcer_flowlog_dropped_total",
                "Flow events left out of the flow log because its queue was full (a slow or \
                 stalled sink); the event reader never waits for the sink.",
                &self.dropped,
            )?,
            counter(
                "enforcer_flowlog_write_errors_total",
                "Flow-log lines lost to a write error (the file is reopened at the next line).",
                &self.errors,
            )?,
        ])
    }
}
