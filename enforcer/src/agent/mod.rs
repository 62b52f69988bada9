//! `enforcer agent`: owns the datapath on one node. It attaches the programs to pod interfaces
//! (and the uplink), keeps the policy in force installed, serves the CLI on a Unix socket and
//! Prometheus on HTTP, and streams flow events. Maps and links are pinned, so the datapath keeps
//! enforcing while the agent restarts (fail-static).

pub mod caps;
pub mod config;
pub mod counters;
pub mod events;
pub mod health;
pub mod http;
pub mod pins;
pub mod server;
pub mod startup;
pub mod state;
pub mod view;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};
use tracing::{info, warn};

pub use self::config::AgentConfig;
use self::{
    health::Health,
    state::{DirSnapshot, Documents, Installed, StateDir},
    view::{Published, View},
};
use crate::{
    api::{Applied, ApplyResult, Interface, MapUsage, Status},
    datapath::{Datapath, DatapathError, PinLayout},
    metrics::Metrics,
    node,
    policy::{compile, parse::parse_documents, Compiled, NodeContext, PolicySet},
};

/// Role of an attached interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pod,
    Uplink,
}

/// Everything the agent changes, behind one lock.
pub struct Inner {
    pub dp: Datapath,
    pub docs: Documents,
    /// The set in force and what it compiled to.
    pub in_force: PolicySet,
    pub compiled: Compiled,
    /// The input digest `compiled` was compiled from.
    pub compiled_digest: u64,
    pub ctx: NodeContext,
    pub installed: Installed,
    /// ifindex → (name, role).
    pub attached: BTreeMap<u32, (String, Role)>,
    /// Interfaces we should be attached to but are not: name → why (`/readyz` fails).
    pub attach_errors: BTreeMap<String, String>,
    /// Why the agent is not ready, besides attach errors.
    pub health: Health,
    /// The configured uplink, while it does not exist: warned about and shown by `status`, but
    /// not a readiness failure (the pods' veths enforce the policy without it; only the early
    /// XDP drops of traffic from other nodes are missing).
    pub missing_uplink: Option<String>,
}

/// The agent, shared by its tasks.
pub struct Agent {
    pub config: AgentConfig,
    inner: Mutex<Inner>,
    state: StateDir,
    pub started: Instant,
    pub metrics: Metrics,
    pub events: events::EventHub,
    /// What probes and scrapes read, without `inner`'s lock.
    view: Published,
    pub counters: counters::CounterMaps,
}

impl Agent {
    /// Load (adopting pinned maps and links), restore the persisted policy and reconcile once.
    /// Only a datapath that cannot load is fatal; every other input that fails is reported and
    /// the generation pinned in the datapath stays in force.
    pub fn start(config: AgentConfig) -> Result<Arc<Agent>> {
        let pins = PinLayout::new(&config.bpffs);
        let mut dp = Datapath::load(Some(pins.clone())).with_context(|| {
            format!(
                "loading the datapath (pinning under {})",
                pins.root.display()
            )
        })?;
        let counters = counters::CounterMaps::open(&pins.maps())?;
        let mode = dp.set_tc_attach(config.tc_attach);
        info!(%mode, requested = ?config.tc_attach, tcx_supported = crate::datapath::tcx_supported(), "tc attach mode");
        let state = StateDir {
            dir: config.state_dir.clone(),
        };
        let metrics = Metrics::new();
        let mut health = Health::default();
        let (docs, installed) =
            startup::restore(config.policy_dir.as_deref(), &state, &metrics, &mut health);
        let inner = Inner {
            dp,
            docs,
            in_force: PolicySet::new(),
            compiled: Compiled::default(),
            compiled_digest: 0,
            ctx: NodeContext::default(),
            installed,
            attached: BTreeMap::new(),
            attach_errors: BTreeMap::new(),
            health,
            missing_uplink: None,
        };
        let agent = Arc::new(Agent {
            config,
            inner: Mutex::new(inner),
            state,
            started: Instant::now(),
            metrics,
            events: events::EventHub::new(),
            view: Published::default(),
            counters,
        });
        if let Err(e) = agent.reconcile() {
            warn!("startup: {e:#}; the pinned policy stays in force, retrying every resync");
        }
        // An upgrade across a layout change: our programs now hold the links (moved from the
        // old version's directory and swapped), so the old version's maps can go.
        for old in crate::datapath::remove_old_layouts(&pins).context("removing old layout pins")? {
            info!(dir = %old.display(), "removed the pins of an older layout version");
        }
        agent.sweep_stale_pins(&pins);
        Ok(agent)
    }

