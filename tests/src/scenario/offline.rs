//! `cargo xtask scenario --offline`: evaluates the probes of scenario files with the policy engine
//! alone ([`explain`], the reference semantics), no kernel, no namespaces.
//!
//! Each step, in order: its documents are applied on top of the scenario's Workloads
//! (kubectl-apply semantics: a document replaces the one of the same kind and name), then the
//! named documents are deleted, then each probe is judged as a new flow.
//!
//! # Addresses
//!
//! A workload or an external probes from/to its first address of the probe's family. `host` is a
//! node's own address, following the harness: node `i` (0-based, in `nodes` order) has the uplink
//! addresses `10.255.0.(i+1)` and `fd00:255::(i+1)` ([`node_address`]), which are also the sources
//! of its traffic to its pods. As a source, `host` is the node of the destination workload; as a
//! destination, the node of the source workload (the first node when the other end is not a
//! workload).
//!
//! # Which node judges
//!
//! The datapath judges the source's egress on the source's node and the destination's ingress on
//! the destination's node, and each node sees only its own addresses as `host` (another node's
//! address is `world` there). [`explain`] judges both sides with one [`NodeContext`]; this is
//! exact here because the context only changes the identity of node addresses, and the only node
//! address a probe can carry is its `host` end, which by the convention above is always the node
//! of the workload at the other end — the node where that workload's side is judged. Every other
//! address is a workload (identity independent of the node) or an external (never a node address:
//! the harness reserves the fabric). So the probe is evaluated with the context of the node of
//! its destination workload, else of its source workload, else of the first node (then neither
//! end is a workload and the flow is allowed whatever the context). Cross-node pod-to-pod flows
//! carry no node address and get the same verdict under either context.
//!
//! # Outcomes
//!
//! `deny` / `audit` as explained. An allowed probe that sends a burst (`ratePerSecond` set, i.e.
//! `expect: rate_limited`) is `rate_limited` when the ingress rule of the destination that
//! allowed it has a binding `rateLimit` (see [`binding_rate_limit`]), else `allow`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::model::{Endpoint, Expect, Family, Probe, Scenario};
use super::parse::parse_scenario;
use super::report::{Outcome, ProbeResult, Report};
use enforcer_policy::{
    explain, Explanation, Flow, NodeContext, PolicySet, RateLimit, RuleRef, Section, Verdict,
};

/// ICMP echo request type (the "port" of an ICMP probe).
pub const ICMP_ECHO_REQUEST: u16 = 8;
/// `ICMPv6` echo request type.
pub const ICMPV6_ECHO_REQUEST: u16 = 128;
/// The pods' gateways, configured on every host-side pod veth (node addresses, thus `host`).
pub use crate::{POD_GATEWAY_V4, POD_GATEWAY_V6};

/// The uplink address of node `index` (0-based, in `nodes` order): `10.255.0.(index+1)` or
/// `fd00:255::(index+1)` (the harness supports at most 99 nodes).
pub fn node_address(index: usize, family: Family) -> IpAddr {
    let n = u8::try_from(index + 1).unwrap_or(u8::MAX);
    match family {
        Family::Ipv4 => Ipv4Addr::new(10, 255, 0, n).into(),
        Family::Ipv6 => Ipv6Addr::new(0xfd00, 0x255, 0, 0, 0, 0, 0, u16::from(n)).into(),
    }
}

