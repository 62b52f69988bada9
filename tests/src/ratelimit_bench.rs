//! Rate limits on live traffic: a node with a server pod and client pods, the enforcer datapath
//! loaded in this process inside the node namespace, UDP load from the clients. Used by the
//! live test (`tests/tests/ratelimit.rs`) and by `cargo xtask bench ratelimit` ([`measure`]).
//!
//! The server's ingress rule allows UDP from the clients to [`PORT`] with the `rateLimit` under
//! test; the sink in the server pod counts datagrams per source, and the datapath counts what it
//! admitted and dropped.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use enforcer::{
    datapath::Datapath,
    policy::{compile, parse::parse_documents, Compiled, NodeContext, PolicySet},
};
use enforcer_common::{DIR_INGRESS, REASON_RATE_LIMITED, VERDICT_DENY};

use crate::{
    netns::run_in_netns, send_udp_load, spawn_udp_sink, LoadReport, Topology, UdpLoad, UdpSink,
};

/// UDP port of the rate-limited rule.
pub const PORT: u16 = 7000;
/// Address of the server pod.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 10);

/// Address of client `i`.
pub fn client_addr(i: usize) -> IpAddr {
    let last = u8::try_from(11 + i).expect("at most 200 clients");
    IpAddr::V4(Ipv4Addr::new(10, 20, 0, last))
}

/// The policy: workloads `server` (service `api`) and `client-<i>` (service `web`), and an ingress
/// rule of `api` allowing UDP to `PORT` from `web` with `rate_limit` (YAML flow mapping, e.g.
/// `{packetsPerSecond: 200, burst: 20}`).
pub fn policy_yaml(clients: usize, rate_limit: &str) -> String {
    let mut y = format!(
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: server}}\n\
         spec: {{service: api, addresses: [{SERVER}]}}\n"
    );
    for i in 0..clients {
        let _ = write!(
            y,
            "---\napiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: client-{i}}}\n\
             spec: {{service: web, addresses: [{}]}}\n",
            client_addr(i)
        );
    }
    let _ = write!(
        y,
        "---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: api-ingress}}\n\
         spec:\n  service: api\n  ingress:\n    - from: [{{service: web}}]\n      \
         ports: [{{protocol: UDP, port: {PORT}}}]\n      rateLimit: {rate_limit}\n"
    );
    y
}

/// A server pod on node `n1` and `clients` client pods (on `n1`, or on a second node `n2` so
/// their packets reach `n1` over its uplink), with the datapath attached to every pod of `n1` —
/// and, for remote clients, `xdp_uplink` to the uplink of `n1`.
pub struct RateLimitBed {
    // Field order: the datapath (its links) goes before the namespaces.
    datapath: Datapath,
    endpoints: BTreeSet<(u32, IpAddr)>,
    context: NodeContext,
    clients: usize,
    /// Rule id of the rate-limited rule in the installed policy.
    pub rule: u32,
    pub topology: Topology,
}

impl RateLimitBed {
    /// Clients on the server's node: build the topology, load and attach the datapath inside
    /// the node namespace, install the policy with `rate_limit`.
    pub fn start(clients: usize, rate_limit: &str) -> Result<RateLimitBed> {
        Self::start_on(clients, rate_limit, false)
    }

    /// Clients on another node: their packets arrive on the uplink, where `xdp_uplink` drops
    /// the excess early.
    pub fn start_remote(clients: usize, rate_limit: &str) -> Result<RateLimitBed> {
        Self::start_on(clients, rate_limit, true)
    }

    fn start_on(clients: usize, rate_limit: &str, remote: bool) -> Result<RateLimitBed> {
        let client_node = if remote { "n2" } else { "n1" };
        let mut builder = Topology::builder()
            .node("n1")
            .pod("server", "n1", &[IpAddr::V4(SERVER)]);
        if remote {
            builder = builder.node("n2");
        }
        for i in 0..clients {
            builder = builder.pod(format!("client-{i}"), client_node, &[client_addr(i)]);
        }
        let topology = builder.build()?;
        let node = topology.node("n1")?.clone();
        let pods: Vec<(String, IpAddr)> = topology
            .pods()
            .iter()
            .filter(|p| p.node() == "n1")
            .map(|p| (p.host_ifname().to_owned(), p.addresses()[0]))
            .collect();
        let uplink = remote.then(|| node.uplink_ifname().to_owned());
        let (datapath, endpoints) = run_in_netns(node.netns(), move || {
            let mut dp = Datapath::load(None).context("load the datapath")?;
            let mut endpoints = BTreeSet::new();
            for (ifname, addr) in &pods {
                let ifindex = ifindex(ifname)?;
                dp.attach_pod(ifname, ifindex, false)
                    .with_context(|| format!("attach to {ifname}"))?;
                endpoints.insert((ifindex, *addr));
            }
            if let Some(up) = &uplink {
                dp.attach_uplink(up, ifindex(up)?)
                    .with_context(|| format!("attach to {up}"))?;
            }
            Ok((dp, endpoints))
        })?;
        let context = NodeContext {
            host_addresses: node.addresses().into_iter().collect(),
            local_addresses: topology
                .pods()
                .iter()
                .filter(|p| p.node() == "n1")
                .flat_map(|p| p.addresses().iter().copied())
                .collect(),
        };
        let mut bed = RateLimitBed {
            datapath,
            endpoints,
            context,
            clients,
            rule: 0,
            topology,
        };
        bed.set_limit(rate_limit)?;
        Ok(bed)
    }

