//! Packet fuzzing through `BPF_PROG_TEST_RUN`: seeded random and mutated frames through every
//! program (`from_pod`, `to_pod`, `xdp_pod`, `xdp_uplink`) with a real compiled policy in the
//! maps. Each verdict (the program's return code) is judged by `oracle` against the policy
//! simulator: a frame the policy denies must never pass.

mod decode;
mod gen;
mod oracle;
pub mod report;

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    programs::{SchedClassifier, Xdp},
    TestRun, TestRunOptions,
};
use enforcer::{
    datapath::Datapath,
    policy::{
        compile, parse::parse_documents, simulate::Simulator, Direction, NodeContext, PolicySet,
    },
};
use enforcer_common::programs;

use crate::testrun::{test_endpoints, TC_PASS, TC_SHOT, XDP_DROP, XDP_PASS};

/// The installed policy: isolation, allow and deny rules, port ranges, ICMP, CIDR peers with an
/// exception, both families.
pub const POLICY: &str = r#"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10, "fd00:10::10"]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10, "fd00:10::20"]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0}
spec: {service: db, addresses: [10.10.3.10, "fd00:10::30"]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 9000, endPort: 9010}, {protocol: ICMP}]
    - from: [{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}, {cidr: "2001:db8::/64"}]
      ports: [{protocol: UDP, port: 53}, {protocol: SCTP, port: 80}]
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-egress}
spec:
  service: api
  egress: []
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: db-deny}
spec:
  service: db
  ingressDeny:
    - from: [{service: web}]
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: web-egress}
spec:
  service: web
  egress:
    - to: [{service: api}, {service: db}]
    - to: [{cidr: 10.99.0.0/16}]
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 443}]
"#;

/// The node's own addresses.
pub const HOST: &[&str] = &["10.10.0.1", "fd00:10::1"];

/// Addresses frames are built from: the workloads, the node, world addresses inside and outside
/// the CIDR peers and their exception.
pub const ADDRESSES: &[&str] = &[
    "10.10.0.1",
    "fd00:10::1",
    "10.10.1.10",
    "10.10.2.10",
    "10.10.3.10",
    "10.99.0.1",
    "192.0.2.7",
    "192.0.2.200",
    "fd00:10::10",
    "fd00:10::20",
    "fd00:10::30",
    "fd00:99::1",
    "2001:db8::7",
];

/// Figures of one program.
#[derive(Debug, Clone, Default)]
pub struct ProgramFigures {
    pub name: &'static str,
    pub runs: u64,
    pub passed: u64,
    /// Frames `BPF_PROG_TEST_RUN` refused to run (shorter than an Ethernet header, ...).
    pub refused: u64,
    /// Return codes that are no verdict of the program's hook.
    pub bad_return: u64,
    pub wrong: u64,
}

/// Figures of a fuzzing run.
#[derive(Debug, Clone)]
pub struct FuzzReport {
    pub seed: u64,
    pub frames: u64,
    pub programs: Vec<ProgramFigures>,
    pub duration: Duration,
    /// The first wrong verdicts, with their frames in hex.
    pub examples: Vec<String>,
}

impl FuzzReport {
    pub fn wrong(&self) -> u64 {
        self.programs.iter().map(|p| p.wrong + p.bad_return).sum()
    }
}

fn ip(s: &str) -> Result<IpAddr> {
    s.parse().with_context(|| format!("address {s}"))
}

/// Run at least `frames` frames (seeded with `seed`) through every program.
pub fn run(frames: u64, seed: u64) -> Result<FuzzReport> {
    let docs = parse_documents("fuzz.yaml", POLICY).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let set = PolicySet::from_documents(docs).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let endpoints = test_endpoints(&set);
    // Every workload runs on this node: none may arrive on the uplink.
    let node = NodeContext {
        host_addresses: HOST.iter().map(|s| ip(s)).collect::<Result<_>>()?,
        local_addresses: endpoints.iter().map(|(_, a)| *a).collect(),
    };
    let compiled = compile(&set, &node);
    let mut dp = Datapath::load(None).context("load the eBPF object")?;
    dp.install(&compiled, &endpoints)
        .context("install the policy")?;
    let local: HashSet<IpAddr> = endpoints.iter().map(|(_, a)| *a).collect();
    let mut oracle = oracle::Oracle::new(Simulator::new(&compiled), local);
    let addresses = ADDRESSES
        .iter()
        .map(|s| ip(s))
        .collect::<Result<Vec<_>>>()?;
    let mut gen = gen::Gen::new(seed, &addresses);
    let mut runner = Runner::new(&dp)?;
    let start = Instant::now();
    let mut done = 0;
    while done < frames {
        for frame in gen.next_frames() {
            runner.one(&mut oracle, &frame);
            done += 1;
        }
    }
    Ok(FuzzReport {
        seed,
        frames: done,
        programs: runner.figures.to_vec(),
        duration: start.elapsed(),
        examples: runner.examples,
    })
}

