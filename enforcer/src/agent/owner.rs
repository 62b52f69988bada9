//! The owner: the one thread that holds the [`Datapath`] and the agent's documents. It serves the
//! commands of the agent's tasks one at a time (apply, delete, reconcile, cluster documents) and
//! publishes a [`Snapshot`] after each, so nothing else ever waits for an install. Map work is
//! blocking; it runs here, on a thread of its own, never on the async runtime.

use std::{path::Path, sync::Arc};

use anyhow::{anyhow, bail, Result};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{
    health::Health,
    install::Installer,
    state::{Documents, StateDir},
    view::{Attached, Snapshot},
    Agent,
};
use crate::{
    api::{Applied, ApplyResult},
    metrics::{rule_rows, View},
    policy::{set::Selector, Document},
};

/// A request to the owner, with where to send its answer.
pub enum Command {
    Apply {
        docs: Vec<Document>,
        dry_run: bool,
        reply: oneshot::Sender<Result<ApplyResult>>,
    },
    Delete {
        selector: Selector,
        reply: oneshot::Sender<Result<ApplyResult>>,
    },
    Reconcile {
        reply: oneshot::Sender<Result<()>>,
    },
    SetClusterDocuments {
        docs: Vec<Document>,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// CNI ADD: attach to the pod's interface and install its identity before answering.
    RegisterEndpoint {
        endpoint: crate::api::EndpointRequest,
        reply: oneshot::Sender<Result<crate::api::EndpointStatus>>,
    },
    /// CNI CHECK: the registration of a container.
    CheckEndpoint {
        container_id: String,
        reply: oneshot::Sender<Result<crate::api::EndpointStatus>>,
    },
    /// CNI DEL: forget the pod's registration (unknown container ids are not an error).
    UnregisterEndpoint {
        container_id: String,
        reply: oneshot::Sender<Result<u64>>,
    },
}

/// The agent's mutable state, owned by one thread.
pub struct Owner {
    pub(super) agent: Arc<Agent>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) installer: Installer,
    pub(super) attached: Attached,
    /// Interfaces we should be attached to but are not: name → why (`/readyz` fails).
    pub(super) attach_errors: std::collections::BTreeMap<String, String>,
    /// The configured uplink, while it does not exist: warned about and shown by `status`, but
    /// not a readiness failure (the pods' veths enforce the policy without it).
    pub(super) missing_uplink: Option<String>,
    /// An agent of another layout version left its pins: its links move to our programs once
    /// our (new, empty) maps hold a policy, then its pins are removed.
    pub(super) upgrading: bool,
}

impl Owner {
    /// Serve commands on a thread of its own until every sender is gone.
    pub fn spawn(mut self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("enforcer-owner".into())
            .spawn(move || {
                lower_priority();
                while let Some(command) = self.commands.blocking_recv() {
                    self.serve(command);
                }
            })
    }

    fn serve(&mut self, command: Command) {
        // A reply whose asker has gone (a CLI that hung up) is dropped.
        match command {
            Command::Apply {
                docs,
                dry_run,
                reply,
            } => drop(reply.send(self.apply(docs, dry_run))),
            Command::Delete { selector, reply } => drop(reply.send(self.delete(&selector))),
            Command::Reconcile { reply } => drop(reply.send(self.reconcile())),
            Command::SetClusterDocuments { docs, reply } => {
                drop(reply.send(self.set_cluster_documents(docs)));
            }
            Command::RegisterEndpoint { endpoint, reply } => {
                drop(reply.send(self.register_endpoint(endpoint)));
            }
            Command::UnregisterEndpoint {
                container_id,
                reply,
            } => drop(reply.send(self.unregister_endpoint(&container_id))),
            Command::CheckEndpoint {
                container_id,
                reply,
            } => drop(reply.send(self.check_endpoint(&container_id))),
        }
    }

    fn health(&mut self) -> &mut Health {
        &mut self.installer.health
    }

    fn docs(&mut self) -> &mut Documents {
        &mut self.installer.docs
    }

    /// Publish the snapshot after a change (the rule rows and map counts only when the
    /// generation or the rules changed).
    pub(super) fn publish(&self) {
        let old = self.agent.snapshot();
        let i = &self.installer;
        let generation = i.dp.config().map_or(old.view.generation, |c| c.generation);
        let new_rules = old.view.generation != generation
            || !Arc::ptr_eq(&old.compiled, &i.compiled)
            || old.view.rules.len() != i.compiled.rules.len();
        let view = View {
            generation,
            reasons: i.health.reasons(&self.attach_errors, generation),
            rules: if new_rules {
                Arc::new(rule_rows(&i.compiled.rules))
            } else {
                old.view.rules.clone()
            },
            maps: if new_rules || old.view.maps.is_empty() {
                Arc::new(i.map_usage())
            } else {
                old.view.maps.clone()
            },
            attached: self.attached.len(),
            policy_dir_valid: self
                .agent
                .config
                .policy_dir
                .as_ref()
                .map(|_| i.health.policy_dir.is_none()),
        };
        self.agent.published.set(Snapshot {
            view: Arc::new(view),
            set: i.in_force.clone(),
            compiled: i.compiled.clone(),
            ctx: i.ctx.clone(),
            attached: Arc::new(self.attached.clone()),
            tc_attach: i.dp.tc_attach_mode(),
            warnings: self.warnings(),
        });
    }

