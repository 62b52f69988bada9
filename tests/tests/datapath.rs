//! Datapath truth tables through `BPF_PROG_TEST_RUN`: hand-built frames through the real programs
//! with a real compiled policy in the maps. Fast and exact; needs root (skipped otherwise).

use std::{net::IpAddr, time::Duration};

use enforcer::{
    datapath::Datapath,
    policy::{compile, parse::parse_documents, NodeContext, PolicySet},
};
use enforcer_common::{
    counter_index, programs, DENIED_REPORT_INTERVAL_NS, DIR_EGRESS, DIR_INGRESS,
    REASON_DEFAULT_DENY, REASON_ESTABLISHED, REASON_FRAGMENT, REASON_MALFORMED, REASON_NON_IP,
    REASON_POLICY, REASON_SPOOFED, VERDICT_ALLOW, VERDICT_DENY,
};
use enforcer_tests::{
    frames::{arp_request, icmp_unreachable, Frame, L4},
    netns::{delete_netns, run_in_netns, HARNESS_PREFIX},
    testrun::{
        run_tc, run_tc_on, run_xdp, test_endpoints, TC_PASS, TC_SHOT, TEST_IFINDEX, XDP_DROP,
        XDP_PASS,
    },
};

const POLICY: &str = r#"
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
spec: {service: db, addresses: [10.10.3.10]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 9000, endPort: 9010}, {protocol: ICMP}]
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
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

struct Harness {
    dp: Datapath,
}

impl Harness {
    fn new() -> Option<Self> {
        if enforcer_tests::skip_unless_root() {
            return None;
        }
        let docs = parse_documents("test.yaml", POLICY).expect("valid policy");
        let set = PolicySet::from_documents(docs).expect("valid set");
        let compiled = compile(&set, &NodeContext::default());
        let mut dp = Datapath::load(None).expect("load eBPF object");
        // Every workload address is "local" behind the test interface (loopback).
        let endpoints = test_endpoints(&set);
        dp.install(&compiled, &endpoints).expect("install policy");
        Some(Harness { dp })
    }

    fn tc(&self, name: &str, frame: &[u8]) -> u32 {
        run_tc(&self.dp, name, frame)
    }

    fn xdp(&self, name: &str, frame: &[u8]) -> u32 {
        run_xdp(&self.dp, name, frame)
    }

    /// Both sides of a new flow: the source's egress (`from_pod`), then the destination's ingress
    /// (`to_pod`); `TC_PASS` only if both pass.
    fn flow(&self, frame: &Frame) -> u32 {
        let bytes = frame.build();
        let egress = self.tc(programs::FROM_POD, &bytes);
        if egress != TC_PASS {
            return egress;
        }
        self.tc(programs::TO_POD, &bytes)
    }

    fn counter(&self, dir: u8, verdict: u8, reason: u8) -> u64 {
        self.dp.counters().expect("counters")[&(dir, verdict, reason)]
    }
}

#[test]
fn allowed_and_denied_tcp_ipv4() {
    let Some(h) = Harness::new() else { return };
    let before = h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY);
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            40000,
            8080
        )),
        TC_PASS
    );
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            40001,
            8081
        )),
        TC_SHOT
    );
    // Port range 9000-9010, both ends and outside.
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            40002,
            9000
        )),
        TC_PASS
    );
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            40003,
            9010
        )),
        TC_PASS
    );
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            40004,
            9011
        )),
        TC_SHOT
    );
    // UDP to an allowed TCP port is not allowed.
    assert_eq!(
        h.flow(&Frame::udp(ip("10.10.1.10"), ip("10.10.2.10"), 40005, 8080)),
        TC_SHOT
    );
    // db is not isolated but denies web.
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.3.10"),
            40006,
            5432
        )),
        TC_SHOT
    );
    // db may reach web (neither side restricts it); api's egress is isolated without rules.
    let ok = Frame::tcp_syn(ip("10.10.3.10"), ip("10.10.1.10"), 40007, 5432);
    assert_eq!(h.flow(&ok), TC_PASS);
    let isolated = Frame::tcp_syn(ip("10.10.2.10"), ip("10.10.3.10"), 40008, 5432);
    assert_eq!(h.flow(&isolated), TC_SHOT);
    assert_eq!(
        h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY),
        before + 3
    );
}

