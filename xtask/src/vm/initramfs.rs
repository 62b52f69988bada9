//! The VM's initramfs: busybox (static) for the shell, the host's dynamically linked programs
//! with the libraries `ldd` names (same paths as on the host), kernel modules, and an `/init`
//! script that runs the jobs and prints one marker line per job on the serial console.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util::{output, run};

/// Printed by `/init` as soon as it starts: the kernel booted and userspace runs.
pub const BOOTED: &str = "ENFORCER-VM-BOOTED";
/// `ENFORCER-VM-RESULT <job> <exit code>`, one per job.
pub const RESULT: &str = "ENFORCER-VM-RESULT";
/// `ENFORCER-VM-JOB <job>`, before each job's output.
pub const JOB: &str = "ENFORCER-VM-JOB";
/// Printed after the last job.
pub const DONE: &str = "ENFORCER-VM-DONE";

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "insmod", "poweroff", "cat", "echo", "ln", "sleep",
];

/// One command the VM runs; its exit code is reported under `name`.
pub struct Job {
    pub name: String,
    pub command: String,
}

pub struct Image {
    dir: PathBuf,
    libs: BTreeSet<PathBuf>,
    modules: Vec<String>,
}

impl Image {
    /// An empty image tree at `dir` (removed first).
    pub fn new(dir: &Path) -> Result<Image> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        for sub in ["bin", "proc", "sys", "dev", "tmp", "run", "lib/modules"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::copy(BUSYBOX, dir.join("bin/busybox"))
            .with_context(|| format!("{BUSYBOX} (apt: busybox-static)"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
        }
        Ok(Image {
            dir: dir.to_path_buf(),
            libs: BTreeSet::new(),
            modules: Vec::new(),
        })
    }

    /// Copy a file to the same absolute path inside the image (a directory recursively).
    pub fn add_same_path(&mut self, path: &Path) -> Result<()> {
        let dest = self.dir.join(path.strip_prefix("/").unwrap_or(path));
        std::fs::create_dir_all(dest.parent().context("file has no parent")?)?;
        let status = Command::new("cp")
            .arg("-rL")
            .arg(path)
            .arg(&dest)
            .status()?;
        if !status.success() {
            bail!("cp -rL {} {} failed", path.display(), dest.display());
        }
        Ok(())
    }

    /// Copy a program (at the same path, without its debug info: debug builds are hundreds of
    /// MB) and the shared libraries it needs.
    pub fn add_program(&mut self, path: &Path) -> Result<()> {
        self.add_same_path(path)?;
        let copy = self.dir.join(path.strip_prefix("/").unwrap_or(path));
        let status = Command::new("strip").arg("-g").arg(&copy).status()?;
        if !status.success() {
            bail!("strip -g {} failed", copy.display());
        }
        let ldd = output(Command::new("ldd").arg(path)).unwrap_or_default();
        for line in ldd.lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                self.libs.insert(PathBuf::from(lib));
            }
        }
        Ok(())
    }

    /// Add a kernel module file; `/init` loads the modules in the order they were added.
    pub fn add_module(&mut self, file: &Path) -> Result<()> {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .context("module file name")?
            .to_owned();
        std::fs::copy(file, self.dir.join("lib/modules").join(&name))?;
        self.modules.push(name);
        Ok(())
    }

    /// Write `/init` for `jobs` and pack the image as a gzip'd newc cpio archive at `out`.
    pub fn finish(mut self, jobs: &[Job], env: &[(&str, String)], out: &Path) -> Result<()> {
        for lib in std::mem::take(&mut self.libs) {
            self.add_same_path(&lib)?;
        }
        let init = self.dir.join("init");
        std::fs::write(&init, self.init_script(jobs, env))?;
        run(Command::new("chmod").arg("+x").arg(&init))?;
        let status = Command::new("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
            .arg(out)
            .current_dir(&self.dir)
            .status()
            .context("running cpio")?;
        if !status.success() {
            bail!("packing the initramfs failed ({status})");
        }
        // The tree is hundreds of MB and only the archive is used.
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }

    fn init_script(&self, jobs: &[Job], env: &[(&str, String)]) -> String {
        let mut s = String::from(
            "#!/bin/sh\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sys /sys\n\
             mount -t devtmpfs dev /dev\n\
             mount -t bpf bpf /sys/fs/bpf\n\
             mount -t tmpfs tmp /tmp\n\
             mount -t tmpfs run /run\n\
             export PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/tmp RUST_BACKTRACE=1\n",
        );
        let _ = writeln!(s, "echo {BOOTED} $(cat /proc/sys/kernel/osrelease)");
        for m in &self.modules {
            let _ = writeln!(s, "insmod /lib/modules/{m} || echo \"insmod {m} failed\"");
        }
        for (k, v) in env {
            let _ = writeln!(s, "export {k}='{v}'");
        }
        s.push_str("cd /tmp\n");
        for job in jobs {
            let _ = writeln!(s, "echo '{JOB} {}'", job.name);
            let _ = writeln!(s, "{} ; echo \"{RESULT} {} $?\"", job.command, job.name);
        }
        let _ = writeln!(s, "echo {DONE}\npoweroff -f");
        s
    }
}
