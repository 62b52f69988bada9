//! `cargo xtask image`: the container image, built for real from Debian packages, no registry.
//!
//! 1. `debootstrap --variant=minbase bookworm` (cached under target/image);
//! 2. a rootfs with only what the pods run: `enforcer` and `enforcer-cni` (debug info stripped;
//!    the release build, or the debug one with `--debug`), `sh`, `mount` and `mountpoint` (the
//!    init container that mounts bpffs), `sleep` (the uninstall daemon set), and the shared
//!    libraries `ldd` lists for them; the Debian packages they come from are listed in
//!    /usr/share/enforcer/packages.txt;
//! 3. checks in the rootfs with chroot: every program the manifests run, `enforcer-cni VERSION`,
//!    and `enforcer cni install` chaining the plugin into a conflist as the init container does;
//! 4. `buildah from scratch` + copy + commit (vfs storage: works without overlayfs), then an OCI
//!    archive in target/image, and a `podman run` of the image (runc; crun refuses this
//!    machine's hybrid cgroup hierarchy).

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
    "/usr/local/bin/enforcer-cni",
    "/usr/bin/dash",
    "/usr/bin/mount",
    "/usr/bin/mountpoint",
    "/usr/bin/sleep",
];
const BUILDAH: &[&str] = &["buildah", "--storage-driver", "vfs"];

/// `cargo xtask image [--debug]`: `debug` builds the image from the debug binaries (a quick check
/// of the build; tagged `VERSION-debug`).
pub fn image(debug: bool) -> Result<()> {
    let started = Instant::now();
    let binary = crate::build::build(!debug)?;
    banner("image");
    let dir = target_dir().join("image");
    let debian = debootstrap(&dir.join("debootstrap"))?;
    let rootfs = dir.join("rootfs");
    assemble(&debian, &binary, &rootfs)?;
    check_rootfs(&rootfs)?;
    let version = if debug {
        format!("{VERSION}-debug")
    } else {
        VERSION.to_owned()
    };
    let archive = dir.join(format!("enforcer-{version}.oci.tar"));
    let tag = format!("localhost/enforcer:{version}");
    commit(&rootfs, &tag, &archive)?;
    check_image(&tag, &dir)?;
    let size = fs::metadata(&archive)?.len();
    println!(
        "image {tag}: OCI archive {} ({} KiB), built in {:.1?}",
        archive.display(),
        size / 1024,
        started.elapsed()
    );
    Ok(())
}

/// A minimal Debian tree, reused when complete.
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
        .args(["--variant=minbase", SUITE])
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
    for name in ["enforcer", "enforcer-cni"] {
        let from = binary.with_file_name(name);
        let to = debian.join("usr/local/bin").join(name);
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        run(Command::new("strip").arg("--strip-debug").arg(&to))?;
    }
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
    fs::create_dir_all(rootfs.join("etc"))?;
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

/// The conflist the rootfs check chains the plugin into (a bridge network, as kind's).
const CHECK_CONFLIST: &str = r#"{"cniVersion": "1.0.0", "name": "kindnet", "plugins": [
  {"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
"#;

/// The programs run inside the rootfs (chroot), with only its own files: every command the
/// manifests run, and the CNI install the init container does.
fn check_rootfs(rootfs: &Path) -> Result<()> {
    let chroot = |args: &[&str]| -> Result<String> {
        output(Command::new("chroot").arg(rootfs).args(args))
            .with_context(|| format!("`chroot {} {}` failed", rootfs.display(), args.join(" ")))
    };
    let version = chroot(&["/usr/local/bin/enforcer", "--version"])?;
    // deploy/kubernetes: the bpffs init container and the uninstall DaemonSet's idle container.
    chroot(&[
        "/bin/sh",
        "-ec",
        "mount --version; mountpoint --version; sleep 0",
    ])?;
    let cni_version = chroot(&[
        "/bin/sh",
        "-ec",
        "echo '{\"cniVersion\": \"1.0.0\"}' | CNI_COMMAND=VERSION enforcer-cni",
    ])?;
    // The init container's step, on a scratch conf dir and bin dir inside the rootfs.
    let scratch = rootfs.join("tmp/cni-check");
    fs::create_dir_all(scratch.join("net.d"))?;
    fs::create_dir_all(scratch.join("bin"))?;
    fs::write(scratch.join("net.d/10-kindnet.conflist"), CHECK_CONFLIST)?;
    let installed = chroot(&[
        "/usr/local/bin/enforcer",
        "cni",
        "install",
        "--bin-dir",
        "/tmp/cni-check/bin",
        "--conf-dir",
        "/tmp/cni-check/net.d",
        // The chroot has no /proc, where the default (beside this program) is found.
        "--plugin",
        "/usr/local/bin/enforcer-cni",
    ])
    .and_then(|_| {
        let list = fs::read_to_string(scratch.join("net.d/10-kindnet.conflist"))?;
        let chained = list.contains("\"enforcer-cni\"");
        let copied = scratch.join("bin/enforcer-cni").is_file();
        if !(chained && copied) {
            bail!("enforcer cni install in the rootfs: chained {chained}, copied {copied}");
        }
        Ok(())
    });
    fs::remove_dir_all(&scratch)?;
    installed?;
    println!(
        "rootfs check: {} runs in the image's rootfs; enforcer-cni VERSION: {}; `enforcer cni \
         install` chained the plugin into a conflist",
        version.trim(),
        cni_version.trim()
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

/// `podman run` of the image, with runc, not Debian's default crun (which refuses this machine's
/// hybrid cgroup hierarchy), and limits no higher than this sandbox's (podman's defaults raise
/// `RLIMIT_NOFILE`/`RLIMIT_NPROC`, which needs `CAP_SYS_RESOURCE`).
fn podman_run(tag: &str, volumes: &[(&Path, &str)], args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("podman");
    cmd.args([
        "--storage-driver",
        "vfs",
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    for (host, container) in volumes {
        cmd.arg("-v").arg(format!("{}:{container}", host.display()));
    }
    let out = cmd.arg(tag).args(args).output().context("running podman")?;
    if !out.status.success() {
        bail!(
            "podman run {tag} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Run the image: its entrypoint, and the init container's `enforcer cni install` on host
/// directories mounted as the daemon set mounts them.
fn check_image(tag: &str, dir: &Path) -> Result<()> {
    let version = podman_run(tag, &[], &["--version"])?;
    let host = dir.join("podman-check");
    if host.exists() {
        fs::remove_dir_all(&host)?;
    }
    fs::create_dir_all(host.join("net.d"))?;
    fs::create_dir_all(host.join("bin"))?;
    fs::write(host.join("net.d/10-kindnet.conflist"), CHECK_CONFLIST)?;
    let installed = podman_run(
        tag,
        &[
            (&host.join("bin"), "/host/opt/cni/bin"),
            (&host.join("net.d"), "/host/etc/cni/net.d"),
        ],
        &[
            "cni",
            "install",
            "--bin-dir",
            "/host/opt/cni/bin",
            "--conf-dir",
            "/host/etc/cni/net.d",
        ],
    )?;
    let list = fs::read_to_string(host.join("net.d/10-kindnet.conflist"))?;
    if !list.contains("\"enforcer-cni\"") || !host.join("bin/enforcer-cni").is_file() {
        bail!("podman run … cni install: the plugin is not installed: {installed}");
    }
    fs::remove_dir_all(&host)?;
    println!(
        "podman run: {version}; cni install: {}",
        installed.replace('\n', "; ")
    );
    Ok(())
}