#[test]
fn replies_of_allowed_flows_pass() {
    let Some(h) = Harness::new() else { return };
    // api may open nothing (egress isolated): a SYN-ACK without a tracked flow is a new flow.
    let stray = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Tcp {
            sport: 8080,
            dport: 41000,
            flags: 0x12,
        },
    );
    assert_eq!(h.flow(&stray), TC_SHOT, "no tracked flow: judged as new");
    // A reply from api to web's connection on 8080 passes via conntrack.
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            41001,
            8080
        )),
        TC_PASS
    );
    let back = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Tcp {
            sport: 8080,
            dport: 41001,
            flags: 0x12,
        },
    );
    assert_eq!(h.flow(&back), TC_PASS);
}

#[test]
fn icmp_echo_by_policy() {
    let Some(h) = Harness::new() else { return };
    assert_eq!(
        h.flow(&Frame::echo(ip("10.10.1.10"), ip("10.10.2.10"), 7)),
        TC_PASS
    );
    assert_eq!(
        h.flow(&Frame::echo(ip("10.10.3.10"), ip("10.10.2.10"), 8)),
        TC_SHOT
    );
    assert_eq!(
        h.flow(&Frame::echo(ip("fd00:10::10"), ip("fd00:10::20"), 9)),
        TC_PASS
    );
}

#[test]
fn vlan_tagged_frames_are_judged() {
    let Some(h) = Harness::new() else { return };
    let ok = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 42000, 8080).vlan(100);
    let bad = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 42001, 22).vlan(100);
    assert_eq!(h.flow(&ok), TC_PASS);
    assert_eq!(h.flow(&bad), TC_SHOT);
    // QinQ: two tags.
    assert_eq!(h.flow(&bad.clone().vlan(200)), TC_SHOT);
}

#[test]
fn ipv6_with_extension_headers() {
    let Some(h) = Harness::new() else { return };
    let ok = Frame::tcp_syn(ip("fd00:10::10"), ip("fd00:10::20"), 43000, 8080)
        .ipv6_ext(0)
        .ipv6_ext(60);
    let bad = Frame::tcp_syn(ip("fd00:10::10"), ip("fd00:10::20"), 43001, 8081)
        .ipv6_ext(0)
        .ipv6_ext(60);
    assert_eq!(h.flow(&ok), TC_PASS);
    assert_eq!(h.flow(&bad), TC_SHOT);
}

#[test]
fn truncated_and_fragmented_packets_are_dropped_as_malformed() {
    let Some(h) = Harness::new() else { return };
    let before = h.counter(DIR_EGRESS, VERDICT_DENY, REASON_MALFORMED);
    let full = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 44000, 8080).build();
    // Cut inside the TCP header (the kernel refuses a tc test run with a cut IPv4 header, so
    // that case goes through XDP below).
    assert_eq!(h.tc(programs::FROM_POD, &full[..14 + 20 + 10]), TC_SHOT);
    let v6 = Frame::tcp_syn(ip("fd00:10::10"), ip("fd00:10::20"), 44001, 8080)
        .ipv6_ext(0)
        .build();
    assert_eq!(h.tc(programs::FROM_POD, &v6[..14 + 40 + 4]), TC_SHOT);
    // A later fragment starting inside the first 24 bytes could rewrite the TCP header the
    // first fragment was judged by (RFC 1858).
    let overlap = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 44002, 8080)
        .later_fragment(9, 1, true)
        .build();
    assert_eq!(h.tc(programs::FROM_POD, &overlap), TC_SHOT);
    assert_eq!(h.xdp(programs::XDP_POD, &full[..14 + 12]), XDP_DROP);
    assert_eq!(h.xdp(programs::XDP_POD, &full[..14 + 20 + 10]), XDP_DROP);
    assert_eq!(
        h.counter(DIR_EGRESS, VERDICT_DENY, REASON_MALFORMED),
        before + 5
    );
}