/// The context of node `index` of `scenario`: its uplink addresses and the pods' gateways as
/// `host`, the addresses of its workloads as local.
pub fn node_context(scenario: &Scenario, index: usize) -> NodeContext {
    let mut host_addresses: BTreeSet<IpAddr> = [
        node_address(index, Family::Ipv4),
        node_address(index, Family::Ipv6),
        POD_GATEWAY_V4.into(),
        POD_GATEWAY_V6.into(),
    ]
    .into_iter()
    .collect();
    // A pod gateway is never a workload address (the harness refuses it), but stay exact if a
    // scenario says otherwise: a workload address is never `host`.
    for w in &scenario.workloads {
        for a in &w.addresses {
            host_addresses.remove(a);
        }
    }
    let local_addresses = scenario
        .nodes
        .get(index)
        .map(|node| {
            scenario
                .workloads
                .iter()
                .filter(|w| &w.node == node)
                .flat_map(|w| w.addresses.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    NodeContext {
        host_addresses,
        local_addresses,
    }
}

/// Parses and runs each file, printing `== file: name` before each scenario, one line per probe,
/// unreadable or invalid files as `file:line: reason` (each error counts as a failure), and the
/// final `N passed, M failed` line. The caller exits with [`Report::exit_code`].
pub fn run_files_offline(paths: &[PathBuf]) -> Report {
    let mut report = Report::new();
    run_files_offline_into(paths, &mut report);
    report.finish();
    report
}

/// [`run_files_offline`] into an existing report, without the final line.
pub fn run_files_offline_into(paths: &[PathBuf], report: &mut Report) {
    for path in paths {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                report.error(format!("{file}: {e}"));
                continue;
            }
        };
        match parse_scenario(&file, &text) {
            Ok(scenario) => {
                report.header(&file, &scenario.name);
                run_offline_into(&scenario, report);
            }
            Err(errors) => {
                report.header(&file, "invalid scenario");
                for e in errors {
                    report.error(e);
                }
            }
        }
    }
}

/// Runs one parsed scenario into a new report that prints as it goes (no header, no final line).
pub fn run_offline(scenario: &Scenario) -> Report {
    let mut report = Report::new();
    run_offline_into(scenario, &mut report);
    report
}

/// Runs one parsed scenario into `report`. A step whose documents are rejected (all or nothing,
/// like `enforcer policy apply`) or that deletes a name no document has is an error (one failure
/// per reason); its probes still run, against the set as it is.
pub fn run_offline_into(scenario: &Scenario, report: &mut Report) {
    let file = &scenario.source.file;
    let mut set = match PolicySet::from_documents(scenario.workload_documents()) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                report.error(e);
            }
            return;
        }
    };
    for (index, step) in scenario.steps.iter().enumerate() {
        if !step.apply.is_empty() {
            if let Err(errors) = set.apply(step.apply.clone()) {
                for e in errors {
                    report.error(e);
                }
            }
        }
        for selector in &step.delete {
            if set.delete(selector).is_empty() {
                report.error(format!(
                    "{file}:{}: steps[{index}]: delete {:?}: no document has that name",
                    step.line,
                    selector.to_string()
                ));
            }
        }
        for probe in &step.probes {
            let (got, detail) = evaluate_probe(scenario, &set, probe);
            report.push(ProbeResult::new(file, index, probe, got, detail));
        }
    }
}

/// The node (index in `nodes`) a workload endpoint runs on.
fn node_index(scenario: &Scenario, endpoint: Endpoint<'_>) -> Option<usize> {
    match endpoint {
        Endpoint::Workload(w) => scenario.nodes.iter().position(|n| *n == w.node),
        Endpoint::Host | Endpoint::External(_) => None,
    }
}

/// The flow a probe sends under the harness conventions, and the node whose context judges it
/// (see the module documentation).
pub fn probe_flow(scenario: &Scenario, probe: &Probe) -> Result<(Flow, usize), String> {
    let endpoint = |name: &str| {
        scenario
            .endpoint(name)
            .ok_or_else(|| format!("unknown endpoint {name:?}"))
    };
    let from = endpoint(&probe.from)?;
    let to = endpoint(&probe.to)?;
    let from_node = node_index(scenario, from);
    let to_node = node_index(scenario, to);
    let address = |e: Endpoint<'_>, name: &str, host_node: Option<usize>| {
        match e {
            Endpoint::Host => Some(node_address(host_node.unwrap_or(0), probe.family)),
            _ => e.address(probe.family),
        }
        .ok_or_else(|| format!("{name:?} has no {} address", probe.family))
    };
    let src = address(from, &probe.from, to_node)?;
    let dst = address(to, &probe.to, from_node)?;
    let ipv6 = probe.family == Family::Ipv6;
    let port = match (probe.port, ipv6) {
        (Some(port), _) => port,
        (None, false) => ICMP_ECHO_REQUEST,
        (None, true) => ICMPV6_ECHO_REQUEST,
    };
    let flow = Flow {
        src,
        dst,
        protocol: probe.protocol.number(ipv6),
        port,
    };
    Ok((flow, to_node.or(from_node).unwrap_or(0)))
}

