//! Installing the policy in force: merge the documents, read the node, compile, write the next
//! generation (all or nothing) and keep what was installed. Run by the owner only.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::Arc,
};

use anyhow::{anyhow, bail, Result};
use tracing::{info, warn};

use super::{
    endpoints::{self, Registry},
    health::Health,
    state::{self, DirSnapshot, Documents, Installed, StateDir},
    Agent,
};
use crate::{
    api::MapUsage,
    datapath::{Datapath, DatapathError},
    metrics::Metrics,
    node,
    policy::{compile, compile::RuleInfo, Compiled, NodeContext, PolicySet},
};

/// The datapath and the documents, and what is installed from them.
pub struct Installer {
    pub dp: Datapath,
    pub docs: Documents,
    /// The set in force and what it compiled to.
    pub in_force: Arc<PolicySet>,
    pub compiled: Arc<Compiled>,
    /// The input digest `compiled` was compiled from.
    pub compiled_digest: u64,
    pub ctx: Arc<NodeContext>,
    pub installed: Installed,
    /// Why the agent is not ready, besides attach errors.
    pub health: Health,
    pub state: StateDir,
    /// Pod interfaces registered by the CNI plugin.
    pub registry: Registry,
}

impl Installer {
    /// The datapath with the documents and the last install restored from the state directory
    /// and the policy directory (nothing compiled yet: the first reconcile does it).
    pub fn restore(dp: Datapath, config: &super::AgentConfig, metrics: &Metrics) -> Installer {
        let state = StateDir::new(config.state_dir.clone());
        let mut health = Health::default();
        let (mut docs, installed) =
            super::startup::restore(config.policy_dir.as_deref(), &state, metrics, &mut health);
        docs.service_labels.clone_from(&config.service_label);
        // Registrations of pods whose interface is gone by now are dropped at the first
        // reconcile; a corrupt file is quarantined (those pods are `unknown` until their Pod
        // documents or routes identify them).
        let registry = match state.load_endpoints() {
            super::state::Loaded::Valid(v) => Registry::from_vec(v),
            super::state::Loaded::Missing => Registry::default(),
            super::state::Loaded::Quarantined(q) => {
                warn!("CNI registrations not restored: {q:?}");
                Registry::default()
            }
        };
        Installer {
            dp,
            docs,
            in_force: Arc::default(),
            compiled: Arc::default(),
            compiled_digest: 0,
            ctx: Arc::default(),
            installed,
            health,
            state,
            registry,
        }
    }

    /// Compile `cli` merged with the policy directory and the cluster's documents, and install
    /// it if it differs from what is installed. Nothing changes on error, nor while installs are
    /// held (`from_cli`: an apply or delete, which may lift the hold of lost CLI documents).
    /// Returns the generation in force.
    pub fn install(
        &mut self,
        agent: &Agent,
        cli: &PolicySet,
        pod_ifaces: &HashMap<String, u32>,
        from_cli: bool,
    ) -> Result<u64> {
        if let Some(why) = self.health.hold(from_cli) {
            if from_cli {
                agent.metrics.apply_result(false);
                bail!("{why}");
            }
            return Ok(self.dp.config()?.generation);
        }
        let mut t = Phases::start();
        let mut set = self.docs.merged(cli).map_err(|e| anyhow!("{e}"))?;
        t.lap("merge");
        let inputs = self.node_inputs(&mut set, pod_ifaces)?;
        t.lap("node");
        let (ctx, endpoints) = (inputs.ctx.clone(), inputs.endpoints.clone());
        let compile =
            |set: &PolicySet, ctx: &NodeContext| inputs.compile(set, ctx, &agent.config.pod_cidrs);
        // Compiling is a pure function of these inputs: skip it when nothing changed.
        let digest = inputs.digest(&set);
        t.lap("digest");
        let active = self.dp.config()?;
        if digest == self.installed.digest
            && active.generation == self.installed.generation
            && active.generation > 0
        {
            if self.compiled_digest != digest {
                // First reconcile after a restart: the datapath already holds this policy;
                // compile it only for the names of flows and metrics.
                self.compiled = Arc::new(compile(&set, &ctx));
                self.compiled_digest = digest;
            }
            self.in_force = Arc::new(set);
            self.ctx = Arc::new(ctx);
            self.save_dir_snapshot(agent);
            return Ok(active.generation);
        }
        let compiled = compile(&set, &ctx);
        t.lap("compile");
        let generation = self.write_generation(agent, &compiled, &endpoints)?;
        t.lap("write");
        self.installed = Installed { generation, digest };
        self.in_force = Arc::new(set);
        self.compiled = Arc::new(compiled);
        self.compiled_digest = digest;
        self.ctx = Arc::new(ctx);
        self.save_installed();
        self.save_dir_snapshot(agent);
        t.lap("save");
        info!(generation, phases = %t, "install timings (ms)");
        Ok(generation)
    }