    /// Bring the datapath in line with the node: re-read the policy directory, install the
    /// policy if anything it depends on changed, then attach new interfaces and forget vanished
    /// ones. The policy goes first, so a program is never attached to maps without it (an
    /// upgrade to a new map layout starts from empty maps). With `podCidrs` and a policy already
    /// in the maps (a restart), the interfaces go first: pod addresses hold their identity only
    /// on attached interfaces, and installing before re-adopting them would cut every pod off.
    pub fn reconcile(&mut self) -> Result<()> {
        if let Some(dir) = self.agent.config.policy_dir.clone() {
            self.reread_policy_dir(&dir);
        }
        let cli = self.installer.docs.cli.clone();
        let in_maps = self
            .installer
            .dp
            .config()
            .is_ok_and(|c| c.flags & enforcer_common::CONFIG_ACTIVE != 0);
        let interfaces_first = in_maps && !self.agent.config.pod_cidrs.is_empty();
        let mut dropped = Vec::new();
        if interfaces_first {
            dropped = self.reconcile_interfaces().1;
        }
        let mut installed = self.install(&cli, false);
        let held = self.upgrade_held();
        if !interfaces_first && !held {
            let (reinstall, gone) = self.reconcile_interfaces();
            dropped = gone;
            if reinstall {
                installed = self.install(&cli, false);
            }
        }
        if !held {
            self.finish_upgrade();
        }
        if installed.is_ok() && !dropped.is_empty() {
            for gone in &dropped {
                self.forget_pod_state(gone);
            }
            self.save_registrations();
        }
        self.health().install = installed.as_ref().err().map(|e| format!("{e:#}"));
        self.publish();
        installed.map(|_| ())
    }

    /// Whether taking over another layout version's links waits: our maps hold no policy yet
    /// (the install failed or is held), so our programs would pass everything (`no_policy`),
    /// while the older version's programs and maps keep enforcing its last policy (fail-static).
    fn upgrade_held(&mut self) -> bool {
        let empty = self
            .installer
            .dp
            .config()
            .map_or(true, |c| c.generation == 0);
        let held = self.upgrading && empty;
        if held && !self.installer.health.upgrade_held {
            warn!(
                "another layout version's programs keep enforcing its policy until ours installs; \
                 their links are not taken over before"
            );
        }
        self.health().upgrade_held = held;
        held
    }

    /// After the links of another layout version moved to our programs: remove its pins (maps,
    /// and links of interfaces we do not attach), then the pins no attachment owns.
    fn finish_upgrade(&mut self) {
        if !self.upgrading {
            return;
        }
        self.upgrading = false;
        let pins = crate::datapath::PinLayout::new(&self.agent.config.bpffs);
        match crate::datapath::remove_old_layouts(&pins) {
            Ok(removed) => {
                for old in removed {
                    info!(dir = %old.display(), "removed the pins of an older layout version");
                }
            }
            Err(e) => warn!("removing old layout pins: {e}"),
        }
        self.sweep_stale_pins(&pins);
    }

    /// Re-read the policy directory if its files changed. A directory that does not parse
    /// changes nothing but the reported health.
    fn reread_policy_dir(&mut self, dir: &Path) {
        let read = super::state::read_and_parse_dir(dir);
        if read.fingerprint == self.installer.docs.dir_fingerprint && read.fingerprint != 0 {
            return;
        }
        self.docs().dir_fingerprint = read.fingerprint;
        match read.parsed {
            Ok((files, parsed)) => {
                self.docs().set_dir(files, parsed);
                self.health().policy_dir = None;
                self.health().hold_dir = false;
                info!(dir = %dir.display(), "policy directory changed");
            }
            Err(e) => {
                if self.installer.health.policy_dir.as_ref() != Some(&e) {
                    self.agent.metrics.apply_result(false);
                    warn!(dir = %dir.display(), "policy directory rejected, the policy in force stays:\n{e}");
                }
                self.health().policy_dir = Some(e);
            }
        }
    }

    /// Install `cli` merged with the other documents, with the pod interfaces present now.
    pub(super) fn install(
        &mut self,
        cli: &crate::policy::PolicySet,
        from_cli: bool,
    ) -> Result<u64> {
        let pods = self.pod_interfaces();
        self.installer.install(&self.agent, cli, &pods, from_cli)
    }

