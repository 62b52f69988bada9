//! `cargo xtask setup`: install what is missing on Debian 12, then pick the compiler for the eBPF
//! crate.
//!
//! Idempotent: it checks first (one `dpkg-query`, `bpf-linker --version`, `rustup component list`)
//! and only installs what is missing, so it takes well under a second when everything is there.
//! Installing needs root; the checks do not.

use std::env;
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::util::{banner, cargo, is_root, output, run};

/// Debian packages the build, the tests and the demo need.
const PACKAGES: &[&str] = &[
    // Debian's rustc 1.96 and its std sources: the fallback eBPF compiler (-Z build-std=core).
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    // LLVM 22 for bpf-linker.
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
    "zlib1g-dev",
    "libzstd-dev",
    "libxml2-dev",
    // Tests, scenarios, benchmarks and the demo.
    "iproute2",
    "nftables",
    "iptables",
    "iperf3",
    "prometheus",
    "bpftool",
    // The report's browser test (tests/tests/report_browser.rs) and `cargo xtask docs`.
    "chromium",
    // The virtualenv of the manifest tools (xtask/src/tools.rs).
    "python3-venv",
    // `cargo xtask image` (xtask/src/image.rs): the Debian base, the image build, and a run of
    // it (runc: crun refuses hybrid cgroup hierarchies).
    "debootstrap",
    "buildah",
    "podman",
    "runc",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Environment variable naming the eBPF compiler. `setup` sets it for everything it runs afterwards
/// (cargo build, clippy, test), and `enforcer/build.rs` honours it when set (`nightly` or
/// `debian`), so the compiler xtask reports is the one the build uses. Unset, build.rs detects in
/// the same order as [`EbpfToolchain::detect`].
pub const TOOLCHAIN_ENV: &str = "ENFORCER_EBPF_TOOLCHAIN";

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUST_LIBRARY: &str = "/usr/lib/rustlib/src/rust/library";

/// The compiler that builds `enforcer-ebpf` (target bpfel-unknown-none, `-Z build-std=core`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EbpfToolchain {
    /// A rustup nightly toolchain with the rust-src component: `cargo +nightly`.
    Nightly,
    /// Debian's `/usr/bin/cargo` and `/usr/bin/rustc` (rustc-web) with `RUSTC_BOOTSTRAP=1` and the
    /// std sources of rust-web-src.
    Debian,
}

impl EbpfToolchain {
    /// The first usable of: a rustup nightly with rust-src, Debian's rustc with its library
    /// sources. `$ENFORCER_EBPF_TOOLCHAIN` (`nightly` or `debian`) forces the choice; it is still
    /// checked.
    pub fn detect() -> Result<Self> {
        if let Some(forced) = env::var_os(TOOLCHAIN_ENV) {
            let toolchain = match forced.to_str() {
                Some("nightly") => Self::Nightly,
                Some("debian") => Self::Debian,
                _ => bail!(
                    "{TOOLCHAIN_ENV}={}: expected `nightly` or `debian`",
                    forced.display()
                ),
            };
            if !toolchain.available() {
                bail!(
                    "{TOOLCHAIN_ENV}={toolchain} needs {}, which is missing",
                    toolchain.requirement()
                );
            }
            return Ok(toolchain);
        }
        [Self::Nightly, Self::Debian]
            .into_iter()
            .find(|toolchain| toolchain.available())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no compiler for the eBPF crate: install {} or {}",
                    Self::Nightly.requirement(),
                    Self::Debian.requirement()
                )
            })
    }

    fn available(self) -> bool {
        match self {
            Self::Nightly => nightly_has_rust_src(),
            Self::Debian => {
                Path::new(DEBIAN_RUSTC).is_file()
                    && Path::new(DEBIAN_CARGO).is_file()
                    && Path::new(DEBIAN_RUST_LIBRARY).is_dir()
            }
        }
    }

    fn requirement(self) -> &'static str {
        match self {
            Self::Nightly => {
                "a rustup nightly toolchain with rust-src \
                 (`rustup component add rust-src --toolchain nightly`)"
            }
            Self::Debian => {
                "Debian's rustc-web, cargo-web and rust-web-src \
                 (/usr/bin/rustc, /usr/lib/rustlib/src/rust/library)"
            }
        }
    }

    /// `rustc --version` of this toolchain, for the log.
    fn version(self) -> String {
        let mut cmd = match self {
            Self::Nightly => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", "nightly", "rustc", "--version"]);
                cmd
            }
            Self::Debian => {
                let mut cmd = Command::new(DEBIAN_RUSTC);
                cmd.arg("--version");
                cmd
            }
        };
        output(&mut cmd).map_or_else(|| "version unknown".to_owned(), |v| v.trim().to_owned())
    }
}

