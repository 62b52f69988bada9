//! Rate limits (`rateLimit:` on ingress rules, policy rule 9): token buckets in the datapath.
//!
//! - `BPF_PROG_TEST_RUN`: hand-built frames through the real programs, in a tight loop (the
//!   buckets barely refill during a loop of 50 frames), so the burst and the bucket keys are
//!   checked exactly.
//! - Live: a node with a server pod and two client pods, the datapath loaded in this process in
//!   the node namespace, each client sending 5× the limit; the admitted rate is checked to ±5 %.
//!
//! Needs root (skipped otherwise).

use std::{
    cell::Cell,
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use enforcer::{
    datapath::Datapath,
    policy::{compile, parse::parse_documents, Compiled, NodeContext, PolicySet},
};
use enforcer_common::{
    programs, ratelimit::RATE_BUCKET_CAPACITY, RateBucket, DIR_INGRESS, REASON_RATE_LIMITED,
    VERDICT_DENY,
};
use enforcer_tests::{
    frames::{Frame, L4},
    ratelimit_bench::{limit_yaml, RateLimitBed},
    testrun::{run_tc, run_xdp, TC_PASS, TC_SHOT, TEST_IFINDEX, XDP_DROP, XDP_PASS},
};

/// Ports of the rules of `api`, in rule order.
const PER_SOURCE: u16 = 5000;
const PER_RULE: u16 = 5001;
const BYTES: u16 = 5002;
const UNLIMITED: u16 = 5003;
const BOTH: u16 = 5004;
const CIDR: u16 = 5005;

fn policy(per_source_burst: u32) -> String {
    format!(
        r#"
apiVersion: enforcer/v1
kind: Workload
metadata: {{name: web-0}}
spec: {{service: web, addresses: [10.10.1.10, "fd00:10::10"]}}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {{name: web-1}}
spec: {{service: web, addresses: [10.10.1.11]}}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {{name: api-0}}
spec: {{service: api, addresses: [10.10.2.10, "fd00:10::20"]}}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {{name: api-ingress}}
spec:
  service: api
  ingress:
    - from: [{{service: web}}]
      ports: [{{protocol: UDP, port: {PER_SOURCE}}}]
      rateLimit: {{packetsPerSecond: 100, burst: {per_source_burst}}}
    - from: [{{service: web}}]
      ports: [{{protocol: UDP, port: {PER_RULE}}}]
      rateLimit: {{packetsPerSecond: 100, burst: 10, per: rule}}
    - from: [{{service: web}}]
      ports: [{{protocol: UDP, port: {BYTES}}}]
      rateLimit: {{bytesPerSecond: 1000}}
    - from: [{{service: web}}]
      ports: [{{protocol: UDP, port: {UNLIMITED}}}]
    - from: [{{service: web}}]
      ports: [{{protocol: UDP, port: {BOTH}}}]
      rateLimit: {{packetsPerSecond: 100, bytesPerSecond: 5000, burst: 10}}
    - from: [{{cidr: 10.98.0.0/15}}]
      ports: [{{protocol: UDP, port: {CIDR}}}]
      rateLimit: {{packetsPerSecond: 100, burst: 10}}
"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

struct Harness {
    dp: Datapath,
    endpoints: BTreeSet<(u32, IpAddr)>,
    /// When the frames counted by the next [`Harness::assert_burst`] started: the bound on what
    /// the buckets refill meanwhile comes from the time really spent (a loaded machine stalls).
    since: Cell<Option<Instant>>,
}

/// The fastest refill of the test policies (100 packets per second).
const MAX_RATE: f64 = 100.0;

/// Tokens a bucket at [`MAX_RATE`] may refill in `d`, rounded up, at least one.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "small"
)]
fn refills(d: std::time::Duration) -> usize {
    ((d.as_secs_f64() * MAX_RATE).ceil() as usize).max(1)
}

impl Harness {
    fn new() -> Option<Self> {
        if enforcer_tests::skip_unless_root() {
            return None;
        }
        let mut dp = Datapath::load(None).expect("load eBPF object");
        // api's addresses are "local" behind the test interface (loopback); web is remote, so
        // web → api packets may arrive on the uplink (`xdp_uplink`).
        let endpoints: BTreeSet<(u32, IpAddr)> = [ip("10.10.2.10"), ip("fd00:10::20")]
            .into_iter()
            .map(|a| (TEST_IFINDEX, a))
            .collect();
        dp.install(&compile_policy(10), &endpoints)
            .expect("install policy");
        Some(Harness {
            dp,
            endpoints,
            since: Cell::new(None),
        })
    }

    fn reinstall(&mut self, per_source_burst: u32) {
        self.dp
            .install(&compile_policy(per_source_burst), &self.endpoints)
            .expect("install policy");
    }

    fn run_tc(&self, name: &str, frame: &[u8]) -> u32 {
        run_tc(&self.dp, name, frame)
    }

    fn run_xdp(&self, name: &str, frame: &[u8]) -> u32 {
        run_xdp(&self.dp, name, frame)
    }

    /// The burst passed: `passed` is `burst`, plus what the bucket may have refilled since the
    /// first [`Harness::pass_count`] after the previous check.
    fn assert_burst(&self, passed: usize, burst: usize, what: &str) {
        let spent = self
            .since
            .take()
            .map_or_else(Default::default, |t| t.elapsed());
        assert!(
            (burst..=burst + refills(spent)).contains(&passed),
            "{what}: {passed} passed in {spent:?}, expected the burst of {burst} (+ refills)"
        );
    }

    /// Send `frame` `n` times into the destination pod (`to_pod`); returns how many passed.
    fn pass_count(&self, frame: &Frame, n: usize) -> usize {
        if self.since.get().is_none() {
            self.since.set(Some(Instant::now()));
        }
        let bytes = frame.build();
        let mut passed = 0;
        for _ in 0..n {
            match self.run_tc(programs::TO_POD, &bytes) {
                TC_PASS => passed += 1,
                TC_SHOT => {}
                other => panic!("unexpected tc verdict {other}"),
            }
        }
        passed
    }

    fn rate_limited(&self) -> u64 {
        self.dp.counters().expect("counters")[&(DIR_INGRESS, VERDICT_DENY, REASON_RATE_LIMITED)]
    }
}

fn compile_policy(per_source_burst: u32) -> Compiled {
    let docs = parse_documents("ratelimit.yaml", &policy(per_source_burst)).expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    let ctx = NodeContext {
        local_addresses: [ip("10.10.2.10"), ip("fd00:10::20")].into(),
        ..NodeContext::default()
    };
    compile(&set, &ctx)
}

fn udp(src: &str, sport: u16, dport: u16) -> Frame {
    Frame::udp(ip(src), ip("10.10.2.10"), sport, dport)
}

#[test]
fn burst_then_drops() {
    let Some(h) = Harness::new() else { return };
    let started = Instant::now();
    let passed = h.pass_count(&udp("10.10.1.10", 40000, PER_SOURCE), 50);
    let spent = started.elapsed();
    h.assert_burst(passed, 10, "50 frames at 100 pps, burst 10");
    let dropped = 50 - passed as u64;
    assert_eq!(h.rate_limited(), dropped);
    // Per rule: every packet of the rule is counted, admitted or not (rule 1).
    assert_eq!(h.dp.rule_packets(1).expect("rule counter"), 50);
    // Events are sampled: one per bucket per 100 ms, the rest counted as sampled out.
    let sampled_out = h.dp.events_sampled_out().expect("EVENT_STATS");
    let windows = u64::try_from(spent.as_millis() / 100).unwrap_or(u64::MAX) + 1;
    let reported = dropped - sampled_out;
    assert!(
        (1..=windows + 1).contains(&reported),
        "{reported} of {dropped} drops reported in {spent:?}"
    );
}

#[test]
fn new_flows_and_established_flows_share_the_bucket() {
    let Some(h) = Harness::new() else { return };
    // Every frame a new flow (new source port): the bucket is per (rule, source address).
    let mut passed = 0;
    for i in 0..30u16 {
        passed += h.pass_count(&udp("10.10.1.10", 41000 + i, PER_SOURCE), 1);
    }
    // Then an established flow of the same source: nothing left.
    passed += h.pass_count(&udp("10.10.1.10", 41000, PER_SOURCE), 20);
    h.assert_burst(passed, 10, "new and established flows of one source");
}

#[test]
fn sources_have_separate_buckets() {
    let Some(h) = Harness::new() else { return };
    let a = h.pass_count(&udp("10.10.1.10", 42000, PER_SOURCE), 50);
    let b = h.pass_count(&udp("10.10.1.11", 42000, PER_SOURCE), 50);
    h.assert_burst(a, 10, "web-0");
    h.assert_burst(b, 10, "web-1");
    // IPv6 sources have their own buckets too.
    let v6 = Frame::udp(ip("fd00:10::10"), ip("fd00:10::20"), 42001, PER_SOURCE);
    h.assert_burst(h.pass_count(&v6, 50), 10, "web-0 over IPv6");
    let stats = h.dp.rate_limit_stats().expect("stats");
    assert_eq!(stats.source_buckets, 3);
    assert_eq!(stats.created, 3);
    assert_eq!(stats.evicted, 0);
    assert_eq!(stats.contended, 0);
}

#[test]
fn per_rule_limits_share_one_bucket() {
    let Some(h) = Harness::new() else { return };
    let mut passed = 0;
    for i in 0..25u16 {
        passed += h.pass_count(&udp("10.10.1.10", 43000 + i, PER_RULE), 1);
        passed += h.pass_count(&udp("10.10.1.11", 43000 + i, PER_RULE), 1);
    }
    h.assert_burst(passed, 10, "two sources on a per-rule limit");
    assert!(h.dp.rate_bucket(2, None).is_some());
    assert_eq!(h.dp.rate_limit_stats().expect("stats").rule_buckets, 1);
}

#[test]
fn bytes_per_second() {
    let Some(h) = Harness::new() else { return };
    // 1000 B/s, burst 1 s = 1000 bytes; 20 + 8 + 72 = 100-byte IP packets: 10 pass.
    let mut f = udp("10.10.1.10", 44000, BYTES);
    f.payload = 72;
    h.assert_burst(h.pass_count(&f, 50), 10, "100-byte packets, 1000 B/s");
    // A small packet still fits when a big one does not (well, not here: the bucket is empty).
    let mut small = udp("10.10.1.10", 44001, BYTES);
    small.payload = 0;
    assert_eq!(h.pass_count(&small, 1), 0, "the byte bucket is empty");
}

#[test]
fn packets_and_bytes_must_both_fit() {
    let Some(h) = Harness::new() else { return };
    // 100 pps burst 10 and 5000 B/s with the same 0.1 s burst = 500 bytes: 100-byte packets
    // are limited by bytes to 5, 28-byte packets by packets to 10.
    let mut big = udp("10.10.1.10", 45000, BOTH);
    big.payload = 72;
    h.assert_burst(h.pass_count(&big, 50), 5, "100-byte packets");
    let mut small = udp("10.10.1.11", 45000, BOTH);
    small.payload = 0;
    h.assert_burst(h.pass_count(&small, 50), 10, "28-byte packets");
}

#[test]
fn unlimited_rules_and_replies_are_not_limited() {
    let Some(h) = Harness::new() else { return };
    assert_eq!(
        h.pass_count(&udp("10.10.1.10", 46000, UNLIMITED), 50),
        50,
        "no rateLimit"
    );
    // Exhaust web-0's bucket, then send replies api → web-0 of that flow both ways out of api
    // (its egress hook) and into web-0 (its ingress hook): replies are never charged.
    h.assert_burst(
        h.pass_count(&udp("10.10.1.10", 46001, PER_SOURCE), 50),
        10,
        "web-0",
    );
    let reply = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Udp {
            sport: PER_SOURCE,
            dport: 46001,
        },
    )
    .build();
    for _ in 0..20 {
        assert_eq!(h.run_tc(programs::FROM_POD, &reply), TC_PASS);
        assert_eq!(h.run_tc(programs::TO_POD, &reply), TC_PASS);
    }
}

