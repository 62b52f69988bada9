//! `ratelimit`: how close the admitted rate comes to the configured `packetsPerSecond`, on live
//! UDP traffic through the datapath (`enforcer_tests::ratelimit_bench::measure`: a `per: rule`
//! bucket shared by two senders on two CPUs, offered 5× the limit), repeated and summarized.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Result;
use enforcer_tests::ratelimit_bench::{measure, RateRow, SENDERS};

use super::{
    stats::{summarize, Summary},
    Config, Goal, Section,
};

/// The admitted rate must be within this fraction of the configured one (docs/design.md, "Policy semantics", rule 9: ±5 %).
const TOLERANCE: f64 = 0.05;

pub fn run(cfg: &Config) -> Result<Section> {
    let (rates, repeats): (&[u32], usize) = if cfg.quick {
        (&[1_000], 1)
    } else {
        (&[100, 1_000, 10_000, 50_000], 3)
    };
    eprintln!("ratelimit: rates {rates:?} pps, {repeats} repetitions");
    let mut by_rate: BTreeMap<u32, Vec<RateRow>> = BTreeMap::new();
    for i in 0..repeats {
        for row in measure(rates)? {
            eprintln!(
                "  {i}: {} pps asked, {} configured: received {:.0} pps ({:.3}×; datapath count {:.0}), offered {:.0} pps",
                row.requested_pps,
                row.configured_pps,
                row.admitted_pps,
                row.ratio,
                row.datapath_admitted_pps,
                row.offered_pps
            );
            by_rate.entry(row.requested_pps).or_default().push(row);
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Live UDP traffic (`tests/src/ratelimit_bench.rs`): a server pod whose ingress rule allows UDP from {SENDERS} \
         client pods with `rateLimit: {{packetsPerSecond: R, burst: R/10, per: rule}}` (one bucket shared by both \
         senders, each on its own thread), the datapath loaded in-process in the node namespace. Each row: the senders \
         offer 5× the limit for 3 s (when the machine cannot offer 2×, the limit is lowered to half of what it can \
         send, and the row says so). The admitted rate is **measured at the receiver**: datagrams the server's \
         sink received beyond the burst ÷ sending time, divided by the configured rate; the datapath's own count of \
         admitted packets is shown beside it as a cross-check. {repeats} repetitions; median (min–max).\n"
    );
    let _ = writeln!(
        md,
        "| asked (pps) | configured (pps) | offered (pps) | received beyond burst (pps) | received ÷ configured | datapath's own count (pps) | dropped as rate limited | CAS give-ups |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    let mut worst: Option<(u32, Summary)> = None;
    for (rate, rows) in &by_rate {
        let f = |g: fn(&RateRow) -> f64| summarize(&rows.iter().map(g).collect::<Vec<_>>());
        let ratio = f(|r| r.ratio);
        let configured: Vec<String> = rows
            .iter()
            .map(|r| r.configured_pps.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
        let dropped = f(|r| r.dropped as f64);
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let contended = f(|r| r.contended as f64);
        let _ = writeln!(
            md,
            "| {rate} | {} | {} | {} | **{}** | {} | {} | {:.0} |",
            configured.join(", "),
            f(|r| r.offered_pps).value(0),
            f(|r| r.admitted_pps).value(0),
            ratio.ratio(),
            f(|r| r.datapath_admitted_pps).value(0),
            dropped.value(0),
            contended.median
        );
        let off = |s: &Summary| (s.min - 1.0).abs().max((s.max - 1.0).abs());
        if worst.as_ref().is_none_or(|(_, w)| off(&ratio) > off(w)) {
            worst = Some((*rate, ratio));
        }
    }
    let mut goals = Vec::new();
    if let Some((rate, w)) = worst {
        let ok = (w.min - 1.0).abs() <= TOLERANCE && (w.max - 1.0).abs() <= TOLERANCE;
        goals.push(Goal {
            name: "rate limits accurate to ±5 %, measured at the receiver".into(),
            measured: format!(
                "worst row: {rate} pps asked, received ÷ configured {} (every repetition must be within 0.95–1.05)",
                w.ratio()
            ),
            met: ok,
            limit: String::new(),
        });
    }
    Ok(Section {
        name: "ratelimit",
        title: "Rate limiting (`ratelimit`)".into(),
        markdown: md,
        goals,
        data: Vec::new(),
    })
}
