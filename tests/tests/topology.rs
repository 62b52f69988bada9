//! Proves the harness works without any eBPF: connectivity in every direction the enforcer tests
//! need, probes that report drops, streams, UDP load, and cleanup. Needs root; skipped otherwise.
//! Every test builds its own topology with unique names, so they may run in parallel.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use enforcer_tests::{
    netns, probe, send_udp_load, skip_unless_root, spawn_tcp_echo, spawn_udp_echo, spawn_udp_sink,
    Family, NoAnswerKind, ProbeOptions, ProbeOutcome, Protocol, StreamOptions, TcpEchoServer,
    TcpEchoStream, Topology, UdpEchoServer, UdpLoad, ANY,
};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address literal")
}

/// TCP and UDP echo servers in a namespace.
struct Servers {
    tcp: TcpEchoServer,
    udp: UdpEchoServer,
}

fn servers(ns: &str) -> Servers {
    Servers {
        tcp: spawn_tcp_echo(ns, ANY, TCP_PORT).expect("TCP echo server"),
        udp: spawn_udp_echo(ns, UDP_PORT).expect("UDP echo server"),
    }
}

/// Probes `dst` from `ns` with TCP, UDP and ICMP and panics unless all three are answered.
fn expect_all_answered(ns: &str, dst: IpAddr, what: &str) {
    for (proto, port) in [
        (Protocol::Tcp, TCP_PORT),
        (Protocol::Udp, UDP_PORT),
        (Protocol::Icmp, 0),
    ] {
        let outcome = probe(ns, proto, dst, port, &ProbeOptions::default()).expect("probe runs");
        assert!(
            outcome.is_answered(),
            "{what}: {proto} to {dst} from {ns}: {outcome}"
        );
    }
}

