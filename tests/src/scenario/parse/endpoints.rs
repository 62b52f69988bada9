//! `workloads:` and `externals:`: each name and address held once across both.

use std::collections::BTreeMap;
use std::net::IpAddr;

use enforcer_policy::parse::{read_addresses, read_name, read_named_ports};
use enforcer_policy::yaml::{Ctx, MapReader, Node, Pos, Value};
use enforcer_policy::DEFAULT_NAMESPACE;

use super::read_labels;
use crate::scenario::model::{External, ScenarioWorkload, HOST};

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

/// The endpoint names and addresses read so far, with where each was first defined.
#[derive(Default)]
pub(super) struct Claims {
    names: BTreeMap<String, Pos>,
    addresses: BTreeMap<IpAddr, (String, Pos)>,
}

impl Claims {
    /// Records an endpoint name, reporting `host` and duplicates.
    fn name(&mut self, ctx: &mut Ctx, name: &str, pos: Pos) {
        if name == HOST {
            ctx.error(
                pos,
                format!("the name {HOST:?} is reserved for the node itself"),
            );
        } else if let Some(first) = self.names.get(name) {
            ctx.error(
                pos,
                format!(
                    "duplicate workload/external name {name:?} (first defined at line {})",
                    first.line
                ),
            );
        } else {
            self.names.insert(name.to_string(), pos);
        }
    }

    /// Records the addresses of an endpoint, reporting an address held twice.
    fn addresses(&mut self, ctx: &mut Ctx, owner: &str, list: &[IpAddr], pos: Pos) {
        for addr in list {
            if let Some((other, first)) = self.addresses.get(addr) {
                ctx.error(
                    pos,
                    format!(
                        "address {addr} of {owner:?} is already held by {other:?} (line {})",
                        first.line
                    ),
                );
            } else {
                self.addresses.insert(*addr, (owner.to_string(), pos));
            }
        }
    }
}

/// The items of the optional list `key` of `map`.
fn items<'a>(ctx: &mut Ctx, map: &MapReader<'a>, key: &str) -> &'a [Node] {
    map.optional(key)
        .and_then(|node| ctx.seq(node, key))
        .unwrap_or_default()
}

pub(super) fn read_workloads(
    ctx: &mut Ctx,
    map: &MapReader,
    nodes: Option<&[String]>,
    claims: &mut Claims,
) -> Vec<ScenarioWorkload> {
    items(ctx, map, "workloads")
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read_workload(ctx, item, &format!("workloads[{i}]"), nodes, claims))
        .collect()
}

fn read_workload(
    ctx: &mut Ctx,
    item: &Node,
    path: &str,
    nodes: Option<&[String]>,
    claims: &mut Claims,
) -> Option<ScenarioWorkload> {
    let w = ctx.map(item, None, path, WORKLOAD_FIELDS)?;
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
        claims.name(ctx, &full, n.pos);
        Some(name)
    });
    let labels = read_labels(ctx, &w);
    let service = read_service(ctx, &w, labels.as_ref().is_some_and(|l| !l.is_empty()));
    let ports = read_named_ports(ctx, &w, "ports");
    let node = read_node(ctx, &w, nodes);
    let addresses = read_addresses(ctx, &w, "addresses");
    if let (Some(name), Some(addresses)) = (&name, &addresses) {
        claims.addresses(ctx, name, addresses, item.pos);
    }
    Some(ScenarioWorkload {
        name: name?,
        namespace: namespace?,
        labels: labels?,
        service: service.ok()?,
        ports: ports?,
        node: node?,
        addresses: addresses?,
        line: item.pos.line,
    })
}

/// `service`: one name, optional when labels name the workload (`Ok(None)` when absent);
/// `Err` when invalid (reported), which drops the workload.
fn read_service(ctx: &mut Ctx, w: &MapReader, labelled: bool) -> Result<Option<String>, ()> {
    let node = if labelled {
        w.optional("service")
    } else {
        w.required(ctx, "service")
    };
    let Some(n) = node else {
        return Ok(None);
    };
    if matches!(&n.value, Value::Str(s) if s == "*") {
        ctx.error(
            n.pos,
            format!("{} must name one service, not \"*\"", w.child("service")),
        );
        return Err(());
    }
    read_name(ctx, n, &w.child("service")).map(Some).ok_or(())
}

/// `node`: one of `nodes`, by default the first.
fn read_node(ctx: &mut Ctx, w: &MapReader, nodes: Option<&[String]>) -> Option<String> {
    match (w.optional("node"), nodes) {
        (None, Some(nodes)) => nodes.first().cloned(),
        (None, None) => None,
        (Some(n), nodes) => read_name(ctx, n, &w.child("node")).and_then(|name| {
            if nodes.is_some_and(|nodes| !nodes.contains(&name)) {
                ctx.error(n.pos, format!("unknown node {name:?} (not in nodes)"));
                return None;
            }
            Some(name)
        }),
    }
}

pub(super) fn read_externals(ctx: &mut Ctx, map: &MapReader, claims: &mut Claims) -> Vec<External> {
    let mut externals = Vec::new();
    for (i, item) in items(ctx, map, "externals").iter().enumerate() {
        let path = format!("externals[{i}]");
        let Some(e) = ctx.map(item, None, &path, EXTERNAL_FIELDS) else {
            continue;
        };
        let name = e.required(ctx, "name").and_then(|n| {
            let name = read_name(ctx, n, &e.child("name"))?;
            claims.name(ctx, &name, n.pos);
            Some(name)
        });
        let addrs = read_addresses(ctx, &e, "addresses");
        if let (Some(name), Some(addrs)) = (name, addrs) {
            claims.addresses(ctx, &name, &addrs, item.pos);
            externals.push(External {
                name,
                addresses: addrs,
                line: item.pos.line,
            });
        }
    }
    externals
}
