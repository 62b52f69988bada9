//! Scenario-file parsing: the documented example, defaults and every rejection.

use enforcer_policy::{Document, Mode, PolicyErrors, Protocol};

use super::*;
use crate::scenario::model::{Endpoint, Expect, Family, HOST};

const EXAMPLE: &str = r"name: web can reach api on 8080 only
nodes: [n1, n2]                       # optional, default [n1]
workloads:
  - {name: web-0, service: web, node: n1, addresses: [10.10.1.10]}
  - {name: api-0, service: api, node: n2, addresses: [10.10.2.10]}
externals:                            # optional hosts outside the cluster (world)
  - {name: ext, addresses: [198.51.100.7]}
steps:
  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {name: api-ingress}
        spec:
          service: api
          ingress:
            - from: [{service: web}]
              ports: [{protocol: TCP, port: 8080}]
    delete: [old-policy]              # optional
    probes:
      - {from: web-0, to: api-0, protocol: TCP, port: 8080, expect: allow}
      - {from: ext, to: api-0, protocol: UDP, port: 53, expect: deny}
      - {from: host, to: api-0, protocol: ICMP, expect: allow}
";

fn parse(text: &str) -> Result<Scenario, PolicyErrors> {
    parse_scenario("s.yaml", text)
}

#[track_caller]
fn rejects(text: &str, line: usize, needle: &str) {
    let errors = match parse(text) {
        Ok(s) => panic!("accepted: {s:?}\n{text}"),
        Err(errors) => errors,
    };
    assert!(
        errors
            .iter()
            .any(|e| e.line == line && e.file == "s.yaml" && e.reason.contains(needle)),
        "expected an error at line {line} containing {needle:?}, got:\n{errors}"
    );
}

/// A scenario with one step whose probes are `probes` (indented list items).
fn with_probes(probes: &str) -> String {
    format!(
            "name: t\nworkloads:\n  - {{name: a, service: sa, addresses: [10.0.0.1, 'fd00::1']}}\n  - {{name: b, service: sb, addresses: [10.0.0.2]}}\nsteps:\n  - probes:\n{probes}"
        )
}

#[test]
fn design_example_parses() {
    let s = parse(EXAMPLE).expect("valid");
    assert_eq!(s.name, "web can reach api on 8080 only");
    assert_eq!(s.nodes, vec!["n1", "n2"]);
    assert_eq!(s.workloads.len(), 2);
    assert_eq!(s.workloads[1].node, "n2");
    assert_eq!(s.workloads[1].line, 5);
    assert_eq!(s.externals[0].name, "ext");
    assert_eq!(s.steps.len(), 1);
    let step = &s.steps[0];
    assert_eq!(step.line, 9);
    assert_eq!(step.delete[0].name, "old-policy");
    let Document::FlowPolicy(p) = &step.apply[0] else {
        panic!("policy")
    };
    assert_eq!(p.name, "api-ingress");
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(
        p.source,
        Source {
            file: "s.yaml".into(),
            line: 10
        }
    );
    assert_eq!(p.ingress.as_ref().expect("ingress")[0].line, 16);
    let probes = &step.probes;
    assert_eq!(probes.len(), 3);
    assert_eq!(probes[0].line, 20);
    assert_eq!(probes[0].port, Some(8080));
    assert_eq!(probes[0].expect, Expect::Allow);
    assert_eq!(probes[0].family, Family::Ipv4);
    assert_eq!(probes[1].protocol, Protocol::Udp);
    assert_eq!(probes[1].expect, Expect::Deny);
    assert_eq!(probes[2].from, HOST);
    assert_eq!(probes[2].protocol, Protocol::Icmp);
    assert_eq!(probes[2].port, None);
    assert_eq!(probes[2].line, 22);
    assert_eq!(
        probes[0].to_string(),
        "web-0 -> api-0 TCP/8080 expect allow"
    );
    assert_eq!(s.probes().count(), 3);
    assert!(matches!(s.endpoint("ext"), Some(Endpoint::External(_))));
    assert_eq!(
        s.endpoint("web-0").and_then(|e| e.address(Family::Ipv4)),
        Some("10.10.1.10".parse().expect("ip"))
    );

    let docs = s.workload_documents();
    assert_eq!(docs.len(), 2);
    let Document::Workload(w) = &docs[0] else {
        panic!("workload")
    };
    assert_eq!(w.name, "web-0");
    assert_eq!(w.service.as_deref(), Some("web"));
    assert_eq!(
        w.source,
        Source {
            file: "s.yaml".into(),
            line: 4
        }
    );
}

