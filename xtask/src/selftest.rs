//! `cargo xtask selftest`: deliberately broken runs proving that each guard of the test suite
//! catches what it is meant to catch. A case passes when the guard catches the sabotage.
//!
//! - The live runner's guards (the `selftest` binary of `enforcer-tests`): a `deny` probe whose
//!   echo server was killed fails with "no drop evidence"; a limiter at twice the stated rate
//!   fails its `rate_limited` probe; each with a control case that passes.
//! - The CI guard (here): as a non-root user under `CI=true`, `cargo xtask test` fails at once,
//!   and an integration test that needs root fails instead of skipping; without `CI` the same
//!   test skips (the control).
//!
//! Ends with `N passed, M failed`; fails if any case failed. Needs root (it drops to `nobody`).

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{bail, Context as _, Result};

use crate::scenario::build_runner;
use crate::util::{banner, cargo, display, is_root, root, run};

/// The unprivileged user the CI cases run as.
const NOBODY: [&str; 4] = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];

pub fn selftest() -> Result<()> {
    if !is_root() {
        bail!("selftest needs root (namespaces, eBPF, and switching to the user nobody)");
    }
    build_runner(false)?;
    run(cargo().args(["build", "-p", "enforcer-tests", "--bin", "selftest"]))?;
    banner("selftest: the live runner's guards");
    let bin = crate::util::target_dir().join("debug").join("selftest");
    let out = Command::new(&bin)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let (mut passed, mut failed) =
        counts(&text).context("the selftest binary printed no summary")?;
    banner("selftest: the CI guard");
    for (name, result) in ci_cases()? {
        match result {
            Ok(()) => {
                passed += 1;
                println!("PASS  {name}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name}: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || !out.status.success() {
        bail!("{failed} selftest case(s) failed");
    }
    Ok(())
}

/// `N passed, M failed` from the last such line of `text`.
fn counts(text: &str) -> Option<(usize, usize)> {
    let line = text.lines().rev().find(|l| l.ends_with(" failed"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        [p, "passed,", f, "failed"] => Some((p.parse().ok()?, f.parse().ok()?)),
        _ => None,
    }
}

type Case = (&'static str, Result<()>);

fn ci_cases() -> Result<Vec<Case>> {
    let xtask = std::env::current_exe()?;
    let test_bin = integration_test_binary("enforce")?;
    let copy = std::env::temp_dir().join(format!("enforcer-selftest-{}", std::process::id()));
    // `nobody` may not read the build directory everywhere: run a world-readable copy.
    std::fs::copy(&test_bin, &copy)?;
    let cases = vec![
        (
            "non-root under CI=true: `cargo xtask test` fails at once",
            expect_failure(&as_nobody(&xtask, &["test"], true), "CI=true and not root"),
        ),
        (
            "non-root under CI=true: an integration test that needs root fails",
            expect_failure(
                &as_nobody(&copy, &["--test-threads=1"], true),
                "CI=true forbids skipping",
            ),
        ),
        (
            "control: non-root without CI, the same integration test skips and passes",
            expect_success(&as_nobody(
                &copy,
                &["--test-threads=1", "--nocapture"],
                false,
            )),
        ),
    ];
    let _ = std::fs::remove_file(&copy);
    Ok(cases)
}

/// Build an integration test of `enforcer-tests` and return its executable.
fn integration_test_binary(name: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "enforcer-tests",
        "--test",
        name,
        "--no-run",
        "--message-format=json",
    ]);
    println!("$ {}", display(&cmd));
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("building the {name} test failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == name)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("no executable for the {name} test"))
}

/// Run `program args` as the user nobody, with `CI=true` or without `CI`.
fn as_nobody(program: &std::path::Path, args: &[&str], ci: bool) -> Result<Output> {
    let mut cmd = Command::new("setpriv");
    cmd.args(NOBODY).arg(program).args(args).current_dir(root());
    cmd.env_remove("CI");
    if ci {
        cmd.env("CI", "true");
    }
    println!("$ {}", display(&cmd));
    cmd.output().context("running setpriv")
}

fn expect_failure(out: &Result<Output>, needle: &str) -> Result<()> {
    let out = out.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        bail!("it passed ({})", out.status);
    }
    if !text.contains(needle) {
        bail!("it failed, but not saying {needle:?}:\n{text}");
    }
    Ok(())
}

fn expect_success(out: &Result<Output>) -> Result<()> {
    let out = out.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("it failed ({}):\n{text}", out.status);
    }
    if !text.contains("skipped: needs root") {
        bail!("it passed without saying it skipped:\n{text}");
    }
    Ok(())
}