    /// Remove the pins no attachment owns (interfaces whose attach failed keep theirs).
    fn sweep_stale_pins(&self, pins: &PinLayout) {
        let inner = self.lock();
        let present = node::interfaces();
        let failed = inner
            .attach_errors
            .keys()
            .filter_map(|name| present.get(name).copied())
            .collect();
        for stale in pins::sweep(pins, &inner.attached, &failed, self.config.xdp_pods) {
            info!(pin = %stale.display(), "removed a stale pin");
        }
    }

    /// What `/readyz` and `/metrics` read.
    pub fn view(&self) -> Arc<View> {
        self.view.get()
    }

    /// Publish the view after a change (the rules and map counts only when the generation or
    /// the rules changed).
    fn publish(&self, inner: &Inner) {
        let old = self.view.get();
        let generation = inner.dp.config().map_or(old.generation, |c| c.generation);
        let new_rules =
            old.generation != generation || old.rules.len() != inner.compiled.rules.len();
        let view = View {
            generation,
            reasons: inner.health.reasons(&inner.attach_errors, generation),
            rules: if new_rules {
                Arc::new(view::rule_rows(&inner.compiled.rules, &inner.in_force))
            } else {
                old.rules.clone()
            },
            maps: if new_rules || old.maps.is_empty() {
                Arc::new(map_usage(&inner.dp))
            } else {
                old.maps.clone()
            },
            attached: inner.attached.len(),
            policy_dir_valid: self
                .config
                .policy_dir
                .as_ref()
                .map(|_| inner.health.policy_dir.is_none()),
        };
        self.view.set(view);
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bring the datapath in line with the node: re-read the policy directory, install the
    /// policy if anything it depends on changed, then attach new interfaces and forget vanished
    /// ones. The policy goes first, so a program is never attached to maps without it (an
    /// upgrade to a new map layout starts from empty maps).
    pub fn reconcile(&self) -> Result<()> {
        let mut inner = self.lock();
        if let Some(dir) = &self.config.policy_dir {
            self.reread_policy_dir(&mut inner, dir);
        }
        let cli = inner.docs.cli.clone();
        let installed = self.install(&mut inner, &cli, false, false);
        inner.health.install = installed.as_ref().err().map(|e| format!("{e:#}"));
        self.reconcile_interfaces(&mut inner);
        self.publish(&inner);
        installed.map(|_| ())
    }

    /// Re-read the policy directory if its files changed. A directory that does not parse
    /// changes nothing but the reported health.
    fn reread_policy_dir(&self, inner: &mut Inner, dir: &Path) {
        let read = state::read_and_parse_dir(dir);
        if read.fingerprint == inner.docs.dir_fingerprint && read.fingerprint != 0 {
            return;
        }
        inner.docs.dir_fingerprint = read.fingerprint;
        match read.parsed {
            Ok((files, parsed)) => {
                inner.docs.set_dir(files, parsed);
                inner.health.policy_dir = None;
                inner.health.hold_dir = false;
                info!(dir = %dir.display(), "policy directory changed");
            }
            Err(e) => {
                if inner.health.policy_dir.as_ref() != Some(&e) {
                    self.metrics.apply_result(false);
                    warn!(dir = %dir.display(), "policy directory rejected, the policy in force stays:\n{e}");
                }
                inner.health.policy_dir = Some(e);
            }
        }
    }

    /// Replace the documents that come from the Kubernetes API and install the result (nothing
    /// changes on error). Returns the generation in force.
    pub fn set_cluster_documents(&self, docs: Vec<crate::policy::Document>) -> Result<u64> {
        let mut inner = self.lock();
        let previous = std::mem::replace(&mut inner.docs.cluster, docs);
        let cli = inner.docs.cli.clone();
        let installed = self.install(&mut inner, &cli, false, false);
        if installed.is_err() {
            inner.docs.cluster = previous;
        }
        self.publish(&inner);
        installed
    }

    /// The pod interfaces present now: name → ifindex.
    fn pod_interfaces(&self) -> HashMap<String, u32> {
        node::interfaces()
            .into_iter()
            .filter(|(name, _)| {
                self.config.is_pod_interface(name)
                    && self.config.uplink.as_deref() != Some(name.as_str())
            })
            .collect()
    }

    fn reconcile_interfaces(&self, inner: &mut Inner) {
        let present = node::interfaces();
        inner
            .attach_errors
            .retain(|name, _| present.contains_key(name));
        if let Some(uplink) = &self.config.uplink {
            if present.contains_key(uplink) {
                inner.missing_uplink = None;
            } else if inner.missing_uplink.is_none() {
                warn!(
                    interface = %uplink,
                    "the uplink interface does not exist: no early XDP drops of traffic from \
                     other nodes (the pod interfaces still enforce the policy)"
                );
                inner.missing_uplink = Some(uplink.clone());
            }
        }
        // Forget vanished interfaces (their links died with them).
        let gone: Vec<u32> = inner
            .attached
            .iter()
            .filter(|(ifindex, (name, _))| present.get(name) != Some(ifindex))
            .map(|(i, _)| *i)
            .collect();
        for ifindex in gone {
            if let Some((name, _)) = inner.attached.remove(&ifindex) {
                info!(interface = %name, ifindex, "interface vanished");
                inner.dp.forget_interface(ifindex);
            }
        }
        for (name, ifindex) in &present {
            if inner.attached.contains_key(ifindex) {
                continue;
            }
            let role = if self.config.uplink.as_deref() == Some(name.as_str()) {
                Role::Uplink
            } else if self.config.is_pod_interface(name) {
                Role::Pod
            } else {
                continue;
            };
            let result = match role {
                Role::Pod => inner.dp.attach_pod(name, *ifindex, self.config.xdp_pods),
                Role::Uplink => inner.dp.attach_uplink(name, *ifindex),
            };
            match result {
                Ok(()) => {
                    info!(interface = %name, ifindex, ?role, "attached");
                    inner.attached.insert(*ifindex, (name.clone(), role));
                    inner.attach_errors.remove(name);
                }
                Err(e) => {
                    if inner
                        .attach_errors
                        .insert(name.clone(), e.to_string())
                        .is_none()
                    {
                        warn!(interface = %name, "attach failed: {e}");
                    }
                }
            }
        }
    }

    /// Compile `cli` merged with the policy directory and install it if it differs from what is
    /// installed. Nothing changes on error, nor while installs are held (`from_cli`: an apply or
    /// delete, which may lift the hold of lost CLI documents). Returns the generation in force.
    fn install(
        &self,
        inner: &mut Inner,
        cli: &PolicySet,
        force: bool,
        from_cli: bool,
    ) -> Result<u64> {
        if let Some(why) = inner.health.hold(from_cli) {
            if from_cli {
                self.metrics.apply_result(false);
                bail!("{why}");
            }
            return Ok(inner.dp.config()?.generation);
        }
        let set = inner.docs.merged(cli).map_err(|e| anyhow!("{e}"))?;
        let host = node::host_addresses()?;
        let routes = node::host_routes()?;
        let pod_ifaces = self.pod_interfaces();
        let (endpoints, local) = state::local_endpoints(&set, &routes, &pod_ifaces);
        let ctx = state::node_context(host, local);
        // Compiling is a pure function of these inputs: skip it when nothing changed.
        let digest = state::digest(&set, &ctx, &endpoints);
        let active = inner.dp.config()?;
        if !force
            && digest == inner.installed.digest
            && active.generation == inner.installed.generation
            && active.generation > 0
        {
            if inner.compiled_digest != digest {
                // First reconcile after a restart: the datapath already holds this policy;
                // compile it only for the names of flows and metrics.
                inner.compiled = compile(&set, &ctx);
                inner.compiled_digest = digest;
            }
            inner.in_force = set;
            inner.ctx = ctx;
            self.save_dir_snapshot(inner);
            return Ok(active.generation);
        }
        let compiled = compile(&set, &ctx);
        let generation = self.write_generation(inner, &compiled, &endpoints)?;
        inner.installed = Installed { generation, digest };
        inner.in_force = set;
        inner.compiled = compiled;
        inner.compiled_digest = digest;
        inner.ctx = ctx;
        match self.state.save_installed(&inner.installed) {
            Ok(()) => {
                let file = self.state.dir.join(StateDir::INSTALLED);
                inner.health.quarantined.remove(&file.display().to_string());
            }
            Err(e) => warn!("{e:#}"),
        }
        self.save_dir_snapshot(inner);
        Ok(generation)
    }

    /// Write `compiled` as the next generation (all or nothing), counting the result; the rule
    /// counters follow their rules.
    fn write_generation(
        &self,
        inner: &mut Inner,
        compiled: &Compiled,
        endpoints: &std::collections::BTreeSet<(u32, std::net::IpAddr)>,
    ) -> Result<u64> {
        let generation = match inner.dp.install(compiled, endpoints) {
            Ok(g) => g,
            Err(e) => {
                self.metrics.apply_result(false);
                if let DatapathError::Capacity { map, .. } = &e {
                    self.metrics.map_full(map);
                }
                bail!("policy not applied, the policy in force stays: {e}");
            }
        };
        self.metrics.apply_result(true);
        crate::metrics::rebase_rule_counters(&mut inner.dp, &inner.compiled.rules, &compiled.rules);
        info!(
            generation,
            rules = compiled.rules.len(),
            entries = compiled.policy.len(),
            "policy installed"
        );
        Ok(generation)
    }

    /// Keep the policy directory's files, now in force, as its last good copy.
    fn save_dir_snapshot(&self, inner: &mut Inner) {
        if self.config.policy_dir.is_none() || inner.docs.dir_saved {
            return;
        }
        let snapshot = DirSnapshot {
            files: inner.docs.dir_files.clone(),
        };
        match self.state.save_dir_snapshot(&snapshot) {
            Ok(()) => {
                inner.docs.dir_saved = true;
                let file = self.state.dir.join(StateDir::POLICY_DIR);
                inner.health.quarantined.remove(&file.display().to_string());
            }
            Err(e) => warn!("saving the last good copy of the policy directory: {e:#}"),
        }
    }

    /// After an apply or delete installed: persist the CLI documents (lifting the hold of
    /// lost ones) and publish.
    fn applied(&self, inner: &mut Inner, cli: PolicySet) -> Result<()> {
        inner.docs.cli = cli;
        self.state.save_applied(&inner.docs.cli)?;
        inner.health.applied_lost = false;
        let file = self.state.dir.join(StateDir::APPLIED);
        inner.health.quarantined.remove(&file.display().to_string());
        inner.health.install = None;
        self.publish(inner);
        Ok(())
    }

    /// `policy apply`: all documents or none.
    pub fn apply(&self, source: &str, yaml: &str, dry_run: bool) -> Result<ApplyResult> {
        let docs = parse_documents(source, yaml).map_err(|e| {
            self.metrics.apply_result(false);
            anyhow!("{e}")
        })?;
        let mut inner = self.lock();
        for d in &docs {
            if let Some(file) = inner.docs.dir_file(d) {
                self.metrics.apply_result(false);
                bail!(
                    "{}:{}: {} {:?} is defined by {} in the policy directory; edit that file instead",
                    d.source().file,
                    d.source().line,
                    d.kind(),
                    d.name(),
                    file.display()
                );
            }
        }
        let mut cli = inner.docs.cli.clone();
        let outcomes = cli.apply(docs).map_err(|e| {
            self.metrics.apply_result(false);
            anyhow!("{e}")
        })?;
        let merged = inner.docs.merged(&cli).map_err(|e| {
            self.metrics.apply_result(false);
            anyhow!("{e}")
        })?;
        let warnings = merged.warnings().iter().map(ToString::to_string).collect();
        let applied = outcomes
            .iter()
            .map(|(d, o)| Applied {
                kind: d.kind().to_string(),
                name: d.name().to_string(),
                outcome: o.to_string(),
            })
            .collect();
        if dry_run {
            let generation = inner.installed.generation;
            return Ok(ApplyResult {
                applied,
                warnings,
                generation,
            });
        }
        let generation = self.install(&mut inner, &cli, false, true)?;
        self.applied(&mut inner, cli)?;
        Ok(ApplyResult {
            applied,
            warnings,
            generation,
        })
    }

    /// `policy delete NAME [--kind KIND] [-n NAMESPACE]`.
    pub fn delete(
        &self,
        name: &str,
        kind: Option<&str>,
        namespace: Option<String>,
    ) -> Result<ApplyResult> {
        let kind = kind
            .map(str::parse::<crate::policy::document::Kind>)
            .transpose()
            .map_err(|e| anyhow!(e))?;
        let selector = crate::policy::set::Selector {
            name: name.to_string(),
            kind,
            namespace,
        };
        let mut inner = self.lock();
        for ((k, _), (file, doc)) in &inner.docs.dir {
            if selector.matches(doc) {
                bail!(
                    "{k} {:?} is defined by {} in the policy directory; remove it there",
                    doc.display_name(),
                    file.display()
                );
            }
        }
        let mut cli = inner.docs.cli.clone();
        let removed = cli.delete(&selector);
        if removed.is_empty() {
            bail!("no document {selector}");
        }
        let generation = self.install(&mut inner, &cli, false, true)?;
        self.applied(&mut inner, cli)?;
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

    /// `status`.
    pub fn status(&self) -> Result<Status> {
        let inner = self.lock();
        let generation = inner.dp.config()?.generation;
        let interfaces = inner
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
                programs: match role {
                    Role::Pod => {
                        // `tcx/...` or `netlink/...` (legacy tc filter).
                        let tc = inner.dp.tc_attach_mode();
                        let mut p = vec![
                            format!("{tc}/ingress:from_pod"),
                            format!("{tc}/egress:to_pod"),
                        ];
                        if self.config.xdp_pods {
                            p.push("xdp:xdp_pod".into());
                        }
                        p
                    }
                    Role::Uplink => vec!["xdp:xdp_uplink".into()],
                },
            })
            .collect();
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").into(),
            generation,
            uptime_seconds: self.started.elapsed().as_secs(),
            interfaces,
            maps: map_usage(&inner.dp),
            policies: inner.in_force.policies.len(),
            workloads: inner.in_force.workloads.len(),
            bpffs: self.config.bpffs.display().to_string(),
            not_ready: inner.health.reasons(&inner.attach_errors, generation),
            tc_attach: inner.dp.tc_attach_mode(),
            warnings: warnings(&inner),
        })
    }
}