#[test]
fn pods_on_one_node_reach_each_other() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .node("n1")
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("b", "n1", &[ip("10.10.1.11"), ip("fd00:10::11")])
        .build()
        .expect("topology");
    let sa = servers(topo.pod_netns("a").unwrap());
    let sb = servers(topo.pod_netns("b").unwrap());
    for fam in [Family::Ipv4, Family::Ipv6] {
        let (a, b) = (
            topo.addr_of("a", fam).unwrap(),
            topo.addr_of("b", fam).unwrap(),
        );
        expect_all_answered(topo.pod_netns("a").unwrap(), b, "a -> b");
        expect_all_answered(topo.pod_netns("b").unwrap(), a, "b -> a");
        // No address translation: each side sees the other's pod address.
        assert!(sb.tcp.peers().contains_key(&a), "{:?}", sb.tcp.peers());
        assert!(sa.tcp.peers().contains_key(&b), "{:?}", sa.tcp.peers());
        assert!(sb.udp.peers().contains_key(&a), "{:?}", sb.udp.peers());
        assert!(sa.udp.peers().contains_key(&b), "{:?}", sa.udp.peers());
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("web-0", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("api-0", "n2", &[ip("10.10.2.10"), ip("fd00:10::2:10")])
        .build()
        .expect("topology");
    assert_eq!(topo.pod_node("api-0").unwrap().name(), "n2");
    let _sw = servers(topo.pod_netns("web-0").unwrap());
    let sa = servers(topo.pod_netns("api-0").unwrap());
    for fam in [Family::Ipv4, Family::Ipv6] {
        let web = topo.addr_of("web-0", fam).unwrap();
        let api = topo.addr_of("api-0", fam).unwrap();
        expect_all_answered(topo.pod_netns("web-0").unwrap(), api, "n1 pod -> n2 pod");
        expect_all_answered(topo.pod_netns("api-0").unwrap(), web, "n2 pod -> n1 pod");
        assert!(sa.tcp.peers().contains_key(&web), "{:?}", sa.tcp.peers());
    }
}

#[test]
fn externals_and_pods_reach_each_other() {
    if skip_unless_root() {
        return;
    }
    let mut topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("web-0", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .external("ext", &[ip("198.51.100.7"), ip("2001:db8:100::7")])
        .build()
        .expect("topology");
    // A pod added after the external must be routed from it too.
    topo.add_pod("api-0", "n2", &[ip("10.10.2.10"), ip("fd00:10::2:10")])
        .expect("late pod");
    let ext_ns = topo.external_netns("ext").unwrap().to_owned();
    let se = servers(&ext_ns);
    for pod in ["web-0", "api-0"] {
        let s = servers(topo.pod_netns(pod).unwrap());
        for fam in [Family::Ipv4, Family::Ipv6] {
            let p = topo.addr_of(pod, fam).unwrap();
            let e = topo.addr_of("ext", fam).unwrap();
            expect_all_answered(&ext_ns, p, "external -> pod");
            expect_all_answered(topo.pod_netns(pod).unwrap(), e, "pod -> external");
            // The external originates from its own address, not its fabric address.
            assert!(s.tcp.peers().contains_key(&e), "{:?}", s.tcp.peers());
            assert!(s.udp.peers().contains_key(&e), "{:?}", s.udp.peers());
            assert!(se.tcp.peers().contains_key(&p), "{:?}", se.tcp.peers());
            // A probe can pick its source address explicitly.
            let fabric: IpAddr = match fam {
                Family::Ipv4 => topo.external("ext").unwrap().fabric_v4().into(),
                Family::Ipv6 => topo.external("ext").unwrap().fabric_v6().into(),
            };
            let opts = ProbeOptions {
                source: Some(fabric),
                ..ProbeOptions::default()
            };
            let out = probe(&ext_ns, Protocol::Tcp, p, TCP_PORT, &opts).unwrap();
            assert!(out.is_answered(), "{out}");
            assert!(s.tcp.peers().contains_key(&fabric), "{:?}", s.tcp.peers());
        }
    }
}

#[test]
fn node_reaches_its_pods_from_its_host_address() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .build()
        .expect("topology");
    let node = topo.pod_node("a").unwrap();
    let s = servers(topo.pod_netns("a").unwrap());
    for fam in [Family::Ipv4, Family::Ipv6] {
        let a = topo.addr_of("a", fam).unwrap();
        expect_all_answered(node.netns(), a, "node -> own pod");
        assert!(
            s.tcp.peers().contains_key(&node.host_addr(fam)),
            "{:?}",
            s.tcp.peers()
        );
        // And the pod reaches its node's host address.
        let n1 = servers(node.netns());
        expect_all_answered(
            topo.pod_netns("a").unwrap(),
            node.host_addr(fam),
            "pod -> node",
        );
        drop(n1);
    }
}

#[test]
fn udp_echo_answers_from_the_address_it_was_sent_to() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .pod("a", "n1", &[ip("10.10.1.10")])
        .pod(
            "multi",
            "n1",
            &[
                ip("10.10.1.20"),
                ip("10.10.1.21"),
                ip("fd00:10::20"),
                ip("fd00:10::21"),
            ],
        )
        .build()
        .expect("topology");
    let _s = servers(topo.pod_netns("multi").unwrap());
    let pod = topo.pod("multi").unwrap();
    for &dst in pod.addresses() {
        let ns = topo.pod_netns("a").unwrap();
        if dst.is_ipv6() {
            // `a` is IPv4-only; probe the IPv6 addresses from the node.
            expect_all_answered(topo.node_netns("n1").unwrap(), dst, "node -> multi");
        } else {
            expect_all_answered(ns, dst, "a -> multi");
        }
    }
}

#[test]
fn blocked_traffic_is_reported_as_no_answer() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("b", "n1", &[ip("10.10.1.11"), ip("fd00:10::11")])
        .build()
        .expect("topology");
    let (a_ns, b_ns) = (topo.pod_netns("a").unwrap(), topo.pod_netns("b").unwrap());
    let opts = ProbeOptions::with_timeout(Duration::from_millis(300));
    let b4 = topo.addr_of("b", Family::Ipv4).unwrap();

    // Nothing listening: refused, quickly.
    let out = probe(a_ns, Protocol::Tcp, b4, 9, &opts).unwrap();
    assert!(
        matches!(
            out,
            ProbeOutcome::NoAnswer {
                kind: NoAnswerKind::Refused,
                ..
            }
        ),
        "{out}"
    );
    let out = probe(a_ns, Protocol::Udp, b4, 9, &opts).unwrap();
    assert!(
        matches!(
            out,
            ProbeOutcome::NoAnswer {
                kind: NoAnswerKind::Refused,
                ..
            }
        ),
        "{out}"
    );

    // Silently dropped (what a policy drop looks like): a timeout, after about the timeout.
    let _s = servers(b_ns);
    netns::ns_exec(
        b_ns,
        "nft",
        &["add table inet t; add chain inet t block { type filter hook input priority 0; policy drop; }"],
    )
    .expect("nft drop rule");
    for fam in [Family::Ipv4, Family::Ipv6] {
        let b = topo.addr_of("b", fam).unwrap();
        for (proto, port) in [
            (Protocol::Tcp, TCP_PORT),
            (Protocol::Udp, UDP_PORT),
            (Protocol::Icmp, 0),
        ] {
            let start = Instant::now();
            let out = probe(a_ns, proto, b, port, &opts).unwrap();
            let took = start.elapsed();
            assert!(
                matches!(
                    out,
                    ProbeOutcome::NoAnswer {
                        kind: NoAnswerKind::Timeout,
                        ..
                    }
                ),
                "{proto} {b}: {out}"
            );
            assert!(
                took >= Duration::from_millis(290) && took < Duration::from_secs(2),
                "{took:?}"
            );
        }
    }
}

