//! Strict parser of scenario files; errors carry file, line and column like policy errors.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use super::model::{
    Endpoint, Expect, External, Family, Probe, Scenario, ScenarioWorkload, Step, HOST,
};
use crate::policy::document::Kind;
use crate::policy::labels::{check_labels, Labels};
use crate::policy::model::{
    Namespace, PolicyError, PolicyErrors, Protocol, Source, DEFAULT_NAMESPACE,
};
use crate::policy::parse::{read_addresses, read_documents, read_name, read_named_ports};
use crate::policy::set::Selector;
use crate::policy::yaml::{self, Ctx, MapReader, Node, Pos, Value};

const SCENARIO_FIELDS: &[&str] = &[
    "name",
    "nodes",
    "namespaces",
    "workloads",
    "externals",
    "steps",
];
const WORKLOAD_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "service",
    "ports",
    "node",
    "addresses",
];
const EXTERNAL_FIELDS: &[&str] = &["name", "addresses"];
const STEP_FIELDS: &[&str] = &["apply", "delete", "probes"];
const PROBE_FIELDS: &[&str] = &[
    "from",
    "to",
    "protocol",
    "port",
    "expect",
    "family",
    "packets",
    "ratePerSecond",
    "admittedPerSecond",
];

/// Parses one scenario file.
pub fn parse_scenario(file: &str, text: &str) -> Result<Scenario, PolicyErrors> {
    let nodes = yaml::load(file, text)?;
    let mut ctx = Ctx::new(file);
    let mut documents = nodes.iter().filter(|n| !n.is_null());
    let Some(root) = documents.next() else {
        return Err(PolicyError::new(file, 1, 1, "empty scenario file").into());
    };
    if let Some(extra) = documents.next() {
        ctx.error(extra.pos, "a scenario file holds exactly one YAML document");
    }
    let scenario = read_scenario(&mut ctx, root);
    match ctx.finish(scenario)? {
        Some(scenario) => Ok(scenario),
        None => {
            Err(PolicyError::new(file, root.pos.line, root.pos.column, "invalid scenario").into())
        }
    }
}

fn read_scenario(ctx: &mut Ctx, root: &Node) -> Option<Scenario> {
    let map = ctx.map(root, None, "", SCENARIO_FIELDS)?;
    let name = map
        .required(ctx, "name")
        .and_then(|n| ctx.non_empty_string(n, "name"));
    let nodes = read_nodes(ctx, &map);
    let namespaces = read_namespaces(ctx, &map);
    let mut names: BTreeMap<String, Pos> = BTreeMap::new();
    let mut addresses: BTreeMap<IpAddr, (String, Pos)> = BTreeMap::new();
    let workloads = read_workloads(ctx, &map, nodes.as_deref(), &mut names, &mut addresses);
    let externals = read_externals(ctx, &map, &mut names, &mut addresses);
    let mut scenario = Scenario {
        name: name.unwrap_or_default(),
        nodes: nodes.unwrap_or_default(),
        namespaces,
        workloads,
        externals,
        steps: Vec::new(),
        source: Source {
            file: ctx.file.to_string(),
            line: root.pos.line,
        },
    };
    scenario.steps = read_steps(ctx, &map, &scenario);
    Some(scenario)
}

fn read_nodes(ctx: &mut Ctx, map: &MapReader) -> Option<Vec<String>> {
    let Some(node) = map.optional("nodes") else {
        return Some(vec!["n1".to_string()]);
    };
    let items = ctx.seq(node, "nodes")?;
    if items.is_empty() {
        ctx.error(node.pos, "nodes must list at least one node");
        return None;
    }
    let mut nodes: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = read_name(ctx, item, &format!("nodes[{i}]")) else {
            continue;
        };
        if nodes.contains(&name) {
            ctx.error(item.pos, format!("duplicate node {name:?}"));
        } else {
            nodes.push(name);
        }
    }
    Some(nodes)
}