/// The outcome of `probe` under `set`, and a detail naming the addresses and the deciding rule.
pub fn evaluate_probe(scenario: &Scenario, set: &PolicySet, probe: &Probe) -> (Outcome, String) {
    let (flow, node) = match probe_flow(scenario, probe) {
        Ok(x) => x,
        Err(e) => return (Outcome::Error(e), String::new()),
    };
    let ctx = node_context(scenario, node);
    let explanation = explain(set, &ctx, &flow);
    let mut detail = format!("{} -> {}: {}", flow.src, flow.dst, explanation.reason);
    let got = match explanation.verdict {
        Verdict::Deny => Expect::Deny,
        Verdict::Audit => Expect::Audit,
        Verdict::Allow => match probe.rate_per_second {
            None => Expect::Allow,
            Some(rate) => match binding_rate_limit(set, &explanation, rate, flow.dst.is_ipv6()) {
                Some(limit) => {
                    detail = format!("{detail}, {}", describe_limit(&limit));
                    Expect::RateLimited
                }
                None => Expect::Allow,
            },
        },
    };
    (Outcome::Verdict(got), detail)
}

fn describe_limit(limit: &RateLimit) -> String {
    let mut parts = Vec::new();
    if let Some(pps) = limit.packets_per_second {
        parts.push(format!("{pps} packets/s"));
    }
    if let Some(bps) = limit.bytes_per_second {
        parts.push(format!("{bps} bytes/s"));
    }
    if let Some(burst) = limit.burst {
        parts.push(format!("burst {burst}"));
    }
    format!("rate limit {} per {}", parts.join(", "), limit.per)
}

