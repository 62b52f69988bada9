//! `enforcer policy apply|get|delete|diff|check|explain`.

use std::{
    fmt::Write as _,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};

use super::output::{print, Format, Table};
use crate::{
    agent::{resolve_endpoint, server::flow_of},
    api::{ApplyResult, Request},
    client,
    policy::{explain, parse::parse_documents, Document, Explanation, NodeContext, PolicySet},
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
    PolicySet::from_documents(docs).map_err(|e| anyhow!("{e}"))
}

pub fn apply(socket: &Path, path: &Path, dry_run: bool) -> Result<()> {
    for (source, yaml) in read_inputs(path)? {
        let data = client::call(
            socket,
            &Request::Apply {
                source,
                yaml,
                dry_run,
            },
        )?;
        let result: ApplyResult = serde_json::from_value(data)?;
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
    let data = client::call(socket, &Request::Get { name })?;
    let docs: Vec<Document> = serde_json::from_value(data)?;
    match format {
        Format::Yaml => print!("{}", Document::to_yaml_stream(&docs)?),
        _ => print(format, &docs, || {
            let mut t = Table::new(vec![
                "KIND",
                "NAME",
                "SERVICE",
                "MODE",
                "INGRESS",
                "EGRESS",
                "ADDRESSES",
            ]);
            for d in &docs {
                match d {
                    Document::Workload(w) => t.row(vec![
                        "Workload".into(),
                        w.name.clone(),
                        w.service.clone(),
                        String::new(),
                        String::new(),
                        String::new(),
                        w.addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    ]),
                    Document::FlowPolicy(p) => {
                        let count =
                            |r: &Option<Vec<crate::policy::Rule>>, deny: &[crate::policy::Rule]| {
                                let allow = r
                                    .as_ref()
                                    .map_or("-".to_string(), |r| format!("{} allow", r.len()));
                                if deny.is_empty() {
                                    allow
                                } else {
                                    format!("{allow}, {} deny", deny.len())
                                }
                            };
                        t.row(vec![
                            "FlowPolicy".into(),
                            p.name.clone(),
                            p.service.clone(),
                            p.mode.to_string(),
                            count(&p.ingress, &p.ingress_deny),
                            count(&p.egress, &p.egress_deny),
                            String::new(),
                        ]);
                    }
                }
            }
            t
        })?,
    }
    Ok(())
}

pub fn delete(socket: &Path, name: &str, kind: Option<String>) -> Result<()> {
    let data = client::call(
        socket,
        &Request::Delete {
            name: name.into(),
            kind,
        },
    )?;
    let result: ApplyResult = serde_json::from_value(data)?;
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
        "valid: {} workload(s), {} flow polic(ies)",
        set.workloads.len(),
        set.policies.len()
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
    let e: Explanation = if a.files.is_empty() {
        let data = client::call(
            socket,
            &Request::Explain {
                from: a.from,
                to: a.to,
                protocol: a.protocol,
                port: a.port,
            },
        )?;
        serde_json::from_value(data)?
    } else {
        let set = load_set(&a.files)?;
        let src = resolve_endpoint(&set, &a.from)?;
        let dst = resolve_endpoint(&set, &a.to)?;
        let flow = flow_of(src, dst, &a.protocol, a.port)?;
        explain(&set, &NodeContext::default(), &flow)
    };
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        println!("verdict: {}", e.verdict);
        if let Some(p) = &e.policy {
            println!("policy:  {p}");
        }
        if let Some(r) = &e.rule {
            println!("rule:    {r}");
        }
        println!("reason:  {}", e.reason);
    }
    Ok(())
}

/// `policy diff -f FILE`: what applying FILE would change, as a line diff of canonical YAML.
pub fn diff(socket: &Path, path: &Path) -> Result<bool> {
    let data = client::call(socket, &Request::Get { name: None })?;
    let live: Vec<Document> = serde_json::from_value(data)?;
    let mut changed = false;
    for (source, text) in read_inputs(path)? {
        let docs = parse_documents(&source, &text).map_err(|e| anyhow!("{e}"))?;
        for d in docs {
            let old = live
                .iter()
                .find(|l| l.kind() == d.kind() && l.name() == d.name());
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

/// A minimal line diff (longest common subsequence), `-`/`+`/` ` prefixed.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        }
    }
    out
}
