//! `BPF_PROG_TEST_RUN` measurements: the real programs with a real compiled policy in the maps,
//! divided by an empty program of the same hook measured right before, trial by trial.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, Xdp},
    TestRun, TestRunOptions,
};
use enforcer::{datapath::Datapath, policy::Compiled};
use enforcer_common::programs;

use super::{
    cref::Reference,
    policygen::Endpoints,
    stats::{ratios, summarize, Summary},
};

pub const TC_PASS: u32 = u32::MAX; // TC_ACT_UNSPEC (-1): on to the next tcx program
pub const TC_SHOT: u32 = 2;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// `BPF_PROG_TEST_RUN` runs programs as if on loopback.
pub const TEST_IFINDEX: u32 = 1;
/// Test runs of programs that write an event are split in batches the ring buffer can hold
/// (1 MiB / 80-byte records = 13 107), and the ring is drained between batches as the agent
/// would, so every packet pays for its event.
const EVENT_BATCH: u32 = 8_192;

pub const EMPTY_TC: &str = "bench_empty_tc";
pub const EMPTY_XDP: &str = "bench_empty_xdp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Tc,
    Xdp,
}

pub fn hook_of(program: &str) -> Hook {
    if program == programs::XDP_POD || program == programs::XDP_UPLINK || program == EMPTY_XDP {
        Hook::Xdp
    } else {
        Hook::Tc
    }
}

pub fn empty_of(hook: Hook) -> &'static str {
    match hook {
        Hook::Tc => EMPTY_TC,
        Hook::Xdp => EMPTY_XDP,
    }
}

/// The loaded datapath with a policy installed, plus the empty programs and the C reference on
/// the same maps (or why it could not be loaded: the `datapath` section says so instead of
/// failing).
pub struct Bench {
    pub dp: Datapath,
    pub reference: Result<Reference, String>,
    events: RingBuf<MapData>,
}

impl Bench {
    /// The datapath with `compiled` installed, without the C reference.
    pub fn new(compiled: &Compiled, ep: &Endpoints) -> Result<Self> {
        Self::open(compiled, ep, false)
    }

    /// The datapath with `compiled` installed, and the C reference on its maps.
    pub fn with_reference(compiled: &Compiled, ep: &Endpoints) -> Result<Self> {
        Self::open(compiled, ep, true)
    }

    fn open(compiled: &Compiled, ep: &Endpoints, reference: bool) -> Result<Self> {
        let mut dp = Datapath::load(None).context("load the eBPF object")?;
        {
            let p: &mut Xdp = dp
                .program_mut(EMPTY_XDP)
                .ok_or_else(|| anyhow!("{EMPTY_XDP} missing from the object"))?
                .try_into()?;
            p.load()?;
        }
        {
            let p: &mut SchedClassifier = dp
                .program_mut(EMPTY_TC)
                .ok_or_else(|| anyhow!("{EMPTY_TC} missing from the object"))?
                .try_into()?;
            p.load()?;
        }
        let endpoints: BTreeSet<(u32, IpAddr)> = ep
            .web
            .iter()
            .chain(&ep.api)
            .chain(&ep.other)
            .map(|a| (TEST_IFINDEX, *a))
            .collect();
        dp.install(compiled, &endpoints)
            .context("install the policy")?;
        let reference = if reference {
            Reference::load(&dp).map_err(|e| short(&format!("{e:#}")))
        } else {
            Err("not loaded".into())
        };
        let events = dp
            .take_events()
            .ok_or_else(|| anyhow!("EVENTS map missing"))?;
        Ok(Bench {
            dp,
            reference,
            events,
        })
    }

    /// One `BPF_PROG_TEST_RUN`: return value and the kernel's average time per repeat.
    pub fn run(&self, program: &str, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let prog = self
            .dp
            .program(program)
            .or_else(|| self.reference.as_ref().ok()?.ebpf.program(program))
            .ok_or_else(|| anyhow!("no program {program}"))?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let r = match hook_of(program) {
            Hook::Tc => {
                let p: &SchedClassifier = prog.try_into()?;
                p.test_run(opts)
            }
            Hook::Xdp => {
                let p: &Xdp = prog.try_into()?;
                p.test_run(opts)
            }
        }
        .with_context(|| format!("test run of {program}"))?;
        Ok((r.return_value, r.duration))
    }

    /// Consume every pending event.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(item) = self.events.next() {
            drop(item);
            n += 1;
        }
        n
    }

    /// Nanoseconds per packet over `repeat` runs of `frame`, checking the verdict.
    pub fn cost(
        &mut self,
        program: &str,
        frame: &[u8],
        repeat: u32,
        expect: u32,
        events: bool,
    ) -> Result<f64> {
        let batch = if events { EVENT_BATCH } else { repeat };
        let mut left = repeat;
        let mut total_ns = 0.0;
        self.drain();
        while left > 0 {
            let n = left.min(batch);
            let (ret, d) = self.run(program, frame, n)?;
            if ret != expect {
                bail!("{program}: returned {ret}, expected {expect}");
            }
            total_ns += d.as_secs_f64() * 1e9 * f64::from(n);
            left -= n;
            if events {
                self.drain();
            }
        }
        Ok(total_ns / f64::from(repeat))
    }

    /// Counter of (direction, verdict, reason), summed over CPUs.
    pub fn counter(&self, key: (u8, u8, u8)) -> Result<u64> {
        Ok(self.dp.counters()?.get(&key).copied().unwrap_or(0))
    }
}