/// Entries and capacity of the policy maps (both slots).
pub fn map_usage(dp: &Datapath) -> Vec<MapUsage> {
    use enforcer_common::{
        maps::names, CIDR_CAPACITY, ENDPOINT_CAPACITY, IDENTITY_CAPACITY, POLICY_CAPACITY, SLOTS,
    };
    [
        (names::IDENTITIES, IDENTITY_CAPACITY * SLOTS),
        (names::CIDR_IDENTITIES, CIDR_CAPACITY * SLOTS),
        (names::POLICY, POLICY_CAPACITY * SLOTS),
        (names::ENDPOINTS, ENDPOINT_CAPACITY),
    ]
    .into_iter()
    .map(|(map, capacity)| MapUsage {
        map: map.into(),
        entries: dp.map_entries(map).unwrap_or(0),
        capacity,
    })
    .collect()
}

/// Remove everything the agent pinned under `bpffs`: links (which detaches the programs) and
/// maps. The datapath stops enforcing.
pub fn uninstall(bpffs: &Path) -> Result<()> {
    crate::datapath::unpin_all(bpffs)
        .with_context(|| format!("uninstalling from {}", bpffs.display()))
}

/// What `status` warns about without failing `/readyz` (that list is `not_ready`): a missing
/// uplink.
fn warnings(inner: &Inner) -> Vec<String> {
    inner
        .missing_uplink
        .iter()
        .map(|uplink| {
            format!(
                "uplink {uplink}: no such interface (no early XDP drops of traffic from other \
                 nodes; the pod interfaces still enforce the policy)"
            )
        })
        .collect()
}
