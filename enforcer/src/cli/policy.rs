//! `enforcer policy apply|get|delete|diff|check|explain`.

use std::{
    fmt::Write as _,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};

use super::output::{print, Format, Table};
use crate::{
    agent::server::flow_of,
    api::{ApplyResult, Request},
    client,
    policy::{
        explain,
        identity::ServiceLabels,
        k8s::NetworkPolicy,
        parse::parse_documents,
        resolve::{flow_ends, placeholder_addresses},
        Document, Explanation, FlowPolicy, Kind, NodeContext, PolicySet, Protocol,
    },
};

/// Read `-f FILE|DIR|-`: (source name, text) per file; a directory gives its `*.yaml`/`*.yml`.
pub fn read_inputs(path: &Path) -> Result<Vec<(String, String)>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        return files
            .into_iter()
            .map(|p| {
                Ok((
                    p.display().to_string(),
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ))
            })
            .collect();
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(vec![(path.display().to_string(), text)])
}

/// `--service-label` of this invocation, for the sets read from files.
static SERVICE_LABELS: std::sync::OnceLock<ServiceLabels> = std::sync::OnceLock::new();

/// Read services from `keys` in the sets [`load_set`] reads (set once, from the flag).
pub fn set_service_labels(keys: ServiceLabels) {
    let _ = SERVICE_LABELS.set(keys);
}

/// Parse every input into one validated set (offline: `check`, `explain -f`, `graph -f`).
pub fn load_set(paths: &[PathBuf]) -> Result<PolicySet> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        for (source, text) in read_inputs(path)? {
            match parse_documents(&source, &text) {
                Ok(d) => docs.extend(d),
                Err(e) => errors.extend(e.0),
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", crate::policy::PolicyErrors(errors));
    }
    let keys = SERVICE_LABELS.get().cloned().unwrap_or_default();
    PolicySet::from_documents(docs)
        .and_then(|s| s.with_service_labels(keys))
        .map_err(|e| anyhow!("{e}"))
}

pub fn apply(socket: &Path, path: &Path, dry_run: bool) -> Result<()> {
    for (source, yaml) in read_inputs(path)? {
        let result: ApplyResult = client::call(
            socket,
            &Request::Apply {
                source,
                yaml,
                dry_run,
            },
        )?;
        for w in &result.warnings {
            eprintln!("warning: {w}");
        }
        for a in &result.applied {
            let suffix = if dry_run { " (dry run)" } else { "" };
            println!("{}/{} {}{suffix}", a.kind.to_lowercase(), a.name, a.outcome);
        }
        if !dry_run {
            println!("generation {}", result.generation);
        }
    }
    Ok(())
}

pub fn get(socket: &Path, name: Option<String>, format: Format) -> Result<()> {
    let docs: Vec<Document> = client::call(socket, &Request::Get { name })?;
    match format {
        Format::Yaml => print!("{}", Document::to_yaml_stream(&docs)?),
        _ => print(format, &docs, || {
            let mut t = Table::new(vec![
                "KIND",
                "NAMESPACE",
                "NAME",
                "SERVICE",
                "LABELS",
                "MODE",
                "INGRESS",
                "EGRESS",
                "ADDRESSES",
            ]);
            for d in &docs {
                t.row(row(d));
            }
            t
        })?,
    }
    Ok(())
}

/// One row of `policy get`, by column; an empty cell is left blank.
#[derive(Default)]
struct GetRow {
    kind: &'static str,
    name: String,
    service: String,
    labels: String,
    mode: String,
    ingress: String,
    egress: String,
    addresses: String,
}

