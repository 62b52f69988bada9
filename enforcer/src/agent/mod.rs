//! `enforcer agent`: owns the datapath on one node. It attaches the programs to pod interfaces
//! (and the uplink), keeps the policy in force installed, serves the CLI on a Unix socket and
//! Prometheus on HTTP, and streams flow events. Maps and links are pinned, so the datapath keeps
//! enforcing while the agent restarts (fail-static).
//!
//! One [`owner::Owner`] thread holds the datapath and the documents and serves [`Command`]s; the
//! async tasks hold an [`Agent`] handle, ask the owner for changes and read the [`Snapshot`] it
//! publishes after each (no task ever waits for an install to read).

pub mod aging;
pub mod caps;
pub mod config;
pub mod endpoints;
pub mod events;
pub mod health;
pub mod http;
mod install;
mod interfaces;
pub mod owner;
pub mod pins;
mod register;
pub mod server;
pub mod startup;
pub mod state;
pub mod trust;
pub mod usage;
pub mod view;

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use self::{
    config::AgentConfig,
    owner::{Command, Owner},
    view::{Role, Snapshot},
};
use self::{
    install::Installer,
    view::{Attached, Published},
};
use crate::{
    api::{ApplyResult, Interface, Status},
    datapath::{ConntrackSweeper, CounterReader, Datapath, PinLayout},
    metrics::{self, Metrics},
    node,
    policy::{parse::parse_documents, set::Selector, Document, Kind},
};

/// Commands queued for the owner at most (askers wait beyond that).
const COMMAND_QUEUE: usize = 64;

/// The agent as its tasks share it: configuration, the agent's own counters, the event hub, the
/// counter maps (read without the owner), the published snapshot, and the owner's queue.
pub struct Agent {
    pub config: AgentConfig,
    pub started: Instant,
    pub metrics: Metrics,
    pub events: events::EventHub,
    pub counters: CounterReader,
    /// First-seen and last-matched times of the rules in force, kept in the state dir.
    pub usage: usage::Usage,
    /// The flow log's queue (`--flow-log`), fed by the event reader.
    pub flow_log: Option<crate::flowlog::FlowLog>,
    published: Published,
    commands: mpsc::Sender<Command>,
}

/// A started agent: the shared handle, the owner (to run on its thread once privileges are
/// dropped) and the flow-event ring buffer (for the one event reader).
pub struct Started {
    pub agent: Arc<Agent>,
    pub owner: Owner,
    pub events: Option<RingBuf<MapData>>,
    /// The flow-log writer, to start once privileges are dropped.
    pub flow_log: Option<crate::flowlog::Writer>,
    /// The conntrack sweep's handle on `CONNTRACK` (opened while privileged).
    pub sweeper: ConntrackSweeper,
}

impl Agent {
    /// Load (adopting pinned maps and links), restore the persisted policy and reconcile once.
    /// Only a datapath that cannot load is fatal; every other input that fails is reported and
    /// the generation pinned in the datapath stays in force.
    pub fn start(config: AgentConfig) -> Result<Started> {
        let pins = PinLayout::new(&config.bpffs);
        let mut dp =
            Datapath::load_with(Some(pins.clone()), config.capacities).with_context(|| {
                format!(
                    "loading the datapath (pinning under {})",
                    pins.root.display()
                )
            })?;
        let counters = CounterReader::open(&pins.maps())?;
        let sweeper = ConntrackSweeper::open(&pins.maps())?;
        let mode = dp.set_tc_attach(config.tc_attach);
        info!(%mode, requested = ?config.tc_attach, tcx_supported = crate::datapath::tcx_supported(), "tc attach mode");
        let events = dp.take_events();
        let metrics = Metrics::new();
        let (flow_log, flow_log_writer) = config
            .flow_log()
            .map(|c| crate::flowlog::FlowLog::new(&c, metrics.flowlog.clone()))
            .unzip();
        let installer = Installer::restore(dp, &config, &metrics);
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let agent = Arc::new(Agent {
            usage: usage::Usage::load(&config.state_dir),
            flow_log,
            config,
            started: Instant::now(),
            metrics,
            events: events::EventHub::new(),
            counters,
            published: Published::new(Snapshot::empty(mode)),
            commands,
        });
        let mut owner = Owner {
            agent: agent.clone(),
            commands: queue,
            installer,
            attached: Attached::new(),
            attach_errors: std::collections::BTreeMap::new(),
            missing_uplink: None,
            upgrading: !pins::other_layouts(&pins).is_empty(),
        };
        owner.installer.health.bypass = check_bypass(&agent.metrics);
        // An upgrade across a layout change: once our maps hold the policy, our programs take
        // the links over (moved from the old version's directory and swapped) and the old
        // version's pins go (`Owner::finish_upgrade`); until then the old version enforces.
        if let Err(e) = owner.reconcile() {
            warn!("startup: {e:#}; the pinned policy stays in force, retrying every resync");
        }
        if !owner.upgrading {
            owner.sweep_stale_pins(&pins);
        }
        Ok(Started {
            agent,
            owner,
            events,
            flow_log: flow_log_writer,
            sweeper,
        })
    }

