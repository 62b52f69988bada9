//! `cargo xtask scenario [--offline] [--release] FILES...`: build enforcer and the scenario
//! runner (the `scenario` binary of the tests crate, which uses the netns harness), then run it
//! with its exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::build::build_enforcer;
use crate::setup::setup;
use crate::util::{banner, cargo, exec, root, run};

pub fn scenario(offline: bool, release: bool, files: &[PathBuf]) -> Result<()> {
    setup()?;
    banner("build enforcer and the scenario runner");
    let runner = build_runner(release)?;
    banner("scenario");
    exec(&mut command(&runner, offline, files))
}

/// Build `enforcer` (the agent the live runner starts) and the runner; returns the runner's path.
pub fn build_runner(release: bool) -> Result<PathBuf> {
    let enforcer = build_enforcer(release)?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "enforcer-tests", "--bin", "scenario"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(enforcer.with_file_name("scenario"))
}

/// Run the scenarios as one step of `cargo xtask test`, from the workspace root: an error if any
/// probe does not match.
pub fn run_scenarios(runner: &Path, offline: bool, files: &[PathBuf]) -> Result<()> {
    run(command(runner, offline, files).current_dir(root()))
}

/// The scenario files (`*.yaml`, sorted) directly in `dir`, a path relative to the workspace root;
/// none if `dir` does not exist. The paths are relative too: [`run_scenarios`] runs in the root.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let abs_dir = root().join(dir);
    if !abs_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in abs_dir.read_dir()? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "yaml") && path.is_file() {
            files.push(dir.join(entry.file_name()));
        }
    }
    files.sort();
    Ok(files)
}

fn command(runner: &Path, offline: bool, files: &[PathBuf]) -> Command {
    let mut cmd = Command::new(runner);
    if offline {
        cmd.arg("--offline");
    }
    cmd.args(files);
    cmd
}
