//! Developer tasks for enforcer, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Every command that compiles the agent first runs `setup`, which installs the toolchain on a
//! fresh Debian 12 machine and is a fast no-op (a few checks) once everything is there.

mod bench;
mod build;
mod demo;
mod deny;
mod docs;
mod fuzz;
mod image;
mod manifests;
mod reliability;
mod scenario;
mod selftest;
mod setup;
mod sizes;
mod soak;
mod test;
mod tools;
mod util;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer tasks for enforcer", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (apt packages, bpf-linker) and pick the eBPF compiler
    Setup,
    /// Setup, then build the enforcer binary
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
    },
    /// Setup, then fmt check, clippy, manifests, tests, scenarios and the 6.1 kernel leg; stops
    /// at the first failure. With `--kernel`, only the kernel legs
    Test {
        /// Boot this Debian kernel (`6.1`, `6.12`) under qemu and run the datapath truth tables
        /// and a live netns scenario on it; repeatable
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Build the container image from Debian packages with buildah (target/image; a few minutes)
    Image {
        /// From the debug build (a quick check of the image build; tagged VERSION-debug)
        #[arg(long)]
        debug: bool,
    },
    /// Regenerate the generated files of docs/ (the example report and its chromium screenshot)
    Docs,
    /// Render the kustomize overlays and validate them offline (Kubernetes schemas, CRDs)
    Manifests {
        /// Regenerate the Prometheus rule object from deploy/prometheus/alerts.yaml, not check it
        #[arg(long)]
        write: bool,
    },
    /// Deliberately broken runs proving each guard of the test suite (needs root)
    Selftest,
    /// Build enforcer and the scenario runner, then run scenario files (live, or `--offline`)
    Scenario {
        /// Evaluate the probes with the policy engine alone (no namespaces, no root)
        #[arg(long)]
        offline: bool,
        /// Use a release build of enforcer
        #[arg(long)]
        release: bool,
        /// Scenario files (YAML)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List production files over 600 lines and functions over 60 (tests left out); under CI,
    /// fail on any not named in xtask/sizes-allowlist.txt
    Sizes {
        /// Rewrite the allowlist from the tree (new entries get a TODO reason to fill in)
        #[arg(long)]
        write: bool,
        /// Print lines per crate (production src, tests in src, tests/) instead
        #[arg(long, conflicts_with = "write")]
        loc: bool,
    },
    /// Build and run the demo (`enforcer-tests` binary `demo`)
    Demo {
        /// Arguments passed to the demo
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Long resilience runs: policy updates under traffic, agent kills during applies, and pod
    /// churn + updates + traffic with resources sampled (a count of 0 skips a part); writes the
    /// `updates`, `crashes` and `soak` sections of RELIABILITY.md
    Soak {
        /// Policy updates under traffic (0: skip)
        #[arg(long, default_value_t = 1000)]
        updates: usize,
        /// Agent SIGKILLs at random moments of applies (0: skip)
        #[arg(long, default_value_t = 50)]
        crashes: usize,
        /// Minutes of pod churn, policy updates and traffic together, resources sampled (0: skip)
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Run benchmarks (`enforcer-tests` binary `bench`, release build)
    Bench {
        /// Benchmarks to run (default: all)
        names: Vec<String>,
        /// Shorter runs, less precise
        #[arg(long)]
        quick: bool,
    },
    /// Fuzz every eBPF program with random and mutated frames (RELIABILITY.md section
    /// `fuzz`); with `--policy`, every policy parser with generated and mutated documents
    /// (section `policy-fuzz`)
    Fuzz {
        /// Frames to run (each through all four programs)
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seed of the frame or input generator
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fuzz the policy parsers instead of the eBPF programs
        #[arg(long)]
        policy: bool,
        /// Policy inputs to run (with `--policy`)
        #[arg(long, default_value_t = 100_000)]
        inputs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup().map(|_| ()),
        Command::Build { release } => build::build(release).map(|_| ()),
        Command::Test { kernels } => test::test(&kernels),
        Command::Image { debug } => image::image(debug),
        Command::Docs => docs::docs(),
        Command::Manifests { write } => manifests::manifests(write),
        Command::Selftest => selftest::selftest(),
        Command::Scenario {
            offline,
            release,
            files,
        } => scenario::scenario(offline, release, &files),
        Command::Sizes { loc: true, .. } => sizes::loc(),
        Command::Sizes { write, .. } => sizes::sizes(write),
        Command::Demo { args } => demo::demo(&args),
        Command::Soak {
            updates,
            crashes,
            minutes,
        } => soak::soak(updates, crashes, minutes),
        Command::Bench { names, quick } => bench::bench(&names, quick),
        Command::Fuzz {
            policy: true,
            inputs,
            seed,
            ..
        } => fuzz::policy(inputs, seed),
        Command::Fuzz { frames, seed, .. } => fuzz::fuzz(frames, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the causes, no backtrace: the output above tells the rest.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