    /// Persist which generation is installed (a write error is warned about: the datapath holds
    /// the policy either way); a state file written again is no longer quarantined.
    fn save_installed(&mut self) {
        match self.state.save_installed(&self.installed) {
            Ok(()) => {
                let file = self.state.dir.join(StateDir::INSTALLED);
                self.health.quarantined.remove(&file.display().to_string());
            }
            Err(e) => warn!("{e:#}"),
        }
    }

    /// What compiling depends on besides the documents: the node's addresses and routes, the
    /// pod interfaces and the CNI registrations (whose addresses join their pod's document in
    /// `set`).
    fn node_inputs(
        &self,
        set: &mut PolicySet,
        pod_ifaces: &HashMap<String, u32>,
    ) -> Result<NodeInputs> {
        let unidentified = self.registry.apply_to(set);
        let host = node::host_addresses()?;
        let routes = node::host_routes()?;
        let (mut endpoints, mut local) = state::local_endpoints(set, &routes, pod_ifaces);
        let attached: BTreeSet<u32> = pod_ifaces.values().copied().collect();
        for (ifindex, addr) in self.registry.endpoints() {
            if attached.contains(&ifindex) {
                endpoints.insert((ifindex, addr));
                if !unidentified.contains(&addr) {
                    local.insert(addr);
                }
            }
        }
        Ok(NodeInputs {
            ctx: state::node_context(host, local),
            endpoints,
            unidentified,
        })
    }

    /// Write `compiled` as the next generation (all or nothing), counting the result; the rule
    /// counters follow their rules.
    fn write_generation(
        &mut self,
        agent: &Agent,
        compiled: &Compiled,
        endpoints: &std::collections::BTreeSet<(u32, std::net::IpAddr)>,
    ) -> Result<u64> {
        let generation = match self.dp.install(compiled, endpoints) {
            Ok(g) => g,
            Err(e) => {
                agent.metrics.apply_result(false);
                if let DatapathError::Capacity { map, .. } = &e {
                    agent.metrics.map_full(map);
                }
                bail!("policy not applied, the policy in force stays: {e}");
            }
        };
        agent.metrics.apply_result(true);
        let moves = rule_counter_moves(&self.compiled.rules, &compiled.rules);
        if let Err(e) = self.dp.move_rule_counters(&moves) {
            warn!("per-rule counters not rebased after the policy change: {e}");
        }
        info!(
            generation,
            rules = compiled.rules.len(),
            entries = compiled.policy.len(),
            "policy installed"
        );
        Ok(generation)
    }

    /// Keep the policy directory's files, now in force, as its last good copy.
    fn save_dir_snapshot(&mut self, agent: &Agent) {
        if agent.config.policy_dir.is_none() || self.docs.dir_saved {
            return;
        }
        let snapshot = DirSnapshot {
            files: self.docs.dir_files.clone(),
        };
        match self.state.save_dir_snapshot(&snapshot) {
            Ok(()) => {
                self.docs.dir_saved = true;
                let file = self.state.dir.join(StateDir::POLICY_DIR);
                self.health.quarantined.remove(&file.display().to_string());
            }
            Err(e) => warn!("saving the last good copy of the policy directory: {e:#}"),
        }
    }

    /// Entries and capacity of the policy maps (both slots).
    pub fn map_usage(&self) -> Vec<MapUsage> {
        use enforcer_common::maps::names;
        let sized = self.dp.capacities().max_entries();
        [
            names::IDENTITIES,
            names::CIDR_IDENTITIES,
            names::POLICY,
            names::ENDPOINTS,
        ]
        .into_iter()
        .map(|map| MapUsage {
            map: map.into(),
            entries: self.dp.map_entries(map),
            capacity: sized
                .iter()
                .find(|(name, _)| *name == map)
                .map_or(0, |(_, n)| *n),
        })
        .collect()
    }
}

