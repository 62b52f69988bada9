//! Strict parser of scenario files; errors carry file, line and column like policy errors.
//!
//! `mod.rs` reads the file and its top level, [`endpoints`] the workloads and externals,
//! [`steps`] the steps and [`probe`] their probes.

mod endpoints;
mod probe;
mod steps;
#[cfg(test)]
mod tests;

use enforcer_policy::labels::{check_labels, Labels};
use enforcer_policy::parse::read_name;
use enforcer_policy::yaml::{self, Ctx, MapReader, Node};
use enforcer_policy::{Namespace, PolicyError, PolicyErrors, Source};

use super::model::Scenario;
use endpoints::{read_externals, read_workloads, Claims};
use steps::read_steps;

const SCENARIO_FIELDS: &[&str] = &[
    "name",
    "nodes",
    "namespaces",
    "workloads",
    "externals",
    "steps",
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
    let mut claims = Claims::default();
    let workloads = read_workloads(ctx, &map, nodes.as_deref(), &mut claims);
    let externals = read_externals(ctx, &map, &mut claims);
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