#[test]
fn arp_passes() {
    let Some(h) = Harness::new() else { return };
    let before = h.counter(DIR_EGRESS, VERDICT_ALLOW, REASON_NON_IP);
    assert_eq!(h.tc(programs::FROM_POD, &arp_request()), TC_PASS);
    assert_eq!(h.tc(programs::TO_POD, &arp_request()), TC_PASS);
    assert_eq!(h.xdp(programs::XDP_POD, &arp_request()), XDP_PASS);
    assert_eq!(
        h.counter(DIR_EGRESS, VERDICT_ALLOW, REASON_NON_IP),
        before + 1
    );
}

#[test]
fn spoofed_sources_are_dropped() {
    let Some(h) = Harness::new() else { return };
    let spoofed = Frame::tcp_syn(ip("10.99.0.1"), ip("10.10.2.10"), 45000, 8080).build();
    assert_eq!(h.tc(programs::FROM_POD, &spoofed), TC_SHOT);
    assert_eq!(h.xdp(programs::XDP_POD, &spoofed), XDP_DROP);
    assert_eq!(h.counter(DIR_EGRESS, VERDICT_DENY, REASON_SPOOFED), 2);
    let genuine = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 45001, 8080).build();
    assert_eq!(h.xdp(programs::XDP_POD, &genuine), XDP_PASS);
}

/// A network namespace of the harness with a veth pair in it: a second "pod interface" for
/// `BPF_PROG_TEST_RUN`, which runs tc programs on the device named in the context (it must exist
/// in the caller's namespace). Deleted on drop.
struct SecondInterface {
    ns: String,
}

impl SecondInterface {
    const NAME: &str = "dp-pod2";

    fn new() -> Self {
        let ns = format!("{HARNESS_PREFIX}{:x}-dpspoof", std::process::id());
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &ns]);
        let guard = SecondInterface { ns };
        let ns = guard.ns.as_str();
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            Self::NAME,
            "type",
            "veth",
            "peer",
            "name",
            "dp-peer",
        ]);
        ip(&["-n", ns, "link", "set", Self::NAME, "up"]);
        guard
    }
}

impl Drop for SecondInterface {
    fn drop(&mut self) {
        let _ = delete_netns(&self.ns);
    }
}

#[test]
fn established_packets_keep_anti_spoofing() {
    if enforcer_tests::skip_unless_root() {
        return;
    }
    let second = SecondInterface::new();
    run_in_netns(&second.ns, || {
        let name = std::ffi::CString::new(SecondInterface::NAME)?;
        // SAFETY: a valid NUL-terminated name; the call only reads it.
        let other_if = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(other_if, 0, "the second interface exists in this namespace");
        spoofing_checks(other_if);
        Ok(())
    })
    .expect("the checks ran inside the namespace");
}

