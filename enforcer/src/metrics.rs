//! Prometheus metrics (names and labels: docs/design.md, "Metrics"). Packet counters live in
//! per-CPU BPF maps and are summed at scrape time: no per-packet work in userspace.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use anyhow::Result;
use enforcer_common::{Direction, Verdict, DROP_LABELS};
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    agent::{counters::CounterMaps, view::View},
    datapath::Datapath,
    policy::{compile::RuleInfo, Peer, PolicySet, Section},
};

/// Default port of `/metrics`, `/healthz` and `/readyz`, bound on 127.0.0.1 unless configured.
/// Chosen clear of Cilium (agent 9962, operator 9963, envoy 9964, hubble 9965, hubble-relay
/// 9966), Calico (felix 9091, typha 9093, kube-controllers 9094) and node-exporter (9100), which
/// all run with hostNetwork on the same nodes.
pub const DEFAULT_METRICS_PORT: u16 = 9967;

/// Counters kept by the agent itself.
#[derive(Default)]
pub struct Metrics {
    apply_success: AtomicU64,
    apply_failure: AtomicU64,
    /// Corrupt state files quarantined.
    pub quarantined: AtomicU64,
    /// Installs refused because a map would overflow, by map.
    map_full: Mutex<BTreeMap<&'static str, u64>>,
    /// The Kubernetes watches (`--kubernetes`).
    pub kube: crate::kube::metrics::KubeMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply_result(&self, ok: bool) {
        let c = if ok {
            &self.apply_success
        } else {
            &self.apply_failure
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An install refused because `map` would overflow.
    pub fn map_full(&self, map: &'static str) {
        *self
            .map_full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(map)
            .or_default() += 1;
    }

    fn map_full_counts(&self) -> Vec<(&'static str, u64)> {
        self.map_full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(m, n)| (*m, *n))
            .collect()
    }
}

/// What a scrape reads: the published view, the counter maps and the agent's own counters.
pub struct ScrapeInput<'a> {
    pub view: &'a View,
    pub maps: &'a CounterMaps,
    pub metrics: &'a Metrics,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(registry: &Registry, name: &str, help: &str, value: u64) -> Result<()> {
    let c = prometheus::IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    c.inc_by(value);
    Ok(())
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Render the text exposition format. The work is bounded by the number of rules in force: one
/// map read per counter, no walk of the policy maps, no lock of the agent.
pub fn render(input: &ScrapeInput<'_>) -> Result<String> {
    let registry = Registry::new();
    let packets = counter_vec(
        &registry,
        "enforcer_packets_total",
        "Packets judged by the datapath, by policy direction and verdict.",
        &["direction", "verdict"],
    )?;
    let drops = counter_vec(
        &registry,
        "enforcer_drops_total",
        "Packets dropped by the datapath, by policy direction and reason.",
        &["direction", "reason"],
    )?;
    for (c, n) in input.maps.packets() {
        if n == 0 {
            continue;
        }
        let d = c.direction.as_str();
        packets
            .with_label_values(&[d, c.verdict.as_str()])
            .inc_by(n);
        if c.verdict == Verdict::Deny {
            drops
                .with_label_values(&[d, c.reason.drop_label()])
                .inc_by(n);
        }
    }
    // Make the main series exist from the start, so rate() and alerts see them.
    for d in Direction::ALL {
        for v in Verdict::ALL {
            packets
                .with_label_values(&[d.as_str(), v.as_str()])
                .inc_by(0);
        }
        for r in DROP_LABELS {
            drops.with_label_values(&[d.as_str(), r]).inc_by(0);
        }
    }
    register_rules(&registry, input)?;
    register_maps(&registry, input)?;
    register_agent(&registry, input)?;
    register_health(&registry, input)?;
    input.metrics.kube.register(&registry)?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// Per-rule counters and metadata.
fn register_rules(registry: &Registry, input: &ScrapeInput<'_>) -> Result<()> {
    let rules = counter_vec(
        registry,
        "enforcer_policy_rule_packets_total",
        "Packets decided by each policy rule.",
        &["policy", "rule", "verdict"],
    )?;
    let info = gauge_vec(
        registry,
        "enforcer_policy_rule_info",
        "Each rule in force (always 1): the service it protects, the direction, its peers and \
         whether it is rate limited; join with enforcer_policy_rule_packets_total on policy, rule.",
        &[
            "policy",
            "rule",
            "service",
            "direction",
            "peers",
            "rate_limited",
        ],
    )?;
    for r in input.view.rules.iter() {
        rules
            .with_label_values(&[&r.policy, &r.rule, r.verdict])
            .inc_by(input.maps.rule_packets(r.id));
        let rate_limited = if r.rate_limited { "true" } else { "false" };
        info.with_label_values(&[
            &r.policy,
            &r.rule,
            &r.labels.service,
            r.labels.direction,
            &r.labels.peers,
            rate_limited,
        ])
        .set(1);
    }
    Ok(())
}

/// Entries and capacity of the BPF maps; installs refused for a full map.
fn register_maps(registry: &Registry, input: &ScrapeInput<'_>) -> Result<()> {
    let entries = gauge_vec(
        registry,
        "enforcer_bpf_map_entries",
        "Entries in a BPF map (both policy slots), counted after the last install.",
        &["map"],
    )?;
    let capacity = gauge_vec(
        registry,
        "enforcer_bpf_map_capacity",
        "Capacity of a BPF map.",
        &["map"],
    )?;
    for u in input.view.maps.iter() {
        entries.with_label_values(&[&u.map]).set(int(u.entries));
        capacity
            .with_label_values(&[&u.map])
            .set(i64::from(u.capacity));
    }
    // Per-source rate-limit buckets (an LRU: when full, evicted sources restart with a full burst).
    let map = enforcer_common::maps::names::RATE_BUCKETS;
    entries
        .with_label_values(&[map])
        .set(int(input.maps.rate_buckets()));
    capacity
        .with_label_values(&[map])
        .set(i64::from(enforcer_common::ratelimit::RATE_BUCKET_CAPACITY));
    let full = counter_vec(
        registry,
        "enforcer_bpf_map_full_total",
        "Policy installs refused because a map would overflow (nothing was applied).",
        &["map"],
    )?;
    for (map, n) in input.metrics.map_full_counts() {
        full.with_label_values(&[map]).inc_by(n);
    }
    Ok(())
}

/// Generation, applies, events, interfaces, build info.
fn register_agent(registry: &Registry, input: &ScrapeInput<'_>) -> Result<()> {
    gauge(
        registry,
        "enforcer_policy_generation",
        "The policy generation in force.",
    )?
    .set(int(input.view.generation));
    let apply = counter_vec(
        registry,
        "enforcer_policy_apply_total",
        "Policy applies, by result.",
        &["result"],
    )?;
    apply
        .with_label_values(&["success"])
        .inc_by(input.metrics.apply_success.load(Ordering::Relaxed));
    apply
        .with_label_values(&["failure"])
        .inc_by(input.metrics.apply_failure.load(Ordering::Relaxed));
    counter(
        registry,
        "enforcer_events_lost_total",
        "Flow events lost because the ring buffer was full.",
        input.maps.events_lost(),
    )?;
    counter(
        registry,
        "enforcer_events_sampled_out_total",
        "Drop events not reported because of sampling (rate-limit drops: one event per bucket \
         and interval); the packets are still counted.",
        input.maps.events_sampled_out(),
    )?;
    gauge(
        registry,
        "enforcer_attached_interfaces",
        "Interfaces the datapath is attached to.",
    )?
    .set(int(input.view.attached));
    gauge_vec(
        registry,
        "enforcer_build_info",
        "Build information (always 1).",
        &["version"],
    )?
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    Ok(())
}

/// Readiness, the policy directory and quarantined state files.
fn register_health(registry: &Registry, input: &ScrapeInput<'_>) -> Result<()> {
    gauge(
        registry,
        "enforcer_ready",
        "1 when the agent is ready (/readyz answers 200), 0 otherwise (enforcer status says why).",
    )?
    .set(i64::from(input.view.reasons.is_empty()));
    if let Some(valid) = input.view.policy_dir_valid {
        gauge(
            registry,
            "enforcer_policy_dir_valid",
            "1 when the policy directory parses, 0 when it is rejected (the last good policy \
             stays in force).",
        )?
        .set(i64::from(valid));
    }
    counter(
        registry,
        "enforcer_state_quarantined_total",
        "Corrupt state files moved aside at startup (the last good policy stays in force).",
        input.metrics.quarantined.load(Ordering::Relaxed),
    )
}

/// Where each rule's counter must come from after an install: `(new id, old id)` for every rule
/// whose id now names a different `(policy, rule, verdict)` than before; the old id is the one
/// the same rule had (its count carries over), `None` for a new rule (it starts at 0). Rule ids
/// are assigned in policy order, so adding or removing one policy shifts the ids of the rules
/// after it; without this, their series would jump to another rule's count.
pub fn rule_counter_moves(old: &[RuleInfo], new: &[RuleInfo]) -> Vec<(u32, Option<u32>)> {
    use std::collections::HashMap;
    let label = |r: &RuleInfo| (r.policy_name().to_string(), r.rule.clone(), r.verdict);
    let by_id: HashMap<u32, _> = old.iter().map(|r| (r.id, label(r))).collect();
    let by_label: HashMap<_, u32> = old.iter().map(|r| (label(r), r.id)).collect();
    new.iter()
        .filter(|r| by_id.get(&r.id) != Some(&label(r)))
        .map(|r| (r.id, by_label.get(&label(r)).copied()))
        .collect()
}

/// Apply [`rule_counter_moves`] to the `RULE_COUNTERS` map, right after the new generation is
/// in force. Best effort: a failure leaves the counters as they were (and is logged).
pub fn rebase_rule_counters(dp: &mut Datapath, old: &[RuleInfo], new: &[RuleInfo]) {
    use aya::maps::{PerCpuArray, PerCpuValues};
    let moves = rule_counter_moves(old, new);
    if moves.is_empty() {
        return;
    }
    let result = (|| -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let map = dp
            .ebpf_mut()
            .map_mut(enforcer_common::maps::names::RULE_COUNTERS)
            .ok_or_else(|| anyhow::anyhow!("no RULE_COUNTERS map"))?;
        let mut counters = PerCpuArray::<_, u64>::try_from(map)?;
        // Read every source first: a rule's old id may be another rule's new id.
        let values: Vec<(u32, Vec<u64>)> = moves
            .iter()
            .map(|(to, from)| {
                let v = from
                    .and_then(|f| counters.get(&f, 0).ok())
                    .map_or_else(|| vec![0; cpus], |v| v.iter().copied().collect());
                (*to, v)
            })
            .collect();
        for (to, v) in values {
            counters.set(to, PerCpuValues::try_from(v)?, 0)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("per-rule counters not rebased after the policy change: {e:#}");
    }
}

/// What a rule protects, besides its policy and rule labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLabels {
    /// The service the rule protects (`*` = every service).
    pub service: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The rule's peers, comma-separated (`*` = any peer).
    pub peers: String,
}

/// Labels of a rule, looked up in the policy set in force.
pub fn rule_info(r: &RuleInfo, set: &PolicySet) -> RuleLabels {
    let Some(name) = &r.policy else {
        // A default deny: its rule is `service/direction`.
        let (service, direction) = r.rule.rsplit_once('/').unwrap_or((r.rule.as_str(), ""));
        return RuleLabels {
            service: r.service.clone().unwrap_or_else(|| service.to_string()),
            direction: if direction == "egress" {
                "egress"
            } else {
                "ingress"
            },
            peers: "*".into(),
        };
    };
    let policy = set.policies.values().find(|p| p.key().to_string() == *name);
    let rule = policy.and_then(|p| {
        p.rules()
            .find(|(section, i, _)| format!("{}[{i}]", section.key()) == r.rule)
    });
    let egress = match rule {
        Some((section, _, _)) => matches!(section, Section::Egress | Section::EgressDeny),
        None => r.rule.starts_with("egress"),
    };
    let direction = if egress { "egress" } else { "ingress" };
    let peers = rule.map_or_else(String::new, |(_, _, rule)| {
        if rule.peers.is_empty() {
            "*".to_string()
        } else {
            rule.peers
                .iter()
                .map(peer_label)
                .collect::<Vec<_>>()
                .join(",")
        }
    });
    RuleLabels {
        service: policy.map(|p| p.service.clone()).unwrap_or_default(),
        direction,
        peers,
    }
}

fn peer_label(p: &Peer) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, parse::parse_documents, Compiled, NodeContext};

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
    - from: [{service: web}, {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}]
      ports: [{protocol: TCP, port: 8080}]
      rateLimit: {packetsPerSecond: 100}
  ingressDeny:
    - from: [{service: web}]
      ports: [{protocol: UDP, port: 5353}]
  egressDeny:
    - ports: [{protocol: UDP, port: 53}]
";

