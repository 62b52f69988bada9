//! `cargo xtask fuzz [--frames N] [--seed S]`: the long packet-fuzzing run (`fuzz` binary of
//! `enforcer-tests`), whose figures become RELIABILITY.md section `fuzz`. The dev profile the
//! tests use: the run is bound by `BPF_PROG_TEST_RUN` system calls, not by the oracle, and it
//! spares a release build of the whole workspace.

use anyhow::{Context as _, Result};

use crate::reliability::write_section;
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
