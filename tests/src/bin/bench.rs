//! `cargo xtask bench [NAME...] [--quick]`: benchmarks of the enforcer against a baseline measured
//! in the same run. A full run of every benchmark writes `BENCHMARKS.md` and `bench/scale.svg`;
//! `--quick` (for CI) writes `target/bench/quick/`, a run of some benchmarks
//! `target/bench/partial/` (see `report::out_dir`). Every report holds only figures of its own
//! run. Names: `datapath`, `scale`, `throughput`, `synflood`, `controlplane`, `ratelimit`, `netpol`
//! (default: all).
//! Needs root.
//!
//! For experiments (nothing is written then): `ENFORCER_BENCH_ONLY=TEXT` measures only the
//! `datapath`/`scale` rows whose "program label" contains TEXT (to profile one kind of packet with
//! `perf record -a`), and `ENFORCER_BENCH_SIZES=10,5000` overrides the policy sizes of `scale`
//! and `controlplane`.

#![allow(
    clippy::cast_precision_loss,
    reason = "statistics over counts and durations far below 2^52"
)]

#[path = "../bench/controlplane.rs"]
mod controlplane;
#[path = "../bench/cref.rs"]
mod cref;
#[path = "../bench/dpbench.rs"]
mod dpbench;
#[path = "../bench/netpol.rs"]
mod netpol;
#[path = "../bench/policygen.rs"]
mod policygen;
#[path = "../bench/ratelimit.rs"]
mod ratelimit;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/stats.rs"]
mod stats;
#[path = "../bench/synflood.rs"]
mod synflood;
#[path = "../bench/testrun.rs"]
mod testrun;
#[path = "../bench/throughput.rs"]
mod throughput;

use std::{path::PathBuf, time::Instant};

use anyhow::{bail, Result};

/// Benchmark names, in report order.
pub const NAMES: [&str; 7] = [
    "datapath",
    "scale",
    "throughput",
    "synflood",
    "controlplane",
    "ratelimit",
    "netpol",
];

/// Sizes and repetitions of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// `BPF_PROG_TEST_RUN` repeats per measurement.
    pub repeat: u32,
    /// Trials per measured figure.
    pub trials: usize,
    /// Single-run pairs for new-flow costs.
    pub pairs: usize,
    /// Policy size (rules, and as many identities) of `datapath`.
    pub datapath_rules: usize,
    /// Policy sizes (rules) of `scale` and `controlplane`.
    pub sizes: Vec<usize>,
    /// Policy sizes of `throughput`.
    pub throughput_sizes: Vec<usize>,
    /// Rounds of `throughput` (every configuration once per round).
    pub rounds: usize,
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Output directory ([`report::out_dir`]: the workspace root for a full run of everything,
    /// else under `target/bench/`).
    pub out: PathBuf,
    /// The command, as a user would type it.
    pub command: String,
}

/// A goal of the issue and whether this run meets it.
#[derive(Debug, Clone)]
pub struct Goal {
    pub name: String,
    pub measured: String,
    pub met: bool,
    /// What limits it (filled when not met, or as a caveat).
    pub limit: String,
}

/// One benchmark's part of the report.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: &'static str,
    pub title: String,
    pub markdown: String,
    pub goals: Vec<Goal>,
    /// Plot points: (series, rules, value with its spread).
    pub data: Vec<(String, usize, stats::Summary)>,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-child") {
        return controlplane::rss_child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--agent-size") {
        return controlplane::agent_size_command(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut names: Vec<&str> = Vec::new();
    for a in args.iter().filter(|a| *a != "--quick") {
        match NAMES.iter().find(|n| **n == a.as_str()) {
            Some(n) => names.push(n),
            None => bail!("unknown benchmark {a:?}: expected some of {NAMES:?} and/or --quick"),
        }
    }
    if names.is_empty() {
        names = NAMES.to_vec();
    }
    let all = names.len() == NAMES.len();
    if !enforcer_tests::is_root() {
        bail!("benchmarks need root (BPF, network namespaces, iptables)");
    }
    let root = workspace_root();
    let mut command = String::from("cargo xtask bench");
    for a in &args {
        command.push(' ');
        command.push_str(a);
    }
    // The quick form is a smoke test that every benchmark and the report generator work (CI),
    // each at its smallest meaningful size: its figures are not results.
    let cfg = if quick {
        Config {
            quick,
            repeat: 10_000,
            trials: 2,
            pairs: 200,
            datapath_rules: 1_000,
            sizes: vec![10, 1_000],
            throughput_sizes: vec![10],
            rounds: 1,
            seconds: 1,
            out: report::out_dir(&root, quick, all),
            command,
        }
    } else {
        Config {
            quick,
            repeat: 1_000_000,
            trials: 5,
            pairs: 20_000,
            datapath_rules: 10_000,
            sizes: vec![10, 1_000, 10_000, dpbench::LARGEST_RULES],
            throughput_sizes: vec![10, 1_000, 10_000],
            rounds: 7,
            seconds: 3,
            out: report::out_dir(&root, quick, all),
            command,
        }
    };
    let mut cfg = cfg;
    // For experiments: override the policy sizes of `scale` and `controlplane`.
    if let Ok(v) = std::env::var("ENFORCER_BENCH_SIZES") {
        cfg.sizes = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    }
    // Other work on this machine (builds) disturbs the measurements less at the highest
    // priority; threads and children (iperf3) inherit it.
    // SAFETY: plain syscall on this process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } != 0 {
        eprintln!("warning: could not raise the priority (nice -20)");
    }
    let started = Instant::now();
    let machine = report::Machine::probe();
    eprintln!(
        "bench: {} on {} ({} CPUs, kernel {}), load {}",
        names.join(" "),
        machine.cpu,
        machine.nproc,
        machine.kernel,
        machine.load
    );
    let mut sections = Vec::new();
    for name in &names {
        let t = Instant::now();
        let section = match *name {
            "datapath" => dpbench::run_datapath(&cfg)?,
            "scale" => dpbench::run_scale(&cfg)?,
            "throughput" => throughput::run(&cfg)?,
            "synflood" => synflood::run(&cfg)?,
            "controlplane" => controlplane::run(&cfg)?,
            "ratelimit" => ratelimit::run(&cfg)?,
            "netpol" => netpol::run(&cfg)?,
            _ => unreachable!("names are checked above"),
        };
        eprintln!("{name}: {:.0} s", t.elapsed().as_secs_f64());
        sections.push((section, t.elapsed(), report::load_average()));
    }
    let total = started.elapsed();
    if std::env::var_os("ENFORCER_BENCH_ONLY").is_some()
        || std::env::var_os("ENFORCER_BENCH_SIZES").is_some()
    {
        eprintln!("ENFORCER_BENCH_ONLY/ENFORCER_BENCH_SIZES set: an experiment, no report written");
    } else {
        report::write(&cfg, &machine, &sections, total)?;
    }
    eprintln!("bench: done in {:.0} s", total.as_secs_f64());
    Ok(())
}
