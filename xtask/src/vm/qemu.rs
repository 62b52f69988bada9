//! Boot a kernel and initramfs under qemu (serial console on stdout) and collect the marker
//! lines. KVM is tried first; if userspace has not started within [`KVM_BOOT_DEADLINE`] (nested
//! KVM on some hosts hangs or stops with "KVM internal error"), the VM is started again under TCG.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::initramfs::{BOOTED, DONE, JOB, RESULT};

const KVM_BOOT_DEADLINE: Duration = Duration::from_secs(40);
const RUN_DEADLINE: Duration = Duration::from_mins(20);

pub struct Run {
    /// `uname -r` printed by `/init`.
    pub release: Option<String>,
    /// Exit code per job.
    pub results: BTreeMap<String, i32>,
    /// The last summary line per job (`test result: ...`, `N passed, M failed`).
    pub summaries: BTreeMap<String, String>,
    pub accel: &'static str,
    current_job: Option<String>,
}

/// `$ENFORCER_VM_ACCEL`: `tcg` skips the KVM attempt (hosts where nested KVM is known broken).
const ACCEL_ENV: &str = "ENFORCER_VM_ACCEL";

pub fn boot(vmlinuz: &Path, initrd: &Path, log: &Path) -> Result<Run> {
    let kvm =
        Path::new("/dev/kvm").exists() && std::env::var_os(ACCEL_ENV).is_none_or(|v| v != "tcg");
    if kvm {
        match attempt(vmlinuz, initrd, log, "kvm")? {
            Some(run) => return Ok(run),
            None => println!(
                "KVM: no userspace within {KVM_BOOT_DEADLINE:?}; booting again under TCG (slower)"
            ),
        }
    }
    attempt(vmlinuz, initrd, log, "tcg")?.context("the VM did not boot under TCG either")
}

/// One boot. `None` if userspace did not start in time under KVM.
fn attempt(vmlinuz: &Path, initrd: &Path, log: &Path, accel: &'static str) -> Result<Option<Run>> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-m", "1536", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    // "host" exposes the host CPU; arch-capabilities is an MSR nested KVM often refuses.
    cmd.args([
        "-cpu",
        if accel == "kvm" {
            "host,-arch-capabilities"
        } else {
            "max"
        },
    ]);
    println!("$ {}", crate::util::display(&cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let lines = spawn_reader(&mut child)?;
    let mut file = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut run = Run {
        release: None,
        results: BTreeMap::new(),
        summaries: BTreeMap::new(),
        accel,
        current_job: None,
    };
    let outcome = loop {
        let deadline = if run.release.is_none() && accel == "kvm" {
            KVM_BOOT_DEADLINE
        } else {
            RUN_DEADLINE
        };
        let Some(left) = deadline.checked_sub(started.elapsed()) else {
            break None;
        };
        match lines.recv_timeout(left) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                println!("  vm| {line}");
                if parse_line(&line, &mut run) {
                    break Some(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Some(()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    if outcome.is_none() {
        if run.release.is_none() && accel == "kvm" {
            return Ok(None);
        }
        bail!(
            "the VM did not finish within {RUN_DEADLINE:?} (log: {})",
            log.display()
        );
    }
    Ok(Some(run))
}

/// Record a marker line; `true` once the last job is done.
fn parse_line(line: &str, run: &mut Run) -> bool {
    // The console may prefix lines with terminal escapes.
    if let Some((_, rest)) = line.split_once(BOOTED) {
        run.release = rest.split_whitespace().next().map(str::to_owned);
    } else if let Some((_, job)) = line.split_once(JOB) {
        run.current_job = Some(job.trim().to_owned());
    } else if let (Some(job), true) = (
        &run.current_job,
        line.contains("test result:") || line.ends_with(" failed"),
    ) {
        run.summaries.insert(job.clone(), line.trim().to_owned());
    } else if let Some((_, rest)) = line.split_once(RESULT) {
        let mut words = rest.split_whitespace();
        if let (Some(name), Some(Ok(rc))) = (words.next(), words.next().map(str::parse)) {
            run.results.insert(name.to_owned(), rc);
        }
    }
    line.contains(DONE)
}

fn spawn_reader(child: &mut Child) -> Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
