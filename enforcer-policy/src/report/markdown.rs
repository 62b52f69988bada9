//! The report as Markdown: services with their exposure, then the edges.

use std::fmt::Write as _;

use super::Report;

pub fn render(r: &Report) -> String {
    let mut out = String::from("# Service graph and exposure\n\n");
    out.push_str("| service | sensitive | from outside | reached by | reached by (transitively) | blast radius |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    let mut nodes: Vec<_> = r.nodes.iter().collect();
    nodes.sort_by_key(|n| (!n.sensitive, n.name.clone()));
    for n in nodes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            n.name,
            if n.sensitive { "**yes**" } else { "" },
            if n.exposed { "**yes**" } else { "" },
            n.reached_by.join(", "),
            n.reached_by_transitively.join(", "),
            n.blast_radius.join(", "),
        );
    }
    out.push_str(
        "\n## Allowed edges\n\n| from | to | ports | rules | observed |\n|---|---|---|---|---|\n",
    );
    for e in &r.edges {
        let observed = match e.observed {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        let rules = if e.rules.is_empty() {
            "not isolated".to_string()
        } else {
            e.rules.join("; ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {observed} |",
            e.from,
            e.to,
            e.ports.join(", "),
            rules
        );
    }
    if !r.observed_not_allowed.is_empty() {
        out.push_str("\n## Observed but not allowed\n\n");
        for (a, b) in &r.observed_not_allowed {
            let _ = writeln!(out, "- {a} → {b}");
        }
    }
    out
}
