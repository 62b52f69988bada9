//! `cargo xtask fuzz`: the long packet-fuzzing run; writes the `fuzz` section of RELIABILITY.md.

use std::path::PathBuf;

use anyhow::{bail, Result};
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
    /// Write the figures to this file's `fuzz` section.
    #[arg(long)]
    write: Option<PathBuf>,
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
    if let Some(path) = &args.write {
        fuzz::report::write(path, &section)?;
    }
    if report.wrong() > 0 {
        bail!("{} wrong verdicts", report.wrong());
    }
    Ok(())
}
