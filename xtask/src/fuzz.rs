//! `cargo xtask fuzz [--frames N] [--seed S]`: the long packet-fuzzing run (`fuzz` binary of
//! `enforcer-tests`, release build), which writes its figures to RELIABILITY.md section `fuzz`.

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, exec, root};

pub fn fuzz(frames: u64, seed: u64) -> Result<()> {
    setup()?;
    banner("fuzz");
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "enforcer-tests",
        "--bin",
        "fuzz",
        "--",
    ])
    .arg("--frames")
    .arg(frames.to_string())
    .arg("--seed")
    .arg(seed.to_string())
    .arg("--write")
    .arg(root().join("RELIABILITY.md"));
    exec(&mut cmd)
}