/// web and api behind the test interface (loopback), db behind `other_if`.
fn spoofing_checks(other_if: u32) {
    let docs = parse_documents("test.yaml", POLICY).expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    let compiled = compile(&set, &NodeContext::default());
    let mut dp = Datapath::load(None).expect("load eBPF object");
    let db = ip("10.10.3.10");
    let mut endpoints = test_endpoints(&set);
    endpoints.retain(|(_, a)| *a != db);
    endpoints.insert((other_if, db));
    dp.install(&compiled, &endpoints).expect("install policy");
    let spoofed = |dp: &Datapath| {
        dp.counters().expect("counters")[&(DIR_EGRESS, VERDICT_DENY, REASON_SPOOFED)]
    };
    let established = |dp: &Datapath| {
        dp.counters().expect("counters")[&(DIR_EGRESS, VERDICT_ALLOW, REASON_ESTABLISHED)]
    };

    let (web, api) = (ip("10.10.1.10"), ip("10.10.2.10"));
    let syn = Frame::tcp_syn(web, api, 47000, 8080).build();
    let ack = Frame::new(
        web,
        api,
        L4::Tcp {
            sport: 47000,
            dport: 8080,
            flags: 0x10,
        },
    )
    .build();
    assert_eq!(
        run_tc_on(&dp, programs::FROM_POD, &syn, TEST_IFINDEX),
        TC_PASS
    );
    assert_eq!(
        run_tc_on(&dp, programs::TO_POD, &syn, TEST_IFINDEX),
        TC_PASS
    );
    // The genuine sender's next packet is established (the conntrack entry decides it).
    let est = established(&dp);
    assert_eq!(
        run_tc_on(&dp, programs::FROM_POD, &ack, TEST_IFINDEX),
        TC_PASS
    );
    assert_eq!(
        established(&dp),
        est + 1,
        "the genuine ACK passed as established"
    );
    // The same packet from db's interface (db claiming web's address, in web's established flow)
    // is spoofed: the entry's proof names web's interface, not db's.
    let before = spoofed(&dp);
    assert_eq!(run_tc_on(&dp, programs::FROM_POD, &ack, other_if), TC_SHOT);
    assert_eq!(spoofed(&dp), before + 1);
    // db's own address on its interface is not spoofed (the interface is managed, and works).
    let db_udp = Frame::udp(db, api, 47001, 53).build();
    run_tc_on(&dp, programs::FROM_POD, &db_udp, other_if);
    assert_eq!(spoofed(&dp), before + 1, "db sending from its own address");
    // The genuine sender still passes after the spoofed attempt.
    assert_eq!(
        run_tc_on(&dp, programs::FROM_POD, &ack, TEST_IFINDEX),
        TC_PASS
    );
    assert_eq!(established(&dp), est + 2);

    // A flow denied on the genuine interface is remembered as recently denied (api may send
    // nothing: `egress: []`); the same packet from db's interface, claiming api's address, is
    // still spoofed: the cached denial holds only for the interface that proved the source.
    let denied = |dp: &Datapath| {
        dp.counters().expect("counters")[&(DIR_EGRESS, VERDICT_DENY, REASON_DEFAULT_DENY)]
    };
    let api_out = Frame::udp(api, web, 47002, 53).build();
    let d = denied(&dp);
    for _ in 0..3 {
        assert_eq!(
            run_tc_on(&dp, programs::FROM_POD, &api_out, TEST_IFINDEX),
            TC_SHOT
        );
    }
    assert_eq!(denied(&dp), d + 3, "judged, then dropped from the cache");
    let before = spoofed(&dp);
    assert_eq!(
        run_tc_on(&dp, programs::FROM_POD, &api_out, other_if),
        TC_SHOT
    );
    assert_eq!(spoofed(&dp), before + 1, "spoofed, not a cached denial");
    assert_eq!(denied(&dp), d + 3);
}

#[test]
fn a_denied_flood_is_counted_per_packet_and_reported_once_per_flow() {
    let Some(mut h) = Harness::new() else { return };
    let mut events = h.dp.take_events().expect("the event ring buffer");
    let mut drain = move || {
        let mut n = 0;
        while events.next().is_some() {
            n += 1;
        }
        n
    };
    let (web, api, db) = (ip("10.10.1.10"), ip("10.10.2.10"), ip("10.10.3.10"));
    // The allowed case works (a new flow, reported).
    assert_eq!(h.flow(&Frame::tcp_syn(web, api, 48000, 8080)), TC_PASS);
    assert_eq!(drain(), 2, "a new allowed flow is reported by both hooks");
    // web → db is denied by db's ingressDeny[0]: 100 packets of one flow.
    let flood = Frame::udp(web, db, 48001, 5000).build();
    let before = h.counter(DIR_INGRESS, VERDICT_DENY, REASON_POLICY);
    for _ in 0..100 {
        assert_eq!(h.tc(programs::TO_POD, &flood), TC_SHOT);
    }
    assert_eq!(
        h.counter(DIR_INGRESS, VERDICT_DENY, REASON_POLICY),
        before + 100,
        "every drop is counted"
    );
    assert_eq!(
        drain(),
        1,
        "only the flow's first drop is reported within the interval"
    );
    // Another denied flow is reported at its own first drop.
    let other = Frame::udp(web, db, 48002, 5000).build();
    assert_eq!(h.tc(programs::TO_POD, &other), TC_SHOT);
    assert_eq!(drain(), 1);
    // After the interval, the flood's next drop is reported again.
    std::thread::sleep(
        Duration::from_nanos(DENIED_REPORT_INTERVAL_NS) + Duration::from_millis(100),
    );
    assert_eq!(h.tc(programs::TO_POD, &flood), TC_SHOT);
    assert_eq!(drain(), 1, "reported again after the interval");
    // A new generation judges the flow again (its first drop under it is reported at once).
    let docs = parse_documents("test.yaml", POLICY).expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    let compiled = compile(&set, &NodeContext::default());
    h.dp.install(&compiled, &test_endpoints(&set))
        .expect("install policy");
    assert_eq!(h.tc(programs::TO_POD, &flood), TC_SHOT);
    assert_eq!(
        drain(),
        1,
        "judged and reported again under the new generation"
    );
    // The allowed flow still passes after the flood.
    assert_eq!(h.flow(&Frame::tcp_syn(web, api, 48003, 8080)), TC_PASS);
}