#[test]
fn xdp_uplink_drops_excess_early() {
    let Some(h) = Harness::new() else { return };
    let frame = udp("10.10.1.10", 47000, PER_SOURCE);
    let bytes = frame.build();
    // No bucket yet: XDP lets it through (the bucket starts full) and creates nothing.
    assert_eq!(h.run_xdp(programs::XDP_UPLINK, &bytes), XDP_PASS);
    assert_eq!(h.dp.rate_limit_stats().expect("stats").created, 0);
    h.assert_burst(h.pass_count(&frame, 50), 10, "to_pod");
    // The bucket is empty: the uplink drops without charging anything. Once a token has
    // refilled (after 10 ms at 100 pps; a loaded machine may take that long between two
    // frames), every later frame passes: what XDP sees is a run of drops, then passes. Retry
    // until a run starts with a drop.
    let drops = (0..5)
        .find_map(|attempt| {
            if attempt > 0 {
                h.pass_count(&frame, 50);
            }
            let (before, xdp_before) = (
                h.rate_limited(),
                h.dp.rate_limit_stats().expect("stats").xdp_drops,
            );
            let verdicts: Vec<u32> = (0..5)
                .map(|_| h.run_xdp(programs::XDP_UPLINK, &bytes))
                .collect();
            let drops = verdicts.iter().take_while(|v| **v == XDP_DROP).count();
            assert!(
                verdicts[drops..].iter().all(|v| *v == XDP_PASS),
                "drops, then passes: {verdicts:?}"
            );
            let n = drops as u64;
            assert_eq!(h.rate_limited(), before + n);
            assert_eq!(
                h.dp.rate_limit_stats().expect("stats").xdp_drops,
                xdp_before + n
            );
            (drops > 0).then_some(drops)
        })
        .expect("the uplink dropped over an empty bucket");
    assert!(drops > 0);
    h.since.set(None);
    // Other sources, other rules and replies pass.
    assert_eq!(
        h.run_xdp(
            programs::XDP_UPLINK,
            &udp("10.10.1.11", 47000, PER_SOURCE).build()
        ),
        XDP_PASS
    );
    assert_eq!(
        h.run_xdp(
            programs::XDP_UPLINK,
            &udp("10.10.1.10", 47001, UNLIMITED).build()
        ),
        XDP_PASS
    );
}