struct Runner<'a> {
    from_pod: &'a SchedClassifier,
    to_pod: &'a SchedClassifier,
    xdp_pod: &'a Xdp,
    xdp_uplink: &'a Xdp,
    figures: [ProgramFigures; 4],
    examples: Vec<String>,
    out: Vec<u8>,
}

fn tc<'a>(dp: &'a Datapath, name: &str) -> Result<&'a SchedClassifier> {
    dp.program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a tc program"))
}

fn xdp<'a>(dp: &'a Datapath, name: &str) -> Result<&'a Xdp> {
    dp.program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// A verdict: `Some(passed)`, or `None` if the kernel refused the run.
type Ran = Option<u32>;

impl<'a> Runner<'a> {
    fn new(dp: &'a Datapath) -> Result<Self> {
        let figures = [
            programs::FROM_POD,
            programs::TO_POD,
            programs::XDP_POD,
            programs::XDP_UPLINK,
        ]
        .map(|name| ProgramFigures {
            name,
            ..ProgramFigures::default()
        });
        Ok(Runner {
            from_pod: tc(dp, programs::FROM_POD)?,
            to_pod: tc(dp, programs::TO_POD)?,
            xdp_pod: xdp(dp, programs::XDP_POD)?,
            xdp_uplink: xdp(dp, programs::XDP_UPLINK)?,
            figures,
            examples: Vec::new(),
            out: vec![0; 4096],
        })
    }

    fn options<'b>(frame: &'b [u8], out: &'b mut [u8]) -> TestRunOptions<'b> {
        TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ..Default::default()
        }
    }

    fn run_tc(&mut self, which: usize, frame: &[u8]) -> Ran {
        let prog = if which == 0 {
            self.from_pod
        } else {
            self.to_pod
        };
        prog.test_run(Self::options(frame, &mut self.out))
            .ok()
            .map(|r| r.return_value)
    }

    fn run_xdp(&mut self, which: usize, frame: &[u8]) -> Ran {
        let prog = if which == 2 {
            self.xdp_pod
        } else {
            self.xdp_uplink
        };
        prog.test_run(Self::options(frame, &mut self.out))
            .ok()
            .map(|r| r.return_value)
    }

    /// Record one run; `Some(passed)` if the program gave a verdict of its hook.
    fn record(&mut self, which: usize, ran: Ran, pass: u32, drop: u32) -> Option<bool> {
        let f = &mut self.figures[which];
        f.runs += 1;
        match ran {
            None => {
                f.refused += 1;
                None
            }
            Some(r) if r == pass => {
                f.passed += 1;
                Some(true)
            }
            Some(r) if r == drop => Some(false),
            Some(_) => {
                f.bad_return += 1;
                None
            }
        }
    }

    fn judge(&mut self, which: usize, frame: &[u8], verdict: Result<(), oracle::Wrong>) {
        if let Err(oracle::Wrong(why)) = verdict {
            self.figures[which].wrong += 1;
            if self.examples.len() < 20 {
                let hex = frame.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                self.examples
                    .push(format!("{}: {why}: {hex}", self.figures[which].name));
            }
        }
    }

    fn one(&mut self, oracle: &mut oracle::Oracle, frame: &[u8]) {
        let decoded = decode::decode(frame);
        for (which, d) in [(0, Direction::Egress), (1, Direction::Ingress)] {
            let ran = self.run_tc(which, frame);
            if let Some(passed) = self.record(which, ran, TC_PASS, TC_SHOT) {
                let v = oracle.tc(d, &decoded, passed);
                self.judge(which, frame, v);
            }
        }
        let ran = self.run_xdp(2, frame);
        if let Some(passed) = self.record(2, ran, XDP_PASS, XDP_DROP) {
            let v = oracle.xdp_pod(&decoded, passed);
            self.judge(2, frame, v);
        }
        let ran = self.run_xdp(3, frame);
        if let Some(passed) = self.record(3, ran, XDP_PASS, XDP_DROP) {
            let v = oracle.xdp_uplink(&decoded, passed);
            self.judge(3, frame, v);
        }
    }
}
