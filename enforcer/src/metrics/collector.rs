//! The agent's Prometheus collector: registered once, it reads the datapath's counter maps and
//! the agent's published view at scrape time. Its families follow the policy in force (one
//! series per rule), so it declares no fixed descriptors.

use std::sync::{atomic::Ordering, Arc};

use anyhow::Result;
use enforcer_common::{Direction, Verdict, DROP_LABELS};
use prometheus::{
    core::Desc, proto::MetricFamily, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::{Metrics, View};
use crate::datapath::CounterReader;

/// What the collector reads; the agent implements it.
pub trait Source: Send + Sync {
    /// The view published after the last change.
    fn view(&self) -> Arc<View>;
    /// The agent's own counters.
    fn metrics(&self) -> &Metrics;
    /// The datapath's counter maps.
    fn counters(&self) -> &CounterReader;
}

/// The collector over a [`Source`].
pub struct Collector<S>(pub Arc<S>);

impl<S: Source + 'static> prometheus::core::Collector for Collector<S> {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.0.view();
        let input = Input {
            view: &view,
            counters: self.0.counters(),
            metrics: self.0.metrics(),
        };
        families(&input).unwrap_or_else(|e| {
            tracing::warn!("scrape: {e:#}");
            Vec::new()
        })
    }
}

struct Input<'a> {
    view: &'a View,
    counters: &'a CounterReader,
    metrics: &'a Metrics,
}

/// The metrics of one scrape.
#[derive(Default)]
struct Families(Vec<Box<dyn prometheus::core::Collector>>);

impl Families {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&mut self, c: C) -> C {
        self.0.push(Box::new(c.clone()));
        c
    }

    fn gather(self) -> Vec<MetricFamily> {
        self.0.iter().flat_map(|c| c.collect()).collect()
    }
}

fn counter_vec(f: &mut Families, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    Ok(f.add(IntCounterVec::new(Opts::new(name, help), labels)?))
}

fn gauge_vec(f: &mut Families, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    Ok(f.add(IntGaugeVec::new(Opts::new(name, help), labels)?))
}

fn gauge(f: &mut Families, name: &str, help: &str) -> Result<IntGauge> {
    Ok(f.add(IntGauge::new(name, help)?))
}

