//! Running the real programs on hand-built frames with `BPF_PROG_TEST_RUN`, for the datapath
//! truth tables and benchmarks.

use std::{collections::BTreeSet, net::IpAddr};

use aya::{
    programs::{SchedClassifier, Xdp},
    TestRun, TestRunOptions,
};
use enforcer::{datapath::Datapath, policy::PolicySet};

/// `TC_ACT_UNSPEC` (-1): allowed, on to the next tcx program.
pub const TC_PASS: u32 = u32::MAX;
pub const TC_SHOT: u32 = 2;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// `BPF_PROG_TEST_RUN` runs a program as if on loopback.
pub const TEST_IFINDEX: u32 = 1;

fn options<'a>(frame: &'a [u8], out: &'a mut [u8]) -> TestRunOptions<'a> {
    TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ..Default::default()
    }
}

/// Run tc program `name` once on `frame`; its return value.
///
/// # Panics
/// If the program does not exist or the kernel refuses the run: a broken test setup.
pub fn run_tc(dp: &Datapath, name: &str, frame: &[u8]) -> u32 {
    let prog: &SchedClassifier = dp
        .program(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .expect("a tc program");
    let mut out = vec![0u8; frame.len() + 64];
    prog.test_run(options(frame, &mut out))
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// Offset of `ifindex` in `struct __sk_buff` (uapi `linux/bpf.h`).
const SKB_IFINDEX_OFFSET: usize = 40;

/// Run tc program `name` once on `frame` as if it arrived on interface `ifindex` (which must
/// exist in the caller's network namespace: the kernel runs the program on that device); its
/// return value.
///
/// # Panics
/// If the program does not exist or the kernel refuses the run: a broken test setup.
pub fn run_tc_on(dp: &Datapath, name: &str, frame: &[u8], ifindex: u32) -> u32 {
    let prog: &SchedClassifier = dp
        .program(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .expect("a tc program");
    // The kernel takes `__sk_buff` fields from `ctx_in` (those it allows: mark, priority,
    // ifindex, ...); the rest must be zero.
    let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 4];
    ctx[SKB_IFINDEX_OFFSET..].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 64];
    let mut opts = options(frame, &mut out);
    opts.ctx_in = Some(&ctx);
    prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

/// Run XDP program `name` once on `frame`; its return value.
///
/// # Panics
/// If the program does not exist or the kernel refuses the run: a broken test setup.
pub fn run_xdp(dp: &Datapath, name: &str, frame: &[u8]) -> u32 {
    let prog: &Xdp = dp
        .program(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .expect("an XDP program");
    let mut out = vec![0u8; frame.len() + 64];
    prog.test_run(options(frame, &mut out))
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// Every workload address of `set` as an endpoint behind the test interface.
pub fn test_endpoints(set: &PolicySet) -> BTreeSet<(u32, IpAddr)> {
    let pods = set.pods.values().filter(|p| !p.host_network);
    set.workloads
        .values()
        .flat_map(|w| &w.addresses)
        .chain(pods.flat_map(|p| &p.addresses))
        .map(|a| (TEST_IFINDEX, *a))
        .collect()
}