/// The rate limit that binds a burst probe offered at `rate` packets per second: the `rateLimit`
/// of the ingress rule that allowed the flow (the rule named by the explanation, which names the
/// destination's rule first), if it limits to at most `rate` packets per second, with the
/// datapath's ±5 % accuracy (a probe may give `ratePerSecond` as the rate it expects to pass,
/// i.e. the configured rate). A limit in bytes only cannot be compared with a packet rate and is
/// taken as binding.
pub fn binding_rate_limit(
    set: &PolicySet,
    explanation: &Explanation,
    rate: u64,
    ipv6: bool,
) -> Option<RateLimit> {
    let Some(RuleRef::Rule {
        policy,
        section: Section::Ingress,
        index,
    }) = &explanation.rule
    else {
        return None;
    };
    let found = set.policies.values().find(|p| p.key() == policy.key)?;
    let limit = found.ingress.as_ref()?.get(*index)?.rate_limit?;
    // The live runner sends UDP datagrams with 64-byte payloads: 92 IP bytes (112 over IPv6).
    let packet_bytes: u128 = if ipv6 { 112 } else { 92 };
    let packets_bind = limit
        .packets_per_second
        .is_some_and(|pps| u128::from(pps) * 20 <= u128::from(rate) * 21);
    let bytes_bind = limit
        .bytes_per_second
        .is_some_and(|bps| u128::from(bps) * 20 <= u128::from(rate) * packet_bytes * 21);
    (packets_bind || bytes_bind).then_some(limit)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(text: &str) -> Scenario {
        parse_scenario("t.yaml", text).unwrap_or_else(|e| panic!("invalid scenario:\n{e}"))
    }

    fn run(text: &str) -> Report {
        let mut report = Report::quiet();
        run_offline_into(&scenario(text), &mut report);
        report
    }

    fn outcomes(report: &Report) -> Vec<String> {
        report.results().iter().map(|r| r.got.to_string()).collect()
    }

    const TWO_NODES: &str = r"name: two nodes
nodes: [n1, n2]
workloads:
  - {name: a-0, service: a, node: n1, addresses: [10.10.1.1, 'fd00:10::1']}
  - {name: b-0, service: b, node: n2, addresses: [10.10.2.1, 'fd00:10::2']}
externals:
  - {name: ext, addresses: [198.51.100.7]}
steps:
  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {name: iso}
        spec:
          service: '*'
          ingress: []
          egress:
            - to: [{cidr: 10.255.0.2/32}, {cidr: 'fd00:255::1/128'}]
    probes:
      - {from: host, to: b-0, protocol: TCP, port: 80, expect: allow}
      - {from: host, to: a-0, protocol: ICMP, expect: allow, family: ipv6}
      - {from: b-0, to: host, protocol: ICMP, expect: allow}
      - {from: a-0, to: host, protocol: ICMP, expect: deny}
      - {from: a-0, to: host, protocol: ICMP, expect: allow, family: ipv6}
      - {from: b-0, to: host, protocol: ICMP, expect: deny, family: ipv6}
      - {from: ext, to: b-0, protocol: TCP, port: 80, expect: deny}
      - {from: ext, to: host, protocol: TCP, port: 80, expect: allow}
";

    #[test]
    fn host_is_the_node_of_the_other_end() {
        let s = scenario(TWO_NODES);
        let (flow, node) = probe_flow(&s, &s.steps[0].probes[0]).expect("flow");
        assert_eq!(flow.src, "10.255.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!(flow.dst, "10.10.2.1".parse::<IpAddr>().expect("ip"));
        assert_eq!((flow.protocol, flow.port, node), (6, 80, 1));
        let (flow, node) = probe_flow(&s, &s.steps[0].probes[1]).expect("flow");
        assert_eq!(flow.src, "fd00:255::1".parse::<IpAddr>().expect("ip"));
        assert_eq!((flow.protocol, flow.port, node), (58, 128, 0));
        let (flow, _) = probe_flow(&s, &s.steps[0].probes[2]).expect("flow");
        assert_eq!(flow.dst, "10.255.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!((flow.protocol, flow.port), (1, 8));
        let report = run(TWO_NODES);
        assert_eq!(report.failed(), 0, "{report}");
        assert_eq!(report.passed(), 8);
    }

    #[test]
    fn node_context_holds_own_addresses_only() {
        let s = scenario(TWO_NODES);
        let ctx = node_context(&s, 1);
        assert!(ctx
            .host_addresses
            .contains(&"10.255.0.2".parse().expect("ip")));
        assert!(!ctx
            .host_addresses
            .contains(&"10.255.0.1".parse().expect("ip")));
        assert!(ctx
            .host_addresses
            .contains(&"fd00:255::2".parse().expect("ip")));
        assert!(ctx
            .local_addresses
            .contains(&"10.10.2.1".parse().expect("ip")));
        assert!(!ctx
            .local_addresses
            .contains(&"10.10.1.1".parse().expect("ip")));
    }

    #[test]
    fn wrong_expectation_is_a_failure() {
        let text = TWO_NODES.replace(
            "{from: ext, to: b-0, protocol: TCP, port: 80, expect: deny}",
            "{from: ext, to: b-0, protocol: TCP, port: 80, expect: allow}",
        );
        let report = run(&text);
        assert_eq!(report.summary(), "7 passed, 1 failed");
        assert_eq!(report.exit_code(), 1);
        let failed: Vec<String> = report
            .results()
            .iter()
            .filter(|r| !r.passed())
            .map(ToString::to_string)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].starts_with(
                "FAIL  t.yaml:25  ext -> b-0 TCP/80 ipv4  expect=allow got=deny  (198.51.100.7 -> 10.10.2.1: default deny"
            ),
            "{}",
            failed[0]
        );
    }

    const STEPS: &str = r"name: steps
workloads:
  - {name: a-0, service: a, addresses: [10.10.1.1]}
  - {name: b-0, service: b, addresses: [10.10.2.1]}
steps:
  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {name: b-in}
        spec:
          service: b
          ingress:
            - from: [{service: a}]
              ports: [{port: 80}]
              rateLimit: {packetsPerSecond: 100, burst: 10}
    probes:
      - {from: a-0, to: b-0, port: 80, expect: allow}
      - {from: a-0, to: b-0, port: 80, expect: rate_limited, packets: 500, ratePerSecond: 100}
      - {from: a-0, to: b-0, port: 80, expect: rate_limited, packets: 500, ratePerSecond: 1000}
      - {from: a-0, to: b-0, port: 80, expect: rate_limited, packets: 500, ratePerSecond: 50}
      - {from: a-0, to: b-0, port: 81, expect: rate_limited, packets: 500, ratePerSecond: 100}
  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {name: b-audit}
        spec:
          service: b
          mode: audit
          ingressDeny: [{from: [{service: a}]}]
    probes:
      - {from: a-0, to: b-0, port: 80, expect: audit}
  - delete: [b-in, b-audit, nothing]
    probes:
      - {from: a-0, to: b-0, port: 81, expect: allow}
";

    #[test]
    fn steps_rate_limits_audit_and_delete() {
        let report = run(STEPS);
        assert_eq!(
            outcomes(&report),
            [
                "allow",
                "rate_limited",
                "rate_limited",
                "allow",
                "deny",
                "audit",
                "allow"
            ]
        );
        assert_eq!(report.results()[5].step, 1);
        // The two mismatching rate probes and the delete of an unknown name.
        assert_eq!(report.failed(), 3, "{report}");
        assert_eq!(report.errors().len(), 1);
        assert!(report.errors()[0].contains("t.yaml:32: steps[2]: delete \"nothing\""));
        assert!(report.results()[1]
            .detail
            .contains("rate limit 100 packets/s, burst 10 per source"));
    }

    #[test]
    fn rejected_apply_is_a_failure() {
        let text = r"name: clash
workloads:
  - {name: a-0, service: a, addresses: [10.10.1.1]}
steps:
  - apply:
      - apiVersion: enforcer/v1
        kind: Workload
        metadata: {name: other}
        spec: {service: x, addresses: [10.10.1.1]}
    probes:
      - {from: host, to: a-0, protocol: ICMP, expect: allow}
";
        let report = run(text);
        assert_eq!(report.summary(), "1 passed, 1 failed");
        assert!(report.errors()[0].contains("already held"), "{report}");
    }

    #[test]
    fn invalid_and_missing_files_are_failures() {
        let dir = std::env::temp_dir().join(format!("enforcer-offline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "name: x\nsteps: []\nbogus: 1\n").expect("write");
        let mut report = Report::quiet();
        run_files_offline_into(&[bad.clone(), dir.join("missing.yaml")], &mut report);
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(report.results().is_empty());
        assert!(report.failed() >= 3, "{report}");
        assert!(report.errors()[0].starts_with(&format!("{}:", bad.display())));
        assert_eq!(report.exit_code(), 1);
    }

    /// The contract scenarios of the repository (tests/scenarios/*.yaml) all pass offline.
    #[test]
    fn repository_scenarios_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("tests/scenarios")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 32, "only {} scenario files", paths.len());
        let mut report = Report::quiet();
        run_files_offline_into(&paths, &mut report);
        let failures: Vec<String> = report
            .results()
            .iter()
            .filter(|r| !r.passed())
            .map(ToString::to_string)
            .chain(report.errors().iter().cloned())
            .collect();
        assert!(
            failures.is_empty(),
            "{}\n{}",
            failures.join("\n"),
            report.summary()
        );
        assert!(report.passed() >= paths.len());
    }
}
