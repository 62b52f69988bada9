//! How the tc programs are attached: a tcx link (Linux ≥ 6.6: pinned, so it outlives the agent,
//! and swapped with `BPF_LINK_UPDATE` on restart), or, where tcx does not exist, a `cls_bpf`
//! filter on the interface's `clsact` qdisc through netlink ("legacy tc").
//!
//! Legacy tc filters cannot be pinned. They are not owned by a file descriptor either: a filter
//! stays attached after the agent exits or crashes, so enforcement holds while it is away. Ours
//! always has the same priority and handle ([`FILTER_PRIORITY`], [`FILTER_HANDLE`]), so the next
//! agent replaces it in place (the kernel swaps the program under RCU: no gap) instead of adding
//! a second one. Priority 1 puts it first: with `TC_ACT_UNSPEC` (allow) the next filter (the
//! CNI's) still runs.

use aya::programs::{
    tc::{
        qdisc_add_clsact, qdisc_detach_program, NlOptions, SchedClassifierLink, TcError, TcHandle,
    },
    ProgramError, SchedClassifier, TcAttachType,
};
use serde::{Deserialize, Serialize};

/// tc filter priority of our programs: 1, the first filter on the hook.
pub const FILTER_PRIORITY: u16 = 1;
/// tc filter handle of our programs (any fixed value; ours is "e4f", for enforcer).
pub const FILTER_HANDLE: TcHandle = TcHandle::new(0, 0x0e4f);

/// What the operator asked for (`--tc-attach`, config key `tcAttach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TcAttach {
    /// tcx where the kernel has it, legacy tc otherwise (feature probe at start).
    #[default]
    Auto,
    /// tcx only (attach fails below 6.6).
    Tcx,
    /// Legacy tc (netlink clsact + `cls_bpf`) even where tcx exists.
    Netlink,
}

/// How the tc programs are attached on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAttachMode {
    Tcx,
    Netlink,
}

impl std::fmt::Display for TcAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcAttachMode::Tcx => "tcx",
            TcAttachMode::Netlink => "netlink",
        })
    }
}

impl TcAttach {
    /// The mode to use: forced, or probed.
    pub fn resolve(self) -> TcAttachMode {
        match self {
            TcAttach::Tcx => TcAttachMode::Tcx,
            TcAttach::Auto if tcx_supported() => TcAttachMode::Tcx,
            TcAttach::Netlink | TcAttach::Auto => TcAttachMode::Netlink,
        }
    }
}

/// Feature probe: `BPF_PROG_QUERY` with a tcx attach type on `lo` succeeds exactly on kernels
/// that have tcx; older ones reject the attach type with `EINVAL`.
pub fn tcx_supported() -> bool {
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok()
}

/// Attach `prog` as our legacy tc filter on `ifname`: add `clsact` if missing, replace our filter
/// if a previous agent left one, else create it. The filter is left attached when this process
/// exits (aya would detach links it still owns, so the link is released, not kept).
pub fn attach_netlink(
    prog: &mut SchedClassifier,
    ifname: &str,
    attach: TcAttachType,
) -> Result<(), ProgramError> {
    match qdisc_add_clsact(ifname) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let ours = SchedClassifierLink::attached(ifname, attach, FILTER_PRIORITY, FILTER_HANDLE, None)
        .map_err(|e| ProgramError::from(TcError::IoError(e)))?;
    let id = match prog.attach_to_link(ours) {
        Ok(id) => id,
        // No filter of ours yet (ENOENT from the replace): create it.
        Err(_) => prog.attach_with_options(
            ifname,
            attach,
            aya::programs::tc::TcAttachOptions::Netlink(NlOptions {
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
                ..NlOptions::default()
            }),
        )?,
    };
    // A netlink link is (ifindex, priority, handle): plain numbers, no fd. Forgetting it only
    // skips the detach aya would do on drop.
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

/// Remove the legacy tc filters running `program` from every hook of every interface of this
/// network namespace (uninstall). Returns how many hooks had one.
pub fn detach_netlink_everywhere(program: &str) -> usize {
    let mut removed = 0;
    for name in crate::node::interfaces().keys() {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            if qdisc_detach_program(name, hook, program).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