    /// Install the policy again with another `rateLimit` (same rule id: buckets are kept).
    pub fn set_limit(&mut self, rate_limit: &str) -> Result<()> {
        let compiled = self.compile(rate_limit)?;
        self.rule = compiled
            .rules
            .iter()
            .find(|r| r.rate_limit.is_some())
            .map(|r| r.id)
            .ok_or_else(|| anyhow!("no rate-limited rule"))?;
        self.datapath.install(&compiled, &self.endpoints)?;
        Ok(())
    }

    fn compile(&self, rate_limit: &str) -> Result<Compiled> {
        let docs = parse_documents("ratelimit.yaml", &policy_yaml(self.clients, rate_limit))
            .map_err(|e| anyhow!("{e}"))?;
        let set = PolicySet::from_documents(docs).map_err(|e| anyhow!("{e}"))?;
        Ok(compile(&set, &self.context))
    }

    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    /// Namespace of client `i`.
    pub fn client_netns(&self, i: usize) -> Result<&str> {
        self.topology.pod_netns(&format!("client-{i}"))
    }

    /// A sink counting datagrams per source in the server pod, on `PORT`.
    pub fn sink(&self) -> Result<UdpSink> {
        spawn_udp_sink(self.topology.pod_netns("server")?, PORT)
    }

    /// Packets the datapath admitted and dropped as rate limited for the rule, so far.
    pub fn admitted_and_dropped(&self) -> Result<(u64, u64)> {
        let all = self.datapath.rule_packets(self.rule)?;
        let dropped = self.datapath.counters()?[&(DIR_INGRESS, VERDICT_DENY, REASON_RATE_LIMITED)];
        Ok((all.saturating_sub(dropped), dropped))
    }

    /// One datagram from every client (ARP and conntrack warm), then a pause so every bucket is
    /// full again (`refill` covers the burst at the configured rate).
    pub fn warm_up(&self, sink: &UdpSink, refill: Duration) -> Result<()> {
        for i in 0..self.clients {
            send_udp_load(
                self.client_netns(i)?,
                server_addr(),
                &UdpLoad {
                    packets: 1,
                    ..UdpLoad::default()
                },
            )?;
        }
        sink.settle(Duration::from_millis(100), Duration::from_secs(1));
        thread::sleep(refill);
        sink.reset();
        Ok(())
    }

    /// Every client sends `rate_pps` for `duration` at once; returns their reports in client
    /// order.
    pub fn blast(&self, rate_pps: u32, duration: Duration) -> Result<Vec<LoadReport>> {
        let packets = (f64::from(rate_pps) * duration.as_secs_f64()).round();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small"
        )]
        self.blast_packets(rate_pps, packets as u64)
    }

    /// Every client sends `packets` at `rate_pps` at once; returns their reports in client order.
    pub fn blast_packets(&self, rate_pps: u32, packets: u64) -> Result<Vec<LoadReport>> {
        let handles: Vec<_> = (0..self.clients)
            .map(|i| {
                let ns = self.client_netns(i).map(str::to_owned);
                thread::spawn(move || {
                    send_udp_load(
                        &ns?,
                        server_addr(),
                        &UdpLoad {
                            packets,
                            size: 64,
                            rate_pps,
                            source: None,
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("sender panicked"))?)
            .collect()
    }
}

/// The index of interface `name` in the calling thread's network namespace.
fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid C string; resolves in this thread's network namespace.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(anyhow!("no interface {name} in the node namespace"));
    }
    Ok(index)
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER), PORT)
}

/// One row of the rate-limit benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRow {
    /// The `packetsPerSecond` asked for.
    pub requested_pps: u32,
    /// The `packetsPerSecond` measured: the requested one, or — when the machine cannot offer
    /// twice it — half of what the senders achieve flat out.
    pub configured_pps: u32,
    /// Burst configured (packets): 1/10 s worth.
    pub burst: u32,
    /// Rate the senders achieved together (they aim at 5× the limit, capped by the machine).
    pub offered_pps: f64,
    /// The most the senders achieved together through the datapath on this machine.
    pub max_send_pps: f64,
    /// Received by the sink (the receiver) beyond the burst, per second of sending.
    pub admitted_pps: f64,
    /// `admitted_pps / configured_pps`.
    pub ratio: f64,
    /// Admitted by the datapath's own counters beyond the burst, per second of sending (a
    /// cross-check of `admitted_pps`: the sink may lose packets at high rates).
    pub datapath_admitted_pps: f64,
    /// Datagrams received by the sink.
    pub received: u64,
    /// Packets dropped as rate limited.
    pub dropped: u64,
    /// Sending time.
    pub seconds: f64,
    /// Compare-and-swap loops that gave up (packets dropped for contention) during the row.
    pub contended: u64,
}