/// An error for a table cell: its first line and, for a verifier log, its last lines.
fn short(e: &str) -> String {
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 6 {
        return lines.join(" ");
    }
    format!("{} … {}", lines[0], lines[lines.len() - 4..].join(" "))
}

/// One kind of packet through one program.
pub struct Row {
    pub label: String,
    pub program: &'static str,
    pub frame: Vec<u8>,
    /// Run once before measuring (creates the conntrack entry of an established flow).
    pub prime: Option<Vec<u8>>,
    pub expect: u32,
    /// The counter every measured packet must land in.
    pub counter: Option<(u8, u8, u8)>,
    pub events: bool,
}

/// The measured cost of a row.
#[derive(Debug, Clone)]
pub struct RowResult {
    pub label: String,
    pub program: &'static str,
    /// ns per packet.
    pub cost: Summary,
    /// cost / empty, trial by trial.
    pub ratio: Summary,
    pub empty_samples: Vec<f64>,
}

pub fn measure_row(b: &mut Bench, row: &Row, repeat: u32, trials: usize) -> Result<RowResult> {
    if let Some(p) = &row.prime {
        b.run(row.program, p, 1)?;
    }
    let empty = empty_of(hook_of(row.program));
    let empty_ret = match hook_of(row.program) {
        Hook::Tc => TC_PASS,
        Hook::Xdp => XDP_PASS,
    };
    let mut costs = Vec::with_capacity(trials);
    let mut empties = Vec::with_capacity(trials);
    for _ in 0..trials {
        empties.push(b.cost(empty, &row.frame, repeat, empty_ret, false)?);
        let before = row.counter.map(|k| b.counter(k)).transpose()?;
        costs.push(b.cost(row.program, &row.frame, repeat, row.expect, row.events)?);
        if let (Some(k), Some(before)) = (row.counter, before) {
            let after = b.counter(k)?;
            if after - before != u64::from(repeat) {
                bail!(
                    "{} / {}: counter {k:?} moved by {} instead of {repeat}: not the path meant",
                    row.program,
                    row.label,
                    after - before
                );
            }
        }
    }
    Ok(RowResult {
        label: row.label.clone(),
        program: row.program,
        cost: summarize(&costs),
        ratio: summarize(&ratios(&costs, &empties)),
        empty_samples: empties,
    })
}

/// A new allowed flow cannot be repeated: its first packet creates the conntrack entry, so every
/// later repeat is established. Measured as single runs (`repeat = 1`) of SYNs of fresh flows,
/// each paired with a single run of an established packet and of the empty program; the kernel's
/// fixed per-run timing overhead cancels in the difference.
#[derive(Debug, Clone)]
pub struct NewFlow {
    /// Single-run new − single-run established, ns.
    pub extra: Summary,
    pub single_new: Summary,
    pub single_est: Summary,
    /// Single runs of the first SYN of a fresh denied flow (the full judgment, its event, no
    /// conntrack insert).
    pub single_denied: Summary,
    /// Single-run first denied SYN − single-run established, ns.
    pub denied_extra: Summary,
    pub single_empty: Summary,
    pub pairs: usize,
}

pub fn measure_new_flows(
    b: &mut Bench,
    program: &'static str,
    established: &[u8],
    denied_flow: impl Fn(u16) -> Vec<u8>,
    new_flow: impl Fn(u16) -> Vec<u8>,
    pairs: usize,
) -> Result<NewFlow> {
    let empty = empty_of(hook_of(program));
    b.run(program, established, 1)?;
    let (mut extra, mut new, mut est, mut emp, mut den, mut den_extra) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    for i in 0..pairs {
        let sport = 41_000 + u16::try_from(i % 24_000).expect("small");
        let frame = new_flow(sport);
        let (r_new, d_new) = b.run(program, &frame, 1)?;
        let (r_est, d_est) = b.run(program, established, 1)?;
        let (_, d_emp) = b.run(empty, established, 1)?;
        let (r_den, d_den) = b.run(program, &denied_flow(sport), 1)?;
        if r_new != TC_PASS || r_est != TC_PASS || r_den != TC_SHOT {
            bail!(
                "{program}: new flow returned {r_new}, established {r_est}, denied {r_den}: not the paths meant"
            );
        }
        den.push(ns(d_den));
        den_extra.push(ns(d_den) - ns(d_est));
        extra.push(ns(d_new) - ns(d_est));
        new.push(ns(d_new));
        est.push(ns(d_est));
        emp.push(ns(d_emp));
        if i % 2_048 == 2_047 {
            b.drain();
        }
    }
    b.drain();
    Ok(NewFlow {
        extra: summarize(&extra),
        single_new: summarize(&new),
        single_est: summarize(&est),
        single_denied: summarize(&den),
        denied_extra: summarize(&den_extra),
        single_empty: summarize(&emp),
        pairs,
    })
}

/// The cost of a first packet: the established cost plus its single-run `extra` over it; the
/// spread combines the established range with the interquartile range of the extra.
pub fn new_flow_cost(est: &Summary, extra: &Summary) -> Summary {
    Summary {
        n: est.n,
        median: est.median + extra.median,
        q1: est.q1 + extra.q1,
        q3: est.q3 + extra.q3,
        min: est.min + extra.q1,
        max: est.max + extra.q3,
    }
}
