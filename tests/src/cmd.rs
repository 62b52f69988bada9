//! Running external commands (`ip`, `nsenter`) with checked exit status.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Renders a command line for error messages.
pub(crate) fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            let _ = write!(s, " '{arg}'");
        } else {
            let _ = write!(s, " {arg}");
        }
    }
    s
}

/// Runs `cmd` to completion and returns its output; a non-zero exit status is an error carrying the
/// command line and its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let line = render(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs `cmd` and returns its stdout as a string (lossy UTF-8); fails on a non-zero exit status.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run_checked(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip [-n NS] ARGS...` and checks its exit status.
pub(crate) fn ip<I, S>(ns: Option<&str>, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.arg("-n").arg(ns);
    }
    cmd.args(args);
    run_stdout(&mut cmd)
}