#[test]
fn defaults() {
    let s = parse(&with_probes(
            "      - {from: a, to: b, port: 80, expect: audit}\n      - {from: b, to: a, protocol: udp, port: 53, expect: rate_limited, packets: 100, ratePerSecond: 10, admittedPerSecond: 5, family: ipv4}\n",
        ))
        .expect("valid");
    assert_eq!(s.nodes, vec!["n1"]);
    assert_eq!(s.workloads[0].node, "n1");
    assert!(s.externals.is_empty());
    let probes = &s.steps[0].probes;
    assert_eq!(probes[0].protocol, Protocol::Tcp);
    assert_eq!(probes[0].expect, Expect::Audit);
    assert_eq!(probes[1].expect, Expect::RateLimited);
    assert_eq!(probes[1].packets, Some(100));
    assert_eq!(probes[1].rate_per_second, Some(10));
    assert_eq!(probes[1].admitted_per_second, Some(5));
    assert_eq!(probes[0].admitted_per_second, None);
    let s = parse(&with_probes(
        "      - {from: host, to: a, protocol: ICMP, expect: allow, family: ipv6}\n",
    ))
    .expect("valid");
    assert_eq!(s.steps[0].probes[0].family, Family::Ipv6);
}

#[test]
fn rejects_bad_probes() {
    rejects(
        &with_probes("      - {from: a, to: nobody, port: 80, expect: allow}\n"),
        7,
        "unknown endpoint \"nobody\"",
    );
    rejects(
        &with_probes("      - {from: ghost, to: b, port: 80, expect: allow}\n"),
        7,
        "unknown endpoint",
    );
    rejects(
        &with_probes("      - {from: a, to: b, expect: allow}\n"),
        7,
        "needs a port",
    );
    rejects(
        &with_probes("      - {from: a, to: b, protocol: UDP, expect: allow}\n"),
        7,
        "needs a port",
    );
    rejects(
        &with_probes("      - {from: a, to: b, protocol: ICMP, port: 1, expect: allow}\n"),
        7,
        "has no port",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80, expect: maybe}\n"),
        7,
        "invalid expect",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80}\n"),
        7,
        "missing required field `expect`",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 70000, expect: allow}\n"),
        7,
        "out of range",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80, expect: allow, timeout: 3}\n"),
        7,
        "unknown field `timeout`",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80, expect: allow, family: ipv5}\n"),
        7,
        "invalid family",
    );
    rejects(
        &with_probes("      - {from: b, to: a, port: 80, expect: allow, family: ipv6}\n"),
        7,
        "\"b\" has no ipv6 address",
    );
    rejects(
        &with_probes("      - {from: a, to: b, protocol: GRE, expect: allow}\n"),
        7,
        "unknown protocol",
    );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80, expect: rate_limited, packets: 10}\n"),
        7,
        "needs `ratePerSecond`",
    );
    rejects(
            &with_probes("      - {from: a, to: b, port: 80, expect: allow, packets: 10, ratePerSecond: 10, admittedPerSecond: 5}\n"),
            7,
            "`admittedPerSecond` is only for `expect: rate_limited`",
        );
    rejects(
            &with_probes("      - {from: a, to: b, port: 80, expect: rate_limited, packets: 10, ratePerSecond: 10, admittedPerSecond: 0}\n"),
            7,
            "out of range",
        );
    rejects(
        &with_probes("      - {from: a, to: b, port: 80, expect: allow, ratePerSecond: 10}\n"),
        7,
        "a rate probe needs `packets`",
    );
    rejects(&with_probes("      - {from: a, to: b, port: 80, expect: rate_limited, packets: 0, ratePerSecond: 5}\n"), 7, "out of range");
    rejects(
        &with_probes("      - {from: a, to: a, port: 80, expect: allow}\n"),
        7,
        "the same endpoint",
    );
    rejects(
        &with_probes("      - {to: b, port: 80, expect: allow}\n"),
        7,
        "missing required field `from`",
    );
}

