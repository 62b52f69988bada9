//! The live scenario runner: each scenario becomes real network namespaces (one per pod and
//! external, one per node, joined by an uplink fabric), a real `enforcer agent` inside every node
//! namespace, and real probes (TCP connect + echo, UDP request/response, ICMP echo).

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use enforcer::{
    api::FlowEvent,
    policy::{
        explain, Document, Explanation, Flow, PolicySet, Protocol as PolicyProtocol, Verdict,
    },
};
use enforcer_common::{Reason, Verdict as EventVerdict};

use crate::{
    cluster::{AgentProcess, WorkDir},
    evidence::{self, FlowKey, EVENT_DEADLINE},
    probe as send_probe,
    scenario::{
        model::{Endpoint, Expect, Family, Probe, Scenario, Step},
        offline::{
            binding_rate_limit, node_context, probe_flow, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST,
        },
        parse::parse_scenario,
        report::{Outcome, ProbeResult, Report},
    },
    spawn_tcp_echo, spawn_udp_echo, Family as NetFamily, ProbeOptions, ProbeOutcome, Protocol,
    TcpEchoServer, Topology, UdpEchoServer, ANY,
};

mod rate;

/// How long a probe waits for an answer before it counts as dropped.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// A running scenario environment.
pub struct Live {
    pub topo: Topology,
    pub agents: Vec<AgentProcess>,
    tcp: Vec<(String, TcpEchoServer)>,
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
            b = b.pod(w.endpoint_name(), w.node.clone(), &w.addresses);
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
                self.tcp.push((ns.clone(), spawn_tcp_echo(ns, ANY, port)?));
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

    pub fn delete_all(&self, selector: &enforcer::policy::set::Selector) -> Result<()> {
        for a in &self.agents {
            a.delete_matching(selector)?;
        }
        Ok(())
    }

    /// Apply a step's documents, then its deletions, on every agent.
    pub fn apply_step(&self, source: &str, step: &Step) -> Result<()> {
        if !step.apply.is_empty() {
            let yaml = Document::to_yaml_stream(&step.apply)?;
            self.apply_all(source, &yaml)?;
        }
        for selector in &step.delete {
            self.delete_all(selector)?;
        }
        Ok(())
    }

    /// Audit-verdict packets counted by every agent.
    fn audit_packets(&self) -> Result<u64> {
        self.agents.iter().map(|a| a.packets("audit")).sum()
    }

    /// `Ok` while every echo server runs; the first dead one's error otherwise. A dead server
    /// would turn later probes into non-answers, so the run stops there.
    pub fn check_servers(&mut self) -> Result<()> {
        for (ns, s) in &mut self.tcp {
            s.check()
                .with_context(|| format!("TCP echo server {ns} port {} died", s.port()))?;
        }
        for (ns, s) in &mut self.udp {
            s.check()
                .with_context(|| format!("UDP echo server {ns} port {} died", s.port()))?;
        }
        Ok(())
    }

    /// Stop the echo servers of `port` (TCP and UDP) in namespace `ns` without telling the
    /// runner: `cargo xtask selftest` uses it to prove that a dead server cannot pass a `deny`.
    pub fn sabotage_kill_servers(&mut self, ns: &str, port: u16) -> Result<()> {
        let (tcp, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tcp)
            .into_iter()
            .partition(|(n, s)| n == ns && s.port() == port);
        self.tcp = keep;
        for (_, s) in tcp {
            s.stop()?;
        }
        let (udp, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.udp)
            .into_iter()
            .partition(|(n, s)| n == ns && s.port() == port);
        self.udp = keep;
        for (_, s) in udp {
            s.stop()?;
        }
        Ok(())
    }

