//! `cargo xtask bench [NAME...] [--quick]`: the `bench` binary of `enforcer-tests`, release build
//! (`--quick`, a smoke test at the smallest sizes, in the dev build, as `cargo xtask test` runs it).

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, exec};

pub fn bench(names: &[String], quick: bool) -> Result<()> {
    setup()?;
    banner("bench");
    let mut cmd = cargo();
    cmd.arg("run");
    if !quick {
        cmd.arg("--release");
    }
    cmd.args(["-p", "enforcer-tests", "--bin", "bench", "--"]);
    cmd.args(names);
    if quick {
        cmd.arg("--quick");
    }
    exec(&mut cmd)
}
