//! Observability end to end: a real Prometheus server scrapes a real agent inside the node
//! namespace and counts exactly the packets the datapath denied; `promtool` lints a real scrape,
//! checks the alert rules and runs their unit tests; `enforcer flows` attributes drops to the
//! policy and rule; `enforcer suggest` turns observed traffic into a policy that allows exactly
//! it; the Grafana dashboard is valid JSON that only uses metrics the agent exports.
//!
//! The live tests need root (skipped otherwise); every test needs `prometheus` and `promtool`
//! (`cargo xtask setup` installs them).

use std::{
    collections::BTreeSet,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use enforcer::{api::FlowEvent, policy::RuleRef};
use enforcer_common::{Direction, Reason, Verdict};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    http_get,
    one_node::WebApi,
    probe_icmp, probe_tcp, probe_udp, spawn_tcp_echo, spawn_udp_echo, ProbeOptions, Topology, ANY,
};

/// Where the agent serves metrics inside its node namespace (see `AgentProcess`).
const METRICS: &str = "127.0.0.1:9963";
/// Where the test's Prometheus listens, inside the node namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// The metric families of the contract (docs/design.md, "Metrics") and the others the agent exports.
const FAMILIES: &[&str] = &[
    "enforcer_packets_total",
    "enforcer_drops_total",
    "enforcer_policy_rule_packets_total",
    "enforcer_policy_rule_info",
    "enforcer_bpf_map_entries",
    "enforcer_bpf_map_capacity",
    "enforcer_policy_generation",
    "enforcer_policy_apply_total",
    "enforcer_events_lost_total",
    "enforcer_events_sampled_out_total",
    "enforcer_attached_interfaces",
    "enforcer_build_info",
];

const POLICY: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]
  ingressDeny:
    - from: [{service: web}]
      ports: [{protocol: UDP, port: 5353}]
";

/// Sorts before `api-ingress`: its rules take the first ids.
const SHIFT: &str = r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: aaa-web}
spec:
  service: web
  egressDeny:
    - ports: [{protocol: UDP, port: 9}]
";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The path of `tool`, or an error telling how to install it.
fn tool(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("{name} not found: install the prometheus package (cargo xtask setup)")
        })
}

/// Run `cmd`, feeding `stdin`; the output (stdout + stderr) if it exits 0.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {line}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{line} failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Poll `f` every 200 ms until it returns `Some`, or fail with `what` after `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = f();
        match last {
            Ok(Some(v)) => return Ok(v),
            Ok(None) | Err(_) if start.elapsed() < timeout => {}
            Ok(None) => bail!("timed out after {timeout:?} waiting for {what}"),
            Err(e) => return Err(e.context(format!("waiting for {what}"))),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real Prometheus server in a node namespace, scraping the agent every second and evaluating
/// deploy/prometheus/alerts.yaml. Killed on drop.
struct Prometheus {
    ns: String,
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    fn start(topo: &Topology, node: &str, work: &Path) -> Result<Prometheus> {
        let bin = tool("prometheus")?;
        let rules = repo().join("deploy/prometheus/alerts.yaml");
        let config = work.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n  \
                 - job_name: enforcer\n    \
                 static_configs: [{{targets: [{METRICS:?}]}}]\n",
                rules.display()
            ),
        )?;
        let log = work.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let child = topo
            .node_command(node, bin.to_str().context("path")?)?
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting prometheus")?;
        let mut p = Prometheus {
            ns: topo.node_netns(node)?.to_string(),
            child,
            log,
        };
        let ready = wait_for("prometheus to be ready", Duration::from_secs(30), || {
            if let Some(status) = p.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", p.log_text());
            }
            Ok(matches!(p.get("/-/ready"), Ok((200, _))).then_some(()))
        });
        ready.map_err(|e| anyhow!("{e:#}\n{}", p.log_text()))?;
        Ok(p)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.ns, PROMETHEUS, path)
    }

    fn api(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.get(path)?;
        ensure!(status == 200, "GET {path}: {status}\n{body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        ensure!(v["status"] == "success", "GET {path}: {body}");
        Ok(v["data"].clone())
    }

    /// The value of an instant query that returns one sample (`None`: no sample).
    fn query(&self, q: &str) -> Result<Option<f64>> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(q)))?;
        let Some(first) = data["result"].as_array().and_then(|r| r.first()) else {
            return Ok(None);
        };
        let value = first["value"][1]
            .as_str()
            .ok_or_else(|| anyhow!("no value in {first}"))?;
        Ok(Some(value.parse()?))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Packets the agent counted as dropped by policy (deny rules and default denies).