#[test]
fn a_recently_denied_flow_is_judged_again_under_a_new_policy() {
    let Some(mut h) = Harness::new() else { return };
    let (web, api) = (ip("10.10.1.10"), ip("10.10.2.10"));
    // The allowed case works: web → api:8080.
    assert_eq!(h.flow(&Frame::tcp_syn(web, api, 49500, 8080)), TC_PASS);
    // web → api:8081 is denied by api's default deny: judged once, then dropped from the
    // recently-denied cache, every drop counted.
    let syn = Frame::tcp_syn(web, api, 49501, 8081).build();
    let before = h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY);
    for _ in 0..5 {
        assert_eq!(h.tc(programs::TO_POD, &syn), TC_SHOT);
    }
    assert_eq!(
        h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY),
        before + 5
    );
    // A policy that allows 8081: the cached denial does not outlive it.
    let docs = parse_documents("test.yaml", &POLICY.replace("port: 8080", "port: 8081"))
        .expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    h.dp.install(
        &compile(&set, &NodeContext::default()),
        &test_endpoints(&set),
    )
    .expect("install");
    assert_eq!(
        h.tc(programs::TO_POD, &syn),
        TC_PASS,
        "judged again under the new generation"
    );
    // And the reverse: a flow allowed before is denied under a policy that no longer allows it,
    // then stays denied on its cached entry.
    let old = Frame::tcp_syn(web, api, 49502, 8080).build();
    let before = h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY);
    for _ in 0..3 {
        assert_eq!(h.tc(programs::TO_POD, &old), TC_SHOT);
    }
    assert_eq!(
        h.counter(DIR_INGRESS, VERDICT_DENY, REASON_DEFAULT_DENY),
        before + 3
    );
}

#[test]
fn counters_attribute_rules() {
    let Some(h) = Harness::new() else { return };
    let before = h.counter(DIR_INGRESS, VERDICT_ALLOW, REASON_POLICY);
    assert_eq!(
        h.flow(&Frame::tcp_syn(
            ip("10.10.1.10"),
            ip("10.10.2.10"),
            46000,
            8080
        )),
        TC_PASS
    );
    assert_eq!(
        h.counter(DIR_INGRESS, VERDICT_ALLOW, REASON_POLICY),
        before + 1
    );
    let _ = counter_index(DIR_INGRESS, VERDICT_ALLOW, REASON_POLICY);
}

#[test]
fn icmp_errors_of_allowed_flows_pass_and_others_are_judged() {
    let Some(h) = Harness::new() else { return };
    // api's egress is isolated with no rule: it may send nothing new, only replies.
    let udp = Frame::udp(ip("10.10.1.10"), ip("10.10.2.10"), 47000, 9005);
    assert_eq!(h.flow(&udp), TC_SHOT, "UDP 9005 is not allowed into api");
    let allowed = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 47001, 8080);
    assert_eq!(h.flow(&allowed), TC_PASS);
    // api answers the allowed flow with an ICMP error: related, it passes both hooks.
    let error = icmp_unreachable(ip("10.10.2.10"), ip("10.10.1.10"), &allowed.build());
    assert_eq!(
        h.tc(programs::FROM_POD, &error),
        TC_PASS,
        "error about a tracked flow"
    );
    assert_eq!(h.tc(programs::TO_POD, &error), TC_PASS);
    // An error about a flow nobody allowed is a new ICMP flow from api: its egress denies it.
    let stray = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 47002, 5555);
    let error = icmp_unreachable(ip("10.10.2.10"), ip("10.10.1.10"), &stray.build());
    assert_eq!(h.tc(programs::FROM_POD, &error), TC_SHOT);
    // IPv6 too.
    let allowed6 = Frame::tcp_syn(ip("fd00:10::10"), ip("fd00:10::20"), 47003, 8080);
    assert_eq!(h.flow(&allowed6), TC_PASS);
    let error6 = icmp_unreachable(ip("fd00:10::20"), ip("fd00:10::10"), &allowed6.build());
    assert_eq!(h.tc(programs::FROM_POD, &error6), TC_PASS);
}

