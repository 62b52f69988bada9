//! `ratelimit`: accuracy and cost of the token buckets.
//!
//! TODO(ratelimit): another engineer writes `tests/src/ratelimit_bench.rs` with
//! `pub fn measure(rates: &[u32]) -> anyhow::Result<Vec<RateRow>>`. Once it exists (declared in
//! `tests/src/lib.rs`), call it here and render its rows; until then this section says so.

use anyhow::Result;

use super::{Config, Section};

/// Rates the benchmark should measure (packets per second).
pub const RATES: [u32; 4] = [100, 1_000, 10_000, 100_000];

pub fn run(cfg: &Config) -> Result<Section> {
    let _ = cfg;
    Ok(Section {
        name: "ratelimit",
        title: "Rate limiting (`ratelimit`)".into(),
        markdown: format!(
            "Not available yet: the rate-limit measurement (`enforcer_tests::ratelimit_bench::measure(&{RATES:?})`) \
             is not in the tree; `tests/src/bench/ratelimit.rs` is the hook that will call it.\n"
        ),
        goals: Vec::new(),
        data: Vec::new(),
    })
}