fn agent_policy_drops(agent: &AgentProcess) -> Result<u64> {
    Ok(agent
        .stats()?
        .packets
        .iter()
        .filter(|c| {
            c.verdict == Verdict::Deny && matches!(c.reason, Reason::Policy | Reason::DefaultDeny)
        })
        .map(|c| c.packets)
        .sum())
}

fn agent_rule_packets(agent: &AgentProcess, policy: &str, rule: &str) -> Result<u64> {
    agent
        .stats()?
        .rules
        .iter()
        .find(|r| r.rule.policy_label() == policy && r.rule.rule_label() == rule)
        .map(|r| r.packets)
        .ok_or_else(|| anyhow!("no counter for {policy} {rule}"))
}

/// `enforcer ARGS --socket SOCKET`, run in the node namespace; its stdout.
fn enforcer_cli(topo: &Topology, agent: &AgentProcess, args: &[&str]) -> Result<String> {
    let bin = enforcer_bin()?;
    let mut cmd = topo.node_command(&agent.node, bin.to_str().context("path")?)?;
    cmd.args(args).arg("--socket").arg(&agent.socket);
    let out = cmd.stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "enforcer {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() -> Result<()> {
    let promtool = tool("promtool")?;
    let dir = repo().join("deploy/prometheus");
    let out = run(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(dir.join("alerts.yaml")),
        None,
    )?;
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(
        Command::new(&promtool)
            .current_dir(&dir)
            .args(["test", "rules", "alerts_test.yaml"]),
        None,
    )?;
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("alerts.yaml"))?;
    let tests = std::fs::read_to_string(dir.join("alerts_test.yaml"))?;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "alert {name} has no test in alerts_test.yaml"
            );
        }
    }
    Ok(())
}

/// The metric names a `PromQL` expression uses (`enforcer_...` words).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("enforcer_"))
        .map(str::to_string)
        .collect()
}

/// The `PromQL` of every panel of the Grafana dashboard.
fn dashboard_queries() -> Result<Vec<String>> {
    let path = repo().join("deploy/grafana/enforcer-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().context("target without expr")?;
            out.push(expr.to_string());
        }
    }
    Ok(out)
}

#[test]
fn dashboard_is_valid_and_uses_exported_metrics() -> Result<()> {
    let mut used = BTreeSet::new();
    for expr in dashboard_queries()? {
        used.extend(metric_names(&expr));
    }
    for name in &used {
        assert!(
            FAMILIES.contains(&name.as_str()),
            "the dashboard uses {name}, which the agent does not export"
        );
    }
    for required in [
        "enforcer_packets_total",
        "enforcer_policy_rule_packets_total",
        "enforcer_drops_total",
        "enforcer_bpf_map_entries",
    ] {
        assert!(
            used.contains(required),
            "the dashboard does not show {required}"
        );
    }
    // The alerts only use exported metrics too.
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml"))?;
    for name in metric_names(&rules) {
        assert!(
            FAMILIES.contains(&name.as_str()),
            "alerts.yaml uses unknown {name}"
        );
    }
    Ok(())
}

/// Denied probes sent from web to api, by the rule that denies them.
struct Denied {
    /// UDP 5353: `api-ingress ingressDeny[0]`.
    by_rule: u64,
    /// UDP 7777: `default-deny api/ingress`.
    default_udp: u64,
    /// ICMP echo: `default-deny api/ingress`.
    default_icmp: u64,
}

impl Denied {
    fn total(&self) -> u64 {
        self.by_rule + self.default_udp + self.default_icmp
    }

    /// Send them: exactly one packet per probe (a UDP datagram or an ICMP echo request, dropped
    /// at api's ingress: no retransmission, no answer).
    fn send(&self, web_ns: &str) -> Result<()> {
        let opts = ProbeOptions::with_timeout(Duration::from_millis(400));
        for _ in 0..self.by_rule {
            let o = probe_udp(web_ns, "10.10.2.10:5353".parse()?, &opts)?;
            ensure!(
                !o.is_answered(),
                "UDP 5353 is denied by ingressDeny[0]: {o}"
            );
        }
        for _ in 0..self.default_udp {
            let o = probe_udp(web_ns, "10.10.2.10:7777".parse()?, &opts)?;
            ensure!(!o.is_answered(), "UDP 7777 is denied by default: {o}");
        }
        for _ in 0..self.default_icmp {
            let o = probe_icmp(web_ns, ip("10.10.2.10"), &opts)?;
            ensure!(!o.is_answered(), "ICMP is denied by default: {o}");
        }
        Ok(())
    }
}

#[allow(clippy::cast_precision_loss)]
fn float(n: u64) -> f64 {
    n as f64
}