#[test]
fn policy_updates_keep_buckets_and_clamp_to_a_lower_burst() {
    let Some(mut h) = Harness::new() else { return };
    let web0 = udp("10.10.1.10", 48000, PER_SOURCE);
    let web1 = udp("10.10.1.11", 48000, PER_SOURCE);
    h.assert_burst(h.pass_count(&web0, 50), 10, "web-0");
    let emptied = Instant::now();
    assert_eq!(h.pass_count(&web1, 4), 4, "web-1 spends 4 of 10");
    // Same policy again: a new generation, but the buckets are not reset (a reset would pass
    // all 5; at most what refilled since web-0's bucket was emptied may pass).
    h.reinstall(10);
    let passed = h.pass_count(&web0, 5);
    let refilled = refills(emptied.elapsed());
    assert!(
        passed <= refilled.min(4),
        "web-0's bucket stays empty: {passed} of 5 passed, {refilled} refilled"
    );
    h.since.set(None);
    // A lower burst: web-1's 6 remaining tokens are clamped to 3.
    h.reinstall(3);
    h.assert_burst(
        h.pass_count(&web1, 20),
        3,
        "web-1 after the burst went down to 3",
    );
    let stats = h.dp.rate_limit_stats().expect("stats");
    assert_eq!(stats.created, 2, "no bucket was recreated");
}

