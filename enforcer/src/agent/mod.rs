//! `enforcer agent`: owns the datapath on one node. It attaches the programs to pod interfaces
//! (and the uplink), keeps the policy in force installed, serves the CLI on a Unix socket and
//! Prometheus on HTTP, and streams flow events. Maps and links are pinned, so the datapath keeps
//! enforcing while the agent restarts (fail-static).

pub mod config;
pub mod events;
pub mod http;
pub mod server;
pub mod state;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};
use tracing::{info, warn};

pub use self::config::AgentConfig;
use self::state::{Documents, Installed, StateDir};
use crate::{
    api::{Applied, ApplyResult, Interface, MapUsage, Status},
    datapath::{Datapath, PinLayout},
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
}

/// The agent, shared by its tasks.
pub struct Agent {
    pub config: AgentConfig,
    inner: Mutex<Inner>,
    state: StateDir,
    pub started: Instant,
    pub metrics: Metrics,
    pub events: events::EventHub,
}

impl Agent {
    /// Load (adopting pinned maps and links), restore the persisted policy and reconcile once.
    pub fn start(config: AgentConfig) -> Result<Arc<Agent>> {
        let pins = PinLayout::new(&config.bpffs);
        let dp = Datapath::load(Some(pins.clone())).with_context(|| {
            format!(
                "loading the datapath (pinning under {})",
                pins.root.display()
            )
        })?;
        let state = StateDir {
            dir: config.state_dir.clone(),
        };
        let mut docs = Documents {
            cli: state
                .load_applied()
                .context("restoring the applied policy")?,
            ..Documents::default()
        };
        let metrics = Metrics::new();
        if let Some(dir) = &config.policy_dir {
            let (files, fingerprint) = state::read_policy_dir(dir)?;
            docs.dir_fingerprint = fingerprint;
            match state::parse_policy_dir(&files) {
                Ok(parsed) => docs.dir = parsed,
                // Not fatal: a crash loop would help nobody. The pinned datapath keeps the last
                // policy until the directory is fixed.
                Err(e) => {
                    metrics.apply_result(false);
                    warn!(dir = %dir.display(), "policy directory rejected, nothing from it is applied:\n{e}");
                }
            }
        }
        let installed = state.load_installed();
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
        };
        let agent = Arc::new(Agent {
            config,
            inner: Mutex::new(inner),
            state,
            started: Instant::now(),
            metrics,
            events: events::EventHub::new(),
        });
        agent.reconcile()?;
        // An upgrade across a layout change: our programs now hold the links (moved from the
        // old version's directory and swapped), so the old version's maps can go.
        for old in crate::datapath::remove_old_layouts(&pins).context("removing old layout pins")? {
            info!(dir = %old.display(), "removed the pins of an older layout version");
        }
        Ok(agent)
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
            match state::read_policy_dir(dir) {
                Ok((files, fp)) if fp != inner.docs.dir_fingerprint => {
                    match state::parse_policy_dir(&files) {
                        Ok(parsed) => {
                            inner.docs.dir = parsed;
                            inner.docs.dir_fingerprint = fp;
                            info!(dir = %dir.display(), "policy directory changed");
                        }
                        Err(e) => {
                            inner.docs.dir_fingerprint = fp;
                            self.metrics.apply_result(false);
                            warn!(dir = %dir.display(), "policy directory rejected, the policy in force stays:\n{e}");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => warn!("{e:#}"),
            }
        }
        let cli = inner.docs.cli.clone();
        let installed = self.install(&mut inner, &cli, false);
        self.reconcile_interfaces(&mut inner);
        match installed {
            Ok(_) => Ok(()),
            Err(e) => {
                warn!("{e:#}");
                Err(e)
            }
        }
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
                inner.attach_errors.remove(uplink);
            } else if !inner.attach_errors.contains_key(uplink) {
                warn!(interface = %uplink, "the uplink interface does not exist");
                inner
                    .attach_errors
                    .insert(uplink.clone(), "no such interface".into());
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
    /// installed. Nothing changes on error. Returns the generation in force.
    fn install(&self, inner: &mut Inner, cli: &PolicySet, force: bool) -> Result<u64> {
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
            return Ok(active.generation);
        }
        let compiled = compile(&set, &ctx);
        let generation = match inner.dp.install(&compiled, &endpoints) {
            Ok(g) => g,
            Err(e) => {
                self.metrics.apply_result(false);
                return Err(anyhow!(
                    "policy not applied, the policy in force stays: {e}"
                ));
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
        inner.installed = Installed { generation, digest };
        inner.in_force = set;
        inner.compiled = compiled;
        inner.compiled_digest = digest;
        inner.ctx = ctx;
        if let Err(e) = self.state.save_installed(&inner.installed) {
            warn!("{e:#}");
        }
        Ok(generation)
    }

    /// `policy apply`: all documents or none.
    pub fn apply(&self, source: &str, yaml: &str, dry_run: bool) -> Result<ApplyResult> {
        let docs = parse_documents(source, yaml).map_err(|e| {
            self.metrics.apply_result(false);
            anyhow!("{e}")
        })?;
        let mut inner = self.lock();
        for d in &docs {
            if let Some(file) = inner.docs.dir_file(d.kind(), d.name()) {
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
        let generation = self.install(&mut inner, &cli, false)?;
        inner.docs.cli = cli;
        self.state.save_applied(&inner.docs.cli)?;
        Ok(ApplyResult {
            applied,
            warnings,
            generation,
        })
    }

    /// `policy delete NAME`.
    pub fn delete(&self, name: &str, kind: Option<&str>) -> Result<ApplyResult> {
        let mut inner = self.lock();
        for k in [
            crate::policy::KIND_FLOW_POLICY,
            crate::policy::KIND_WORKLOAD,
        ] {
            if kind.is_some_and(|want| !want.eq_ignore_ascii_case(k)) {
                continue;
            }
            if let Some(file) = inner.docs.dir_file(k, name) {
                bail!(
                    "{k} {name:?} is defined by {} in the policy directory; remove it there",
                    file.display()
                );
            }
        }
        let mut cli = inner.docs.cli.clone();
        let removed = match kind {
            Some(k) => {
                let k = if k.eq_ignore_ascii_case("workload") {
                    crate::policy::KIND_WORKLOAD
                } else {
                    crate::policy::KIND_FLOW_POLICY
                };
                cli.remove_kind(k, name).into_iter().collect()
            }
            None => cli.remove(name),
        };
        if removed.is_empty() {
            bail!("no document named {name:?}");
        }
        let generation = self.install(&mut inner, &cli, false)?;
        inner.docs.cli = cli;
        self.state.save_applied(&inner.docs.cli)?;
        Ok(ApplyResult {
            applied: removed
                .iter()
                .map(|d| Applied {
                    kind: d.kind().to_string(),
                    name: d.name().to_string(),
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
                    Role::Pod if self.config.xdp_pods => vec![
                        "tcx/ingress:from_pod".into(),
                        "tcx/egress:to_pod".into(),
                        "xdp:xdp_pod".into(),
                    ],
                    Role::Pod => vec!["tcx/ingress:from_pod".into(), "tcx/egress:to_pod".into()],
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
        })
    }

    /// Resolve a workload name or an address.
    pub fn resolve(&self, inner: &Inner, what: &str) -> Result<IpAddr> {
        resolve_endpoint(&inner.in_force, what)
    }
}

/// A workload name (its first address) or an address.
pub fn resolve_endpoint(set: &PolicySet, what: &str) -> Result<IpAddr> {
    if let Ok(a) = what.parse() {
        return Ok(a);
    }
    set.workloads
        .get(what)
        .and_then(|w| w.addresses.first().copied())
        .ok_or_else(|| anyhow!("{what:?} is neither an address nor a known workload"))
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