#[test]
fn stream_survives_until_cut() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("b", "n2", &[ip("10.10.2.11"), ip("fd00:10::2:11")])
        .build()
        .expect("topology");
    let b_ns = topo.pod_netns("b").unwrap();
    let server = spawn_tcp_echo(b_ns, ANY, 0).expect("server");
    let opts = StreamOptions {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
        source: None,
    };
    let mut streams = Vec::new();
    for fam in [Family::Ipv4, Family::Ipv6] {
        let dst = SocketAddr::new(topo.addr_of("b", fam).unwrap(), server.port());
        streams
            .push(TcpEchoStream::start(topo.pod_netns("a").unwrap(), dst, &opts).expect("stream"));
    }
    for s in &streams {
        assert!(
            s.wait_for_round_trips(10, Duration::from_secs(5)),
            "{:?}",
            s.error()
        );
        assert!(s.is_alive());
    }
    // Cut established flows in the forwarding path of node n2.
    netns::ns_exec(
        topo.node_netns("n2").unwrap(),
        "nft",
        &["add table inet t; add chain inet t cut { type filter hook forward priority 0; policy drop; }"],
    )
    .expect("nft drop rule");
    for s in &streams {
        assert!(
            s.wait_until_dead(Duration::from_secs(3)),
            "stream to {} still alive",
            s.peer()
        );
        assert!(s.error().is_some());
    }
    for s in streams {
        let report = s.stop();
        assert!(report.round_trips >= 10);
        assert!(report.error.is_some());
    }
    // A stream that cannot connect fails to start.
    let dead = SocketAddr::new(topo.addr_of("b", Family::Ipv4).unwrap(), server.port());
    assert!(TcpEchoStream::start(topo.pod_netns("a").unwrap(), dead, &opts).is_err());
}

#[test]
fn udp_load_is_paced_and_counted() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("b", "n2", &[ip("10.10.2.11"), ip("fd00:10::2:11")])
        .build()
        .expect("topology");
    let sink = spawn_udp_sink(topo.pod_netns("b").unwrap(), 0).expect("sink");
    for fam in [Family::Ipv4, Family::Ipv6] {
        let dst = SocketAddr::new(topo.addr_of("b", fam).unwrap(), sink.port());
        // Exactly 300 of 300, even on a busy machine: once every neighbour on the path is
        // resolved (the warm-up datagram), each queue a datagram meets holds more than the
        // whole burst: the per-CPU backlog of each veth hop (no XDP here;
        // net.core.netdev_max_backlog, 1000 by default) and the sink's 8 MiB receive buffer
        // (checked when it is set), so no datagram is dropped however late the sink reads.
        let warm = UdpLoad {
            packets: 1,
            ..UdpLoad::default()
        };
        sink.reset();
        send_udp_load(topo.pod_netns("a").unwrap(), dst, &warm).expect("warm-up");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.total() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "warm-up datagram lost"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sink.reset();
        let load = UdpLoad {
            packets: 300,
            size: 200,
            rate_pps: 1000,
            source: None,
        };
        let report = send_udp_load(topo.pod_netns("a").unwrap(), dst, &load).expect("load");
        assert_eq!(report.sent, 300);
        // 300 packets at 1000/s: ~0.3 s.
        assert!(
            report.elapsed >= Duration::from_millis(295)
                && report.elapsed < Duration::from_millis(1500),
            "{report:?}"
        );
        let total = sink.settle(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(total, 300);
        assert_eq!(
            sink.count_from(topo.addr_of("a", fam).unwrap()),
            300,
            "{:?}",
            sink.counts()
        );
    }
}

