//! IP fragments through the real programs on real veths: a UDP datagram larger than the link's
//! MTU leaves the pod as IP fragments; the first is judged by policy, the later ones follow its
//! verdict (`enforcer-ebpf/src/fragment.rs`). An allowed large datagram must be echoed back
//! whole; a denied one must never reach the server.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use enforcer_common::{Reason, Verdict};
use enforcer_tests::{
    fixtures::WEB_API_WORKLOADS, ns_exec, one_node::WebApi, run_in_netns, spawn_udp_echo,
};

/// api admits web on UDP 5353 only.
const API_INGRESS_UDP_5353: &str = r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: UDP, port: 5353}]
";

/// Bytes per datagram: well over a 1500-byte MTU, so three IPv4 fragments.
const DATAGRAM: usize = 4000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Send one `size`-byte datagram from namespace `ns` to `dst`; whether the same bytes come back
/// within `timeout`.
fn large_udp_echo(ns: &str, dst: SocketAddr, size: usize, timeout: Duration) -> Result<bool> {
    run_in_netns(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").context("bind")?;
        sock.connect(dst).context("connect")?;
        let mut msg = vec![0u8; size];
        for (i, b) in msg.iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap_or(0);
        }
        sock.send(&msg).context("send")?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; size + 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == msg[..] => return Ok(true),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e.into()),
            }
        }
    })
}

/// The MTU of the pod's interface to the node (its only non-loopback link).
fn pod_mtu(ns: &str) -> Result<usize> {
    let out = ns_exec(ns, "ip", &["-o", "link", "show"])?;
    out.lines()
        .filter(|l| !l.contains(" lo:"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "mtu")?;
            words.get(i + 1)?.parse().ok()
        })
        .context("no MTU in `ip link`")
}

#[test]
fn allowed_large_udp_is_reassembled_and_denied_never_arrives() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let bed = WebApi::start("fragments", &[])?;
    let (agent, web_ns, api_ns) = (&bed.agent, bed.web_ns.clone(), bed.api_ns.clone());
    let mtu = pod_mtu(&web_ns)?;
    ensure!(
        DATAGRAM > mtu,
        "datagram {DATAGRAM} must exceed the MTU {mtu} to fragment"
    );
    let allowed = spawn_udp_echo(&api_ns, 5353)?;
    let denied = spawn_udp_echo(&api_ns, 5354)?;
    agent.apply(
        "policy.yaml",
        &format!("{WEB_API_WORKLOADS}---{API_INGRESS_UDP_5353}"),
    )?;
    let timeout = Duration::from_secs(2);
    for round in 0..3 {
        ensure!(
            large_udp_echo(&web_ns, "10.10.2.10:5353".parse()?, DATAGRAM, timeout)?,
            "round {round}: allowed {DATAGRAM}-byte datagram not echoed"
        );
        ensure!(
            !large_udp_echo(&web_ns, "10.10.2.10:5354".parse()?, DATAGRAM, timeout)?,
            "round {round}: denied {DATAGRAM}-byte datagram was echoed"
        );
    }
    // The server behind the denied port never saw a datagram (nor a reassembled one).
    ensure!(
        denied.peers().is_empty(),
        "denied server received {:?}",
        denied.peers()
    );
    ensure!(allowed.peers().get(&ip("10.10.1.10")).copied().unwrap_or(0) >= 3);
    // The later fragments of the denied datagrams were dropped as orphans, and counted: two
    // per datagram (4000 bytes over a 1500 MTU is three fragments).
    let fragment_drops: u64 = agent
        .stats()?
        .packets
        .iter()
        .filter(|c| c.verdict == Verdict::Deny && c.reason == Reason::Fragment)
        .map(|c| c.packets)
        .sum();
    ensure!(
        fragment_drops >= 6,
        "expected ≥ 6 later fragments dropped with reason `fragment`, counted {fragment_drops}"
    );
    Ok(())
}
