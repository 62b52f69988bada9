//! `cargo xtask build [--release]`: setup, then build the enforcer binary.

use std::path::PathBuf;

use anyhow::Result;

use crate::setup::setup;
use crate::util::{banner, cargo, run, target_dir};

pub fn build(release: bool) -> Result<PathBuf> {
    setup()?;
    banner(&format!("build enforcer ({})", profile(release)));
    build_enforcer(release)
}

/// `cargo build -p enforcer` (the eBPF crate is built by enforcer/build.rs). Returns the binary's
/// path.
pub fn build_enforcer(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "enforcer"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let binary = target_dir().join(profile(release)).join("enforcer");
    println!("enforcer binary: {}", binary.display());
    Ok(binary)
}

/// The name of cargo's output directory for this profile.
pub fn profile(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}
