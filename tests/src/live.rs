//! The live scenario runner: each scenario becomes real network namespaces (one per pod and
//! external, one per node, joined by an uplink fabric), a real `enforcer agent` inside every node
//! namespace, and real probes (TCP connect + echo, UDP request/response, ICMP echo).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use enforcer::{
    policy::{Document, Protocol as PolicyProtocol},
    scenario::{
        model::{Endpoint, Expect, Family, Probe, Scenario},
        parse::parse_scenario,
        report::{Outcome, ProbeResult, Report},
    },
};

use crate::{
    cluster::{AgentProcess, WorkDir},
    probe as send_probe, send_udp_load, spawn_tcp_echo, spawn_udp_echo, Family as NetFamily,
    ProbeOptions, Protocol, TcpEchoServer, Topology, UdpEchoServer, UdpLoad, ANY,
};

/// How long a probe waits for an answer before it counts as dropped.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// A running scenario environment.
pub struct Live {
    pub topo: Topology,
    pub agents: Vec<AgentProcess>,
    tcp: Vec<TcpEchoServer>,
    udp: Vec<(String, UdpEchoServer)>,
    _work: WorkDir,
}

fn net_family(f: Family) -> NetFamily {
    match f {
        Family::Ipv4 => NetFamily::Ipv4,
        Family::Ipv6 => NetFamily::Ipv6,
    }
}

impl Live {
    /// Build the topology, start one agent per node and the echo servers, and apply the
    /// scenario's Workloads.
    pub fn start(scenario: &Scenario) -> Result<Live> {
        let mut b = Topology::builder().nodes(scenario.nodes.iter().cloned());
        for w in &scenario.workloads {
            b = b.pod(w.name.clone(), w.node.clone(), &w.addresses);
        }
        for e in &scenario.externals {
            b = b.external(e.name.clone(), &e.addresses);
        }
        let topo = b.build()?;
        let work = WorkDir::new(topo.prefix())?;
        let mut agents = Vec::new();
        for n in &scenario.nodes {
            agents.push(AgentProcess::start(&topo, n, &work.0, &[])?);
        }
        let mut live = Live {
            topo,
            agents,
            tcp: Vec::new(),
            udp: Vec::new(),
            _work: work,
        };
        live.start_servers(scenario)?;
        let workloads = Document::to_yaml_stream(&scenario.workload_documents())?;
        live.apply_all("workloads", &workloads)?;
        Ok(live)
    }

    /// TCP and UDP echo servers on every port a probe uses, in every namespace a probe may target.
    fn start_servers(&mut self, scenario: &Scenario) -> Result<()> {
        let probes: Vec<&Probe> = scenario
            .steps
            .iter()
            .flat_map(|s| s.probes.iter())
            .collect();
        let ports = |p: PolicyProtocol| -> BTreeSet<u16> {
            probes
                .iter()
                .filter(|x| x.protocol == p)
                .filter_map(|x| x.port)
                .collect()
        };
        let mut namespaces: Vec<String> = self
            .topo
            .pods()
            .iter()
            .map(|p| p.netns().to_string())
            .collect();
        namespaces.extend(self.topo.externals().iter().map(|e| e.netns().to_string()));
        namespaces.extend(self.topo.nodes().iter().map(|n| n.netns().to_string()));
        for ns in &namespaces {
            for port in ports(PolicyProtocol::Tcp) {
                self.tcp.push(spawn_tcp_echo(ns, ANY, port)?);
            }
            for port in ports(PolicyProtocol::Udp) {
                self.udp.push((ns.clone(), spawn_udp_echo(ns, port)?));
            }
        }
        Ok(())
    }

    pub fn apply_all(&self, source: &str, yaml: &str) -> Result<()> {
        for a in &self.agents {
            a.apply(source, yaml)?;
        }
        Ok(())
    }

    pub fn delete_all(&self, name: &str) -> Result<()> {
        for a in &self.agents {
            a.delete(name)?;
        }
        Ok(())
    }

    /// Audit-verdict packets counted by every agent.
    fn audit_packets(&self) -> Result<u64> {
        self.agents.iter().map(|a| a.packets("audit")).sum()
    }

    /// The namespace a probe is sent from and the address it is sent to.
    fn route(
        &self,
        scenario: &Scenario,
        probe: &Probe,
    ) -> Result<(String, IpAddr, Option<IpAddr>)> {
        let family = net_family(probe.family);
        let node_of = |name: &str| -> String {
            match scenario.endpoint(name) {
                Some(Endpoint::Workload(w)) => w.node.clone(),
                _ => scenario.nodes[0].clone(),
            }
        };
        let (ns, src) = match scenario.endpoint(&probe.from) {
            Some(Endpoint::Host) => (self.topo.node_netns(&node_of(&probe.to))?.to_string(), None),
            Some(_) => (
                self.topo.netns_of(&probe.from)?.to_string(),
                Some(self.topo.addr_of(&probe.from, family)?),
            ),
            None => bail!("unknown endpoint {}", probe.from),
        };
        let dst = match scenario.endpoint(&probe.to) {
            Some(Endpoint::Host) => self.topo.node(&node_of(&probe.from))?.host_addr(family),
            Some(_) => self.topo.addr_of(&probe.to, family)?,
            None => bail!("unknown endpoint {}", probe.to),
        };
        Ok((ns, dst, src))
    }

