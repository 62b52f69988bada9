//! `cargo xtask image`: the container image, built for real from Debian packages, no registry.
//!
//! 1. `debootstrap --variant=minbase --include=iproute2 bookworm` (cached under target/image);
//! 2. a rootfs with only what the pods run: the release `enforcer` (debug info stripped), `ip`
//!    (the agent reads addresses and routes with `ip -j`), `sh`, `mount` and `mountpoint` (the
//!    init container that mounts bpffs), and the shared libraries `ldd` lists for them; the
//!    Debian packages they come from are listed in /usr/share/enforcer/packages.txt;
//! 3. checks in the rootfs with chroot: the binaries run;
//! 4. `buildah from scratch` + copy + commit (vfs storage: works without overlayfs), then an OCI
//!    archive in target/image, and a `podman run` of the image when the sandbox allows it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::util::{banner, output, run, target_dir};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Programs copied into the image, with their libraries (paths in the Debian tree).
const PROGRAMS: &[&str] = &[
    "/usr/local/bin/enforcer",
    "/usr/bin/ip",
    "/usr/bin/dash",
    "/usr/bin/mount",
    "/usr/bin/mountpoint",
];
const BUILDAH: &[&str] = &["buildah", "--storage-driver", "vfs"];

pub fn image() -> Result<()> {
    let started = Instant::now();
    let binary = crate::build::build(true)?;
    banner("image");
    ensure_tools()?;
    let dir = target_dir().join("image");
    let debian = debootstrap(&dir.join("debootstrap"))?;
    let rootfs = dir.join("rootfs");
    assemble(&debian, &binary, &rootfs)?;
    check_rootfs(&rootfs)?;
    let archive = dir.join(format!("enforcer-{VERSION}.oci.tar"));
    let tag = format!("localhost/enforcer:{VERSION}");
    commit(&rootfs, &tag, &archive)?;
    try_podman_run(&tag);
    let size = fs::metadata(&archive)?.len();
    println!(
        "image {tag}: OCI archive {} ({} KiB), built in {:.1?}",
        archive.display(),
        size / 1024,
        started.elapsed()
    );
    Ok(())
}

/// A minimal Debian tree with iproute2, reused when complete.
fn debootstrap(base: &Path) -> Result<PathBuf> {
    let marker = base.join(".enforcer-complete");
    if marker.exists() {
        println!("debootstrap: reusing {}", base.display());
        return Ok(base.to_path_buf());
    }
    if base.exists() {
        fs::remove_dir_all(base)?;
    }
    run(Command::new("debootstrap")
        .args(["--variant=minbase", "--include=iproute2", SUITE])
        .arg(base)
        .arg(MIRROR))?;
    fs::write(&marker, SUITE)?;
    Ok(base.to_path_buf())
}