impl fmt::Display for EbpfToolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nightly => "nightly",
            Self::Debian => "debian",
        })
    }
}

fn nightly_has_rust_src() -> bool {
    // RUSTUP_AUTO_INSTALL=0: a check must never download a toolchain.
    let installed = output(
        Command::new("rustup")
            .args(["component", "list", "--toolchain", "nightly", "--installed"])
            .env("RUSTUP_AUTO_INSTALL", "0"),
    );
    installed.is_some_and(|list| list.lines().any(|line| line.starts_with("rust-src")))
}

/// `cargo xtask setup`.
pub fn setup() -> Result<EbpfToolchain> {
    banner("setup");
    ensure()
}

/// Install what is missing, pick the eBPF compiler and export it in `$ENFORCER_EBPF_TOOLCHAIN` for
/// the commands run afterwards.
pub fn ensure() -> Result<EbpfToolchain> {
    let started = Instant::now();
    ensure_packages(PACKAGES)?;
    bpf_linker()?;
    crate::tools::ensure()?;
    crate::deny::ensure()?;
    let toolchain = EbpfToolchain::detect()?;
    let why = match toolchain {
        _ if env::var_os(TOOLCHAIN_ENV).is_some() => "set by $ENFORCER_EBPF_TOOLCHAIN",
        EbpfToolchain::Nightly => "rustup nightly has rust-src",
        EbpfToolchain::Debian => "no rustup nightly with rust-src",
    };
    println!(
        "eBPF compiler: {toolchain}, {} ({why})",
        toolchain.version()
    );
    env::set_var(TOOLCHAIN_ENV, toolchain.to_string());
    println!("setup done in {:.1?}", started.elapsed());
    Ok(toolchain)
}

/// Install those of `packages` that are missing (apt-get, as root); a fast no-op otherwise.
pub fn ensure_packages(packages: &[&'static str]) -> Result<()> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        println!("apt packages: all {} already installed", packages.len());
        return Ok(());
    }
    println!("apt packages missing: {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing Debian packages: {0}\ninstall them as root: `sudo cargo xtask setup` \
             or `sudo apt-get install --no-install-recommends {0}`",
            missing.join(" ")
        );
    }
    let apt_get = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    };
    run(apt_get().args(["update", "-q"]))?;
    run(apt_get()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))?;
    let still_missing = missing_packages(packages);
    if !still_missing.is_empty() {
        bail!(
            "apt-get install left these packages not installed: {}",
            still_missing.join(" ")
        );
    }
    if missing.contains(&"prometheus") && port_open(9090) {
        println!(
            "note: the prometheus package started its service, listening on :9090 \
             (harmless; stop it with `service prometheus stop`)"
        );
    }
    Ok(())
}

/// The packages of `packages` that are not fully installed, from one `dpkg-query` call.
fn missing_packages(packages: &[&'static str]) -> Vec<&'static str> {
    // dpkg-query exits non-zero when some package is unknown, but still lists the others: ignore
    // the status.
    let listed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Status}\n"])
        .args(packages)
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let installed: Vec<&str> = listed
        .lines()
        .filter(|line| line.ends_with(" install ok installed"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    packages
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect()
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Make sure `$CARGO_HOME/bin` is on PATH for the commands we run (rustc calls `bpf-linker` by
/// name).
fn add_cargo_bin_to_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    let joined =
        env::join_paths(std::iter::once(bin).chain(env::split_paths(&path))).unwrap_or(path);
    env::set_var("PATH", joined);
}

fn bpf_linker_version() -> Option<String> {
    output(Command::new("bpf-linker").arg("--version")).map(|v| v.trim().to_owned())
}

fn bpf_linker() -> Result<()> {
    add_cargo_bin_to_path();
    if let Some(version) = bpf_linker_version() {
        println!("bpf-linker: already installed ({version})");
        return Ok(());
    }
    println!("bpf-linker: missing, installing it with cargo (takes a few minutes)");
    run(cargo()
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))?;
    match bpf_linker_version() {
        Some(version) => println!("bpf-linker: installed ({version})"),
        None => {
            bail!("`cargo install bpf-linker` succeeded but `bpf-linker --version` still fails")
        }
    }
    Ok(())
}