/// Senders (client pods) of [`measure`]; each runs on its own thread, so the shared bucket is
/// charged from several CPUs at once.
pub const SENDERS: usize = 2;

/// Measure the admitted rate at each `packetsPerSecond` of `rates`: a `per: rule` limit (one
/// bucket shared by [`SENDERS`] clients sending at once) with a burst of 1/10 s, offered 5× the
/// limit (at least 2×, else the limit is lowered to half of what the machine can send) for 3 s.
/// The admitted rate is what the receiving sink got, beyond the burst, per second of sending;
/// the datapath's own count is kept beside it as a cross-check.
#[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
pub fn measure(rates: &[u32]) -> Result<Vec<RateRow>> {
    let first = rates.first().copied().unwrap_or(1000);
    let mut bed = RateLimitBed::start(SENDERS, &rule_limit_yaml(first, (first / 10).max(1)))?;
    let sink = bed.sink()?;
    bed.warm_up(&sink, Duration::from_millis(200))?;
    // What this machine can send: every sender flat out, under a limit it cannot reach.
    bed.set_limit(&rule_limit_yaml(u32::MAX / 4, u32::MAX / 4))?;
    let probe = bed.blast_packets(u32::MAX, 150_000)?;
    let max_pps = total_rate(&probe);
    let mut rows = Vec::new();
    for &requested in rates {
        let rate = if f64::from(requested) * 2.0 > max_pps {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "small"
            )]
            let half = (max_pps / 2.0) as u32;
            half.max(1)
        } else {
            requested
        };
        let burst = (rate / 10).max(1);
        bed.set_limit(&rule_limit_yaml(rate, burst))?;
        // The bucket refills its burst in 0.1 s.
        thread::sleep(Duration::from_millis(300));
        sink.settle(Duration::from_millis(100), Duration::from_secs(2));
        sink.reset();
        let per_sender = (f64::from(rate) * 5.0).min(max_pps) / SENDERS as f64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small"
        )]
        let per_sender_pps = per_sender.ceil() as u32;
        let (admitted0, dropped0) = bed.admitted_and_dropped()?;
        let contended0 = bed.datapath.rate_limit_stats()?.contended;
        let reports = bed.blast(per_sender_pps, Duration::from_secs(3))?;
        sink.settle(Duration::from_millis(200), Duration::from_secs(3));
        let (admitted1, dropped1) = bed.admitted_and_dropped()?;
        let contended1 = bed.datapath.rate_limit_stats()?.contended;
        let seconds = reports
            .iter()
            .map(|r| r.elapsed.as_secs_f64())
            .fold(0.0, f64::max);
        let beyond_burst = |n: u64| n.saturating_sub(u64::from(burst)) as f64 / seconds;
        let received = sink.total();
        let admitted_pps = beyond_burst(received);
        rows.push(RateRow {
            requested_pps: requested,
            configured_pps: rate,
            burst,
            offered_pps: total_rate(&reports),
            max_send_pps: max_pps,
            admitted_pps,
            ratio: admitted_pps / f64::from(rate),
            datapath_admitted_pps: beyond_burst(admitted1 - admitted0),
            received,
            dropped: dropped1 - dropped0,
            seconds,
            contended: contended1 - contended0,
        });
    }
    drop(sink);
    Ok(rows)
}

/// Packets per second of senders that ran at the same time.
#[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
fn total_rate(reports: &[LoadReport]) -> f64 {
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let seconds = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    if seconds > 0.0 {
        sent as f64 / seconds
    } else {
        0.0
    }
}

/// `{packetsPerSecond: RATE, burst: BURST, per: rule}`.
pub fn rule_limit_yaml(rate: u32, burst: u32) -> String {
    format!("{{packetsPerSecond: {rate}, burst: {burst}, per: rule}}")
}

/// `{packetsPerSecond: RATE, burst: BURST}` (per source).
pub fn limit_yaml(rate: u32, burst: u32) -> String {
    format!("{{packetsPerSecond: {rate}, burst: {burst}}}")
}

/// Markdown table of `rows`.
pub fn render(rows: &[RateRow]) -> String {
    let mut out = String::from(
        "| limit (pps) | burst | offered pps | admitted pps | admitted/limit | error | CAS give-ups |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let limit = if r.configured_pps == r.requested_pps {
            r.configured_pps.to_string()
        } else {
            format!("{} (asked {})", r.configured_pps, r.requested_pps)
        };
        let _ = writeln!(
            out,
            "| {limit} | {} | {:.0} | {:.1} | {:.4} | {:+.2} % | {} |",
            r.burst,
            r.offered_pps,
            r.admitted_pps,
            r.ratio,
            (r.ratio - 1.0) * 100.0,
            r.contended
        );
    }
    out
}
