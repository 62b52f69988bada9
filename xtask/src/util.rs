//! Helpers shared by the commands: running commands, workspace paths.

use std::env;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The workspace root (parent of the xtask crate).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root), else
/// `<root>/target`.
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |dir| root().join(dir))
}

/// A `cargo` command run from the workspace root, using the same cargo that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(root());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The command line as a shell would show it, with the environment variables set on the command.
pub fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        let value = value?.to_string_lossy();
        Some(format!("{}={}", key.to_string_lossy(), quote(&value)))
    });
    // `$CARGO` is a long toolchain path; "cargo" reads better.
    let program = if env::var_os("CARGO").as_deref() == Some(cmd.get_program()) {
        "cargo".into()
    } else {
        quote(&cmd.get_program().to_string_lossy())
    };
    let args = cmd.get_args().map(|arg| quote(&arg.to_string_lossy()));
    let words = std::iter::once(program).chain(args);
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Echo the command, run it, and fail unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run the command and return its stdout, or `None` if it cannot start or fails. Not echoed: for
/// checks.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Echo the command and replace this process with it, so its exit code and signals are the
/// caller's.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot exec `{line}`"))
}

/// Prints `==> title` so the steps stand out in long logs.
pub fn banner(title: &str) {
    println!("\n==> {title}");
}
