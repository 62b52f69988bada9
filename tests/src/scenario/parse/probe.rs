//! One probe of a step: its two ends, protocol and port, expectation, family and rate fields.

use std::str::FromStr;

use enforcer_policy::yaml::{Ctx, MapReader, Node, Pos};
use enforcer_policy::Protocol;

use crate::scenario::model::{Endpoint, Expect, Family, Probe, Scenario, ScenarioWorkload, HOST};

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

pub(super) fn read_probe(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    scenario: &Scenario,
) -> Option<Probe> {
    let errors_before = ctx.errors.len();
    let p = ctx.map(node, None, path, PROBE_FIELDS)?;
    let from = read_end(ctx, &p, "from", scenario);
    let to = read_end(ctx, &p, "to", scenario);
    if let (Some((from, _)), Some((to, pos))) = (&from, &to) {
        if from == to {
            ctx.error(
                *pos,
                format!("{path}: from and to are the same endpoint {from:?}"),
            );
        }
    }
    let (protocol, port) = read_protocol_port(ctx, &p, path);
    let expect = p.required(ctx, "expect").and_then(|n| {
        let text = ctx.string(n, &p.child("expect"))?;
        Expect::from_str(&text)
            .map_err(|reason| ctx.error(n.pos, format!("{}: {reason}", p.child("expect"))))
            .ok()
    });
    let family = optional_text(ctx, &p, "family").map_or(Family::Ipv4, |(text, pos)| {
        Family::from_str(&text).unwrap_or_else(|reason| {
            ctx.error(pos, format!("{}: {reason}", p.child("family")));
            Family::Ipv4
        })
    });
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

/// The required end `key` (`from` or `to`) of a probe, by its canonical name.
fn read_end(ctx: &mut Ctx, p: &MapReader, key: &str, scenario: &Scenario) -> Option<(String, Pos)> {
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
}

/// The optional string `key` of a probe, with its position.
fn optional_text(ctx: &mut Ctx, p: &MapReader, key: &str) -> Option<(String, Pos)> {
    let n = p.optional(key)?;
    Some((ctx.string(n, &p.child(key))?, n.pos))
}

/// `protocol` (default TCP) and `port`: required for TCP and UDP, refused for ICMP.
fn read_protocol_port(ctx: &mut Ctx, p: &MapReader, path: &str) -> (Protocol, Option<u16>) {
    let protocol = optional_text(ctx, p, "protocol").map_or(Protocol::Tcp, |(text, pos)| {
        Protocol::from_str(&text).unwrap_or_else(|reason| {
            ctx.error(pos, format!("{}: {reason}", p.child("protocol")));
            Protocol::Tcp
        })
    });
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
    (protocol, port)
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