#[test]
fn node_command_runs_in_the_node_namespace() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::new(&["n1", "n2"]).expect("topology");
    let out = enforcer_tests::run_stdout(
        topo.node_command("n2", "ip")
            .unwrap()
            .args(["-o", "addr", "show", "dev", "up0"]),
    )
    .expect("ip addr");
    assert!(out.contains("10.255.0.2/24"), "{out}");
    assert!(out.contains("fd00:255::2/64"), "{out}");
    // nsenter keeps the caller's mounts (unlike `ip netns exec`).
    let mounts = enforcer_tests::run_stdout(
        topo.node_command("n1", "cat")
            .unwrap()
            .arg("/proc/self/mountinfo"),
    )
    .expect("mountinfo");
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(mounts.lines().count(), ours.lines().count());
    assert_eq!(
        netns::get_sysctl(topo.node_netns("n1").unwrap(), "net.ipv4.ip_forward").unwrap(),
        "1"
    );
}

#[test]
fn drop_removes_every_namespace_and_process() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .nodes(["n1", "n2"])
        .pod("a", "n1", &[ip("10.10.1.10"), ip("fd00:10::10")])
        .pod("b", "n2", &[ip("10.10.2.10")])
        .external("ext", &[ip("198.51.100.7")])
        .build()
        .expect("topology");
    let prefix = topo.prefix().to_owned();
    let created = topo.namespaces().to_vec();
    assert_eq!(created.len(), 6, "{created:?}");
    let listed = netns::list_netns().unwrap();
    for ns in &created {
        assert!(ns.starts_with(&prefix));
        assert!(listed.contains(ns), "{ns} not in {listed:?}");
    }
    // A process left running in a node (an agent whose test panicked) is killed on drop.
    let mut child = topo
        .node_command("n1", "sleep")
        .unwrap()
        .arg("60")
        .spawn()
        .unwrap();
    // Wait until it runs `sleep` (nsenter execs it after entering the namespace).
    let comm = format!("/proc/{}/comm", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(std::time::Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(topo);
    let listed = netns::list_netns().unwrap();
    assert!(
        !listed.iter().any(|ns| ns.starts_with(&prefix)),
        "left behind: {listed:?}"
    );
    let status = child.wait().unwrap();
    assert!(!status.success(), "sleep should have been killed");
}

#[test]
fn drop_cleans_up_after_a_panic() {
    if skip_unless_root() {
        return;
    }
    let result = std::thread::spawn(|| {
        let topo = Topology::new(&["n1"]).expect("topology");
        let prefix = topo.prefix().to_owned();
        std::panic::panic_any(prefix);
    })
    .join();
    let prefix = *result
        .expect_err("thread panicked")
        .downcast::<String>()
        .expect("prefix payload");
    let listed = netns::list_netns().unwrap();
    assert!(
        !listed.iter().any(|ns| ns.starts_with(&prefix)),
        "{listed:?}"
    );
}

#[test]
fn invalid_topologies_are_rejected_and_cleaned_up() {
    if skip_unless_root() {
        return;
    }
    let err = Topology::builder()
        .pod("a", "n1", &[ip("10.10.1.10")])
        .pod("b", "n1", &[ip("10.10.1.10")])
        .build()
        .expect_err("duplicate address");
    assert!(err.to_string().contains("used twice"), "{err:#}");
    let err = Topology::builder()
        .pod("a", "nope", &[ip("10.10.1.10")])
        .build()
        .expect_err("unknown node");
    assert!(err.to_string().contains("nope"), "{err:#}");
    let err = Topology::builder()
        .external("x", &[ip("10.255.0.7")])
        .build()
        .expect_err("fabric address");
    assert!(err.to_string().contains("reserved"), "{err:#}");
}

#[test]
fn cleanup_stale_deletes_by_prefix() {
    if skip_unless_root() {
        return;
    }
    let topo = Topology::builder()
        .prefix(format!("enf-stale{}", std::process::id()))
        .build()
        .expect("topology");
    let prefix = topo.prefix().to_owned();
    std::mem::forget(topo); // simulate a crashed run
    let deleted = enforcer_tests::cleanup_stale(&prefix).unwrap();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(!netns::list_netns()
        .unwrap()
        .iter()
        .any(|ns| ns.starts_with(&prefix)));
    assert!(enforcer_tests::cleanup_stale("").is_err());
}
