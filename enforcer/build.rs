//! Builds the eBPF object (`enforcer-ebpf`) and leaves it in `OUT_DIR` for `include_bytes_aligned!`.
//!
//! The eBPF crate needs `-Z build-std=core` for `bpfel-unknown-none`, so a toolchain with the
//! `core` sources: a rustup nightly with `rust-src` if there is one, else Debian's rustc with
//! `rust-web-src` (`cargo xtask setup` installs it). `ENFORCER_EBPF_TOOLCHAIN=nightly|debian`
//! forces the choice; `ENFORCER_EBPF_OBJECT=path` uses a prebuilt object instead.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("enforcer/ sits in the workspace")
        .to_path_buf();
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("enforcer.bpf.o");
    for p in [
        "enforcer-ebpf/src",
        "enforcer-ebpf/Cargo.toml",
        "enforcer-ebpf/Cargo.lock",
        "enforcer-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=ENFORCER_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=ENFORCER_EBPF_OBJECT");

    if let Some(prebuilt) = env::var_os("ENFORCER_EBPF_OBJECT") {
        std::fs::copy(&prebuilt, &out).expect("copy ENFORCER_EBPF_OBJECT");
        return;
    }
    let built = build_ebpf(&root);
    std::fs::copy(&built, &out).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}

fn build_ebpf(root: &Path) -> PathBuf {
    let ebpf = root.join("enforcer-ebpf");
    let target_dir = root.join("target").join("ebpf");
    let toolchain = env::var("ENFORCER_EBPF_TOOLCHAIN").unwrap_or_else(|_| detect_toolchain());
    let mut cmd = match toolchain.as_str() {
        "nightly" => {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo"]);
            c
        }
        "debian" => {
            let mut c = Command::new(DEBIAN_CARGO);
            c.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
            c
        }
        other => panic!("ENFORCER_EBPF_TOOLCHAIN={other}: expected nightly or debian"),
    };
    // The outer cargo's settings (target, flags, wrappers such as clippy's) must not leak in.
    for (k, _) in env::vars() {
        if (k.starts_with("CARGO") || k.starts_with("RUST"))
            && k != "RUSTUP_HOME"
            && k != "CARGO_HOME"
        {
            cmd.env_remove(&k);
        }
    }
    if toolchain == "debian" {
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
    cmd.current_dir(&ebpf)
        .env("PATH", path)
        .env(
            "RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf -C target-cpu=v3",
        )
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo for enforcer-ebpf ({toolchain}): {e}"));
    assert!(
        status.success(),
        "building enforcer-ebpf with the {toolchain} toolchain failed; run `cargo xtask setup` to install the eBPF toolchain"
    );
    target_dir.join("bpfel-unknown-none/release/enforcer")
}

/// A rustup nightly with `rust-src` if present, else Debian's rustc with its library sources.
fn detect_toolchain() -> String {
    let nightly = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        });
    if nightly {
        return "nightly".into();
    }
    assert!(
        Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_RUST_SRC).exists(),
        "no eBPF toolchain: need a rustup nightly with rust-src, or Debian's rustc-web + rust-web-src; run `cargo xtask setup`"
    );
    "debian".into()
}