/// `namespaces: [{name, labels}]`.
fn read_namespaces(ctx: &mut Ctx, map: &MapReader) -> Vec<Namespace> {
    let mut out: Vec<Namespace> = Vec::new();
    let Some(items) = map
        .optional("namespaces")
        .and_then(|n| ctx.seq(n, "namespaces"))
    else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("namespaces[{i}]");
        let Some(m) = ctx.map(item, None, &path, &["name", "labels"]) else {
            continue;
        };
        let name = m
            .required(ctx, "name")
            .and_then(|n| read_name(ctx, n, &m.child("name")));
        let labels = read_labels(ctx, &m);
        if let (Some(name), Some(labels)) = (name, labels) {
            if out.iter().any(|n| n.name == name) {
                ctx.error(item.pos, format!("duplicate namespace {name:?}"));
                continue;
            }
            out.push(Namespace {
                name,
                labels,
                source: Source {
                    file: ctx.file.to_string(),
                    line: item.pos.line,
                },
            });
        }
    }
    out
}

/// Optional `labels: {key: value}`.
fn read_labels(ctx: &mut Ctx, m: &MapReader) -> Option<Labels> {
    let Some(n) = m.optional("labels") else {
        return Some(Labels::new());
    };
    let labels: Labels = ctx.string_map(n, &m.child("labels"))?.into_iter().collect();
    if let Err(reason) = check_labels(&labels) {
        ctx.error(n.pos, format!("{}: {reason}", m.child("labels")));
        return None;
    }
    Some(labels)
}

/// Records an endpoint name, reporting `host` and duplicates.
fn claim_name(ctx: &mut Ctx, names: &mut BTreeMap<String, Pos>, name: &str, pos: Pos) {
    if name == HOST {
        ctx.error(
            pos,
            format!("the name {HOST:?} is reserved for the node itself"),
        );
    } else if let Some(first) = names.get(name) {
        ctx.error(
            pos,
            format!(
                "duplicate workload/external name {name:?} (first defined at line {})",
                first.line
            ),
        );
    } else {
        names.insert(name.to_string(), pos);
    }
}

/// Records the addresses of an endpoint, reporting an address held twice.
fn claim_addresses(
    ctx: &mut Ctx,
    addresses: &mut BTreeMap<IpAddr, (String, Pos)>,
    owner: &str,
    list: &[IpAddr],
    pos: Pos,
) {
    for addr in list {
        if let Some((other, first)) = addresses.get(addr) {
            ctx.error(
                pos,
                format!(
                    "address {addr} of {owner:?} is already held by {other:?} (line {})",
                    first.line
                ),
            );
        } else {
            addresses.insert(*addr, (owner.to_string(), pos));
        }
    }
}

fn read_workloads(
    ctx: &mut Ctx,
    map: &MapReader,
    nodes: Option<&[String]>,
    names: &mut BTreeMap<String, Pos>,
    addresses: &mut BTreeMap<IpAddr, (String, Pos)>,
) -> Vec<ScenarioWorkload> {
    let mut workloads = Vec::new();
    let Some(node) = map.optional("workloads") else {
        return workloads;
    };
    let Some(items) = ctx.seq(node, "workloads") else {
        return workloads;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("workloads[{i}]");
        let Some(w) = ctx.map(item, None, &path, WORKLOAD_FIELDS) else {
            continue;
        };
        let namespace = match w.optional("namespace") {
            None => Some(DEFAULT_NAMESPACE.to_string()),
            Some(n) => read_name(ctx, n, &w.child("namespace")),
        };
        let name = w.required(ctx, "name").and_then(|n| {
            let name = read_name(ctx, n, &w.child("name"))?;
            let full = match namespace.as_deref() {
                Some(DEFAULT_NAMESPACE) | None => name.clone(),
                Some(ns) => format!("{ns}/{name}"),
            };
            claim_name(ctx, names, &full, n.pos);
            Some(name)
        });
        let labels = read_labels(ctx, &w);
        // The service is optional when labels name the workload.
        let service_node = if labels.as_ref().is_some_and(|l| !l.is_empty()) {
            w.optional("service")
        } else {
            w.required(ctx, "service")
        };
        let service = service_node.map(|n| {
            if matches!(&n.value, Value::Str(s) if s == "*") {
                ctx.error(
                    n.pos,
                    format!("{} must name one service, not \"*\"", w.child("service")),
                );
                return None;
            }
            read_name(ctx, n, &w.child("service"))
        });
        let ports = read_named_ports(ctx, &w, "ports");
        let node_name = match (w.optional("node"), nodes) {
            (None, Some(nodes)) => nodes.first().cloned(),
            (None, None) => None,
            (Some(n), nodes) => read_name(ctx, n, &w.child("node")).and_then(|name| {
                if nodes.is_some_and(|nodes| !nodes.contains(&name)) {
                    ctx.error(n.pos, format!("unknown node {name:?} (not in nodes)"));
                    return None;
                }
                Some(name)
            }),
        };
        let addrs = read_addresses(ctx, &w, "addresses");
        if let (Some(name), Some(addrs)) = (&name, &addrs) {
            claim_addresses(ctx, addresses, name, addrs, item.pos);
        }
        let service = match service {
            Some(None) => continue,
            Some(Some(s)) => Some(s),
            None => None,
        };
        if let (Some(name), Some(namespace), Some(labels), Some(ports), Some(node), Some(addrs)) =
            (name, namespace, labels, ports, node_name, addrs)
        {
            workloads.push(ScenarioWorkload {
                name,
                namespace,
                labels,
                service,
                ports,
                node,
                addresses: addrs,
                line: item.pos.line,
            });
        }
    }
    workloads
}