#[test]
fn echo_replies_pass_only_for_requests_that_were_allowed() {
    let Some(h) = Harness::new() else { return };
    // web → api echo is allowed; api's egress is isolated, yet the reply passes (conntrack).
    assert_eq!(
        h.flow(&Frame::echo(ip("10.10.1.10"), ip("10.10.2.10"), 77)),
        TC_PASS
    );
    let reply = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Echo {
            id: 77,
            reply: true,
        },
    );
    assert_eq!(h.flow(&reply), TC_PASS);
    // A reply nobody asked for is a new flow from api, which may send nothing.
    let unsolicited = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Echo {
            id: 78,
            reply: true,
        },
    );
    assert_eq!(h.flow(&unsolicited), TC_SHOT);
}

#[test]
fn a_new_generation_rejudges_established_flows() {
    let Some(mut h) = Harness::new() else { return };
    let syn = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 48000, 8080);
    assert_eq!(h.flow(&syn), TC_PASS);
    let ack = Frame::new(
        ip("10.10.1.10"),
        ip("10.10.2.10"),
        L4::Tcp {
            sport: 48000,
            dport: 8080,
            flags: 0x10,
        },
    );
    assert_eq!(h.flow(&ack), TC_PASS, "established");
    // The same policy with 8081 instead of 8080.
    let docs = parse_documents("test.yaml", &POLICY.replace("port: 8080", "port: 8081"))
        .expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    let endpoints = test_endpoints(&set);
    h.dp.install(&compile(&set, &NodeContext::default()), &endpoints)
        .expect("install");
    assert_eq!(h.flow(&ack), TC_SHOT, "re-judged under the new generation");
}

#[test]
fn icmp_errors_must_be_addressed_to_the_quoted_packets_source() {
    let Some(h) = Harness::new() else { return };
    // A tracked flow web → api:8080.
    let allowed = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), 49000, 8080);
    assert_eq!(h.flow(&allowed), TC_PASS);
    // web may not reach db (db denies web). A forged "error" web → db quoting web's own tracked
    // flow is not related (db is not the quoted packet's source): judged as new, denied.
    let forged = icmp_unreachable(ip("10.10.1.10"), ip("10.10.3.10"), &allowed.build());
    assert_eq!(
        h.tc(programs::TO_POD, &forged),
        TC_SHOT,
        "forged error into db"
    );
    // The same from a router (any address) to api, quoting web's packet: api is not its source.
    let forged = icmp_unreachable(ip("10.99.0.1"), ip("10.10.2.10"), &allowed.build());
    assert_eq!(
        h.tc(programs::TO_POD, &forged),
        TC_SHOT,
        "forged error into api"
    );
    // A genuine error: a router on the path reports api's reply (api → web) back to api. The
    // outer source is unknown (world, which api's ingress denies), yet it is related.
    let reply = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Tcp {
            sport: 8080,
            dport: 49000,
            flags: 0x12,
        },
    );
    let genuine = icmp_unreachable(ip("10.99.0.1"), ip("10.10.2.10"), &reply.build());
    assert_eq!(
        h.tc(programs::TO_POD, &genuine),
        TC_PASS,
        "error to the reply's source"
    );
    // The same quoting a flow that is not tracked: judged as new ICMP from world, denied.
    let untracked = Frame::new(
        ip("10.10.2.10"),
        ip("10.10.1.10"),
        L4::Tcp {
            sport: 8080,
            dport: 49001,
            flags: 0x12,
        },
    );
    let stray = icmp_unreachable(ip("10.99.0.1"), ip("10.10.2.10"), &untracked.build());
    assert_eq!(
        h.tc(programs::TO_POD, &stray),
        TC_SHOT,
        "error about no tracked flow"
    );
    // IPv6: forged (router → api quoting web's packet) and genuine (quoting api's reply).
    let allowed6 = Frame::tcp_syn(ip("fd00:10::10"), ip("fd00:10::20"), 49002, 8080);
    assert_eq!(h.flow(&allowed6), TC_PASS);
    let forged6 = icmp_unreachable(ip("fd00:99::1"), ip("fd00:10::20"), &allowed6.build());
    assert_eq!(
        h.tc(programs::TO_POD, &forged6),
        TC_SHOT,
        "forged v6 error into api"
    );
    let reply6 = Frame::new(
        ip("fd00:10::20"),
        ip("fd00:10::10"),
        L4::Tcp {
            sport: 8080,
            dport: 49002,
            flags: 0x12,
        },
    );
    let genuine6 = icmp_unreachable(ip("fd00:99::1"), ip("fd00:10::20"), &reply6.build());
    assert_eq!(
        h.tc(programs::TO_POD, &genuine6),
        TC_PASS,
        "v6 error to the reply's source"
    );
}

