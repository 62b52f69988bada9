//! `enforcer policy report`: the service graph the policy allows, with exposure. Nodes are the
//! endpoint identities (and `world`); an edge `a → b` exists when some flow from `a` to `b` is
//! allowed by both sides (the source's egress and the destination's ingress, as the engine
//! decides them over the lint's equivalence classes), with its ports and the rules deciding it.
//! For each service: who reaches it directly and transitively, and its blast radius (what it
//! reaches transitively if compromised).

pub mod html;
pub mod markdown;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::identity::{Identity, Party, View};
use super::lint::classes::Classes;
use super::lint::exposure::point_text;
use super::lint::sides::{for_each_side, Point, RuleKey};
use super::lint::{is_sensitive, rule_name};
use super::{Direction, PolicySet};

/// The name of the node standing for every address outside the cluster.
pub const WORLD: &str = "world";

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub namespace: Option<String>,
    pub sensitive: bool,
    /// Whether the world reaches it.
    pub exposed: bool,
    /// Nodes with an edge into it.
    pub reached_by: Vec<String>,
    /// Nodes that reach it through any chain of edges.
    pub reached_by_transitively: Vec<String>,
    /// Nodes it reaches through any chain of edges (if it is compromised).
    pub blast_radius: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// What is allowed (`TCP 8080`, ...), at most a few.
    pub ports: Vec<String>,
    /// The deciding rules, `POLICY section[i]` (none: not isolated).
    pub rules: Vec<String>,
    /// Against an agent: whether a flow of this edge was observed (`None`: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Observed flows no edge allows (against an agent): `from → to`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observed_not_allowed: Vec<(String, String)>,
}

/// Allowed points per (subject, direction, peer identity or world).
type Allowed<'v> =
    BTreeMap<(&'v Identity, Direction, Option<&'v Identity>), Vec<(Point, Option<RuleKey>)>>;

/// The report of a set.
pub fn build(set: &PolicySet) -> Report {
    let view = View::new(set);
    let classes = Classes::new(&view);
    let allowed = allowed_points(&view, &classes);
    let edges = edges_of(&view, &allowed);
    let subjects: Vec<&Identity> = classes.subjects.iter().map(|e| &e.identity).collect();
    Report {
        nodes: nodes(&view, &subjects, &edges),
        edges,
        observed_not_allowed: Vec::new(),
    }
}

/// The points every side allows, with the rule that allows each.
fn allowed_points<'v, 'a>(view: &'v View<'a>, classes: &Classes<'v, 'a>) -> Allowed<'v> {
    let mut allowed: Allowed = BTreeMap::new();
    for_each_side(view, classes, |side| {
        let peer = match side.peer.party {
            Party::Endpoint(e) => Some(&e.identity),
            _ => None,
        };
        let key = (&side.subject.identity, side.dir, peer);
        for p in side.points.iter() {
            let (e, _) = side.decisions(p);
            if e.allow {
                allowed.entry(key).or_default().push((p.clone(), e.by));
            }
        }
    });
    allowed
}

/// The edges: an ingress point of a destination is an edge from a source when the source's
/// egress allows an overlapping point to it (from the world: always).
fn edges_of(view: &View<'_>, allowed: &Allowed<'_>) -> Vec<Edge> {
    let name = |id: &Identity| id.to_string();
    let mut edges: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    let rule = |k: &RuleKey| format!("{} {}", view.policies[k.policy].display(), rule_name(k));
    for ((dst, dir, src), points) in allowed {
        if *dir != Direction::Ingress {
            continue;
        }
        for (p, by) in points {
            let from = match src {
                None => WORLD.to_string(),
                Some(src) => {
                    let out = allowed.get(&(*src, Direction::Egress, Some(*dst)));
                    let Some((_, out_by)) = out.into_iter().flatten().find(|(q, _)| {
                        q.protocol == p.protocol && q.low <= p.high && p.low <= q.high
                    }) else {
                        continue;
                    };
                    let e = edges.entry((name(src), name(dst))).or_default();
                    e.1.extend(out_by.iter().map(rule));
                    name(src)
                }
            };
            let e = edges.entry((from, name(dst))).or_default();
            e.0.insert(point_text(p));
            e.1.extend(by.iter().map(rule));
        }
    }
    edges
        .into_iter()
        .filter(|(_, (ports, _))| !ports.is_empty())
        .map(|((from, to), (ports, rules))| Edge {
            from,
            to,
            ports: ports.into_iter().take(6).collect(),
            rules: rules.into_iter().collect(),
            observed: None,
        })
        .collect()
}

/// The nodes with their exposure.
fn nodes(view: &View, ids: &[&Identity], edges: &[Edge]) -> Vec<Node> {
    let mut out: Vec<Node> = ids
        .iter()
        .map(|id| Node {
            name: id.to_string(),
            namespace: Some(id.namespace.clone()),
            sensitive: is_sensitive(view, id),
            exposed: false,
            reached_by: Vec::new(),
            reached_by_transitively: Vec::new(),
            blast_radius: Vec::new(),
        })
        .collect();
    if edges.iter().any(|e| e.from == WORLD) {
        out.push(Node {
            name: WORLD.into(),
            namespace: None,
            sensitive: false,
            exposed: false,
            reached_by: Vec::new(),
            reached_by_transitively: Vec::new(),
            blast_radius: Vec::new(),
        });
    }
    for n in &mut out {
        n.exposed = edges.iter().any(|e| e.from == WORLD && e.to == n.name);
        n.reached_by = edges
            .iter()
            .filter(|e| e.to == n.name)
            .map(|e| e.from.clone())
            .collect();
        n.reached_by_transitively = closure(&n.name, edges, |e| (&e.to, &e.from));
        n.blast_radius = closure(&n.name, edges, |e| (&e.from, &e.to));
    }
    out
}

/// Every node reachable from `start` following `step` (from, to) over the edges.
fn closure<'e>(
    start: &str,
    edges: &'e [Edge],
    step: impl Fn(&'e Edge) -> (&'e String, &'e String),
) -> Vec<String> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(n) = todo.pop() {
        for (a, b) in edges.iter().map(&step) {
            if a == n && b != start && seen.insert(b) {
                todo.push(b);
            }
        }
    }
    seen.into_iter().map(str::to_string).collect()
}

/// Marks the edges observed in `flows` (source, destination names), and lists the observed
/// pairs no edge allows.
pub fn observe(report: &mut Report, flows: &BTreeSet<(String, String)>) {
    for e in &mut report.edges {
        e.observed = Some(flows.contains(&(e.from.clone(), e.to.clone())));
    }
    report.observed_not_allowed = flows
        .iter()
        .filter(|(a, b)| !report.edges.iter().any(|e| e.from == *a && e.to == *b))
        .cloned()
        .collect();
}

#[cfg(test)]
mod tests;
