//! The engine of `enforcer policy graph -o dot|mermaid`: the service graph the policy allows
//! (and denies), as documentation generated from policy.

use std::{collections::BTreeSet, fmt::Write as _};

use crate::{FlowPolicy, Mode, Peer, PolicySet, Rule, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// One edge: from → to, label, allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: String,
    pub deny: bool,
}

fn peer_name(p: &Peer) -> String {
    match p {
        Peer::Service(s) if s == "*" => "any workload".into(),
        Peer::Service(s) => s.clone(),
        Peer::Cidr { cidr, except } if except.is_empty() => cidr.to_string(),
        Peer::Cidr { cidr, except } => format!(
            "{cidr} except {}",
            except
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Peer::Selector { .. } => p.to_string(),
    }
}

fn ports_label(r: &Rule) -> String {
    if r.ports.is_empty() {
        return "any".into();
    }
    r.ports
        .iter()
        .map(|p| match (p.port, p.end_port) {
            (None, _) => p.protocol.as_str().to_string(),
            (Some(a), None) => format!("{}/{a}", p.protocol.as_str()),
            (Some(a), Some(b)) => format!("{}/{a}-{b}", p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The edges of every rule: ingress rules point at the policy's service, egress rules away.
pub fn edges(set: &PolicySet) -> Vec<Edge> {
    let mut out = BTreeSet::new();
    for p in set.policies.values() {
        for (section, _, rule) in p.rules() {
            let subject = if p.service == "*" {
                "every service".to_string()
            } else {
                p.service.clone()
            };
            let peers: Vec<String> = if rule.peers.is_empty() {
                vec!["anyone".into()]
            } else {
                rule.peers.iter().map(peer_name).collect()
            };
            for peer in peers {
                let (from, to) = if section.is_ingress() {
                    (peer, subject.clone())
                } else {
                    (subject.clone(), peer)
                };
                out.insert(Edge {
                    from,
                    to,
                    label: label(p, section, rule),
                    deny: section.is_deny(),
                });
            }
        }
    }
    out.into_iter().collect()
}

fn label(p: &FlowPolicy, section: Section, rule: &Rule) -> String {
    let mut l = ports_label(rule);
    if let Some(rl) = &rule.rate_limit {
        if let Some(pps) = rl.packets_per_second {
            let _ = write!(l, " ≤{pps}pps");
        }
    }
    if section.is_deny() {
        l = format!("deny {l}");
    }
    if p.mode == Mode::Audit {
        l.push_str(" (audit)");
    }
    l
}

pub fn render(set: &PolicySet, format: GraphFormat) -> String {
    let edges = edges(set);
    let mut nodes: BTreeSet<String> = set.services().into_iter().collect();
    for e in &edges {
        nodes.insert(e.from.clone());
        nodes.insert(e.to.clone());
    }
    let id = |n: &str| {
        let i = nodes.iter().position(|x| x == n).unwrap_or(0);
        format!("n{i}")
    };
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph enforcer {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
            for n in &nodes {
                let _ = writeln!(out, "  {} [label={:?}];", id(n), n);
            }
            for e in &edges {
                let style = if e.deny {
                    ", color=red, style=dashed"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={:?}{style}];",
                    id(&e.from),
                    id(&e.to),
                    e.label
                );
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for n in &nodes {
                let _ = writeln!(out, "  {}[\"{}\"]", id(n), n.replace('"', "'"));
            }
            for e in &edges {
                let arrow = if e.deny { "-. " } else { "-- " };
                let end = if e.deny { " .-x" } else { " -->" };
                let _ = writeln!(
                    out,
                    "  {} {arrow}\"{}\"{end} {}",
                    id(&e.from),
                    e.label.replace('"', "'"),
                    id(&e.to)
                );
            }
        }
    }
    out
}
