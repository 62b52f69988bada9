//! Prometheus metrics (names and labels per docs/metrics.md). Packet counters live in per-CPU BPF
//! maps and are summed at scrape time by the [`Collector`]: no per-packet work in userspace.

mod collector;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

pub use self::collector::{Collector, Source};
use crate::{api::MapUsage, policy::compile::RuleInfo};

/// One rule in force, with every label its metrics carry (rendered from the compiler's
/// [`RuleInfo`] once per install, not per scrape).
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub id: u32,
    pub policy: String,
    pub rule: String,
    pub verdict: &'static str,
    /// The service the rule protects (`*` = every service).
    pub service: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The rule's peers, comma-separated (`*` = any peer).
    pub peers: String,
    pub rate_limited: bool,
}

/// The rows of the rules in force.
pub fn rule_rows(rules: &[RuleInfo]) -> Vec<RuleRow> {
    rules
        .iter()
        .map(|r| RuleRow {
            id: r.id,
            policy: r.rule.policy_label(),
            rule: r.rule.rule_label(),
            verdict: r.rule.verdict_label(),
            service: r.labels.service.clone(),
            direction: r.rule.direction().as_str(),
            peers: r.labels.peers.clone(),
            rate_limited: r.rate_limit.is_some(),
        })
        .collect()
}

/// The agent's state as probes and scrapes see it, published after every change.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The generation in force in the datapath.
    pub generation: u64,
    /// Why the agent is not ready (empty: ready).
    pub reasons: Vec<String>,
    /// The rules of the generation in force.
    pub rules: Arc<Vec<RuleRow>>,
    /// Entries of the policy maps, counted after the last install.
    pub maps: Arc<Vec<MapUsage>>,
    pub attached: usize,
    /// Whether the policy directory parses (`None`: no directory configured).
    pub policy_dir_valid: Option<bool>,
}

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
    /// The flow log (`--flow-log`).
    pub flowlog: Arc<crate::flowlog::FlowLogMetrics>,
    /// The conntrack sweep.
    pub conntrack: ConntrackMetrics,
    /// What the CNI-bypass check found at startup.
    pub bypass: crate::node::bypass::Findings,
}

/// What the conntrack sweeps found (`datapath::Swept`), for the scrape.
#[derive(Default)]
pub struct ConntrackMetrics {
    pub sweeps: AtomicU64,
    pub expired: AtomicU64,
    /// Entries left after the last sweep.
    pub entries: AtomicU64,
    pub capacity: AtomicU64,
}

impl ConntrackMetrics {
    /// Record one sweep.
    pub fn swept(&self, s: &crate::datapath::Swept) {
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.expired.fetch_add(s.expired, Ordering::Relaxed);
        self.entries.store(s.entries, Ordering::Relaxed);
        self.capacity
            .store(u64::from(s.capacity), Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, parse::parse_documents, NodeContext, PolicySet};

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
        let rows = rule_rows(&compile(&set, &NodeContext::default()).rules);
        let find = |rule: &str| {
            rows.iter()
                .find(|r| r.rule == rule)
                .unwrap_or_else(|| panic!("no rule {rule} in {rows:?}"))
        };
        let labels = |r: &RuleRow| {
            (
                r.policy.clone(),
                r.verdict,
                r.service.clone(),
                r.direction,
                r.peers.clone(),
                r.rate_limited,
            )
        };
        assert_eq!(
            labels(find("ingress[0]")),
            (
                "api-ingress".into(),
                "allow",
                "api".into(),
                "ingress",
                "web,192.0.2.0/24 except 192.0.2.128/25".into(),
                true
            )
        );
        assert_eq!(find("ingressDeny[0]").peers, "web");
        assert_eq!(find("ingressDeny[0]").verdict, "deny");
        assert_eq!(find("egressDeny[0]").direction, "egress");
        assert_eq!(find("egressDeny[0]").peers, "*");
        assert_eq!(
            labels(find("api/ingress")),
            (
                "default-deny".into(),
                "deny",
                "api".into(),
                "ingress",
                "*".into(),
                false
            )
        );
    }

    #[test]
    fn drop_reasons_cover_the_contract() {
        use enforcer_common::{Reason, DROP_LABELS};
        assert_eq!(Reason::Policy.drop_label(), "policy_denied");
        assert_eq!(Reason::DefaultDeny.drop_label(), "policy_denied");
        assert_eq!(Reason::RateLimited.drop_label(), "rate_limited");
        assert_eq!(Reason::Spoofed.drop_label(), "spoofed");
        assert_eq!(Reason::Malformed.drop_label(), "malformed");
        assert_eq!(Reason::UnknownEndpoint.drop_label(), "unknown_endpoint");
        assert_eq!(Reason::NotIsolated.drop_label(), "other");
        assert_eq!(
            DROP_LABELS,
            [
                "policy_denied",
                "rate_limited",
                "spoofed",
                "malformed",
                "unknown_endpoint"
            ]
        );
    }
}