fn read_externals(
    ctx: &mut Ctx,
    map: &MapReader,
    names: &mut BTreeMap<String, Pos>,
    addresses: &mut BTreeMap<IpAddr, (String, Pos)>,
) -> Vec<External> {
    let mut externals = Vec::new();
    let Some(node) = map.optional("externals") else {
        return externals;
    };
    let Some(items) = ctx.seq(node, "externals") else {
        return externals;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("externals[{i}]");
        let Some(e) = ctx.map(item, None, &path, EXTERNAL_FIELDS) else {
            continue;
        };
        let name = e.required(ctx, "name").and_then(|n| {
            let name = read_name(ctx, n, &e.child("name"))?;
            claim_name(ctx, names, &name, n.pos);
            Some(name)
        });
        let addrs = read_addresses(ctx, &e, "addresses");
        if let (Some(name), Some(addrs)) = (name, addrs) {
            claim_addresses(ctx, addresses, &name, &addrs, item.pos);
            externals.push(External {
                name,
                addresses: addrs,
                line: item.pos.line,
            });
        }
    }
    externals
}

fn read_steps(ctx: &mut Ctx, map: &MapReader, scenario: &Scenario) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(node) = map.required(ctx, "steps") else {
        return steps;
    };
    let Some(items) = ctx.seq(node, "steps") else {
        return steps;
    };
    if items.is_empty() {
        ctx.error(node.pos, "steps must list at least one step");
    }
    for (i, item) in items.iter().enumerate() {
        let path = format!("steps[{i}]");
        let Some(s) = ctx.map(item, None, &path, STEP_FIELDS) else {
            continue;
        };
        let mut step = Step {
            line: item.pos.line,
            ..Step::default()
        };
        if let Some(n) = s.optional("apply") {
            if let Some(docs) = ctx.seq(n, &s.child("apply")) {
                step.apply = read_documents(ctx, docs);
            }
        }
        if let Some(n) = s.optional("delete") {
            let delete_path = s.child("delete");
            if let Some(names) = ctx.seq(n, &delete_path) {
                step.delete = names
                    .iter()
                    .enumerate()
                    .filter_map(|(j, n)| read_delete(ctx, n, &format!("{delete_path}[{j}]")))
                    .collect();
            }
        }
        if let Some(n) = s.optional("probes") {
            let probes_path = s.child("probes");
            if let Some(probes) = ctx.seq(n, &probes_path) {
                step.probes = probes
                    .iter()
                    .enumerate()
                    .filter_map(|(j, n)| {
                        read_probe(ctx, n, &format!("{probes_path}[{j}]"), scenario)
                    })
                    .collect();
            }
        }
        steps.push(step);
    }
    steps
}