/// One row of `policy get`.
fn row(d: &Document) -> Vec<String> {
    let namespace = d.namespace().unwrap_or("").to_string();
    let r = match d {
        Document::Workload(w) => GetRow {
            kind: "Workload",
            name: w.name.clone(),
            service: w.service.clone().unwrap_or_default(),
            labels: labels_text(&w.labels),
            addresses: addresses_text(&w.addresses),
            ..GetRow::default()
        },
        Document::Pod(p) => GetRow {
            kind: "Pod",
            name: p.name.clone(),
            service: SERVICE_LABELS
                .get()
                .cloned()
                .unwrap_or_default()
                .service_of(&p.labels)
                .unwrap_or("")
                .to_string(),
            labels: labels_text(&p.labels),
            addresses: if p.host_network {
                "host".to_string()
            } else {
                addresses_text(&p.addresses)
            },
            ..GetRow::default()
        },
        Document::Namespace(n) => GetRow {
            kind: "Namespace",
            name: n.name.clone(),
            labels: labels_text(&n.labels),
            ..GetRow::default()
        },
        Document::NetworkPolicy(p) => network_policy_row(p),
        Document::FlowPolicy(p) => flow_policy_row(p),
    };
    let namespace = if matches!(d, Document::Namespace(_)) {
        String::new()
    } else {
        namespace
    };
    vec![
        r.kind.into(),
        namespace,
        r.name,
        r.service,
        r.labels,
        r.mode,
        r.ingress,
        r.egress,
        r.addresses,
    ]
}

fn addresses_text(a: &[std::net::IpAddr]) -> String {
    a.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn network_policy_row(p: &NetworkPolicy) -> GetRow {
    let (ingress, egress) = p.types();
    let count = |on: bool, n: usize| {
        if on {
            format!("{n} allow")
        } else {
            "-".to_string()
        }
    };
    GetRow {
        kind: "NetworkPolicy",
        name: p.name.clone(),
        labels: p.spec.pod_selector.to_string(),
        mode: "enforce".into(),
        ingress: count(ingress, p.spec.ingress.as_ref().map_or(0, Vec::len)),
        egress: count(egress, p.spec.egress.as_ref().map_or(0, Vec::len)),
        ..GetRow::default()
    }
}

fn flow_policy_row(p: &FlowPolicy) -> GetRow {
    let count = |r: &Option<Vec<crate::policy::Rule>>, deny: &[crate::policy::Rule]| {
        let allow = r
            .as_ref()
            .map_or("-".to_string(), |r| format!("{} allow", r.len()));
        if deny.is_empty() {
            allow
        } else {
            format!("{allow}, {} deny", deny.len())
        }
    };
    GetRow {
        kind: "FlowPolicy",
        name: p.name.clone(),
        service: p.service.clone(),
        labels: p
            .selector
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        mode: p.mode.to_string(),
        ingress: count(&p.ingress, &p.ingress_deny),
        egress: count(&p.egress, &p.egress_deny),
        ..GetRow::default()
    }
}

/// `k=v,k2=v2`.
fn labels_text(labels: &crate::policy::Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn delete(
    socket: &Path,
    name: &str,
    kind: Option<String>,
    namespace: Option<String>,
) -> Result<()> {
    let kind = kind
        .map(|k| k.parse::<Kind>())
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let result: ApplyResult = client::call(
        socket,
        &Request::Delete {
            name: name.into(),
            kind,
            namespace,
        },
    )?;
    for a in &result.applied {
        println!("{}/{} deleted", a.kind.to_lowercase(), a.name);
    }
    println!("generation {}", result.generation);
    Ok(())
}

/// `policy check`: offline validation; errors go to stderr and the caller exits 1.
pub fn check(paths: &[PathBuf]) -> Result<()> {
    let set = load_set(paths)?;
    for w in set.warnings() {
        eprintln!("warning: {w}");
    }
    println!(
        "valid: {} workload(s), {} pod(s), {} namespace(s), {} flow polic(ies), {} network polic(ies)",
        set.workloads.len(),
        set.pods.len(),
        set.namespaces.len(),
        set.policies.len(),
        set.network_policies.len()
    );
    Ok(())
}

pub struct ExplainArgs {
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub port: Option<u16>,
    pub files: Vec<PathBuf>,
    pub json: bool,
}

pub fn explain_cmd(socket: &Path, a: ExplainArgs) -> Result<()> {
    let protocol: Protocol = a.protocol.parse().map_err(|e: String| anyhow!(e))?;
    let e: Explanation = if a.files.is_empty() {
        client::call(
            socket,
            &Request::Explain {
                from: a.from,
                to: a.to,
                protocol,
                port: a.port,
            },
        )?
    } else {
        let mut set = load_set(&a.files)?;
        for note in placeholder_addresses(&mut set, &[&a.from, &a.to]) {
            eprintln!("note: {note}");
        }
        let ctx = offline_context();
        let (src, dst) = flow_ends(&set, &ctx, &a.from, &a.to).map_err(|e| anyhow!(e))?;
        let flow = flow_of(src, dst, protocol, a.port)?;
        explain(&set, &ctx, &flow)
    };
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        println!("verdict: {}", e.verdict);
        if let Some(r) = &e.rule {
            if let Some(p) = r.policy() {
                println!("policy:  {p}");
                println!("kind:    {}", p.kind);
            }
            println!("rule:    {}", r.rule_label());
        }
        println!("reason:  {}", e.reason);
    }
    Ok(())
}

/// The node context of offline `explain`: `host` is the pods' gateway address (169.254.1.1,
/// `fe80::1`), as on a node of the test harness.
fn offline_context() -> NodeContext {
    NodeContext {
        host_addresses: [
            std::net::Ipv4Addr::new(169, 254, 1, 1).into(),
            std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).into(),
        ]
        .into_iter()
        .collect(),
        ..NodeContext::default()
    }
}

