//! `RELIABILITY.md` is shared: each run that measures something replaces only its own section,
//! delimited by `<!-- section:NAME -->` and `<!-- /section:NAME -->`, and keeps the rest.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::util::{display, root};

const FILE: &str = "RELIABILITY.md";

/// Replace (or append) section `name` with `body`.
pub fn write_section(name: &str, body: &str) -> Result<()> {
    let path = root().join(FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Reliability\n".to_owned());
    let open = format!("<!-- section:{name} -->");
    let close = format!("<!-- /section:{name} -->");
    let section = format!("{open}\n{}\n{close}", body.trim_end());
    let new = match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &text[..a], &text[b + close.len()..])
        }
        _ => format!(
            "{}\n{section}\n",
            text.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("{FILE}: section `{name}` written");
    Ok(())
}

/// Run a test command with its output shown, and return the `key=value` pairs of its stdout
/// line that starts with `marker=` (the figures the test printed).
pub fn run_for_figures(cmd: &mut Command, marker: &str) -> Result<Vec<(String, String)>> {
    let line = display(cmd);
    println!("$ {line}");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    let prefix = format!("{marker}=");
    let figures = stdout
        .lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i..]))
        .next_back()
        .with_context(|| format!("`{line}` printed no `{prefix}` line"))?;
    Ok(figures
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// A two-column Markdown table of figures.
pub fn table(figures: &[(String, String)]) -> String {
    let mut s = String::from("| figure | value |\n|---|---|\n");
    for (k, v) in figures {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

/// `date -u`, for the sections.
pub fn now() -> String {
    crate::util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map_or_else(|| "unknown time".to_owned(), |d| d.trim().to_owned())
}