/// Both hooks of one frame, as `Harness::flow` but for raw bytes.
fn both(h: &Harness, bytes: &[u8]) -> (u32, u32) {
    (
        h.tc(programs::FROM_POD, bytes),
        h.tc(programs::TO_POD, bytes),
    )
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let Some(h) = Harness::new() else { return };
    for (web, api, id) in [
        (ip("10.10.1.10"), ip("10.10.2.10"), 0x1234),
        (ip("fd00:10::10"), ip("fd00:10::20"), 0x0001_1234),
    ] {
        let frag_before = h.counter(DIR_EGRESS, VERDICT_DENY, REASON_FRAGMENT)
            + h.counter(DIR_INGRESS, VERDICT_DENY, REASON_FRAGMENT);
        // Allowed datagram (web → api TCP 8080): every fragment passes both hooks.
        let first = Frame::tcp_syn(web, api, 50000, 8080).first_fragment(id);
        assert_eq!(
            both(&h, &first.build()),
            (TC_PASS, TC_PASS),
            "allowed first"
        );
        let middle = first.clone().later_fragment(id, 185, true).build();
        let last = first.clone().later_fragment(id, 370, false).build();
        assert_eq!(both(&h, &middle), (TC_PASS, TC_PASS), "allowed middle");
        assert_eq!(both(&h, &last), (TC_PASS, TC_PASS), "allowed last");
        // Denied datagram (port 8081): its later fragments never pass the hook that denied it.
        let denied = Frame::tcp_syn(web, api, 50001, 8081).first_fragment(id + 1);
        assert_eq!(
            h.tc(programs::TO_POD, &denied.build()),
            TC_SHOT,
            "denied first"
        );
        let later = denied.clone().later_fragment(id + 1, 185, false).build();
        assert_eq!(h.tc(programs::TO_POD, &later), TC_SHOT, "denied later");
        // An orphan (no first fragment seen) is dropped by both hooks.
        let orphan = Frame::tcp_syn(web, api, 50002, 8080)
            .later_fragment(id + 2, 185, false)
            .build();
        assert_eq!(both(&h, &orphan), (TC_SHOT, TC_SHOT), "orphan");
        // A denied first fragment reusing an allowed datagram's id erases it: its later
        // fragments do not ride on the earlier datagram's ports.
        let reused = Frame::tcp_syn(web, api, 50003, 8081).first_fragment(id);
        assert_eq!(
            h.tc(programs::TO_POD, &reused.build()),
            TC_SHOT,
            "denied reuse"
        );
        assert_eq!(
            h.tc(programs::TO_POD, &last),
            TC_SHOT,
            "later of the denied reuse"
        );
        let frag_after = h.counter(DIR_EGRESS, VERDICT_DENY, REASON_FRAGMENT)
            + h.counter(DIR_INGRESS, VERDICT_DENY, REASON_FRAGMENT);
        // later of denied (1) + orphan (2) + later of the reuse (1).
        assert_eq!(frag_after, frag_before + 4, "fragment drops counted");
    }
}