/// The shared libraries of `program` inside `debian` (`ldd` run in a chroot).
fn libraries(debian: &Path, program: &str) -> Result<Vec<String>> {
    let listed = output(Command::new("chroot").arg(debian).args(["ldd", program]))
        .with_context(|| format!("ldd {program} in {}", debian.display()))?;
    // Lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux... (0x...)`,
    // `linux-vdso.so.1 (0x...)` (in the kernel: no file).
    Ok(listed
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

/// Copy `path` of `debian` (following symlinks) to the same path under `rootfs`.
fn copy_in(debian: &Path, rootfs: &Path, path: &str) -> Result<()> {
    let from = debian.join(path.trim_start_matches('/'));
    let to = rootfs.join(path.trim_start_matches('/'));
    fs::create_dir_all(to.parent().context("no parent")?)?;
    fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

fn assemble(debian: &Path, binary: &Path, rootfs: &Path) -> Result<()> {
    let enforcer = debian.join("usr/local/bin/enforcer");
    fs::copy(binary, &enforcer)?;
    run(Command::new("strip").arg("--strip-debug").arg(&enforcer))?;
    if rootfs.exists() {
        fs::remove_dir_all(rootfs)?;
    }
    // Debian's merged /usr: the top-level directories are links into /usr.
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "usr/local/bin",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    for link in ["bin", "sbin", "lib", "lib64"] {
        symlink(format!("usr/{link}"), rootfs.join(link))?;
    }
    let mut files = BTreeSet::new();
    for program in PROGRAMS {
        files.insert((*program).to_owned());
        files.extend(libraries(debian, program)?);
    }
    for file in &files {
        copy_in(debian, rootfs, file)?;
    }
    symlink("dash", rootfs.join("usr/bin/sh"))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(debian.join("etc/iproute2"))
        .arg(rootfs.join("etc/")))?;
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    for dir in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "var/lib/enforcer",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    write_package_list(debian, rootfs, &files)
}

/// /usr/share/enforcer/packages.txt: the Debian packages (and versions) the files came from.
fn write_package_list(debian: &Path, rootfs: &Path, files: &BTreeSet<String>) -> Result<()> {
    let mut packages = BTreeSet::new();
    for file in files.iter().filter(|f| !f.starts_with("/usr/local")) {
        // dpkg records each file under one spelling of Debian's merged /usr: try all of them.
        let spellings = [
            file.clone(),
            format!("/usr{file}"),
            file.strip_prefix("/usr").unwrap_or(file).to_owned(),
        ];
        let owner = spellings
            .iter()
            .find_map(|f| output(Command::new("chroot").arg(debian).args(["dpkg", "-S", f])))
            .with_context(|| format!("no Debian package owns {file}"))?;
        packages.extend(
            owner
                .lines()
                .filter_map(|l| Some(l.split(':').next()?.to_owned())),
        );
    }
    let versions = output(
        Command::new("chroot")
            .arg(debian)
            .args(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"])
            .args(&packages),
    )
    .context("dpkg-query")?;
    let list = rootfs.join("usr/share/enforcer/packages.txt");
    fs::create_dir_all(list.parent().context("no parent")?)?;
    fs::write(&list, versions)?;
    Ok(())
}

/// The binaries run inside the rootfs (chroot), with only its own files.
fn check_rootfs(rootfs: &Path) -> Result<()> {
    let chroot = |args: &[&str]| -> Result<String> {
        output(Command::new("chroot").arg(rootfs).args(args))
            .with_context(|| format!("`chroot {} {}` failed", rootfs.display(), args.join(" ")))
    };
    let version = chroot(&["/usr/local/bin/enforcer", "--version"])?;
    chroot(&[
        "/bin/sh",
        "-ec",
        "ip -V; mount --version; mountpoint --version",
    ])?;
    // The chroot has no /dev: check a small policy written into the rootfs, then remove it.
    let probe = rootfs.join("tmp/rootfs-check.yaml");
    fs::create_dir_all(probe.parent().context("no parent")?)?;
    fs::write(
        &probe,
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: check}\n\
         spec: {service: check, addresses: [192.0.2.1]}\n",
    )?;
    let checked = chroot(&[
        "/usr/local/bin/enforcer",
        "policy",
        "check",
        "-f",
        "/tmp/rootfs-check.yaml",
    ]);
    fs::remove_file(&probe)?;
    checked?;
    println!(
        "rootfs check: {} runs in the image's rootfs",
        version.trim()
    );
    Ok(())
}

fn buildah() -> Command {
    let mut cmd = Command::new(BUILDAH[0]);
    cmd.args(&BUILDAH[1..]);
    cmd
}

/// `buildah from scratch`, copy the rootfs, set the entrypoint, commit, and write an OCI archive.
fn commit(rootfs: &Path, tag: &str, archive: &Path) -> Result<()> {
    let container = output(buildah().args(["from", "scratch"]))
        .context("`buildah from scratch` failed")?
        .trim()
        .to_owned();
    let result = (|| {
        run(buildah().arg("copy").arg(&container).arg(rootfs).arg("/"))?;
        run(buildah().args([
            "config",
            "--entrypoint",
            r#"["/usr/local/bin/enforcer"]"#,
            "--cmd",
            "agent --log-format json",
            "--port",
            "9967/tcp",
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
            "--label",
            "org.opencontainers.image.title=enforcer",
            &container,
        ]))?;
        run(buildah().args(["commit", "--rm", &container, tag]))?;
        if archive.exists() {
            fs::remove_file(archive)?;
        }
        run(buildah()
            .args(["push", tag])
            .arg(format!("oci-archive:{}:{tag}", archive.display())))
    })();
    if result.is_err() {
        let _ = buildah().args(["rm", &container]).status();
    }
    result
}

/// Run the image's binary with podman, when this machine can run containers; the reason when not.
fn try_podman_run(tag: &str) {
    let out = Command::new("podman")
        .args([
            "--storage-driver",
            "vfs",
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "--version",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            println!(
                "podman run: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out) => println!(
            "podman run: cannot run containers here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("podman run: not available: {e}"),
    }
}

/// Install debootstrap, buildah and podman from Debian when missing (not part of `setup`: only
/// this command needs them).
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["debootstrap", "buildah", "podman"]
        .into_iter()
        .filter(|tool| output(Command::new(tool).arg("--version")).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::util::is_root() {
        bail!(
            "missing: {0}; install them: `sudo apt-get install {0}`",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}
