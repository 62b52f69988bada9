//! The catalogue of malformed policy inputs in `tests/malformed/`: each file starts with one
//! `# expect: MESSAGE` line per line of the exact error (`file:line:column: reason`). Each is
//! rejected with exactly that by `enforcer policy check` (exit 1) and by a running agent, which
//! keeps enforcing the policy it had. `ENFORCER_BLESS=1` rewrites the headers from what
//! `policy check` says now (after a deliberate change of messages; review the diff).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context, Result};
use common::Env;
use enforcer_tests::cluster::enforcer_bin;

const EXPECT: &str = "# expect: ";

fn catalogue() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("malformed");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The expected message of a catalogue file (its `# expect:` lines, joined).
fn expected(text: &str) -> String {
    text.lines()
        .map_while(|l| l.strip_prefix(EXPECT))
        .collect::<Vec<_>>()
        .join("\n")
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `enforcer policy check -f NAME` in the catalogue directory: (exit code, stderr).
fn check(path: &Path) -> Result<(Option<i32>, String)> {
    let out = Command::new(enforcer_bin()?)
        .current_dir(path.parent().context("no directory")?)
        .args(["policy", "check", "-f", &name(path)])
        .output()?;
    let msg = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    Ok((out.status.code(), msg))
}

/// Rewrite a file's header from what `policy check` says (the header's line count shifts the
/// line numbers, so repeat until stable).
fn bless(path: &Path) -> Result<()> {
    let text = fs::read_to_string(path)?;
    let body = text
        .lines()
        .skip_while(|l| l.starts_with(EXPECT))
        .fold(String::new(), |acc, l| acc + l + "\n");
    let mut header_lines = 1;
    for _ in 0..4 {
        let header = format!("{EXPECT}PLACEHOLDER\n").repeat(header_lines);
        fs::write(path, format!("{header}{body}"))?;
        let msg = check(path)?.1;
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
        let header = msg
            .lines()
            .fold(String::new(), |acc, l| acc + EXPECT + l + "\n");
        fs::write(path, format!("{header}{body}"))?;
        if msg.lines().count() == header_lines && check(path)?.1 == format!("error: {msg}") {
            return Ok(());
        }
        header_lines = msg.lines().count();
    }
    anyhow::bail!("{}: the header does not settle", path.display())
}

#[test]
fn catalogue_check_gives_exact_messages() -> Result<()> {
    let files = catalogue()?;
    ensure!(files.len() >= 50, "{} inputs in the catalogue", files.len());
    let mut failures = Vec::new();
    for path in &files {
        if std::env::var_os("ENFORCER_BLESS").is_some() {
            bless(path)?;
        }
        let want = expected(&fs::read_to_string(path)?);
        ensure!(
            !want.is_empty(),
            "{}: no `# expect:` header",
            path.display()
        );
        let (code, msg) = check(path)?;
        if code != Some(1) || msg != format!("error: {want}") {
            failures.push(format!(
                "{}: exit {code:?}\n  want: error: {want}\n  got:  {msg}",
                name(path)
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn catalogue_applied_to_an_agent_leaves_the_policy_enforced() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::enforcing("malformed")?;
    let generation = e.agent.status()?.generation;
    let mut failures = Vec::new();
    for path in catalogue()? {
        let text = fs::read_to_string(&path)?;
        let want = expected(&text);
        match e.agent.apply(&name(&path), &text) {
            Ok(r) => failures.push(format!("{}: applied: {r:?}", name(&path))),
            Err(err) => {
                let got = err.root_cause().to_string();
                if got.trim_end() != want {
                    failures.push(format!("{}:\n  want: {want}\n  got:  {got}", name(&path)));
                }
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    ensure!(
        e.agent.status()?.generation == generation,
        "no rejected input changed the generation"
    );
    e.denied_with_drop_evidence()?;
    ensure!(e.allowed()?, "the previous policy is still enforced");
    Ok(())
}