/// `policy convert -f FILE...`: the `FlowPolicy` equivalent of every `NetworkPolicy`.
pub fn convert(paths: &[PathBuf]) -> Result<()> {
    let set = load_set(paths)?;
    let docs: Vec<Document> = set
        .network_policies
        .values()
        .map(|p| Document::FlowPolicy(p.to_flow_policy()))
        .collect();
    if docs.is_empty() {
        bail!("no NetworkPolicy in the input");
    }
    print!("{}", Document::to_yaml_stream(&docs)?);
    Ok(())
}

/// `policy diff -f FILE`: what applying FILE would change, as a line diff of canonical YAML.
pub fn diff(socket: &Path, path: &Path) -> Result<bool> {
    let live: Vec<Document> = client::call(socket, &Request::Get { name: None })?;
    let mut changed = false;
    for (source, text) in read_inputs(path)? {
        let docs = parse_documents(&source, &text).map_err(|e| anyhow!("{e}"))?;
        for d in docs {
            let old = live
                .iter()
                .find(|l| l.kind() == d.kind() && l.key() == d.key());
            let new_yaml = d.to_yaml()?;
            match old {
                None => {
                    changed = true;
                    println!("+++ {}/{} (new)", d.kind().to_lowercase(), d.name());
                    for l in new_yaml.lines() {
                        println!("+ {l}");
                    }
                }
                Some(o) if o.same_content(&d) => {}
                Some(o) => {
                    changed = true;
                    println!(
                        "--- {}/{} (live)\n+++ {}/{} ({source})",
                        o.kind().to_lowercase(),
                        o.name(),
                        d.kind().to_lowercase(),
                        d.name()
                    );
                    print!("{}", line_diff(&o.to_yaml()?, &new_yaml));
                }
            }
        }
    }
    Ok(changed)
}

/// A line diff (`similar`'s Myers diff), `-`/`+`/` ` prefixed; within a changed run the removed
/// lines come before the added ones.
pub fn line_diff(old: &str, new: &str) -> String {
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(old, new).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let line = change.value().trim_end_matches(['\n', '\r']);
        let _ = writeln!(out, "{sign} {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn line_diff_marks_kept_removed_and_added_lines() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            "  a\n- b\n+ B\n  c\n+ d\n"
        );
        assert_eq!(line_diff("same\n", "same\n"), "  same\n");
        assert_eq!(line_diff("", "new"), "+ new\n");
    }
}
