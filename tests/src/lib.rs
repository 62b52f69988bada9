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

pub mod cluster;
mod cmd;
pub mod fixtures;
pub mod frames;
pub mod live;
mod load;
pub mod netns;
mod probe;
pub mod ratelimit_bench;
mod server;
mod sock;
mod stream;
pub mod testrun;
mod topology;

pub use cmd::{run_checked, run_stdout};
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

/// For tests: returns `true` when the test must be skipped because the process is not root, after
/// printing why. Use as `if skip_unless_root() { return; }`.
pub fn skip_unless_root() -> bool {
    if is_root() {
        false
    } else {
        eprintln!("skipped: needs root (network namespaces)");
        true
    }
}
