//! `steps:`: documents to apply, names to delete, probes to judge.

use enforcer_policy::document::Kind;
use enforcer_policy::parse::{read_documents, read_name};
use enforcer_policy::set::Selector;
use enforcer_policy::yaml::{Ctx, MapReader, Node, Value};

use super::probe::read_probe;
use crate::scenario::model::{Scenario, Step};

const STEP_FIELDS: &[&str] = &["apply", "delete", "probes"];

pub(super) fn read_steps(ctx: &mut Ctx, map: &MapReader, scenario: &Scenario) -> Vec<Step> {
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
