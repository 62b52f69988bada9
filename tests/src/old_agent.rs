//! A real older agent (N-1) for the upgrade and downgrade tests, built from this repository's own
//! history: the source of [`OLD_AGENT_COMMIT`] is extracted with `git archive` into
//! `target/old-agent/<commit>/src` and built with cargo into the same target dir (the dependencies
//! it shares with the current tree are not built again). The binary is kept as
//! `target/old-agent/<commit>/enforcer`: built once, then reused.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// The last commit before the pinned layout changed (`LAYOUT_VERSION` 2; 1930b5d made it 3): an
/// upgrade from it and a downgrade to it cross a layout change, the hardest case.
pub const OLD_AGENT_COMMIT: &str = "356c40be23c26ddafc7b96f92fd11cbdcf45b77a";
/// Its layout version (the pin directory `<bpffs>/v2`).
pub const OLD_LAYOUT_VERSION: u32 = 2;

/// The workspace root (where `.git` and `Cargo.lock` are).
fn workspace() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the tests crate sits in the workspace")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

/// Makes sure [`OLD_AGENT_COMMIT`] is in the repository: a shallow clone (as some CI systems
/// make) lacks it, so the history is fetched from `origin` once.
fn ensure_history() -> Result<()> {
    let has_commit = |root: &Path| {
        Command::new("git")
            .current_dir(root)
            .args(["cat-file", "-e", &format!("{OLD_AGENT_COMMIT}^{{commit}}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    let root = workspace()?;
    if has_commit(&root) {
        return Ok(());
    }
    eprintln!("{OLD_AGENT_COMMIT} is not in this clone's history: fetching it from origin");
    let fetched = Command::new("git")
        .current_dir(&root)
        .args(["fetch", "--quiet", "--unshallow", "origin"])
        .status();
    ensure!(
        has_commit(&root),
        "the upgrade tests build the older agent from commit {OLD_AGENT_COMMIT}, which this clone \
         lacks, and `git fetch --unshallow origin` did not bring it ({fetched:?}): clone with full history"
    );
    Ok(())
}

/// The older agent's binary, built from source if it is not cached yet.
pub fn old_agent() -> Result<PathBuf> {
    // target/<profile>/deps/<test> → target (not from `enforcer_bin`, which a test may point
    // at the old agent through `ENFORCER_BIN`).
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test executable is not under target/<profile>/deps")?
        .to_path_buf();
    let current = target.join("debug").join("enforcer");
    let dir = target.join("old-agent").join(OLD_AGENT_COMMIT);
    let bin = dir.join("enforcer");
    if bin.exists() {
        return Ok(bin);
    }
    let src = dir.join("src");
    if !src.join("Cargo.toml").exists() {
        ensure_history()?;
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .current_dir(workspace()?)
            .args(["archive", "--format=tar", OLD_AGENT_COMMIT])
            .output()
            .context("git archive")?;
        if !archive.status.success() {
            bail!(
                "git archive {OLD_AGENT_COMMIT}: {}",
                String::from_utf8_lossy(&archive.stderr)
            );
        }
        let mut untar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(&src)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(
            untar.stdin.as_mut().context("tar's stdin")?,
            &archive.stdout,
        )?;
        ensure!(untar.wait()?.success(), "tar -x failed");
    }
    // The build writes target/<profile>/enforcer: keep the current one aside and put it back.
    let saved = dir.join("current-enforcer");
    std::fs::copy(&current, &saved).context("saving the current binary")?;
    let built = run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "-p", "enforcer", "--bin", "enforcer"])
            // The current tree's dev profile, so the shared dependencies are reused as built.
            .args(["--config", "profile.dev.debug=\"line-tables-only\""])
            .args(["--config", "profile.dev.package.\"*\".debug=false"]),
    );
    let debug = target.join("debug").join("enforcer");
    let moved = built.and_then(|()| Ok(std::fs::copy(&debug, &bin).map(drop)?));
    std::fs::rename(&saved, &current).context("putting the current binary back")?;
    moved.with_context(|| format!("building the agent of {OLD_AGENT_COMMIT}"))?;
    Ok(bin)
}
