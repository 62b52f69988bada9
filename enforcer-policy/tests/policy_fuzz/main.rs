//! Policy input fuzzing: every parser (enforcer/v1 and Kubernetes kinds, several documents,
//! `v1 List`) on structure-aware inputs ([`gen`]) and on byte mutations of valid and malformed
//! examples ([`mutate`]). No input may panic, hang (each is bounded in time) or be rejected
//! by an error without a location.
//!
//! `short_run` runs in `cargo test`; `long_run` (ignored) is `cargo xtask fuzz --policy`, which
//! reads its `inputs=` line into RELIABILITY.md. A failing input is shrunk by proptest
//! and shown.

mod gen;
mod judge;
mod mutate;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use judge::{Figures, Judge, Verdict};

/// The longest one input may take (a debug build; inputs are at most a few KiB).
const LIMIT: Duration = Duration::from_secs(10);

/// Generated documents, mutated examples, and mutated generated documents.
fn inputs() -> BoxedStrategy<String> {
    let seeds = proptest::sample::select(mutate::seeds());
    prop_oneof![
        4 => gen::input(),
        4 => mutate::mutated(seeds),
        2 => mutate::mutated(gen::input()),
    ]
    .boxed()
}

/// Runs `cases` inputs from `seed`; on the first failure, proptest shrinks it and the run
/// panics with the smallest failing input.
fn run(cases: u32, seed: u64) -> Figures {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let judge = RefCell::new(Judge::new(LIMIT));
    let result = runner.run(&inputs(), |text| match judge.borrow_mut().check(&text) {
        Verdict::Panicked(m) => Err(TestCaseError::fail(format!("panic: {m}"))),
        Verdict::Unlocated(m) => Err(TestCaseError::fail(format!("no location: {m}"))),
        Verdict::Accepted | Verdict::Rejected => Ok(()),
    });
    let figures = judge.into_inner().figures;
    if let Err(e) = result {
        panic!("{e}\nfirst failures: {:#?}", figures.failures);
    }
    figures
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn short_run() {
    let figures = run(1500, 1);
    assert!(!figures.failed(), "{figures:?}");
    assert!(figures.accepted > 0, "some inputs are valid: {figures:?}");
    assert!(figures.rejected > 0, "some inputs are invalid: {figures:?}");
}

/// `ENFORCER_POLICY_FUZZ_INPUTS` inputs (default 100 000) from `ENFORCER_POLICY_FUZZ_SEED`.
#[test]
#[ignore = "long: cargo xtask fuzz --policy"]
fn long_run() {
    let cases = env_or("ENFORCER_POLICY_FUZZ_INPUTS", 100_000);
    let seed = env_or("ENFORCER_POLICY_FUZZ_SEED", 1);
    let start = Instant::now();
    let f = run(u32::try_from(cases).unwrap_or(u32::MAX), seed);
    println!(
        "inputs={} accepted={} rejected={} panics={} errors_without_location={} \
         bytes={} slowest_ms={} input_limit_s={} seconds={} seed={seed}",
        f.inputs,
        f.accepted,
        f.rejected + f.unlocated,
        f.panics,
        f.unlocated,
        f.bytes,
        f.slowest.as_millis(),
        LIMIT.as_secs(),
        start.elapsed().as_secs(),
    );
    assert!(!f.failed(), "{f:?}");
}
