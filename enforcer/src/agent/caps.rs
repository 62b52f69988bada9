//! Dropping privileges once the datapath is loaded and attached. What the agent still does
//! afterwards, and what each needs:
//!
//! - attach its already loaded programs to interfaces that appear later (`BPF_LINK_CREATE` for
//!   tcx and XDP links, pinning them on bpffs): `CAP_NET_ADMIN`;
//! - write the policy maps and read counters through the fds it holds, unpin links of vanished
//!   interfaces: on this kernel (6.18, `kernel.unprivileged_bpf_disabled = 2`) no capability — the
//!   agent's end-to-end tests pass with `CAP_NET_ADMIN` alone. `CAP_BPF` is kept as a margin for
//!   kernels that check it on more `bpf(2)` commands; it grants no more than loading programs,
//!   which the agent does not do after the drop;
//! - read netlink and `/proc` for addresses and routes, serve its socket and HTTP port (bound
//!   before the drop), write its state dir (its own files): no capability.
//!
//! Everything else (`CAP_SYS_ADMIN` for mounting bpffs and loading, `CAP_SYS_RESOURCE`,
//! `CAP_DAC_*`, `CAP_SETPCAP`, ...) is dropped from the effective, permitted, inheritable, ambient
//! and bounding sets, and `no_new_privs` is set, so neither the agent nor the commands it runs
//! (`ip`) can get them back. Capabilities are per thread: this runs on the main thread before any
//! other thread exists, and every later thread inherits the reduced sets.

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the agent keeps (see the module documentation).
pub const KEPT: &[Capability] = &[Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

/// Drop every capability but [`KEPT`]; returns the effective set left.
pub fn drop_privileges() -> Result<CapsHashSet> {
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let left: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable set")?;
    caps::set(None, CapSet::Effective, &left).context("setting the effective set")?;
    caps::set(None, CapSet::Permitted, &left).context("setting the permitted set")?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) has no memory arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    Ok(left)
}

/// Raise the soft limit of open files to the hard limit: every attached interface, connection
/// and pinned object costs a file descriptor, and the soft limit is often 1024 under container
/// runtimes (Rust, unlike Go, does not raise it). Returns the limit now in force.
pub fn raise_open_files_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim.rlim_cur)
}