#[test]
fn rejects_bad_topology() {
    rejects(
        "name: t\nworkloads: []\nsteps: []\nextra: 1\n",
        4,
        "unknown field `extra`",
    );
    rejects(
        "workloads: []\nsteps: [{}]\n",
        1,
        "missing required field `name`",
    );
    assert!(parse("name: t\nsteps: [{}]\n")
        .expect("valid")
        .workloads
        .is_empty());
    rejects(
        "name: t\nworkloads: []\n",
        1,
        "missing required field `steps`",
    );
    rejects(
        "name: t\nworkloads: []\nsteps: []\n",
        3,
        "at least one step",
    );
    rejects(
        "name: t\nnodes: []\nworkloads: []\nsteps: [{}]\n",
        2,
        "at least one node",
    );
    rejects(
        "name: t\nnodes: [n1, n1]\nworkloads: []\nsteps: [{}]\n",
        2,
        "duplicate node",
    );
    rejects("name: t\nworkloads:\n  - {name: a, service: s, node: n9, addresses: [10.0.0.1]}\nsteps: [{}]\n", 3, "unknown node \"n9\"");
    rejects("name: t\nworkloads:\n  - {name: a, service: s, addresses: [10.0.0.1], zone: z}\nsteps: [{}]\n", 3, "unknown field `zone`");
    rejects(
        "name: t\nworkloads:\n  - {name: a, service: s, addresses: [10.0.0.0/24]}\nsteps: [{}]\n",
        3,
        "not a CIDR",
    );
    rejects(
        "name: t\nworkloads:\n  - {name: a, service: s, addresses: []}\nsteps: [{}]\n",
        3,
        "at least one",
    );
    rejects(
        "name: t\nworkloads:\n  - {name: a, service: '*', addresses: [10.0.0.1]}\nsteps: [{}]\n",
        3,
        "not \"*\"",
    );
    rejects(
        "name: t\nworkloads:\n  - {name: a, addresses: [10.0.0.1]}\nsteps: [{}]\n",
        3,
        "missing required field `service`",
    );
    rejects(
            "name: t\nworkloads:\n  - {name: a, service: s, addresses: [10.0.0.1]}\n  - {name: a, service: s, addresses: [10.0.0.2]}\nsteps: [{}]\n",
            4,
            "duplicate workload/external name \"a\"",
        );
    rejects(
            "name: t\nworkloads:\n  - {name: a, service: s, addresses: [10.0.0.1]}\nexternals:\n  - {name: e, addresses: [10.0.0.1]}\nsteps: [{}]\n",
            5,
            "already held by \"a\"",
        );
    rejects(
        "name: t\nworkloads:\n  - {name: host, service: s, addresses: [10.0.0.1]}\nsteps: [{}]\n",
        3,
        "reserved",
    );
    rejects("name: t\nworkloads: []\nexternals:\n  - {name: e, addresses: [10.0.0.1], node: n1}\nsteps: [{}]\n", 4, "unknown field `node`");
    rejects(
        "name: t\nworkloads: []\nsteps:\n  - {sleep: 1}\n",
        4,
        "unknown field `sleep`",
    );
    rejects(
        "name: t\nworkloads: []\nsteps:\n  - delete: [a b]\n",
        4,
        "invalid steps[0].delete[0]",
    );
    rejects("name: t\nworkloads: [}\n", 2, "invalid YAML");
    rejects("", 1, "empty scenario");
    rejects(
        "name: t\nworkloads: []\nsteps: [{}]\n---\nname: u\n",
        5,
        "exactly one",
    );
}

#[test]
fn rejects_bad_applied_documents_with_scenario_lines() {
    let text = "name: t\nworkloads: []\nsteps:\n  - apply:\n      - apiVersion: enforcer/v1\n        kind: FlowPolicy\n        metadata: {name: p}\n        spec:\n          service: api\n          ingress:\n            - from: [{cidr: 10.0.0.1/8}]\n";
    rejects(text, 11, "host bits set");
    let text = "name: t\nworkloads: []\nsteps:\n  - apply:\n      - apiVersion: enforcer/v1\n        kind: FlowPolicy\n        metadata: {name: p}\n        spec: {service: a}\n      - apiVersion: enforcer/v1\n        kind: FlowPolicy\n        metadata: {name: p}\n        spec: {service: b}\n";
    rejects(text, 11, "duplicate FlowPolicy name");
    let text = "name: t\nworkloads: []\nsteps:\n  - apply:\n      - apiVersion: enforcer/v1\n        kind: Workload\n        metadata: {name: w}\n        spec: {service: a, addresses: [10.0.0.1]}\n";
    let s = parse(text).expect("valid");
    assert!(matches!(&s.steps[0].apply[0], Document::Workload(w) if w.source.line == 5));
    rejects(
        "name: t\nworkloads: []\nsteps:\n  - apply: {kind: FlowPolicy}\n",
        4,
        "must be a list",
    );
}