/// A `delete` entry: a plain name, or `{kind, namespace, name}`.
fn read_delete(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Selector> {
    if matches!(node.value, Value::Str(_)) {
        return Some(Selector {
            name: read_name(ctx, node, path)?,
            kind: None,
            namespace: None,
        });
    }
    let m = ctx.map(node, None, path, &["kind", "namespace", "name"])?;
    let name = m
        .required(ctx, "name")
        .and_then(|n| read_name(ctx, n, &m.child("name")));
    let kind = match m.optional("kind") {
        None => Some(None),
        Some(n) => ctx.string(n, &m.child("kind")).and_then(|k| {
            k.parse::<Kind>()
                .map(Some)
                .map_err(|e| ctx.error(n.pos, format!("{}: {e}", m.child("kind"))))
                .ok()
        }),
    };
    let namespace = match m.optional("namespace") {
        None => Some(None),
        Some(n) => read_name(ctx, n, &m.child("namespace")).map(Some),
    };
    Some(Selector {
        name: name?,
        kind: kind?,
        namespace: namespace?,
    })
}

/// The canonical name of a probe endpoint: `NAMESPACE/NAME` names a workload (written `NAME` in
/// the default namespace); a plain name is a workload of the default namespace, the only
/// workload of that name, an external or `host`.
fn endpoint_name(scenario: &Scenario, name: &str) -> Option<String> {
    if let Some((ns, n)) = name.split_once('/') {
        return scenario
            .workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == n)
            .map(ScenarioWorkload::endpoint_name);
    }
    if scenario.endpoint(name).is_some() {
        return Some(name.to_string());
    }
    let mut same = scenario.workloads.iter().filter(|w| w.name == name);
    match (same.next(), same.next()) {
        (Some(w), None) => Some(w.endpoint_name()),
        _ => None,
    }
}

fn read_probe(ctx: &mut Ctx, node: &Node, path: &str, scenario: &Scenario) -> Option<Probe> {
    let errors_before = ctx.errors.len();
    let p = ctx.map(node, None, path, PROBE_FIELDS)?;
    let endpoint = |ctx: &mut Ctx, key: &str| -> Option<(String, Pos)> {
        let n = p.required(ctx, key)?;
        let what = p.child(key);
        let name = ctx.non_empty_string(n, &what)?;
        let Some(name) = endpoint_name(scenario, &name) else {
            ctx.error(
                n.pos,
                format!("{what}: unknown endpoint {name:?} (expected a workload, NAMESPACE/NAME, an external or {HOST})"),
            );
            return None;
        };
        Some((name, n.pos))
    };
    let from = endpoint(ctx, "from");
    let to = endpoint(ctx, "to");
    if let (Some((from, _)), Some((to, pos))) = (&from, &to) {
        if from == to {
            ctx.error(
                *pos,
                format!("{path}: from and to are the same endpoint {from:?}"),
            );
        }
    }
    let parsed = |ctx: &mut Ctx, key: &str| -> Option<(String, Pos)> {
        let n = p.optional(key)?;
        Some((ctx.string(n, &p.child(key))?, n.pos))
    };
    let protocol = match parsed(ctx, "protocol") {
        None => Protocol::Tcp,
        Some((text, pos)) => Protocol::from_str(&text).unwrap_or_else(|reason| {
            ctx.error(pos, format!("{}: {reason}", p.child("protocol")));
            Protocol::Tcp
        }),
    };
    let port = match p.optional("port") {
        None => None,
        Some(n) => ctx
            .int(n, &p.child("port"), 1, 65535)
            .and_then(|i| u16::try_from(i).ok()),
    };
    if protocol.has_ports() && p.optional("port").is_none() {
        ctx.error(
            p.anchor(),
            format!("{path}: a {protocol} probe needs a port"),
        );
    }
    if !protocol.has_ports() {
        if let Some((key, _)) = p.entry("port") {
            ctx.error(key.pos, format!("{path}: an ICMP probe has no port"));
        }
    }
    let expect = p.required(ctx, "expect").and_then(|n| {
        let text = ctx.string(n, &p.child("expect"))?;
        Expect::from_str(&text)
            .map_err(|reason| ctx.error(n.pos, format!("{}: {reason}", p.child("expect"))))
            .ok()
    });
    let family = match parsed(ctx, "family") {
        None => Family::Ipv4,
        Some((text, pos)) => Family::from_str(&text).unwrap_or_else(|reason| {
            ctx.error(pos, format!("{}: {reason}", p.child("family")));
            Family::Ipv4
        }),
    };
    for (name, pos) in [&from, &to].into_iter().flatten() {
        if let Some(end) = scenario.endpoint(name) {
            if !matches!(end, Endpoint::Host) && end.address(family).is_none() {
                ctx.error(*pos, format!("{name:?} has no {family} address"));
            }
        }
    }
    let (packets, rate) = read_rate_fields(ctx, &p, path, expect);
    let admitted = read_admitted(ctx, &p, path, expect);
    if ctx.errors.len() != errors_before {
        return None;
    }
    Some(Probe {
        from: from?.0,
        to: to?.0,
        protocol,
        port,
        expect: expect?,
        family,
        packets,
        rate_per_second: rate,
        admitted_per_second: admitted,
        line: node.pos.line,
    })
}