/// Two clients each sending 5× the limit; each is admitted at the limit ±5 %.
#[test]
fn live_per_source_limits_are_accurate() {
    const LIMIT: u32 = 200;
    const BURST: u32 = 20;
    if enforcer_tests::skip_unless_root() {
        return;
    }
    let bed = RateLimitBed::start(2, &limit_yaml(LIMIT, BURST)).expect("bed");
    let sink = bed.sink().expect("sink");
    bed.warm_up(&sink, Duration::from_millis(300))
        .expect("warm up");
    let reports = bed.blast(LIMIT * 5, Duration::from_secs(3)).expect("send");
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    let (_, dropped) = bed.admitted_and_dropped().expect("counters");
    for (i, report) in reports.iter().enumerate() {
        let received = sink.count_from(enforcer_tests::ratelimit_bench::client_addr(i));
        let seconds = report.elapsed.as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let admitted = (received.saturating_sub(u64::from(BURST))) as f64 / seconds;
        let error = admitted / f64::from(LIMIT) - 1.0;
        eprintln!(
            "client {i}: sent {} in {seconds:.3} s ({:.0} pps), received {received}, \
             admitted {admitted:.1} pps beyond the burst ({:+.2} %)",
            report.sent,
            report.rate(),
            error * 100.0
        );
        assert!(
            report.rate() > f64::from(LIMIT) * 4.0,
            "client {i} could not offer 5x the limit"
        );
        assert!(
            error.abs() <= 0.05,
            "client {i}: admitted {admitted:.1} pps for a limit of {LIMIT}"
        );
    }
    assert!(dropped > 0);
}

