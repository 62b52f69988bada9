//! `cargo xtask demo [ARGS...]`: build and run the demo, the `demo` binary of `enforcer-tests`.

use std::process::Command;

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, exec, run, target_dir};

pub fn demo(args: &[String]) -> Result<()> {
    setup()?;
    banner("build demo");
    run(cargo().args(["build", "-p", "enforcer"]))?;
    run(cargo().args(["build", "-p", "enforcer-tests", "--bin", "demo"]))?;
    banner("demo");
    exec(Command::new(target_dir().join("debug").join("demo")).args(args))
}