/// `admittedPerSecond` of a probe: the rate a `rate_limited` probe expects to get through (only
/// allowed there).
fn read_admitted(ctx: &mut Ctx, p: &MapReader, path: &str, expect: Option<Expect>) -> Option<u64> {
    let (key, n) = p.entry("admittedPerSecond")?;
    if expect != Some(Expect::RateLimited) {
        ctx.error(
            key.pos,
            format!("{path}: `admittedPerSecond` is only for `expect: rate_limited`"),
        );
    }
    ctx.int(n, &p.child("admittedPerSecond"), 1, i128::from(u64::MAX))
        .and_then(|i| u64::try_from(i).ok())
}

/// `packets` and `ratePerSecond` of a probe (both required for `rate_limited`).
fn read_rate_fields(
    ctx: &mut Ctx,
    p: &MapReader,
    path: &str,
    expect: Option<Expect>,
) -> (Option<u32>, Option<u64>) {
    let packets = p.optional("packets").and_then(|n| {
        ctx.int(n, &p.child("packets"), 1, i128::from(u32::MAX))
            .and_then(|i| u32::try_from(i).ok())
    });
    let rate = p.optional("ratePerSecond").and_then(|n| {
        ctx.int(n, &p.child("ratePerSecond"), 1, i128::from(u64::MAX))
            .and_then(|i| u64::try_from(i).ok())
    });
    // A rate probe (packets sent at a rate) needs both; `expect: rate_limited` needs a rate probe,
    // and any other expectation may use one too (e.g. `allow`: a load under the limit passes).
    let is_rate_probe = p.entry("packets").is_some() || p.entry("ratePerSecond").is_some();
    if expect == Some(Expect::RateLimited) || is_rate_probe {
        for key in ["packets", "ratePerSecond"] {
            if p.entry(key).is_none() {
                let what = if expect == Some(Expect::RateLimited) {
                    "a rate_limited probe"
                } else {
                    "a rate probe"
                };
                ctx.error(p.anchor(), format!("{path}: {what} needs `{key}`"));
            }
        }
    }
    (packets, rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Document, Mode};

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
        rejects("name: t\nworkloads:\n  - {name: a, service: s, addresses: [10.0.0.0/24]}\nsteps: [{}]\n", 3, "not a CIDR");
        rejects(
            "name: t\nworkloads:\n  - {name: a, service: s, addresses: []}\nsteps: [{}]\n",
            3,
            "at least one",
        );
        rejects("name: t\nworkloads:\n  - {name: a, service: '*', addresses: [10.0.0.1]}\nsteps: [{}]\n", 3, "not \"*\"");
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
        rejects("name: t\nworkloads:\n  - {name: host, service: s, addresses: [10.0.0.1]}\nsteps: [{}]\n", 3, "reserved");
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
}
