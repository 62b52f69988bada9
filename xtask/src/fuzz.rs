//! `cargo xtask fuzz [--frames N] [--seed S]`: the long packet-fuzzing run (`fuzz` binary of
//! `enforcer-tests`), whose figures become RELIABILITY.md section `fuzz`. The dev profile the
//! tests use: the run is bound by `BPF_PROG_TEST_RUN` system calls, not by the oracle, and it
//! spares a release build of the whole workspace.
//!
//! `cargo xtask fuzz --policy [--inputs N] [--seed S]`: the long form of the policy-parser
//! fuzzing test (`long_run` of the `policy_fuzz` test), whose figures become section
//! `policy-fuzz`.

use anyhow::{Context as _, Result};

use crate::reliability::{now, run_for_figures, table, write_section};
use crate::setup::setup;
use crate::util::{banner, cargo, run, target_dir};

pub fn fuzz(frames: u64, seed: u64) -> Result<()> {
    setup()?;
    banner("fuzz");
    let body = target_dir().join("fuzz-section.md");
    let mut cmd = cargo();
    cmd.args(["run", "-p", "enforcer-tests", "--bin", "fuzz", "--"])
        .arg("--frames")
        .arg(frames.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--body")
        .arg(&body);
    // A run with wrong verdicts fails here, and its figures are not written.
    run(&mut cmd)?;
    let text =
        std::fs::read_to_string(&body).with_context(|| format!("read {}", body.display()))?;
    write_section("fuzz", &text)
}

/// The package of the policy parsers and of their fuzzing test.
const POLICY_PACKAGE: &str = "enforcer-policy";

pub fn policy(inputs: u64, seed: u64) -> Result<()> {
    banner(&format!("fuzz: {inputs} policy inputs"));
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        POLICY_PACKAGE,
        "--release",
        "--test",
        "policy_fuzz",
    ])
    .args(["--", "--ignored", "--exact", "long_run", "--nocapture"])
    .env("ENFORCER_POLICY_FUZZ_INPUTS", inputs.to_string())
    .env("ENFORCER_POLICY_FUZZ_SEED", seed.to_string());
    // A run with a panic, a hang or an error without a location fails here (proptest shows the
    // smallest such input), and its figures are not written.
    let figures = run_for_figures(&mut cmd, "inputs")?;
    write_section(
        "policy-fuzz",
        &format!(
            "### Policy input fuzzing\n\nMeasured by `cargo xtask fuzz --policy --inputs {inputs} \
             --seed {seed}` on {} (test `long_run`, {POLICY_PACKAGE}/tests/policy_fuzz/, release \
             build). Inputs: documents of every kind (enforcer/v1 Workload and FlowPolicy, v1 \
             Namespace, Pod and List, networking.k8s.io/v1 NetworkPolicy) generated from the \
             schema with edge values, wrong types and unknown keys, 1-3 per input, as block YAML \
             or JSON; byte mutations (flips, YAML-significant insertions, deletions, \
             duplications, truncations) of the malformed catalogue, the examples and valid \
             documents of every kind; and mutations of generated inputs. Each input is parsed \
             on a worker thread, bounded in time (`input_limit_s`: over it, the run fails as a hang). `rejected`: inputs refused with an error; \
             `errors_without_location`: refusals with an error that names no file and line; \
             `slowest_ms`: the slowest input.\n\n{}",
            now(),
            table(&figures)
        ),
    )
}