/// Two clients sending at once into one `per: rule` bucket (charged concurrently from both
/// CPUs): together they are admitted at the limit ±5 %, and no compare-and-swap gave up.
#[test]
fn live_per_rule_limit_is_shared_and_accurate() {
    const LIMIT: u32 = 1000;
    const BURST: u32 = 50;
    if enforcer_tests::skip_unless_root() {
        return;
    }
    let bed = RateLimitBed::start(
        2,
        &format!("{{packetsPerSecond: {LIMIT}, burst: {BURST}, per: rule}}"),
    )
    .expect("bed");
    let sink = bed.sink().expect("sink");
    bed.warm_up(&sink, Duration::from_millis(300))
        .expect("warm up");
    let (admitted0, _) = bed.admitted_and_dropped().expect("counters");
    let reports = bed.blast(LIMIT * 5, Duration::from_secs(3)).expect("send");
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    let (admitted1, _) = bed.admitted_and_dropped().expect("counters");
    let seconds = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    let received = sink.total();
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let admitted = (received.saturating_sub(u64::from(BURST))) as f64 / seconds;
    let error = admitted / f64::from(LIMIT) - 1.0;
    let per_client: Vec<u64> = (0..2)
        .map(|i| sink.count_from(enforcer_tests::ratelimit_bench::client_addr(i)))
        .collect();
    eprintln!(
        "per rule: received {received} {per_client:?} in {seconds:.3} s, admitted {admitted:.1} pps \
         beyond the burst ({:+.2} %)",
        error * 100.0
    );
    assert_eq!(
        admitted1 - admitted0,
        received,
        "the sink got what the datapath admitted"
    );
    assert!(
        error.abs() <= 0.05,
        "admitted {admitted:.1} pps for a limit of {LIMIT}"
    );
    assert!(
        per_client.iter().all(|n| *n > 0),
        "both clients got through"
    );
    assert_eq!(
        bed.datapath().rate_limit_stats().expect("stats").contended,
        0
    );
}