    /// The state as of the last change.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.get()
    }

    /// Send a command to the owner and wait for its answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| anyhow!("the agent's owner thread has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the agent's owner thread has stopped"))?
    }

    /// `policy apply`: all documents or none. The YAML is parsed here, off the owner.
    pub async fn apply(&self, source: String, yaml: String, dry_run: bool) -> Result<ApplyResult> {
        let docs = tokio::task::spawn_blocking(move || parse_documents(&source, &yaml))
            .await?
            .map_err(|e| {
                self.metrics.apply_result(false);
                anyhow!("{e}")
            })?;
        self.ask(|reply| Command::Apply {
            docs,
            dry_run,
            reply,
        })
        .await
    }

    /// `policy delete NAME [--kind KIND] [-n NAMESPACE]`.
    pub async fn delete(
        &self,
        name: &str,
        kind: Option<Kind>,
        namespace: Option<String>,
    ) -> Result<ApplyResult> {
        let selector = Selector {
            name: name.to_string(),
            kind,
            namespace,
        };
        self.ask(|reply| Command::Delete { selector, reply }).await
    }

    /// Re-read the node and the policy directory and bring the datapath in line.
    pub async fn reconcile(&self) -> Result<()> {
        self.ask(|reply| Command::Reconcile { reply }).await
    }

    /// Reconcile whenever the node's links, addresses or routes change (new pod interfaces get
    /// the programs at once, not at the next resync; host addresses and pod routes follow).
    pub fn watch_node(self: &Arc<Self>) -> Result<()> {
        let agent = self.clone();
        node::watch_changes(move || {
            let (reply, answer) = oneshot::channel();
            // From the watcher's own thread: wait for the owner, so changes that arrive
            // meanwhile are handled by one more reconcile.
            if agent
                .commands
                .blocking_send(Command::Reconcile { reply })
                .is_ok()
            {
                if let Ok(Err(e)) = answer.blocking_recv() {
                    warn!("reconcile after a node change: {e:#}");
                }
            }
        })
        .context("subscribing to rtnetlink link, address and route events")?;
        Ok(())
    }

    /// Replace the documents that come from the Kubernetes API and install the result (nothing
    /// changes on error). Returns the generation in force.
    pub async fn set_cluster_documents(&self, docs: Vec<Document>) -> Result<u64> {
        self.ask(|reply| Command::SetClusterDocuments { docs, reply })
            .await
    }

    /// `status`, from the snapshot.
    pub fn status(&self) -> Status {
        let s = self.snapshot();
        let interfaces = s
            .attached
            .iter()
            .map(|(ifindex, (name, role))| Interface {
                name: name.clone(),
                ifindex: *ifindex,
                role: match role {
                    Role::Pod => "pod",
                    Role::Uplink => "uplink",
                }
                .into(),
                programs: programs(*role, s.tc_attach, self.config.xdp_pods),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            generation: s.view.generation,
            uptime_seconds: self.started.elapsed().as_secs(),
            interfaces,
            maps: s.view.maps.as_ref().clone(),
            policies: s.set.policies.len(),
            workloads: s.set.workloads.len(),
            bpffs: self.config.bpffs.display().to_string(),
            not_ready: s.view.reasons.clone(),
            tc_attach: s.tc_attach,
            warnings: s.warnings.clone(),
        }
    }
}

/// Look for programs that deliver into pods past the veth (`node::bypass`). Run at startup,
/// while the agent still has the privileges to read other programs' instructions; each one
/// found is logged, counted and makes the agent not ready.
fn check_bypass(metrics: &Metrics) -> Vec<node::bypass::Bypass> {
    match node::bypass::scan(&node::interfaces()) {
        Ok(found) => {
            for b in &found {
                tracing::error!(device = %b.device, hook = b.hook, program = %b.program, id = b.id, "{b}");
            }
            metrics.bypass.set(found.clone());
            found
        }
        Err(e) => {
            warn!("the CNI-bypass check could not run: {e}");
            Vec::new()
        }
    }
}

/// The programs attached to an interface of `role`: `tcx/...` or `netlink/...` (legacy tc).
fn programs(role: Role, tc: crate::datapath::TcAttachMode, xdp_pods: bool) -> Vec<String> {
    match role {
        Role::Pod => {
            let mut p = vec![
                format!("{tc}/ingress:from_pod"),
                format!("{tc}/egress:to_pod"),
            ];
            if xdp_pods {
                p.push("xdp:xdp_pod".into());
            }
            p
        }
        Role::Uplink => vec!["xdp:xdp_uplink".into()],
    }
}

impl metrics::Source for Agent {
    fn view(&self) -> Arc<metrics::View> {
        self.snapshot().view.clone()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn counters(&self) -> &CounterReader {
        &self.counters
    }
}

/// Remove everything the agent pinned under `bpffs`: links (which detaches the programs) and
/// maps. The datapath stops enforcing.
pub fn uninstall(bpffs: &Path) -> Result<()> {
    crate::datapath::unpin_all(bpffs)
        .with_context(|| format!("uninstalling from {}", bpffs.display()))
}
