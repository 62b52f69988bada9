//! `cargo xtask fuzz`: the long packet-fuzzing run; prints (and with `--body`, writes) the body
//! of the `fuzz` section of RELIABILITY.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use enforcer_tests::fuzz;

#[derive(Parser)]
#[command(about = "Fuzz every eBPF program through BPF_PROG_TEST_RUN")]
struct Args {
    /// Frames to run (each through all four programs).
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Seed of the frame generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the section body to this file.
    #[arg(long)]
    body: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let report = fuzz::run(args.frames, args.seed)?;
    let command = format!(
        "cargo xtask fuzz --frames {} --seed {}",
        args.frames, args.seed
    );
    let section = fuzz::report::section(&report, &command);
    print!("{section}");
    if let Some(path) = &args.body {
        std::fs::write(path, &section).with_context(|| format!("write {}", path.display()))?;
    }
    if report.wrong() > 0 {
        bail!("{} wrong verdicts", report.wrong());
    }
    Ok(())
}
