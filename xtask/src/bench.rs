//! `cargo xtask bench [NAME...] [--quick]`: the `bench` binary of `enforcer-tests`, release build.

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, exec};

pub fn bench(names: &[String], quick: bool) -> Result<()> {
    setup()?;
    banner("bench");
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "enforcer-tests",
        "--bin",
        "bench",
        "--",
    ]);
    cmd.args(names);
    if quick {
        cmd.arg("--quick");
    }
    exec(&mut cmd)
}