fn counter(f: &mut Families, name: &str, help: &str, value: u64) -> Result<()> {
    f.add(IntCounter::new(name, help)?).inc_by(value);
    Ok(())
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Every family of a scrape. The work is bounded by the number of rules in force: the packet
/// counters, one batched read of the rule counters, no walk of the policy maps, no agent lock.
fn families(input: &Input<'_>) -> Result<Vec<MetricFamily>> {
    let mut f = Families::default();
    let packets = counter_vec(
        &mut f,
        "enforcer_packets_total",
        "Packets judged by the datapath, by policy direction and verdict.",
        &["direction", "verdict"],
    )?;
    let drops = counter_vec(
        &mut f,
        "enforcer_drops_total",
        "Packets dropped by the datapath, by policy direction and reason.",
        &["direction", "reason"],
    )?;
    for (c, n) in input.counters.packets()? {
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
    register_rules(&mut f, input)?;
    register_maps(&mut f, input)?;
    register_agent(&mut f, input)?;
    register_health(&mut f, input)?;
    f.0.extend(input.metrics.kube.collectors()?);
    f.0.extend(input.metrics.flowlog.collectors()?);
    f.0.extend(input.metrics.bypass.collectors()?);
    Ok(f.gather())
}

/// Per-rule counters and metadata.
fn register_rules(f: &mut Families, input: &Input<'_>) -> Result<()> {
    let rules = counter_vec(
        f,
        "enforcer_policy_rule_packets_total",
        "Packets decided by each policy rule.",
        &["policy", "rule", "verdict"],
    )?;
    let info = gauge_vec(
        f,
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
    let ids = input.view.rules.iter().map(|r| r.id + 1).max().unwrap_or(0);
    let counts = input.counters.rule_packets(ids)?;
    for r in input.view.rules.iter() {
        let n = counts.get(r.id as usize).copied().unwrap_or(0);
        rules
            .with_label_values(&[&r.policy, &r.rule, r.verdict])
            .inc_by(n);
        let rate_limited = if r.rate_limited { "true" } else { "false" };
        info.with_label_values(&[
            &r.policy,
            &r.rule,
            &r.service,
            r.direction,
            &r.peers,
            rate_limited,
        ])
        .set(1);
    }
    Ok(())
}

/// Entries and capacity of the BPF maps; installs refused for a full map.
fn register_maps(f: &mut Families, input: &Input<'_>) -> Result<()> {
    let entries = gauge_vec(
        f,
        "enforcer_bpf_map_entries",
        "Entries in a BPF map (both policy slots), counted after the last install.",
        &["map"],
    )?;
    let capacity = gauge_vec(
        f,
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
        .set(int(input.counters.rate_buckets()));
    capacity
        .with_label_values(&[map])
        .set(i64::from(enforcer_common::ratelimit::RATE_BUCKET_CAPACITY));
    // Flows (`CONNTRACK`, LRU), as the last sweep counted them.
    let ct = &input.metrics.conntrack;
    if ct.sweeps.load(Ordering::Relaxed) > 0 {
        let map = enforcer_common::maps::names::CONNTRACK;
        entries
            .with_label_values(&[map])
            .set(int(ct.entries.load(Ordering::Relaxed)));
        capacity
            .with_label_values(&[map])
            .set(int(ct.capacity.load(Ordering::Relaxed)));
    }
    register_sweeps(f, input)?;
    let full = counter_vec(
        f,
        "enforcer_bpf_map_full_total",
        "Policy installs refused because a map would overflow (nothing was applied).",
        &["map"],
    )?;
    for (map, n) in input.metrics.map_full_counts() {
        full.with_label_values(&[map]).inc_by(n);
    }
    Ok(())
}

/// The conntrack sweep's counters.
fn register_sweeps(f: &mut Families, input: &Input<'_>) -> Result<()> {
    let ct = &input.metrics.conntrack;
    counter(
        f,
        "enforcer_conntrack_sweeps_total",
        "Sweeps of the conntrack table for idle entries.",
        ct.sweeps.load(Ordering::Relaxed),
    )?;
    counter(
        f,
        "enforcer_conntrack_expired_total",
        "Conntrack entries removed by the sweep because their flow was idle for longer than its \
         timeout.",
        ct.expired.load(Ordering::Relaxed),
    )?;
    Ok(())
}

/// Generation, applies, events, interfaces, build info.
fn register_agent(f: &mut Families, input: &Input<'_>) -> Result<()> {
    gauge(
        f,
        "enforcer_policy_generation",
        "The policy generation in force.",
    )?
    .set(int(input.view.generation));
    let apply = counter_vec(
        f,
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
        f,
        "enforcer_events_lost_total",
        "Flow events lost because the ring buffer was full.",
        input.counters.events_lost(),
    )?;
    counter(
        f,
        "enforcer_events_sampled_out_total",
        "Drop events not reported because of sampling (rate-limit drops: one event per bucket \
         and interval); the packets are still counted.",
        input.counters.events_sampled_out(),
    )?;
    gauge(
        f,
        "enforcer_attached_interfaces",
        "Interfaces the datapath is attached to.",
    )?
    .set(int(input.view.attached));
    gauge_vec(
        f,
        "enforcer_build_info",
        "Build information (always 1).",
        &["version"],
    )?
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    Ok(())
}

/// Readiness, the policy directory and quarantined state files.
fn register_health(f: &mut Families, input: &Input<'_>) -> Result<()> {
    gauge(
        f,
        "enforcer_ready",
        "1 when the agent is ready (/readyz answers 200), 0 otherwise (enforcer status says why).",
    )?
    .set(i64::from(input.view.reasons.is_empty()));
    if let Some(valid) = input.view.policy_dir_valid {
        gauge(
            f,
            "enforcer_policy_dir_valid",
            "1 when the policy directory parses, 0 when it is rejected (the last good policy \
             stays in force).",
        )?
        .set(i64::from(valid));
    }
    counter(
        f,
        "enforcer_state_quarantined_total",
        "Corrupt state files moved aside at startup (the last good policy stays in force).",
        input.metrics.quarantined.load(Ordering::Relaxed),
    )
}