/// More sources than `RATE_BUCKETS` holds: the least recently used buckets are evicted (and
/// counted), and a source whose bucket was evicted starts again with a full burst.
#[test]
fn lru_evicts_buckets_of_idle_sources() {
    let Some(h) = Harness::new() else { return };
    let source = |i: u32| {
        Frame::udp(
            IpAddr::from((0x0a62_0000u32 + i).to_be_bytes()),
            ip("10.10.2.10"),
            49000,
            CIDR,
        )
    };
    let first = source(0);
    h.assert_burst(h.pass_count(&first, 50), 10, "the first source");
    let n = RATE_BUCKET_CAPACITY + 4096;
    for i in 1..=n {
        assert_eq!(
            h.pass_count(&source(i), 1),
            1,
            "source {i} is new: full bucket"
        );
    }
    let stats = h.dp.rate_limit_stats().expect("stats");
    assert_eq!(stats.created, u64::from(n) + 1);
    assert!(stats.source_buckets <= u64::from(RATE_BUCKET_CAPACITY));
    assert!(stats.evicted >= 4096, "{stats:?}");
    assert!(h.dp.rate_bucket(6, Some(first.src)).is_none(), "evicted");
    // Back after its bucket was evicted: a full burst again.
    h.assert_burst(h.pass_count(&first, 50), 10, "the first source again");
}

/// Clients on another node: their excess is dropped by `xdp_uplink` before an skb exists, and
/// each client is still admitted at the limit ±5 %.
#[test]
fn live_remote_sources_are_limited_on_the_uplink() {
    const LIMIT: u32 = 200;
    const BURST: u32 = 20;
    if enforcer_tests::skip_unless_root() {
        return;
    }
    let bed = RateLimitBed::start_remote(2, &limit_yaml(LIMIT, BURST)).expect("bed");
    let sink = bed.sink().expect("sink");
    bed.warm_up(&sink, Duration::from_millis(300))
        .expect("warm up");
    let reports = bed.blast(LIMIT * 5, Duration::from_secs(3)).expect("send");
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    let (_, dropped) = bed.admitted_and_dropped().expect("counters");
    let stats = bed.datapath().rate_limit_stats().expect("stats");
    eprintln!(
        "uplink: {dropped} rate limited, {} of them in XDP",
        stats.xdp_drops
    );
    for (i, report) in reports.iter().enumerate() {
        let received = sink.count_from(enforcer_tests::ratelimit_bench::client_addr(i));
        let seconds = report.elapsed.as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let admitted = (received.saturating_sub(u64::from(BURST))) as f64 / seconds;
        let error = admitted / f64::from(LIMIT) - 1.0;
        eprintln!(
            "remote client {i}: sent {} ({:.0} pps), received {received}, admitted {admitted:.1} \
             pps beyond the burst ({:+.2} %)",
            report.sent,
            report.rate(),
            error * 100.0
        );
        assert!(
            error.abs() <= 0.05,
            "client {i}: admitted {admitted:.1} pps for a limit of {LIMIT}"
        );
    }
    // Nearly all the excess goes in XDP; `to_pod` only sees the packets that raced a refill.
    assert!(
        stats.xdp_drops * 10 >= dropped * 9,
        "{} of {dropped} drops in XDP",
        stats.xdp_drops
    );
}

#[test]
fn a_full_bucket_table_drops_and_counts_instead_of_admitting() {
    let Some(mut h) = Harness::new() else { return };
    // Fill `RULE_BUCKETS` with buckets of rules that do not exist.
    let mut rule = 1_000_000;
    while h.dp.insert_rule_bucket(rule, RateBucket::default()).is_ok() {
        rule += 1;
    }
    assert!(rule > 1_000_000, "RULE_BUCKETS took no entry");
    let before = h.rate_limited();
    assert_eq!(
        h.pass_count(&udp("10.10.1.10", 44000, PER_RULE), 1),
        0,
        "a per-rule limit without a bucket must not admit"
    );
    assert_eq!(h.rate_limited(), before + 1, "counted as rate_limited");
    assert_eq!(h.dp.rate_limit_stats().expect("stats").no_bucket, 1);
    // Flows without a limit are unaffected.
    assert_eq!(h.pass_count(&udp("10.10.1.10", 44001, UNLIMITED), 1), 1);
}