    /// The UDP echo server of `port` in the namespace that holds `dst`.
    pub(crate) fn udp_server(&self, dst: IpAddr, port: u16) -> Result<&UdpEchoServer> {
        let ns = self.topo.netns_holding(dst);
        self.udp
            .iter()
            .find(|(n, s)| Some(n.as_str()) == ns && s.port() == port)
            .map(|(_, s)| s)
            .with_context(|| format!("no UDP echo server for {dst} port {port}"))
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

    /// Send a probe's real traffic and judge it with the datapath's evidence: `allow` needs the
    /// correct echo (and no audit count), `audit` the echo and an `audit` event of the flow,
    /// `deny` no answer and a `denied` event of the flow naming the policy and rule that the
    /// reference semantics (`model`) name; `rate_limited` see [`rate::rate_probe`]. Anything else
    /// is an error saying what was missing.
    pub fn run_probe(
        &self,
        scenario: &Scenario,
        probe: &Probe,
        model: &Model<'_>,
    ) -> Result<(Outcome, String)> {
        let (ns, dst, src) = self.route(scenario, probe)?;
        if probe.expect == Expect::RateLimited || probe.rate_per_second.is_some() {
            let expected = model.admitted_rate(probe)?;
            return rate::rate_probe(self, probe, expected, (&ns, dst, src));
        }
        let (_, expected) = model.explain(probe)?;
        let (protocol, name) = match (probe.protocol, probe.family) {
            (PolicyProtocol::Tcp, _) => (Protocol::Tcp, "TCP"),
            (PolicyProtocol::Udp, _) => (Protocol::Udp, "UDP"),
            (PolicyProtocol::Icmp, Family::Ipv4) => (Protocol::Icmp, "ICMP"),
            (PolicyProtocol::Icmp, Family::Ipv6) => (Protocol::Icmp, "ICMPv6"),
            (PolicyProtocol::Sctp, _) => {
                return Ok((
                    Outcome::Error("SCTP probes are not supported live".into()),
                    String::new(),
                ))
            }
        };
        let key = FlowKey {
            src,
            dst,
            protocol: name,
            dport: probe_port(probe),
            since_ms: evidence::now_ms(),
        };
        let audit_before = self.audit_packets()?;
        let outcome = send_probe(
            &ns,
            protocol,
            dst,
            probe.port.unwrap_or(0),
            &ProbeOptions::with_timeout(PROBE_TIMEOUT),
        )?;
        if outcome.is_answered() {
            return self.judge_answer(probe, &key, &outcome, audit_before);
        }
        self.judge_no_answer(&key, &outcome, &expected)
    }

    /// An answered probe: `allow`, or `audit` with its record.
    fn judge_answer(
        &self,
        probe: &Probe,
        key: &FlowKey,
        outcome: &ProbeOutcome,
        audit_before: u64,
    ) -> Result<(Outcome, String)> {
        let detail = format!("{}: {outcome:?}", key.dst);
        let counted = self.audit_packets()? > audit_before;
        if !counted && probe.expect != Expect::Audit {
            return Ok((Expect::Allow.into(), detail));
        }
        let records =
            evidence::wait_for_events(&self.agents, key, EventVerdict::Audit, EVENT_DEADLINE)?;
        Ok(match records.first() {
            Some(e) => (
                Expect::Audit.into(),
                format!("{detail}; audit event: {}", evidence::attribution(e)),
            ),
            None if counted => (
                Outcome::Error(format!(
                    "no audit record: the audit counter moved but no agent reported an audit \
                     event for {key}"
                )),
                detail,
            ),
            None => (Expect::Allow.into(), format!("{detail}; no audit event")),
        })
    }

    /// A probe without an answer: `deny` only with the drop event of its flow.
    fn judge_no_answer(
        &self,
        key: &FlowKey,
        outcome: &ProbeOutcome,
        expected: &Explanation,
    ) -> Result<(Outcome, String)> {
        let detail = format!("{}: {outcome:?}", key.dst);
        let drops =
            evidence::wait_for_events(&self.agents, key, EventVerdict::Deny, EVENT_DEADLINE)?;
        if drops.is_empty() {
            return Ok((
                Outcome::Error(format!(
                    "no drop evidence: no answer ({}) and no agent reported a denied event for \
                     {key} within {EVENT_DEADLINE:?}",
                    no_answer_kind(outcome)
                )),
                detail,
            ));
        }
        let got: Vec<String> = drops.iter().map(evidence::attribution).collect();
        if expected.verdict == Verdict::Deny && !drops.iter().any(|e| names(e, expected)) {
            return Ok((
                Outcome::Error(format!(
                    "wrong drop evidence: the datapath dropped {key} by {}, expected {}",
                    got.join(", "),
                    expected_attribution(expected)
                )),
                detail,
            ));
        }
        Ok((
            Expect::Deny.into(),
            format!("{detail}; dropped by {}", got.join(", ")),
        ))
    }
}

/// The destination port of a probe as the datapath reports it (the echo request type for ICMP).
fn probe_port(probe: &Probe) -> u16 {
    match (probe.port, probe.family) {
        (Some(p), _) => p,
        (None, Family::Ipv4) => ICMP_ECHO_REQUEST,
        (None, Family::Ipv6) => ICMPV6_ECHO_REQUEST,
    }
}

fn no_answer_kind(outcome: &ProbeOutcome) -> String {
    match outcome {
        ProbeOutcome::NoAnswer { kind, detail } => format!("{kind:?}: {detail}"),
        ProbeOutcome::Answered { .. } => "answered".into(),
    }
}

/// Whether a drop event names the deciding policy and rule of `expected` (none: default deny).
fn names(e: &FlowEvent, expected: &Explanation) -> bool {
    match &expected.rule {
        Some(_) => e.rule == expected.rule,
        None => e.reason == Reason::DefaultDeny,
    }
}

fn expected_attribution(expected: &Explanation) -> String {
    expected.rule.as_ref().map_or_else(
        || "default_deny".into(),
        |r| format!("{} {}", r.policy_label(), r.rule_label()),
    )
}

/// The reference semantics of the scenario as the runner goes through its steps: what each probe
/// should meet (the deciding policy and rule), for the drop evidence.
pub struct Model<'a> {
    scenario: &'a Scenario,
    pub set: PolicySet,
}

