//! Each finding kind on a fixture that has it and one that does not; the side decisions
//! against `explain`; suppressions; SARIF structure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::classes::Classes;
use super::sides::for_each_side;
use super::usage::RuleUsage;
use super::*;
use crate::identity::{Party, View};
use crate::parse::parse_documents;
use crate::{explain, Flow, NodeContext, PolicySet, Verdict};

const WORKLOADS: &str = "
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.0.1.1]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.0.2.1], ports: [{name: http, containerPort: 8080, protocol: TCP}]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0, labels: {enforcer.dev/sensitive: 'true'}}
spec: {service: db, addresses: [10.0.3.1]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: base}
spec: {service: '*', ingress: []}
";

fn policy(name: &str, service: &str, body: &str) -> String {
    format!(
        "---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: {name}}}\nspec:\n  service: {service}\n{body}"
    )
}

fn set_of(text: &str) -> PolicySet {
    let docs = parse_documents("t.yaml", text).expect("fixture parses");
    PolicySet::from_documents(docs).expect("fixture is a set")
}

fn run(extra: &str) -> Vec<Finding> {
    lint(
        &set_of(&format!("{WORKLOADS}{extra}")),
        None,
        &LintConfig::default(),
    )
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

fn has(findings: &[Finding], check: Check, policy: &str) -> bool {
    findings
        .iter()
        .any(|f| f.id == check.code() && f.policy.as_deref() == Some(policy))
}

const WEB_8080: &str = "  ingress:\n    - from: [{service: web}]\n      ports: [{port: 8080}]\n";

#[test]
fn shadowed_rule() {
    let twice = format!(
        "{}{}",
        policy("a", "api", WEB_8080),
        policy("b", "api", WEB_8080)
    );
    let f = run(&twice);
    assert!(has(&f, Check::Shadowed, "b"), "{:?}", ids(&f));
    // The first one is not redundant: without it and the shadowed one, 8080 is denied.
    assert!(!has(&f, Check::Redundant, "a") && !has(&f, Check::Shadowed, "a"));
    let other = policy(
        "b",
        "api",
        "  ingress:\n    - from: [{service: web}]\n      ports: [{port: 9090}]\n",
    );
    let f = run(&format!("{}{other}", policy("a", "api", WEB_8080)));
    assert!(!has(&f, Check::Shadowed, "b") && !has(&f, Check::Shadowed, "a"));
    // A deny of everything from web shadows the allow.
    let deny = "  ingressDeny:\n    - from: [{service: web}]\n";
    let f = run(&format!(
        "{}{}",
        policy("a", "api", WEB_8080),
        policy("b", "api", deny)
    ));
    assert!(has(&f, Check::Shadowed, "a"));
}

#[test]
fn redundant_rule() {
    let all = "  ingress:\n    - from: [{service: web}]\n";
    let f = run(&format!(
        "{}{}",
        policy("a", "api", WEB_8080),
        policy("b", "api", all)
    ));
    assert!(has(&f, Check::Redundant, "a"), "{:?}", ids(&f));
    assert!(!has(&f, Check::Redundant, "b") && !has(&f, Check::Shadowed, "b"));
    let other = "  ingress:\n    - from: [{service: db}]\n";
    let f = run(&format!(
        "{}{}",
        policy("a", "api", WEB_8080),
        policy("b", "api", other)
    ));
    assert!(!has(&f, Check::Redundant, "a"));
    // A rate limit is not redundant: its bucket goes with it.
    let limited = "  ingress:\n    - from: [{service: web}]\n      ports: [{port: 8080}]\n      rateLimit: {packetsPerSecond: 10}\n";
    let f = run(&format!(
        "{}{}",
        policy("a", "api", limited),
        policy("b", "api", all)
    ));
    assert!(!has(&f, Check::Redundant, "a"));
}

#[test]
fn over_broad() {
    let f = run(&policy("a", "api", "  ingress: [{}]\n"));
    assert!(has(&f, Check::WorldAllPorts, "a"));
    let f = run(&policy("a", "api", "  ingress: [{ports: [{port: 443}]}]\n"));
    assert!(!has(&f, Check::WorldAllPorts, "a"));
    let star = "  ingress:\n    - from: [{service: '*'}]\n      ports: [{port: 5432}]\n";
    let f = run(&policy("a", "db", star));
    let hit = f.iter().find(|f| f.id == "EN011").expect("EN011");
    assert_eq!((hit.severity, hit.sensitive), (Severity::Error, true));
    assert_eq!(
        f[0].id,
        "EN011",
        "sensitive findings rank first: {:?}",
        ids(&f)
    );
    assert!(!has(
        &run(&policy("a", "api", star)),
        Check::WildcardIntoSensitive,
        "a"
    ));
    // A FlowPolicy with `sensitive: true` marks the services it selects as a label does.
    let marked = format!(
        "{}{}",
        policy("crown", "api", "  sensitive: true\n  ingress: []\n"),
        policy("a", "api", star)
    );
    let f = run(&marked);
    let hit = f.iter().find(|f| f.id == "EN011").expect("EN011 for api");
    assert_eq!((hit.severity, hit.sensitive), (Severity::Error, true));
    let unmarked = format!(
        "{}{}",
        policy("crown", "api", "  sensitive: false\n  ingress: []\n"),
        policy("a", "api", star)
    );
    assert!(!has(&run(&unmarked), Check::WildcardIntoSensitive, "a"));
    let cidr = |c: &str| {
        policy(
            "a",
            "api",
            &format!("  ingress:\n    - from: [{{cidr: {c}}}]\n      ports: [{{port: 443}}]\n"),
        )
    };
    assert!(has(&run(&cidr("8.0.0.0/6")), Check::WideCidr, "a"));
    assert!(!has(&run(&cidr("10.0.0.0/8")), Check::WideCidr, "a"));
    assert!(has(
        &run(&policy("a", "web", "  egress: [{}]\n")),
        Check::EgressWorldAllPorts,
        "a"
    ));
    let dns = "  egress: [{ports: [{protocol: UDP, port: 53}]}]\n";
    assert!(!has(
        &run(&policy("a", "web", dns)),
        Check::EgressWorldAllPorts,
        "a"
    ));
}

#[test]
fn exposure() {
    let public = "  ingress:\n    - from: [{cidr: 0.0.0.0/0}]\n      ports: [{port: 443}]\n";
    let f = run(&policy("a", "api", public));
    let hit = f.iter().find(|f| f.id == "EN020").expect("EN020");
    assert!(
        hit.message.contains("api") && hit.message.contains("TCP 443"),
        "{}",
        hit.message
    );
    assert!(!has(
        &run(&policy("a", "api", WEB_8080)),
        Check::ReachableFromOutside,
        "a"
    ));
    // No default deny: every workload is open, and the namespace has no default deny.
    let open = lint(
        &set_of(&WORKLOADS.replace("ingress: []", "egress: []")),
        None,
        &LintConfig::default(),
    );
    assert_eq!(
        open.iter().filter(|f| f.id == "EN021").count(),
        3,
        "{:?}",
        ids(&open)
    );
    assert!(open
        .iter()
        .any(|f| f.id == "EN021" && f.sensitive && f.severity == Severity::Error));
    assert!(open
        .iter()
        .any(|f| f.id == "EN022" && f.message.contains("default")));
    let closed = run("");
    assert!(
        !closed.iter().any(|f| f.id == "EN021" || f.id == "EN022"),
        "{:?}",
        ids(&closed)
    );
}

#[test]
fn dangling_references() {
    let f = run(&policy("a", "nope", WEB_8080));
    assert!(has(&f, Check::SelectsNoPod, "a") && !has(&f, Check::Shadowed, "a"));
    let ghost = "  ingress:\n    - from: [{service: ghost}]\n";
    let f = run(&policy("a", "api", ghost));
    assert!(has(&f, Check::PeerSelectsNoPod, "a") && !has(&f, Check::Shadowed, "a"));
    let named = |n: &str| {
        policy(
            "a",
            "api",
            &format!("  ingress:\n    - from: [{{service: web}}]\n      ports: [{{port: {n}}}]\n"),
        )
    };
    assert!(has(&run(&named("grpc")), Check::NamedPortUnresolved, "a"));
    assert!(!has(&run(&named("http")), Check::NamedPortUnresolved, "a"));
    let netpol = |ns: &str| {
        format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: {ns}}}\nspec: {{podSelector: {{}}}}\n")
    };
    assert!(has(
        &run(&netpol("ghost")),
        Check::UnknownNamespace,
        "ghost/np"
    ));
    let f = run(&netpol("default"));
    assert!(
        !has(&f, Check::UnknownNamespace, "default/np")
            && !has(&f, Check::SelectsNoPod, "default/np")
    );
}