#[test]
fn prometheus_counts_denied_packets_exactly() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let bed = WebApi::start("observability", &[])?;
    let (topo, work, agent, web_ns, api_ns) = (
        &bed.topo,
        &bed.work,
        &bed.agent,
        bed.web_ns.clone(),
        bed.api_ns.clone(),
    );
    // Servers everywhere a probe goes: a dropped probe is one the datapath dropped.
    let _tcp = spawn_tcp_echo(&api_ns, ANY, 8080)?;
    let _dns = spawn_udp_echo(&api_ns, 5353)?;
    let _other = spawn_udp_echo(&api_ns, 7777)?;
    agent.apply("policy.yaml", POLICY)?;
    let allowed = ProbeOptions::with_timeout(Duration::from_secs(2));
    assert!(probe_tcp(&web_ns, "10.10.2.10:8080".parse()?, &allowed)?.is_answered());

    let prom = Prometheus::start(topo, "n1", &work.0)?;
    wait_for("the first scrape", Duration::from_secs(20), || {
        Ok((prom.query(r#"up{job="enforcer"}"#)? == Some(1.0)).then_some(()))
    })?;
    let drops = r#"sum(enforcer_drops_total{job="enforcer", reason="policy_denied"})"#;
    let before = agent_policy_drops(agent)?;
    wait_for(
        "Prometheus to see the agent's counters",
        Duration::from_secs(20),
        || Ok((prom.query(drops)? == Some(float(before))).then_some(())),
    )?;
    let rule_before = agent_rule_packets(agent, "api-ingress", "ingressDeny[0]")?;
    let default_before = agent_rule_packets(agent, "default-deny", "api/ingress")?;

    let denied = Denied {
        by_rule: 3,
        default_udp: 2,
        default_icmp: 2,
    };
    denied.send(&web_ns)?;
    let n = denied.total();

    // The agent's own counters: exactly n more, attributed to the right rules.
    assert_eq!(agent_policy_drops(agent)? - before, n, "agent counters");
    let by_rule = agent_rule_packets(agent, "api-ingress", "ingressDeny[0]")?;
    assert_eq!(by_rule - rule_before, denied.by_rule);
    let by_default = agent_rule_packets(agent, "default-deny", "api/ingress")?;
    assert_eq!(
        by_default - default_before,
        denied.default_udp + denied.default_icmp
    );

    // Prometheus: after the next scrapes, exactly n more, and it stays there.
    let expected = float(before + n);
    let seen = wait_for(
        "Prometheus to scrape the drops",
        Duration::from_secs(20),
        || Ok(prom.query(drops)?.filter(|v| *v >= expected)),
    )?;
    assert!(
        (seen - expected).abs() < f64::EPSILON,
        "Prometheus saw {seen}, expected {expected}"
    );
    // It stays there: two more scrapes (each moves the timestamp of the `up` sample) see the
    // same value.
    let scraped_at = r#"timestamp(up{job="enforcer"})"#;
    let t0 = prom.query(scraped_at)?.context("no scrape timestamp")?;
    wait_for("two more scrapes", Duration::from_secs(20), || {
        Ok(prom.query(scraped_at)?.filter(|t| *t >= t0 + 2.0))
    })?;
    assert_eq!(prom.query(drops)?, Some(expected), "after more scrapes");
    // Per service through the rule metadata, as the alerts and the dashboard join them.
    let api_denied = r#"sum by (service) (
        enforcer_policy_rule_packets_total{verdict="deny"}
        * on (instance, policy, rule) group_left (service) enforcer_policy_rule_info{service="api"})"#;
    assert_eq!(prom.query(api_denied)?, Some(float(by_rule + by_default)));
    check_rules_and_dashboard(&prom)?;
    check_scrape(topo.node_netns("n1")?)?;
    check_flows(topo, agent, &denied)?;

    // A policy whose name sorts first renumbers every rule: the counters follow their rule.
    agent.apply("shift.yaml", SHIFT)?;
    assert_eq!(
        agent_rule_packets(agent, "api-ingress", "ingressDeny[0]")?,
        by_rule
    );
    assert_eq!(
        agent_rule_packets(agent, "default-deny", "api/ingress")?,
        by_default
    );
    assert_eq!(agent_rule_packets(agent, "aaa-web", "egressDeny[0]")?, 0);
    Ok(())
}

/// The example queries of docs/metrics.md: in `promql` code blocks, each after its `#` comment.
fn doc_queries() -> Result<Vec<String>> {
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md"))?;
    let mut out = Vec::new();
    for block in docs.split("```promql\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        let mut query = String::new();
        for line in block.lines().chain([""]) {
            if line.trim().is_empty() || line.starts_with('#') {
                if !query.trim().is_empty() {
                    out.push(std::mem::take(&mut query));
                }
            } else {
                query.push_str(line);
                query.push('\n');
            }
        }
    }
    ensure!(out.len() >= 10, "few example queries found: {out:?}");
    Ok(out)
}

/// Every alert rule loads and evaluates against the real series; every dashboard and docs query
/// is valid `PromQL`, and the per-service ones find the api's denials.
fn check_rules_and_dashboard(prom: &Prometheus) -> Result<()> {
    let unhealthy = wait_for(
        "the alert rules to evaluate",
        Duration::from_secs(20),
        || {
            let data = prom.api("/api/v1/rules")?;
            let rules: Vec<&serde_json::Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            ensure!(rules.len() >= 10, "rules loaded: {data}");
            let bad: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            Ok((!bad.iter().any(|b| b.contains("unknown"))).then_some(bad))
        },
    )?;
    ensure!(unhealthy.is_empty(), "rules failing: {unhealthy:?}");
    for expr in dashboard_queries()?.into_iter().chain(doc_queries()?) {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$instance", ".*");
        let data = prom
            .api(&format!("/api/v1/query?query={}", urlencode(&q)))
            .with_context(|| format!("dashboard query {q}"))?;
        if q.contains("group_left (service, direction, peers)") {
            let text = data.to_string();
            ensure!(text.contains(r#""service":"api""#), "{q}: {text}");
        }
    }
    Ok(())
}

/// A real scrape is lint-clean and has every family of the contract, each documented.
fn check_scrape(node_ns: &str) -> Result<()> {
    let promtool = tool("promtool")?;
    let (status, scrape) = http_get(node_ns, METRICS, "/metrics")?;
    ensure!(status == 200, "{scrape}");
    let lint = run(
        Command::new(&promtool).args(["check", "metrics"]),
        Some(&scrape),
    )?;
    ensure!(lint.trim().is_empty(), "promtool check metrics:\n{lint}");
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md"))?;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in FAMILIES {
        ensure!(
            exported.contains(name),
            "{name} missing from the scrape:\n{scrape}"
        );
    }
    for name in &exported {
        ensure!(
            docs.contains(&format!("`{name}")),
            "{name} is not in docs/metrics.md"
        );
    }
    for direction in ["ingress", "egress"] {
        for reason in [
            "policy_denied",
            "rate_limited",
            "spoofed",
            "malformed",
            "unknown_endpoint",
        ] {
            let series =
                format!(r#"enforcer_drops_total{{direction="{direction}",reason="{reason}"}}"#);
            ensure!(scrape.contains(&series), "no {series}:\n{scrape}");
        }
    }
    Ok(())
}

/// `enforcer flows -o json` names the policy and rule of each drop, and reports nothing else.
fn check_flows(topo: &Topology, agent: &AgentProcess, denied: &Denied) -> Result<()> {
    let out = enforcer_cli(topo, agent, &["flows", "--verdict", "denied", "-o", "json"])?;
    let events: Vec<FlowEvent> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("flows -o json:\n{out}"))?;
    let count = |protocol: &str, port: u16, policy: &str, rule: &str, reason: &str| {
        events
            .iter()
            .filter(|e| {
                e.src == ip("10.10.1.10")
                    && e.dst == ip("10.10.2.10")
                    && e.src_identity == "web"
                    && e.dst_identity == "api"
                    && e.protocol_name() == protocol
                    && e.dport == port
                    && e.direction == Direction::Ingress
                    && e.rule.as_ref().map(RuleRef::policy_label).as_deref() == Some(policy)
                    && e.rule.as_ref().map(RuleRef::rule_label).as_deref() == Some(rule)
                    && e.reason_name() == reason
            })
            .count() as u64
    };
    let deny_rule = ("api-ingress", "ingressDeny[0]", "policy_denied");
    let default = ("default-deny", "api/ingress", "default_deny");
    for (protocol, port, (policy, rule, reason), want) in [
        ("UDP", 5353, deny_rule, denied.by_rule),
        ("UDP", 7777, default, denied.default_udp),
        ("ICMP", 8, default, denied.default_icmp),
    ] {
        let got = count(protocol, port, policy, rule, reason);
        ensure!(
            got == want,
            "{protocol} {port}: {got} events by {policy} {rule}, expected {want}:\n{out}"
        );
    }
    ensure!(
        events.len() as u64 == denied.total(),
        "only our probes were denied:\n{out}"
    );
    Ok(())
}

const WORKLOADS: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0}
spec: {service: db, addresses: [10.10.3.10]}
";

#[test]
fn suggest_allows_exactly_the_observed_flows() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let topo = Topology::builder()
        .pod("web-0", "n1", &[ip("10.10.1.10")])
        .pod("api-0", "n1", &[ip("10.10.2.10")])
        .pod("db-0", "n1", &[ip("10.10.3.10")])
        .build()?;
    let work = WorkDir::new("suggest")?;
    let agent = AgentProcess::start(&topo, "n1", &work.0, &[])?;
    let ns = |pod: &str| topo.pod_netns(pod).map(str::to_string);
    let (web, api, db) = (ns("web-0")?, ns("api-0")?, ns("db-0")?);
    let _servers = (
        spawn_tcp_echo(&api, ANY, 8080)?,
        spawn_tcp_echo(&db, ANY, 5432)?,
        spawn_tcp_echo(&web, ANY, 8080)?,
    );
    // The services are known, no FlowPolicy: everything is allowed and reported.
    agent.apply("workloads.yaml", WORKLOADS)?;
    let ok = ProbeOptions::with_timeout(Duration::from_secs(2));
    for _ in 0..3 {
        assert!(probe_tcp(&web, "10.10.2.10:8080".parse()?, &ok)?.is_answered());
    }
    for _ in 0..2 {
        assert!(probe_tcp(&api, "10.10.3.10:5432".parse()?, &ok)?.is_answered());
    }
    // The inventory: both edges, each a "shadow" API (no rule mentions it).
    let table = wait_for("the flows to be reported", Duration::from_secs(10), || {
        let t = enforcer_cli(&topo, &agent, &["suggest", "-o", "table"])?;
        Ok((t.contains("TCP/8080") && t.contains("TCP/5432")).then_some(t))
    })?;
    let web_api = row_of(&table, "web", "api", "TCP/8080")
        .ok_or_else(|| anyhow!("no web -> api:\n{table}"))?;
    assert_eq!(web_api[3], "3", "3 connections:\n{table}");
    assert_eq!(web_api[6], "SHADOW", "{table}");
    let api_db =
        row_of(&table, "api", "db", "TCP/5432").ok_or_else(|| anyhow!("no api -> db:\n{table}"))?;
    assert_eq!(api_db[3], "2", "{table}");
    assert_eq!(
        table.lines().count(),
        3,
        "only the two observed edges:\n{table}"
    );

    // The suggestion, applied with the real CLI.
    let yaml = enforcer_cli(&topo, &agent, &["suggest", "--since", "600"])?;
    for name in [
        "suggested-api-ingress",
        "suggested-api-egress",
        "suggested-db-ingress",
        "suggested-web-egress",
    ] {
        assert!(
            yaml.contains(&format!("name: {name}")),
            "{name} missing:\n{yaml}"
        );
    }
    assert!(!yaml.contains("suggested-web-ingress"), "{yaml}");
    let file = work.0.join("suggested.yaml");
    std::fs::write(&file, &yaml)?;
    let applied = enforcer_cli(
        &topo,
        &agent,
        &["policy", "apply", "-f", file.to_str().context("path")?],
    )?;
    assert!(applied.contains("suggested-api-ingress"), "{applied}");

    // Observed flows pass; anything else is denied.
    assert!(probe_tcp(&web, "10.10.2.10:8080".parse()?, &ok)?.is_answered());
    assert!(probe_tcp(&api, "10.10.3.10:5432".parse()?, &ok)?.is_answered());
    let no = ProbeOptions::with_timeout(Duration::from_millis(500));
    for (from, to, what) in [
        (&web, "10.10.3.10:5432", "web -> db"),
        (&db, "10.10.2.10:8080", "db -> api"),
        (&api, "10.10.1.10:8080", "api -> web"),
    ] {
        let o = probe_tcp(from, to.parse()?, &no)?;
        assert!(
            !o.is_answered(),
            "{what} was not observed and must be denied: {o}"
        );
    }
    // The inventory now shows the edges as allowed by the suggested rules, and the denied one.
    let table = enforcer_cli(&topo, &agent, &["suggest", "-o", "table", "--since", "60"])?;
    assert!(
        table.contains("suggested-api-ingress ingress[0]"),
        "{table}"
    );
    let web_db = row_of(&table, "web", "db", "TCP/5432").ok_or_else(|| anyhow!("{table}"))?;
    assert_eq!(web_db[6], "DENIED", "{table}");
    Ok(())
}

fn row_of(table: &str, src: &str, dst: &str, port: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|w| w.len() > 6 && w[0] == src && w[1] == dst && w[2] == port)
}