/// Wall-clock milliseconds of each phase of an install, for the log (where an apply's time
/// goes: see the `netpol` benchmark).
struct Phases {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.laps
            .push((phase, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, ms)) in self.laps.iter().enumerate() {
            write!(f, "{}{phase}={ms:.1}", if i > 0 { " " } else { "" })?;
        }
        Ok(())
    }
}

/// Where each rule's counter must come from after an install: `(new id, old id)` for every rule
/// whose id now names a different `(policy, rule, verdict)` than before; the old id is the one
/// the same rule had (its count carries over), `None` for a new rule (it starts at 0). Rule ids
/// are assigned in policy order, so adding or removing one policy shifts the ids of the rules
/// after it; without this, their series would jump to another rule's count.
fn rule_counter_moves(old: &[RuleInfo], new: &[RuleInfo]) -> Vec<(u32, Option<u32>)> {
    use std::collections::HashMap;
    let label = |r: &RuleInfo| r.rule.clone();
    let by_id: HashMap<u32, _> = old.iter().map(|r| (r.id, label(r))).collect();
    let by_label: HashMap<_, u32> = old.iter().map(|r| (label(r), r.id)).collect();
    new.iter()
        .filter(|r| by_id.get(&r.id) != Some(&label(r)))
        .map(|r| (r.id, by_label.get(&label(r)).copied()))
        .collect()
}

/// The node's side of compiling (see `Installer::node_inputs`).
struct NodeInputs {
    ctx: NodeContext,
    endpoints: BTreeSet<(u32, IpAddr)>,
    /// Registered addresses whose pod is in no document (identity `unknown`).
    unidentified: BTreeSet<IpAddr>,
}

impl NodeInputs {
    /// Compile, then make the addresses the agent cannot enforce on `unknown`.
    fn compile(&self, set: &PolicySet, ctx: &NodeContext, pod_cidrs: &[ipnet::IpNet]) -> Compiled {
        let mut compiled = compile(set, ctx);
        endpoints::mask_unknown(
            &mut compiled,
            pod_cidrs,
            &ctx.local_addresses,
            &self.unidentified,
        );
        compiled
    }

    fn digest(&self, set: &PolicySet) -> u64 {
        let digest = state::digest(set, &self.ctx, &self.endpoints);
        if self.unidentified.is_empty() {
            return digest;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (digest, &self.unidentified).hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::rule_counter_moves;
    use crate::policy::{compile, parse::parse_documents, Compiled, NodeContext, PolicySet};

    const POLICY: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}]
";

    #[test]
    fn rule_counters_follow_their_rule_across_policy_changes() {
        let set = |yaml: &str| {
            let docs = parse_documents("p.yaml", &format!("{POLICY}---\n{yaml}")).expect("valid");
            compile(
                &PolicySet::from_documents(docs).expect("set"),
                &NodeContext::default(),
            )
        };
        let before = set("apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: zz}\nspec: {service: web, ingress: []}\n");
        // A policy that sorts first shifts every rule id.
        let after = set("apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: aa}\nspec: {service: web, egressDeny: [{}]}\n");
        let moves = rule_counter_moves(&before.rules, &after.rules);
        let id = |c: &Compiled, policy: &str, rule: &str| {
            c.rules
                .iter()
                .find(|r| r.rule.policy_label() == policy && r.rule.rule_label() == rule)
                .map_or_else(|| panic!("no {policy} {rule}"), |r| r.id)
        };
        let source_of = |policy: &str, rule: &str| {
            let to = id(&after, policy, rule);
            moves.iter().find(|(t, _)| *t == to).map(|(_, from)| *from)
        };
        assert_eq!(
            source_of("api-ingress", "ingress[0]"),
            Some(Some(id(&before, "api-ingress", "ingress[0]")))
        );
        assert_eq!(
            source_of("default-deny", "api/ingress"),
            Some(Some(id(&before, "default-deny", "api/ingress")))
        );
        assert_eq!(
            source_of("aa", "egressDeny[0]"),
            Some(None),
            "a new rule starts at 0"
        );
        assert!(rule_counter_moves(&after.rules, &after.rules).is_empty());
    }
}