#[test]
fn usage_findings() {
    let day = 86_400;
    let cfg = LintConfig {
        now: 100 * day,
        ..LintConfig::default()
    };
    let audit = policy(
        "a",
        "api",
        "  mode: audit\n  ingressDeny:\n    - from: [{service: web}]\n",
    );
    let set = set_of(&format!("{WORKLOADS}{audit}"));
    let usage = |first: u64, packets: u64, last: Option<u64>| Usage {
        rules: BTreeMap::from([(
            crate::RuleRef::Rule {
                policy: crate::PolicyId::parse(crate::document::Kind::FlowPolicy, "a"),
                section: crate::Section::IngressDeny,
                index: 0,
            },
            RuleUsage {
                packets,
                first_seen: Some(first),
                last_matched: last,
            },
        )]),
        policies: BTreeMap::from([("a".into(), first)]),
    };
    let old = lint(&set, Some(&usage(10 * day, 0, None)), &cfg);
    assert!(
        has(&old, Check::StaleAudit, "a") && has(&old, Check::Unused, "a"),
        "{:?}",
        ids(&old)
    );
    let young = lint(&set, Some(&usage(95 * day, 0, None)), &cfg);
    assert!(!has(&young, Check::StaleAudit, "a") && !has(&young, Check::Unused, "a"));
    assert!(has(&young, Check::DenyNeverMatched, "a"));
    let used = lint(&set, Some(&usage(10 * day, 5, Some(99 * day))), &cfg);
    assert!(!has(&used, Check::DenyNeverMatched, "a") && !has(&used, Check::Unused, "a"));
}