impl<'a> Model<'a> {
    pub fn new(scenario: &'a Scenario) -> Result<Model<'a>> {
        let set =
            PolicySet::from_documents(scenario.workload_documents()).map_err(|e| anyhow!("{e}"))?;
        Ok(Model { scenario, set })
    }

    /// Apply a step's documents and deletions (errors are the agents' to report).
    pub fn step(&mut self, step: &Step) {
        if !step.apply.is_empty() {
            let _ = self.set.apply(step.apply.clone());
        }
        for selector in &step.delete {
            self.set.delete(selector);
        }
    }

    /// The reference explanation of a probe's flow.
    pub fn explain(&self, probe: &Probe) -> Result<(Flow, Explanation)> {
        let (flow, node) = probe_flow(self.scenario, probe).map_err(|e| anyhow!(e))?;
        let ctx = node_context(self.scenario, node);
        let explanation = explain(&self.set, &ctx, &flow);
        Ok((flow, explanation))
    }

    /// The rate (packets per second) a rate probe expects to get through: its
    /// `admittedPerSecond`, else the `rateLimit` of the rule that binds it (a byte rate divided
    /// by the runner's IP packet size); `None` when nothing limits it.
    #[expect(clippy::cast_precision_loss, reason = "rates are far below 2^52")]
    pub fn admitted_rate(&self, probe: &Probe) -> Result<Option<f64>> {
        if let Some(r) = probe.admitted_per_second {
            return Ok(Some(r as f64));
        }
        let (flow, explanation) = self.explain(probe)?;
        let offered = probe.rate_per_second.unwrap_or(u64::MAX);
        let ipv6 = flow.dst.is_ipv6();
        let Some(limit) = binding_rate_limit(&self.set, &explanation, offered, ipv6) else {
            return Ok(None);
        };
        let packet_bytes = if ipv6 { 112.0 } else { 92.0 };
        let rates = [
            limit.packets_per_second.map(|p| p as f64),
            limit.bytes_per_second.map(|b| b as f64 / packet_bytes),
        ];
        Ok(rates.into_iter().flatten().reduce(f64::min))
    }
}

/// Run one scenario file live, adding its probes to `report`. A dead echo server ends the file
/// with an error.
pub fn run_file(path: &Path, report: &mut Report) -> Result<()> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let scenario = parse_scenario(&file, &text).map_err(|e| anyhow!("{e}"))?;
    report.header(&file, &scenario.name);
    let mut live =
        Live::start(&scenario).with_context(|| format!("{file}: starting the environment"))?;
    let mut model = Model::new(&scenario)?;
    for (i, step) in scenario.steps.iter().enumerate() {
        live.apply_step(&format!("{file}:{}", step.line), step)?;
        model.step(step);
        for probe in &step.probes {
            let (got, detail) = match live.run_probe(&scenario, probe, &model) {
                Ok(r) => r,
                Err(e) => (Outcome::Error(format!("{e:#}")), String::new()),
            };
            report.push(ProbeResult::new(&file, i, probe, got, detail));
            live.check_servers()
                .with_context(|| format!("{file}:{}: after this probe", probe.line))?;
        }
    }
    Ok(())
}
