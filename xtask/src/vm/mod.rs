//! `cargo xtask test --kernel 6.1`: boot a Debian kernel under qemu with the test binaries in an
//! initramfs (as aya's CI does for its kernel matrix) and run, on that kernel, the datapath truth
//! tables (`BPF_PROG_TEST_RUN`: every program must pass the verifier), the attach-mode tests and
//! live netns scenarios (real agent, real attach, real packets). The serial console carries one
//! marker line per job.

mod initramfs;
mod kernel;
mod qemu;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::scenario::build_runner;
use crate::setup::ensure_packages;
use crate::util::{banner, cargo, root, target_dir};
use initramfs::{Image, Job};

/// What the VM leg needs on top of the build packages.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "binutils",
];

/// Modules the tests need that Debian's cloud kernels build as modules, in load order: veth pairs,
/// the fabric bridge (needs llc, stp), clsact and `cls_bpf` for the legacy tc attach.
const MODULES: &[&str] = &["veth", "llc", "stp", "bridge", "sch_ingress", "cls_bpf"];

/// Scenario files run live inside the VM: deny, allow by service, stateful replies.
const VM_SCENARIOS: &[&str] = &[
    "tests/scenarios/02-default-deny-all-ingress.yaml",
    "tests/scenarios/04-allow-by-service.yaml",
    "tests/scenarios/23-stateful-replies.yaml",
];

/// Result of one kernel leg.
pub struct LegReport {
    pub kernel: String,
    pub package: String,
    /// (job, exit code, its last summary line)
    pub jobs: Vec<(String, i32, String)>,
    pub accel: &'static str,
    pub seconds: f64,
}

/// Run the leg for each version; fails if any job on any kernel fails.
pub fn kernel_legs(versions: &[String]) -> Result<Vec<LegReport>> {
    ensure_packages(VM_PACKAGES)?;
    let bins = build_binaries()?;
    let mut reports = Vec::new();
    for version in versions {
        banner(&format!("kernel {version} (qemu)"));
        let report = leg(version, &bins)?;
        let failed: Vec<_> = report.jobs.iter().filter(|(_, rc, _)| *rc != 0).collect();
        println!(
            "kernel {} ({}, {}, {:.0} s): {}",
            report.kernel,
            report.package,
            report.accel,
            report.seconds,
            report
                .jobs
                .iter()
                .map(|(n, rc, _)| format!("{n}={}", if *rc == 0 { "ok" } else { "FAILED" }))
                .collect::<Vec<_>>()
                .join(" ")
        );
        write_section(version, &report)?;
        if !failed.is_empty() {
            bail!("kernel {version}: jobs failed: {failed:?}");
        }
        reports.push(report);
    }
    Ok(reports)
}

/// The binaries the VM runs (built on the host, from this checkout).
struct Binaries {
    tests: Vec<(String, PathBuf)>,
    enforcer: PathBuf,
    scenario: PathBuf,
}

fn build_binaries() -> Result<Binaries> {
    let scenario = build_runner(false)?;
    let enforcer = scenario.with_file_name("enforcer");
    let out = cargo()
        .args([
            "test",
            "-p",
            "enforcer-tests",
            "--no-run",
            "--message-format=json",
        ])
        .args(["--test", "datapath", "--test", "datapath_scenarios"])
        .args(["--test", "resilience"])
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the test binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(exe), Some(name)) = (
            is_test,
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
        ) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if tests.len() != 3 {
        bail!("expected 3 test binaries from cargo, got {tests:?}");
    }
    Ok(Binaries {
        tests,
        enforcer,
        scenario,
    })
}

fn leg(version: &str, bins: &Binaries) -> Result<LegReport> {
    let started = Instant::now();
    let kernel = kernel::fetch(version)?;
    let work = target_dir()
        .join("vm")
        .join(format!("run-{}", kernel.release));
    let mut image = Image::new(&work.join("root"))?;
    for (_, exe) in &bins.tests {
        image.add_program(exe)?;
    }
    image.add_program(&bins.enforcer)?;
    image.add_program(&bins.scenario)?;
    for tool in ["ip", "nsenter", "tc"] {
        image.add_program(&which(tool)?)?;
    }
    // datapath_scenarios reads the scenario files from the source tree.
    image.add_same_path(&root().join("tests/scenarios"))?;
    for name in MODULES {
        if let Some(file) = kernel::module(&kernel, name, &work)? {
            image.add_module(&file)?;
        }
    }
    let mut jobs: Vec<Job> = bins
        .tests
        .iter()
        .map(|(name, exe)| Job {
            name: name.clone(),
            command: format!("{} --test-threads=1 --nocapture", exe.display()),
        })
        .collect();
    let scenarios: Vec<String> = VM_SCENARIOS
        .iter()
        .map(|s| root().join(s).display().to_string())
        .collect();
    jobs.push(Job {
        name: "netns-scenario".into(),
        command: format!("{} {}", bins.scenario.display(), scenarios.join(" ")),
    });
    let env = [
        ("ENFORCER_BIN", bins.enforcer.display().to_string()),
        // Under TCG the agent's program loads take tens of seconds.
        ("ENFORCER_AGENT_READY_SECS", "180".to_owned()),
    ];
    let initrd = work.join("initramfs.gz");
    image.finish(&jobs, &env, &initrd)?;
    let run = qemu::boot(&kernel.vmlinuz, &initrd, &work.join("console.log"));
    let _ = std::fs::remove_file(&initrd);
    let run = run?;
    if run.release.as_deref() != Some(kernel.release.as_str()) {
        bail!(
            "the VM booted {:?}, expected {}",
            run.release,
            kernel.release
        );
    }
    let jobs = jobs
        .iter()
        .map(|j| {
            let rc = run.results.get(&j.name).copied().unwrap_or(-1);
            let summary = run.summaries.get(&j.name).cloned().unwrap_or_default();
            (j.name.clone(), rc, summary)
        })
        .collect();
    Ok(LegReport {
        kernel: kernel.release,
        package: kernel.package,
        jobs,
        accel: run.accel,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The `kernels-<version>` section of RELIABILITY.md, from this run (failed runs too).
fn write_section(version: &str, r: &LegReport) -> Result<()> {
    let mut body = format!(
        "### Kernel {version}: {}\n\nMeasured by `cargo xtask test --kernel {version}` on {} \
         (package `{}`, qemu {}, {:.0} s including the build of the image). A job that loads \
         the datapath passes only if every program passes this kernel's verifier; the netns \
         scenario runs the real agent (tc attach mode chosen by its feature probe) with real \
         packets.\n\n| job | exit code | summary |\n|---|---|---|\n",
        r.kernel,
        crate::reliability::now(),
        r.package,
        r.accel,
        r.seconds
    );
    for (job, rc, summary) in &r.jobs {
        let _ = writeln!(body, "| {job} | {rc} | {summary} |");
    }
    crate::reliability::write_section(&format!("kernels-{version}"), &body)
}

fn which(tool: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not found"))
}
