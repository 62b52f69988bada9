//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure. It ends
//! with what it ran, what it skipped and why (steps, and integration tests that skipped
//! themselves because they need root).
//!
//! Under CI (`CI=true`) nothing may be skipped: without root the command fails at once, and a
//! test that cannot run fails (`enforcer_tests::skip`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::scenario::{build_runner, run_scenarios, scenario_files};
use crate::setup;
use crate::util::{banner, cargo, is_root, run, target_dir};
use crate::vm;

/// The file where integration tests list their skips (`enforcer_tests::SKIP_LOG_ENV`).
const SKIP_LOG_ENV: &str = "ENFORCER_SKIP_LOG";

/// Whether we run under CI (`CI=true` or `CI=1`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The kernel leg CI runs with the other steps.
const CI_KERNEL: &str = "6.1";

/// `cargo xtask test`, or with `kernels`, only those kernel legs.
pub fn test(kernels: &[String]) -> Result<()> {
    if under_ci() && !is_root() {
        bail!(
            "CI=true and not root: the datapath, end-to-end and live scenario tests need root, \
             and CI must not pass by skipping them"
        );
    }
    let started = Instant::now();
    let mut steps = Steps::default();
    let result = if kernels.is_empty() {
        all_steps(&mut steps)
    } else {
        kernel_steps(&mut steps, kernels)
    };
    steps.summary();
    let elapsed = started.elapsed();
    let passed = steps.ran.len();
    match &result {
        Ok(()) => banner(&format!(
            "test: all {passed} steps passed, {} skipped, in {elapsed:.1?}",
            steps.skipped.len()
        )),
        Err(_) => banner(&format!(
            "test: FAILED after {passed} passed steps, in {elapsed:.1?}"
        )),
    }
    result
}

/// Runs `cargo ARGS` (written as one string, so it reads like the command to type).
fn cargo_step(args: &str) -> Result<()> {
    run(cargo().args(args.split(' ')))
}

fn all_steps(steps: &mut Steps) -> Result<()> {
    static_checks(steps)?;
    // The end-to-end tests start the agent binary.
    let runner = steps.run("build enforcer and the scenario runner", || {
        build_runner(false)
    })?;
    let root = is_root();
    if root {
        steps.run("clean orphaned network namespaces", || {
            run(Command::new(&runner).arg("--clean-orphans"))
        })?;
    } else {
        steps.skip(
            "clean orphaned network namespaces",
            "needs root (network namespaces)",
        );
    }
    // The integration tests need root and create network namespaces: one at a time.
    let skip_log = target_dir().join("xtask-test-skips.tsv");
    let _ = std::fs::remove_file(&skip_log);
    steps.run("cargo test", || {
        run(cargo()
            .args(["test", "--workspace", "--", "--test-threads=1"])
            .env(SKIP_LOG_ENV, &skip_log))
    })?;
    steps.skipped_tests = read_skips(&skip_log);

    let scenarios = scenario_files(Path::new("tests/scenarios"))?;
    if scenarios.is_empty() {
        bail!("no tests/scenarios/*.yaml");
    }
    steps.run("scenarios (offline)", || {
        run_scenarios(&runner, true, &scenarios)
    })?;
    if root {
        return root_steps(steps, &runner, &scenarios);
    }
    let kernel = format!("kernel {CI_KERNEL} (qemu)");
    for name in [
        "scenarios (live)",
        "demo",
        "bench --quick",
        "selftest",
        &kernel,
    ] {
        steps.skip(name, "needs root (network namespaces, eBPF)");
    }
    Ok(())
}

/// Formatting, lints, manifests, licenses and sizes: no build of the programs needed.
fn static_checks(steps: &mut Steps) -> Result<()> {
    steps.run("setup", || setup::ensure().map(|_| ()))?;
    steps.run("rustfmt", || cargo_step("fmt --all -- --check"))?;
    steps.run("clippy", || {
        cargo_step("clippy --workspace --all-targets -- -D warnings")
    })?;
    ebpf_lint(steps)?;
    steps.run("manifests", || crate::manifests::manifests(false))?;
    steps.run("cargo deny (licenses, bans, sources)", crate::deny::check)?;
    steps.run("sizes", crate::sizes::check)?;
    Ok(())
}

