//! Test harness for enforcer: builds small clusters out of network namespaces and veth pairs and
//! sends real traffic through them.
//!
//! - [`Topology`]: a fabric bridge, node namespaces joined to it by their uplink, pods attached to
//!   nodes Calico-style (`eth0` in the pod, `ep...` on the node), and external hosts. Dropping it
//!   deletes every namespace it created.
//! - Probes ([`probe_tcp`], [`probe_udp`], [`probe_icmp`], [`probe`]) run inside a namespace on a
//!   short-lived thread (`setns(2)`), with short timeouts, and return a [`ProbeOutcome`].
//! - Servers ([`spawn_tcp_echo`], [`spawn_udp_echo`], [`spawn_udp_sink`]) run on threads inside a
//!   namespace and stop on drop; [`TcpEchoStream`] keeps a connection busy in the background;
//!   [`send_udp_load`] sends a paced UDP burst.
//!
//! Everything needs root (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`); see [`skip_unless_root`].
//!
//! ```no_run
//! use enforcer_tests::{probe_tcp, spawn_tcp_echo, Family, ProbeOptions, Topology, ANY};
//! # fn main() -> anyhow::Result<()> {
//! let topo = Topology::builder()
//!     .nodes(["n1", "n2"])
//!     .pod("web-0", "n1", &["10.10.1.10".parse()?, "fd00:10::10".parse()?])
//!     .pod("api-0", "n2", &["10.10.2.10".parse()?])
//!     .build()?;
//! let server = spawn_tcp_echo(topo.pod_netns("api-0")?, ANY, 8080)?;
//! let dst = topo.addr_of("api-0", Family::Ipv4)?;
//! let outcome = probe_tcp(topo.pod_netns("web-0")?, (dst, 8080).into(), &ProbeOptions::default())?;
//! assert!(outcome.is_answered());
//! # drop(server);
//! # Ok(())
//! # }
//! ```

pub mod apiserver;
pub mod bypass;
pub mod cluster;
mod cmd;
pub mod evidence;
pub mod fixtures;
pub mod frames;
pub mod fuzz;
mod http;
pub mod live;
mod load;
pub mod netns;
pub mod old_agent;
pub mod one_node;
mod probe;
pub mod ratelimit_bench;
pub mod scenario;
mod server;
mod sock;
mod stream;
pub mod testrun;
mod topology;

pub use cmd::{run_checked, run_stdout};
pub use http::{get_here, http_get};
pub use load::{send_udp_load, spawn_udp_sink, LoadReport, UdpLoad, UdpSink};
pub use netns::{
    cleanup_orphans, cleanup_stale, ns_command, ns_exec, run_in_netns, HARNESS_PREFIX,
};
pub use probe::{
    probe, probe_icmp, probe_tcp, probe_udp, NoAnswerKind, ProbeOptions, ProbeOutcome, Protocol,
    DEFAULT_TIMEOUT,
};
pub use server::{spawn_tcp_echo, spawn_udp_echo, TcpEchoServer, UdpEchoServer, ANY};
pub use stream::{StreamOptions, StreamReport, TcpEchoStream};
pub use topology::{
    External, Family, Node, Pod, Topology, TopologyBuilder, BRIDGE_IFNAME, EXTERNAL_IFNAME,
    HOST_IF_GLOB, HOST_IF_PREFIX, KEEP_ENV, POD_GATEWAY_V4, POD_GATEWAY_V6, POD_IFNAME,
    UPLINK_IFNAME,
};

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The environment variable naming a file where skipped tests are listed (one line per skip:
/// test name, a tab, the reason); `cargo xtask test` sets it and counts the lines.
pub const SKIP_LOG_ENV: &str = "ENFORCER_SKIP_LOG";

/// Whether we run under CI (`CI=true`, or `CI=1`): a test that cannot run must then fail.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// For tests: returns `true` when the test must be skipped because the process is not root.
/// Use as `if skip_unless_root() { return; }`. Under CI (`CI=true`) it panics instead: CI must
/// not pass by skipping. See [`skip`].
pub fn skip_unless_root() -> bool {
    !is_root() && skip("needs root (network namespaces, eBPF)")
}

/// Skips the calling test for `reason` (returns `true`): prints it and appends it to the file
/// named by [`SKIP_LOG_ENV`]. Under CI (`CI=true`) it panics with the reason instead.
///
/// # Panics
///
/// Under CI, always.
pub fn skip(reason: &str) -> bool {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed test");
    assert!(
        !under_ci(),
        "{test}: cannot run here ({reason}), and CI=true forbids skipping"
    );
    eprintln!("skipped: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write as _;
        let line = format!("{test}\t{reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
    true
}
