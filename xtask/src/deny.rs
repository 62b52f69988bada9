//! Supply chain: `cargo deny check licenses bans sources` against `deny.toml`. cargo-deny is
//! installed from crates.io by `cargo xtask setup` (pinned). Advisories are not checked: their
//! database is fetched from GitHub, which this build environment cannot reach.

use anyhow::{bail, Result};

use crate::util::{cargo, output, root, run};

/// The cargo-deny release installed; changing it reinstalls.
const VERSION: &str = "0.20.2";

fn installed_version() -> Option<String> {
    output(cargo().args(["deny", "--version"]))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
}

/// Install cargo-deny unless this version is there.
pub fn ensure() -> Result<()> {
    if installed_version().as_deref() == Some(VERSION) {
        println!("cargo-deny: already installed ({VERSION})");
        return Ok(());
    }
    println!("cargo-deny: installing {VERSION} with cargo (takes a few minutes)");
    run(cargo().args(["install", "cargo-deny", "--locked", "--version", VERSION]))?;
    if installed_version().as_deref() != Some(VERSION) {
        bail!("`cargo install cargo-deny` succeeded but `cargo deny --version` is not {VERSION}");
    }
    Ok(())
}

/// `cargo deny check licenses bans sources` for the workspace.
///
/// cargo-deny reads the metadata of every package in Cargo.lock, those of other platforms
/// included, which a build never downloads: `cargo fetch` gets them first (from crates.io; a
/// no-op once they are in the local registry), so `--offline` holds on a fresh machine.
pub fn check() -> Result<()> {
    run(cargo().current_dir(root()).args(["fetch", "--locked"]))?;
    run(cargo().current_dir(root()).args([
        "deny",
        "--offline",
        "check",
        "licenses",
        "bans",
        "sources",
    ]))
}
