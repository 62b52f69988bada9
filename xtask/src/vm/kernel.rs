//! Debian kernels for the VM leg: the newest `linux-image-<version>*-cloud-amd64-unsigned` apt
//! knows, downloaded with `apt-get download` and unpacked (`dpkg-deb -x`) under
//! `target/vm/<package>/`, never installed on the host. A second run reuses the unpacked tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util::{is_root, output, run, target_dir};

/// An unpacked kernel package.
pub struct Kernel {
    /// The Debian package, e.g. `linux-image-6.1.0-57-cloud-amd64-unsigned`.
    pub package: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` inside the unpacked package.
    pub modules: PathBuf,
}

/// Find, download and unpack the kernel for `version` (`6.1`, `6.12`).
pub fn fetch(version: &str) -> Result<Kernel> {
    let package = newest_package(version)?;
    let dir = target_dir().join("vm").join(&package);
    if find_vmlinuz(&dir).is_none() {
        download(&package, &dir)?;
    }
    let vmlinuz =
        find_vmlinuz(&dir).with_context(|| format!("{} has no boot/vmlinuz-*", dir.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz file name")?
        .to_owned();
    let modules = dir.join("lib/modules").join(&release);
    println!("kernel {version}: {package} (release {release})");
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        modules,
    })
}

/// The newest cloud kernel package of `version` apt offers (the cloud flavour: virtio and the
/// serial console built in, what cloud nodes run).
fn newest_package(version: &str) -> Result<String> {
    let pattern = format!(
        "^linux-image-{}[.-].*-cloud-amd64-unsigned$",
        version.replace('.', "\\.")
    );
    let search = || {
        output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))
            .unwrap_or_default()
    };
    let mut listed = search();
    if listed.trim().is_empty() && is_root() {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get").args(["update", "-q"]))?;
        listed = search();
    }
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .max_by_key(|name| version_key(name))
        .with_context(|| format!("apt knows no package matching {pattern}"))
}

/// The numbers in a package name, for ordering `6.1.0-9` before `6.1.0-57`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn download(package: &str, dir: &Path) -> Result<()> {
    let cache = dir.parent().context("vm cache dir")?;
    std::fs::create_dir_all(cache)?;
    run(Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(cache))?;
    let deb = std::fs::read_dir(cache)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir))?;
    std::fs::remove_file(&deb)?;
    if find_vmlinuz(dir).is_none() {
        bail!("{} unpacked without a kernel image", deb.display());
    }
    Ok(())
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

/// The module file `name` (`veth`) in the kernel's tree, decompressed into `dest_dir` if it is
/// `.ko.xz`. `None` if the kernel has no such module (built in or absent).
pub fn module(kernel: &Kernel, name: &str, dest_dir: &Path) -> Result<Option<PathBuf>> {
    let file = format!("{name}.ko");
    let found = walk(&kernel.modules).into_iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == file || n == format!("{file}.xz"))
    });
    let Some(src) = found else { return Ok(None) };
    let dest = dest_dir.join(&file);
    if src.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&src)
            .output()
            .context("running xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", src.display());
        }
        std::fs::write(&dest, out.stdout)?;
    } else {
        std::fs::copy(&src, &dest)?;
    }
    Ok(Some(dest))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(std::result::Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
