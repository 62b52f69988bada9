//! The harness's stand-in for a CNI datapath that bypasses the pod veth (Cilium BPF host
//! routing, Calico eBPF): `bpf/redirect_peer.c`, built with clang for `-target bpf` and attached
//! as a legacy tc (`cls_bpf`) ingress filter on a node's device. It hands IPv4 packets for one pod
//! address straight to that pod's `eth0` with `bpf_redirect_peer`.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};

use crate::{netns::ns_exec, run_checked};

/// An attached redirect program; removed (filter and clsact qdisc) on drop.
pub struct RedirectPeer {
    ns: String,
    device: String,
}

/// The ifindex of `device` in namespace `ns`.
pub fn ifindex(ns: &str, device: &str) -> Result<u32> {
    let out = ns_exec(ns, "ip", &["-o", "link", "show", "dev", device])?;
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("ifindex of {device}: {out}"))
}

impl RedirectPeer {
    /// Build the program for (`pod`, the pod's host-side veth `target`) in `work` and attach it to
    /// `device`'s tc ingress in `ns`.
    pub fn attach(
        ns: &str,
        device: &str,
        pod: Ipv4Addr,
        target: &str,
        work: &Path,
    ) -> Result<Self> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf/redirect_peer.c");
        let object = work.join("redirect_peer.o");
        let target_ifindex = ifindex(ns, target)?;
        let clang = ["clang", "clang-22"]
            .into_iter()
            .find(|c| {
                std::process::Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .context("no clang to build the harness's BPF program")?;
        let status = std::process::Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf"])
            // Debian's multiarch <asm/types.h>.
            .arg(format!(
                "-I/usr/include/{}-linux-gnu",
                std::env::consts::ARCH
            ))
            .arg(format!("-DPOD_IP={:#x}", u32::from(pod)))
            .arg(format!("-DTARGET_IFINDEX={target_ifindex}"))
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()?;
        if !status.success() {
            bail!("clang failed on {}", source.display());
        }
        let attached = RedirectPeer {
            ns: ns.to_string(),
            device: device.to_string(),
        };
        let tc = |args: &[&str]| run_checked(crate::netns::ns_command(ns, "tc").args(args));
        tc(&["qdisc", "replace", "dev", device, "clsact"])?;
        let obj = object.display().to_string();
        tc(&[
            "filter", "add", "dev", device, "ingress", "bpf", "da", "obj", &obj, "sec", "tc",
        ])?;
        Ok(attached)
    }
}

impl Drop for RedirectPeer {
    fn drop(&mut self) {
        let _ = ns_exec(
            &self.ns,
            "tc",
            &["qdisc", "del", "dev", &self.device, "clsact"],
        );
    }
}