    #[test]
    fn rule_labels_name_service_direction_and_peers() {
        let docs = parse_documents("p.yaml", POLICY).expect("valid");
        let set = PolicySet::from_documents(docs).expect("set");
        let compiled = compile(&set, &NodeContext::default());
        let labels: Vec<(String, String, RuleLabels)> = compiled
            .rules
            .iter()
            .map(|r| (r.rule.clone(), r.verdict.to_string(), rule_info(r, &set)))
            .collect();
        let find = |rule: &str| {
            labels
                .iter()
                .find(|(r, _, _)| r == rule)
                .map_or_else(|| panic!("no rule {rule} in {labels:?}"), |(_, _, l)| l)
        };
        assert_eq!(
            find("ingress[0]"),
            &RuleLabels {
                service: "api".into(),
                direction: "ingress",
                peers: "web,192.0.2.0/24 except 192.0.2.128/25".into(),
            }
        );
        assert_eq!(find("ingressDeny[0]").peers, "web");
        assert_eq!(find("egressDeny[0]").direction, "egress");
        assert_eq!(find("egressDeny[0]").peers, "*");
        assert_eq!(
            find("api/ingress"),
            &RuleLabels {
                service: "api".into(),
                direction: "ingress",
                peers: "*".into(),
            }
        );
    }

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
                .find(|r| r.policy_name() == policy && r.rule == rule)
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

    #[test]
    fn drop_reasons_cover_the_contract() {
        use enforcer_common::Reason;
        assert_eq!(Reason::Policy.drop_label(), "policy_denied");
        assert_eq!(Reason::DefaultDeny.drop_label(), "policy_denied");
        assert_eq!(Reason::RateLimited.drop_label(), "rate_limited");
        assert_eq!(Reason::Spoofed.drop_label(), "spoofed");
        assert_eq!(Reason::Malformed.drop_label(), "malformed");
        assert_eq!(Reason::NotIsolated.drop_label(), "other");
        assert_eq!(
            DROP_LABELS,
            ["policy_denied", "rate_limited", "spoofed", "malformed"]
        );
    }
}
