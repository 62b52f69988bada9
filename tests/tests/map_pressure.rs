//! Full kernel tables fail closed: when `CONNTRACK` or `FRAGMENTS` (both LRU) are full, the
//! least recently used entry is evicted (documented in docs/architecture.md), and the packets
//! that needed it are judged again by the policy or dropped — never passed on a verdict the
//! policy does not give. Real programs through `BPF_PROG_TEST_RUN`.

use std::net::IpAddr;

use enforcer::{
    datapath::Datapath,
    policy::{compile, parse::parse_documents, NodeContext, PolicySet},
};
use enforcer_common::{
    addr::from_v4, programs, CtKey, CONNTRACK_CAPACITY, DIR_INGRESS, FRAGMENT_CAPACITY,
    REASON_FRAGMENT, VERDICT_DENY,
};
use enforcer_tests::{
    frames::{Frame, L4},
    fuzz::POLICY,
    testrun::{run_tc, test_endpoints, TC_PASS, TC_SHOT},
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn datapath() -> Option<Datapath> {
    if enforcer_tests::skip_unless_root() {
        return None;
    }
    let set = PolicySet::from_documents(parse_documents("fuzz.yaml", POLICY).expect("policy"))
        .expect("policy set");
    let mut dp = Datapath::load(None).expect("load eBPF object");
    dp.install(
        &compile(&set, &NodeContext::default()),
        &test_endpoints(&set),
    )
    .expect("install");
    Some(dp)
}

fn both(dp: &Datapath, frame: &Frame) -> u32 {
    let bytes = frame.build();
    match run_tc(dp, programs::FROM_POD, &bytes) {
        TC_PASS => run_tc(dp, programs::TO_POD, &bytes),
        other => other,
    }
}

#[test]
fn full_conntrack_evicts_and_the_evicted_flow_is_judged_again() {
    let Some(dp) = datapath() else { return };
    // web → api TCP 8080 is allowed; api may open nothing (its egress is isolated).
    let syn = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 50000, 8080);
    let reply = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Tcp {
            sport: 8080,
            dport: 50000,
            flags: 0x12,
        },
    );
    assert_eq!(both(&dp, &syn), TC_PASS);
    assert_eq!(both(&dp, &reply), TC_PASS, "reply of a tracked flow");
    let flow = CtKey {
        a: from_v4([10, 10, 1, 10]),
        b: from_v4([10, 10, 2, 10]),
        a_port: 50000,
        b_port: 8080,
        protocol: 6,
        ..CtKey::default()
    };
    // A noisy neighbour (web, whose egress to db is open) opens flows with two packets each (the
    // second refreshes the entry, as real traffic does) until ours is evicted. Untouched entries
    // go first (the kernel's LRU keeps referenced ones on its active list), so this takes more
    // than the table's capacity.
    let mut i = 0u32;
    while dp.conntrack_entry(&flow).is_some() {
        assert!(i < 4 * CONNTRACK_CAPACITY, "flow never evicted");
        for _ in 0..1024 {
            let sport = u16::try_from(i % 60_000).unwrap_or(0) + 1024;
            let dport = u16::try_from(i / 60_000).unwrap_or(0) + 1;
            let noise = Frame::udp(ip("10.10.1.10"), ip("10.10.3.10"), sport, dport).build();
            assert_eq!(run_tc(&dp, programs::FROM_POD, &noise), TC_PASS);
            assert_eq!(run_tc(&dp, programs::FROM_POD, &noise), TC_PASS);
            i += 1;
        }
    }
    eprintln!("evicted after {i} other flows (capacity {CONNTRACK_CAPACITY})");
    assert!(
        i >= CONNTRACK_CAPACITY / 2,
        "evicted after only {i} inserts"
    );
    // Without state the reply is a new flow from api, which its policy denies: fail closed.
    assert_eq!(both(&dp, &reply), TC_SHOT, "evicted reply judged as new");
    // The client's next opening packet tracks the flow again.
    assert_eq!(both(&dp, &syn), TC_PASS);
    assert_eq!(both(&dp, &reply), TC_PASS, "tracked again");
}

#[test]
fn full_fragment_table_forgets_the_oldest_datagram_and_drops_its_fragments() {
    let Some(dp) = datapath() else { return };
    let before = dp.counters().expect("counters")[&(DIR_INGRESS, VERDICT_DENY, REASON_FRAGMENT)];
    // web → api TCP 8080, first fragments of more datagrams than the table holds (the IPv6
    // fragment identification is 32 bits, so every datagram has its own entry).
    let web = ip("fd00:10::10");
    let api = ip("fd00:10::20");
    let first = |id: u32| Frame::tcp_syn(web, api, 51000, 8080).first_fragment(id);
    let last = |id: u32| first(id).later_fragment(id, 185, false).build();
    for id in 0..=FRAGMENT_CAPACITY {
        assert_eq!(run_tc(&dp, programs::TO_POD, &first(id).build()), TC_PASS);
    }
    // The newest datagram's later fragment passes; the oldest was evicted: dropped, counted.
    assert_eq!(
        run_tc(&dp, programs::TO_POD, &last(FRAGMENT_CAPACITY)),
        TC_PASS
    );
    let dropped = (0..16)
        .filter(|id| run_tc(&dp, programs::TO_POD, &last(*id)) == TC_SHOT)
        .count();
    assert!(
        dropped > 0,
        "no early datagram was evicted from a full table"
    );
    let after = dp.counters().expect("counters")[&(DIR_INGRESS, VERDICT_DENY, REASON_FRAGMENT)];
    assert_eq!(
        after,
        before + dropped as u64,
        "orphans counted as `fragment`"
    );
}