    /// Replace the documents that come from the Kubernetes API and install the result (nothing
    /// changes on error). Returns the generation in force.
    fn set_cluster_documents(&mut self, docs: Vec<Document>) -> Result<u64> {
        let previous = std::mem::replace(&mut self.docs().cluster, docs);
        let cli = self.installer.docs.cli.clone();
        let installed = self.install(&cli, false);
        if installed.is_err() {
            self.docs().cluster = previous;
        }
        self.publish();
        installed
    }

    /// After an apply or delete installed: persist the CLI documents (lifting the hold of
    /// lost ones) and publish.
    fn applied(&mut self, cli: crate::policy::PolicySet) -> Result<()> {
        let t = std::time::Instant::now();
        self.docs().cli = cli;
        self.installer
            .state
            .save_applied(&self.installer.docs.cli)?;
        let persisted = t.elapsed();
        let file = self.installer.state.dir.join(StateDir::APPLIED);
        let health = self.health();
        health.applied_lost = false;
        health.quarantined.remove(&file.display().to_string());
        health.install = None;
        self.publish();
        info!(
            persist_ms = persisted.as_secs_f64() * 1e3,
            publish_ms = t.elapsed().saturating_sub(persisted).as_secs_f64() * 1e3,
            "applied"
        );
        Ok(())
    }

    /// A CLI request failed before anything was installed: count it.
    fn refused(&self, e: impl std::fmt::Display) -> anyhow::Error {
        self.agent.metrics.apply_result(false);
        anyhow!("{e}")
    }

    /// `policy apply`: all documents or none.
    fn apply(&mut self, docs: Vec<Document>, dry_run: bool) -> Result<ApplyResult> {
        for d in &docs {
            if let Some(file) = self.installer.docs.dir_file(d) {
                return Err(self.refused(format!(
                    "{}:{}: {} {:?} is defined by {} in the policy directory; edit that file instead",
                    d.source().file,
                    d.source().line,
                    d.kind(),
                    d.name(),
                    file.display()
                )));
            }
        }
        let mut cli = self.installer.docs.cli.clone();
        let outcomes = cli.apply(docs).map_err(|e| self.refused(e))?;
        let merged = self
            .installer
            .docs
            .merged(&cli)
            .map_err(|e| self.refused(e))?;
        let warnings = merged.warnings().iter().map(ToString::to_string).collect();
        let applied = outcomes
            .iter()
            .map(|(d, o)| Applied {
                kind: d.kind().to_string(),
                name: d.name().to_string(),
                outcome: o.to_string(),
            })
            .collect();
        let generation = if dry_run {
            self.installer.installed.generation
        } else {
            let generation = self.install(&cli, true)?;
            self.applied(cli)?;
            generation
        };
        Ok(ApplyResult {
            applied,
            warnings,
            generation,
        })
    }

    /// `policy delete NAME [--kind KIND] [-n NAMESPACE]`.
    fn delete(&mut self, selector: &Selector) -> Result<ApplyResult> {
        for ((k, _), (file, doc)) in &self.installer.docs.dir {
            if selector.matches(doc) {
                bail!(
                    "{k} {:?} is defined by {} in the policy directory; remove it there",
                    doc.display_name(),
                    file.display()
                );
            }
        }
        let mut cli = self.installer.docs.cli.clone();
        let removed = cli.delete(selector);
        if removed.is_empty() {
            bail!("no document {selector}");
        }
        let generation = self.install(&cli, true)?;
        self.applied(cli)?;
        Ok(ApplyResult {
            applied: removed
                .iter()
                .map(|d| Applied {
                    kind: d.kind().to_string(),
                    name: d.display_name(),
                    outcome: "deleted".into(),
                })
                .collect(),
            warnings: Vec::new(),
            generation,
        })
    }

    /// What `status` warns about without failing `/readyz`: a missing uplink.
    fn warnings(&self) -> Vec<String> {
        self.missing_uplink
            .iter()
            .map(|uplink| {
                format!(
                    "uplink {uplink}: no such interface (no early XDP drops of traffic from \
                     other nodes; the pod interfaces still enforce the policy)"
                )
            })
            .collect()
    }
}

/// Installs are background work: the owner thread runs at a lower CPU priority (nice 10) than
/// the threads that answer probes, scrapes and the CLI, so a long install cannot starve them on a
/// busy node.
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory preconditions; with PRIO_PROCESS and a
    // thread id, setpriority changes only this thread's nice value.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(
            libc::PRIO_PROCESS,
            u32::try_from(tid).unwrap_or(0),
            OWNER_NICE,
        )
    };
    if rc != 0 {
        warn!(
            "owner thread: could not lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The owner thread's nice value.
const OWNER_NICE: libc::c_int = 10;
