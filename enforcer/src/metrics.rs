//! Prometheus metrics (names and labels per DESIGN.md). Packet counters live in per-CPU BPF maps
//! and are summed at scrape time: no per-packet work in userspace.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use enforcer_common::{
    direction_name, verdict_name, REASON_DEFAULT_DENY, REASON_MALFORMED, REASON_POLICY,
    REASON_RATE_LIMITED, REASON_SPOOFED, VERDICT_DENY,
};
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::datapath::Datapath;

/// Counters kept by the agent itself.
#[derive(Default)]
pub struct Metrics {
    apply_success: AtomicU64,
    apply_failure: AtomicU64,
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
}

/// The drop reason label of a datapath reason code.
pub fn drop_reason(reason: u8) -> &'static str {
    match reason {
        REASON_POLICY | REASON_DEFAULT_DENY => "policy_denied",
        REASON_RATE_LIMITED => "rate_limited",
        REASON_SPOOFED => "spoofed",
        REASON_MALFORMED => "malformed",
        _ => "other",
    }
}

/// What a scrape needs besides the datapath.
pub struct ScrapeInput<'a> {
    pub dp: &'a Datapath,
    pub rules: &'a [crate::policy::compile::RuleInfo],
    pub metrics: &'a Metrics,
    pub attached: usize,
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

/// Render the text exposition format.
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
    for ((d, v, r), n) in input.dp.counters()? {
        if n == 0 {
            continue;
        }
        packets
            .with_label_values(&[direction_name(d), verdict_name(v)])
            .inc_by(n);
        if v == VERDICT_DENY {
            drops
                .with_label_values(&[direction_name(d), drop_reason(r)])
                .inc_by(n);
        }
    }
    // Make the main series exist from the start, so rate() and alerts see them.
    for d in ["ingress", "egress"] {
        for v in ["allowed", "denied", "audit"] {
            packets.with_label_values(&[d, v]).inc_by(0);
        }
        for r in ["policy_denied", "rate_limited", "spoofed", "malformed"] {
            drops.with_label_values(&[d, r]).inc_by(0);
        }
    }
    register_rules_and_maps(&registry, input)?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// Per-rule counters, map pressure, generation, applies, events lost, build info.
fn register_rules_and_maps(registry: &Registry, input: &ScrapeInput<'_>) -> Result<()> {
    let rules = counter_vec(
        registry,
        "enforcer_policy_rule_packets_total",
        "Packets decided by each policy rule.",
        &["policy", "rule", "verdict"],
    )?;
    for r in input.rules {
        let n = input.dp.rule_packets(r.id).unwrap_or(0);
        let policy = r
            .policy
            .clone()
            .unwrap_or_else(|| format!("default-deny/{}", r.service.clone().unwrap_or_default()));
        rules
            .with_label_values(&[&policy, &r.rule, r.verdict])
            .inc_by(n);
    }
    let entries = gauge_vec(
        registry,
        "enforcer_bpf_map_entries",
        "Entries in a BPF map (both policy slots).",
        &["map"],
    )?;
    let capacity = gauge_vec(
        registry,
        "enforcer_bpf_map_capacity",
        "Capacity of a BPF map.",
        &["map"],
    )?;
    for u in crate::agent::map_usage(input.dp) {
        entries
            .with_label_values(&[&u.map])
            .set(i64::try_from(u.entries).unwrap_or(i64::MAX));
        capacity
            .with_label_values(&[&u.map])
            .set(i64::from(u.capacity));
    }
    gauge(
        registry,
        "enforcer_policy_generation",
        "The policy generation in force.",
    )?
    .set(i64::try_from(input.dp.config()?.generation).unwrap_or(i64::MAX));
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
    let lost = prometheus::IntCounter::new(
        "enforcer_events_lost_total",
        "Flow events lost because the ring buffer was full.",
    )?;
    registry.register(Box::new(lost.clone()))?;
    lost.inc_by(input.dp.events_lost().unwrap_or(0));
    gauge(
        registry,
        "enforcer_attached_interfaces",
        "Interfaces the datapath is attached to.",
    )?
    .set(i64::try_from(input.attached).unwrap_or(i64::MAX));
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