    /// Send a probe's real traffic and say what happened.
    pub fn run_probe(&self, scenario: &Scenario, probe: &Probe) -> Result<(Outcome, String)> {
        let (ns, dst, src) = self.route(scenario, probe)?;
        if probe.expect == Expect::RateLimited || probe.rate_per_second.is_some() {
            return self.rate_probe(probe, &ns, dst, src);
        }
        let protocol = match probe.protocol {
            PolicyProtocol::Tcp => Protocol::Tcp,
            PolicyProtocol::Udp => Protocol::Udp,
            PolicyProtocol::Icmp => Protocol::Icmp,
            PolicyProtocol::Sctp => {
                return Ok((
                    Outcome::Error("SCTP probes are not supported live".into()),
                    String::new(),
                ))
            }
        };
        let audit_before = self.audit_packets()?;
        let outcome = send_probe(
            &ns,
            protocol,
            dst,
            probe.port.unwrap_or(0),
            &ProbeOptions::with_timeout(PROBE_TIMEOUT),
        )?;
        let detail = format!("{dst}: {outcome:?}");
        if !outcome.is_answered() {
            return Ok((Expect::Deny.into(), detail));
        }
        let audited = self.audit_packets()? > audit_before;
        Ok((
            if audited {
                Expect::Audit
            } else {
                Expect::Allow
            }
            .into(),
            detail,
        ))
    }

    /// `rate_limited` probes: send `packets` UDP packets at `ratePerSecond`, count what arrives.
    fn rate_probe(
        &self,
        probe: &Probe,
        ns: &str,
        dst: IpAddr,
        src: Option<IpAddr>,
    ) -> Result<(Outcome, String)> {
        let port = probe
            .port
            .ok_or_else(|| anyhow!("rate probe without a port"))?;
        let packets = probe.packets.unwrap_or(100);
        let rate = probe.rate_per_second.unwrap_or(100);
        let dst_ns = self.topo.namespaces().iter().find(|n| {
            self.topo
                .pods()
                .iter()
                .any(|p| p.netns() == n.as_str() && p.addresses().contains(&dst))
                || self
                    .topo
                    .externals()
                    .iter()
                    .any(|e| e.netns() == n.as_str() && e.addresses().contains(&dst))
        });
        let server = self
            .udp
            .iter()
            .find(|(n, s)| Some(n) == dst_ns && s.port() == port)
            .map(|(_, s)| s)
            .context("no UDP server for the rate probe")?;
        let from = src.context("rate probes need a workload or external source")?;
        let before = server.peers().get(&from).copied().unwrap_or(0);
        let sent = send_udp_load(
            ns,
            SocketAddr::new(dst, port),
            &UdpLoad {
                packets: u64::from(packets),
                size: 64,
                rate_pps: u32::try_from(rate).unwrap_or(u32::MAX),
                source: Some(from),
            },
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let received = server.peers().get(&from).copied().unwrap_or(0) - before;
        let detail = format!("{received}/{} packets arrived at {rate}/s", sent.sent);
        #[expect(clippy::cast_precision_loss, reason = "packet counts are small")]
        let share = received as f64 / sent.sent.max(1) as f64;
        let got = if received == 0 {
            Expect::Deny
        } else if share < 0.9 {
            Expect::RateLimited
        } else {
            Expect::Allow
        };
        Ok((got.into(), detail))
    }
}

/// Run one scenario file live, adding its probes to `report`.
pub fn run_file(path: &Path, report: &mut Report) -> Result<()> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let scenario = parse_scenario(&file, &text).map_err(|e| anyhow!("{e}"))?;
    report.header(&file, &scenario.name);
    let live =
        Live::start(&scenario).with_context(|| format!("{file}: starting the environment"))?;
    for (i, step) in scenario.steps.iter().enumerate() {
        if !step.apply.is_empty() {
            let yaml = Document::to_yaml_stream(&step.apply)?;
            live.apply_all(&format!("{file}:{}", step.line), &yaml)?;
        }
        for name in &step.delete {
            live.delete_all(name)?;
        }
        for probe in &step.probes {
            let (got, detail) = match live.run_probe(&scenario, probe) {
                Ok(r) => r,
                Err(e) => (Outcome::Error(format!("{e:#}")), String::new()),
            };
            report.push(ProbeResult::new(&file, i, probe, got, detail));
        }
    }
    Ok(())
}
