//! Helpers shared by the resilience tests.

#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use enforcer_tests::{
    cluster::{AgentProcess, WorkDir},
    fixtures::WEB_API_WORKLOADS,
    one_node::WebApi,
    probe_tcp, probe_udp, spawn_tcp_echo, spawn_udp_echo, ProbeOptions, StreamOptions,
    TcpEchoServer, TcpEchoStream, Topology, UdpEchoServer, ANY,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One probe: when it ran and whether it was answered.
pub struct Probe {
    pub start: Instant,
    pub end: Instant,
    pub answered: bool,
}

/// A thread probing `dst` from `ns` until stopped, recording each outcome.
pub struct Prober {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Probe>>,
}

impl Prober {
    pub fn start(ns: &str, dst: SocketAddr, udp: bool, timeout: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (s, n, ns) = (stop.clone(), done.clone(), ns.to_string());
        let thread = std::thread::spawn(move || {
            let opts = ProbeOptions::with_timeout(timeout);
            let mut out = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let start = Instant::now();
                let outcome = if udp {
                    probe_udp(&ns, dst, &opts)
                } else {
                    probe_tcp(&ns, dst, &opts)
                };
                if let Ok(o) = outcome {
                    out.push(Probe {
                        start,
                        end: Instant::now(),
                        answered: o.is_answered(),
                    });
                    n.fetch_add(1, Ordering::SeqCst);
                }
                // Leave the two cores to the rest.
                std::thread::sleep(Duration::from_millis(2));
            }
            out
        });
        Prober { stop, done, thread }
    }

    /// Probes completed so far.
    pub fn completed(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    pub fn stop(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

/// api admits web on TCP 8080 and UDP 5353: the pairs the resilience tests never touch.
pub const BASE: &str = r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-base}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]
";

/// Pods web-0 (10.10.1.10) and api-0 (10.10.2.10) on node n1 with a real agent; api-0 runs TCP
/// echo servers on 8080 and `ports`, and a UDP echo server on 5353.
pub struct Fixture {
    pub topo: Topology,
    pub work: WorkDir,
    pub agent: AgentProcess,
    pub web_ns: String,
    _tcp: Vec<TcpEchoServer>,
    _udp: UdpEchoServer,
}

impl Fixture {
    /// Every port answers before any policy (so a later "denied" is the datapath, not a dead
    /// server); then [`BASE`] is applied.
    pub fn new(tag: &str, ports: &[u16]) -> Result<Fixture> {
        let WebApi {
            topo,
            work,
            agent,
            web_ns,
            api_ns,
        } = WebApi::start(tag, &[])?;
        let tcp = std::iter::once(8080)
            .chain(ports.iter().copied())
            .map(|p| spawn_tcp_echo(&api_ns, ANY, p))
            .collect::<Result<Vec<_>>>()?;
        let udp = spawn_udp_echo(&api_ns, 5353)?;
        agent.apply("workloads.yaml", WEB_API_WORKLOADS)?;
        let f = Fixture {
            topo,
            work,
            agent,
            web_ns,
            _tcp: tcp,
            _udp: udp,
        };
        for &port in ports {
            ensure!(
                f.reaches(port, Duration::from_secs(1))?,
                "port {port} before any policy"
            );
        }
        f.agent.apply("base.yaml", BASE)?;
        Ok(f)
    }

    /// Whether web-0 → api-0:`port` (TCP) is answered.
    pub fn reaches(&self, port: u16, timeout: Duration) -> Result<bool> {
        let opts = ProbeOptions::with_timeout(timeout);
        Ok(probe_tcp(&self.web_ns, api(port), &opts)?.is_answered())
    }

    /// The untouched TCP pair: one connection streaming an echo every 10 ms.
    pub fn stream(&self) -> Result<TcpEchoStream> {
        let stream = TcpEchoStream::start(
            &self.web_ns,
            api(8080),
            &StreamOptions {
                interval: Duration::from_millis(10),
                timeout: Duration::from_secs(3),
                source: None,
            },
        )?;
        ensure!(
            stream.wait_for_round_trips(10, Duration::from_secs(5)),
            "the untouched stream started"
        );
        Ok(stream)
    }

    /// The untouched UDP pair: one echoed datagram after the other.
    pub fn datagrams(&self) -> Prober {
        Prober::start(&self.web_ns, api(5353), true, Duration::from_secs(1))
    }

    /// TCP connections to `port`, one after the other.
    pub fn prober(&self, port: u16, timeout: Duration) -> Prober {
        Prober::start(&self.web_ns, api(port), false, timeout)
    }
}

pub fn api(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 10, 2, 10], port))
}
