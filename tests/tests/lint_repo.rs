//! The repository's example policy is lint-clean: `enforcer policy lint -f examples/` (the CLI
//! contract) exits 0 with no finding, so docs/lint.md's claim is checked, not typed by hand.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use enforcer_tests::cluster::enforcer_bin;

#[test]
fn examples_are_lint_clean() -> Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = std::process::Command::new(enforcer_bin()?)
        .args(["policy", "lint", "-f"])
        .arg(&examples)
        .output()
        .context("running enforcer policy lint")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("0 finding(s)"),
        "enforcer policy lint -f examples/: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
