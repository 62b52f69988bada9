//! `cargo xtask docs`: regenerate the generated files of docs/ — the report of the example policy
//! (`docs/report-example.html`, `.md`) with the built `enforcer`, and its screenshot
//! (`docs/report-example.png`) with headless Debian `chromium` (installed by `setup`).

use std::{fs, process::Command};

use anyhow::{ensure, Context, Result};

use crate::{
    build::build_enforcer,
    util::{banner, root, run},
};

pub fn docs() -> Result<()> {
    let enforcer = build_enforcer(false)?;
    banner("docs: report of examples/");
    let docs = root().join("docs");
    for (format, file) in [("html", "report-example.html"), ("md", "report-example.md")] {
        let out = Command::new(&enforcer)
            .args(["policy", "report", "-o", format, "-f"])
            .arg(root().join("examples"))
            .output()
            .context("running enforcer policy report")?;
        ensure!(
            out.status.success(),
            "enforcer policy report -o {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(docs.join(file), out.stdout)?;
        println!("wrote docs/{file}");
    }
    let profile = crate::util::target_dir().join("chromium-docs");
    run(Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=940,820",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "--screenshot={}",
            docs.join("report-example.png").display()
        ))
        .arg(format!(
            "file://{}",
            docs.join("report-example.html").display()
        )))?;
    println!("wrote docs/report-example.png");
    Ok(())
}
