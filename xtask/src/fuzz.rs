//! `cargo xtask fuzz [--frames N] [--seed S]`: the long packet-fuzzing run (`fuzz` binary of
//! `enforcer-tests`), which writes its figures to RELIABILITY.md section `fuzz`. The dev profile
//! the tests use: the run is bound by `BPF_PROG_TEST_RUN` system calls, not by the oracle, and
//! it spares a release build of the whole workspace.

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, exec, root};

pub fn fuzz(frames: u64, seed: u64) -> Result<()> {
    setup()?;
    banner("fuzz");
    let mut cmd = cargo();
    cmd.args(["run", "-p", "enforcer-tests", "--bin", "fuzz", "--"])
        .arg("--frames")
        .arg(frames.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--write")
        .arg(root().join("RELIABILITY.md"));
    exec(&mut cmd)
}