/// The steps that need root: live scenarios, demo, quick benchmarks, selftest, kernel leg.
fn root_steps(steps: &mut Steps, runner: &Path, scenarios: &[PathBuf]) -> Result<()> {
    steps.run("scenarios (live)", || {
        run_scenarios(runner, false, scenarios)
    })?;
    // The demo must run to completion and leave nothing behind.
    steps.run("demo", || {
        cargo_step("run --quiet -p enforcer-tests --bin demo")
    })?;
    // The quick benchmarks, so they never rot (they write under target/bench/quick/ only): a
    // smoke test of every benchmark at its smallest size, so the dev build of the binaries
    // `cargo test` built already (no release build; `netpol` spawns target/debug/enforcer).
    steps.run("bench --quick", || {
        cargo_step("run --quiet -p enforcer-tests --bin bench -- --quick")
    })?;
    // The guards of the test suite catch deliberate sabotage.
    steps.run("selftest", crate::selftest::selftest)?;
    // The programs on the oldest kernel we support: verifier, truth tables, a live scenario.
    steps.run(&format!("kernel {CI_KERNEL} (qemu)"), || {
        vm::kernel_legs(&[CI_KERNEL.to_owned()]).map(|_| ())
    })?;
    Ok(())
}

/// rustfmt and clippy of the eBPF crate. It is not a workspace member (it builds with -Z
/// build-std for bpfel), so it is linted through its own manifest, type-checked for the host
/// target (`RUSTC_BOOTSTRAP` for its `core_intrinsics`), in a target directory of its own.
fn ebpf_lint(steps: &mut Steps) -> Result<()> {
    const MANIFEST: [&str; 2] = ["--manifest-path", "enforcer-ebpf/Cargo.toml"];
    steps.run("rustfmt (eBPF)", || {
        run(cargo().arg("fmt").args(MANIFEST).args(["--", "--check"]))
    })?;
    steps.run("clippy (eBPF)", || {
        run(cargo()
            .env("RUSTC_BOOTSTRAP", "1")
            .arg("clippy")
            .args(MANIFEST)
            .arg("--target-dir")
            .arg(target_dir().join("ebpf-clippy"))
            .args(["--", "-D", "warnings"]))
    })
}

/// `cargo xtask test --kernel V...`: setup, then only the kernel legs.
fn kernel_steps(steps: &mut Steps, kernels: &[String]) -> Result<()> {
    steps.run("setup", || setup::ensure().map(|_| ()))?;
    for version in kernels {
        steps.run(&format!("kernel {version} (qemu)"), || {
            vm::kernel_legs(std::slice::from_ref(version)).map(|_| ())
        })?;
    }
    Ok(())
}

/// `(test, reason)` lines of the skip log.
fn read_skips(path: &PathBuf) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect()
}

#[derive(Default)]
struct Steps {
    ran: Vec<String>,
    skipped: Vec<(String, String)>,
    skipped_tests: Vec<(String, String)>,
}

impl Steps {
    /// Run one step under a banner; its error names the step.
    fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        banner(&format!("[{}] {name}", self.ran.len() + 1));
        let started = Instant::now();
        let value = step().with_context(|| format!("step `{name}` failed"))?;
        println!("--- {name}: ok ({:.1?})", started.elapsed());
        self.ran.push(format!("{name} ({:.1?})", started.elapsed()));
        Ok(value)
    }

    fn skip(&mut self, name: &str, why: &str) {
        println!("\n--- {name}: SKIPPED ({why})");
        self.skipped.push((name.into(), why.into()));
    }

    /// What ran, what was skipped and why.
    fn summary(&self) {
        banner("summary");
        println!("ran: {}", self.ran.join(", "));
        for (name, why) in &self.skipped {
            println!("skipped step: {name}: {why}");
        }
        println!("skipped integration tests: {}", self.skipped_tests.len());
        for (test, why) in &self.skipped_tests {
            println!("  {test}: {why}");
        }
    }
}