#[test]
fn no_inventory_is_said() {
    let f = lint(
        &set_of(&policy("a", "api", WEB_8080)),
        None,
        &LintConfig::default(),
    );
    assert!(f.iter().any(|f| f.id == "EN000"));
    assert!(!run("").iter().any(|f| f.id == "EN000"));
}

#[test]
fn suppressions() {
    let text = format!(
        "{WORKLOADS}{}",
        policy(
            "a",
            "api",
            "  # enforcer:ignore=EN010 public health endpoint\n  ingress: [{}]\n"
        )
    );
    let set = set_of(&text);
    let texts = BTreeMap::from([("t.yaml".to_string(), text.clone())]);
    let (kept, n) = suppress::apply(lint(&set, None, &LintConfig::default()), &texts);
    assert!(
        !kept.iter().any(|f| f.id == "EN010") && n >= 1,
        "{:?}",
        ids(&kept)
    );
    let bare = text.replace("EN010 public health endpoint", "EN010");
    let texts = BTreeMap::from([("t.yaml".to_string(), bare.clone())]);
    let (kept, _) = suppress::apply(lint(&set_of(&bare), None, &LintConfig::default()), &texts);
    assert!(kept.iter().any(|f| f.id == "EN010") && kept.iter().any(|f| f.id == "EN090"));
}

#[test]
fn sarif_structure() {
    let f = run(&policy("a", "api", "  ingress: [{}]\n"));
    let v = serde_json::to_value(sarif::log(&f)).expect("json");
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"]
        .as_str()
        .is_some_and(|s| s.contains("sarif-2.1.0")));
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), Check::ALL.len());
    assert!(run["tool"]["driver"]["name"].is_string());
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), f.len());
    for r in results {
        let index = usize::try_from(r["ruleIndex"].as_u64().expect("ruleIndex")).expect("index");
        assert_eq!(rules[index]["id"], r["ruleId"]);
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().expect("level")));
        assert!(r["message"]["text"].is_string());
        for l in r["locations"].as_array().into_iter().flatten() {
            let p = &l["physicalLocation"];
            assert_eq!(p["artifactLocation"]["uri"], "t.yaml");
            assert!(p["region"]["startLine"].as_u64().is_some_and(|n| n >= 1));
        }
    }
    let back: sarif::Log = serde_json::from_value(v).expect("round trip");
    assert_eq!(back.runs[0].results.len(), f.len());
}

/// The side decisions are the engine's: a flow between the world and each subject gets from
/// `explain` exactly the verdict of its point.
#[test]
fn sides_agree_with_explain() {
    let text = format!(
        "{WORKLOADS}{}{}{}",
        policy("a", "api", "  ingress:\n    - from: [{cidr: 10.0.0.0/8, except: [10.0.1.0/24]}]\n      ports: [{port: http}, {protocol: UDP, port: 50, endPort: 60}]\n"),
        policy("b", "api", "  mode: audit\n  ingressDeny:\n    - from: [{cidr: 10.0.0.0/16}]\n      ports: [{port: 55, protocol: UDP}]\n"),
        policy("c", "web", "  egress:\n    - to: [{cidr: 192.168.0.0/16}]\n  egressDeny:\n    - to: [{cidr: 192.168.1.0/24}]\n"),
    );
    let set = set_of(&text);
    let view = View::new(&set);
    let classes = Classes::new(&view);
    let ctx = NodeContext::default();
    let mut checked = 0;
    for_each_side(&view, &classes, |side| {
        if !matches!(side.peer.party, Party::World) {
            return;
        }
        let me: IpAddr = side.subject.addresses[0];
        for p in side.points.iter() {
            let (e, a) = side.decisions(p);
            let want = match (e.allow, a.allow) {
                (false, _) => Verdict::Deny,
                (true, false) => Verdict::Audit,
                (true, true) => Verdict::Allow,
            };
            for port in [p.low, p.high] {
                let (src, dst) = match side.dir {
                    crate::Direction::Ingress => (side.peer.addr, me),
                    crate::Direction::Egress => (me, side.peer.addr),
                };
                let flow = Flow {
                    src,
                    dst,
                    protocol: p.protocol,
                    port,
                };
                assert_eq!(explain(&set, &ctx, &flow).verdict, want, "{flow:?}");
                checked += 1;
            }
        }
    });
    assert!(checked > 50, "{checked}");
}
