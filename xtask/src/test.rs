//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::scenario::{build_runner, run_scenarios, scenario_files};
use crate::setup;
use crate::util::{banner, cargo, is_root, output, run};

/// Network namespaces whose names start with this belong to our tests; stale ones from aborted runs
/// are deleted.
const NETNS_PREFIX: &str = "enf-";

pub fn test() -> Result<()> {
    let started = Instant::now();
    let mut steps = Steps::default();
    let result = all_steps(&mut steps);
    let elapsed = started.elapsed();
    let passed = steps.passed;
    match &result {
        Ok(()) => banner(&format!("test: all {passed} steps passed in {elapsed:.1?}")),
        Err(_) => banner(&format!(
            "test: FAILED after {passed} passed steps, in {elapsed:.1?}"
        )),
    }
    result
}

fn all_steps(steps: &mut Steps) -> Result<()> {
    steps.run("setup", || setup::ensure().map(|_| ()))?;
    // Written as one string each so they read like the commands to type.
    let cargo_step = |args: &str| run(cargo().args(args.split(' ')));
    steps.run("rustfmt", || cargo_step("fmt --all -- --check"))?;
    steps.run("clippy", || {
        cargo_step("clippy --workspace --all-targets -- -D warnings")
    })?;
    steps.run("manifests", || crate::manifests::manifests(false))?;
    steps.run("clean stale network namespaces", clean_stale_netns)?;
    // The end-to-end tests start the agent binary.
    let runner = steps.run("build enforcer and the scenario runner", || {
        build_runner(false)
    })?;
    // The integration tests need root and create network namespaces: one at a time.
    steps.run("cargo test", || {
        cargo_step("test --workspace -- --test-threads=1")
    })?;

    let scenarios = scenario_files(Path::new("tests/scenarios"))?;
    if scenarios.is_empty() {
        println!("\nno tests/scenarios/*.yaml: scenario steps skipped");
    } else {
        steps.run("scenarios (offline)", || {
            run_scenarios(&runner, true, &scenarios)
        })?;
        if is_root() {
            steps.run("scenarios (live)", || {
                run_scenarios(&runner, false, &scenarios)
            })?;
        } else {
            println!("\nscenarios (live): skipped, they need root");
        }
    }
    if is_root() {
        // The demo must run to completion and leave nothing behind.
        steps.run("demo", || {
            cargo_step("run --quiet -p enforcer-tests --bin demo")
        })?;
        // The quick benchmarks, so they never rot (their output goes to bench/quick/).
        steps.run("bench --quick", || {
            cargo_step("run --quiet --release -p enforcer-tests --bin bench -- --quick")
        })?;
    } else {
        println!(
            "
demo and bench --quick: skipped, they need root"
        );
    }
    Ok(())
}

#[derive(Default)]
struct Steps {
    passed: usize,
}

impl Steps {
    /// Run one step under a banner; its error names the step.
    fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        banner(&format!("[{}] {name}", self.passed + 1));
        let started = Instant::now();
        let value = step().with_context(|| format!("step `{name}` failed"))?;
        self.passed += 1;
        println!("--- {name}: ok ({:.1?})", started.elapsed());
        Ok(value)
    }
}

/// Delete every network namespace named `enf-*`, left over by an aborted test run.
fn clean_stale_netns() -> Result<()> {
    let list =
        output(Command::new("ip").args(["netns", "list"])).context("`ip netns list` failed")?;
    // Lines look like `enf-n1 (id: 3)` or `enf-n1`.
    let stale: Vec<&str> = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NETNS_PREFIX))
        .collect();
    if stale.is_empty() {
        println!("no stale {NETNS_PREFIX}* namespaces");
        return Ok(());
    }
    if !is_root() {
        println!(
            "stale namespaces not deleted (needs root): {}",
            stale.join(" ")
        );
        return Ok(());
    }
    for name in stale {
        run(Command::new("ip").args(["netns", "delete", name]))?;
    }
    Ok(())
}
