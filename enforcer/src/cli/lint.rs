//! `enforcer policy lint`: least-privilege findings on policy files, or on the agent's policy in
//! force with its per-rule counters. Exit 1 when a finding reaches `--fail-on`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Result};

use crate::{
    api::{Request, Stats},
    client,
    policy::{
        lint::{lint, sarif, suppress, usage::RuleUsage, Finding, LintConfig, Severity, Usage},
        report, Document, PolicySet,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LintFormat {
    Text,
    Json,
    Sarif,
}

/// `policy lint` arguments.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Policy files or directories (default: the agent's policy in force and its counters).
    #[arg(short, long)]
    pub file: Vec<PathBuf>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: LintFormat,
    /// Exit 1 when a finding has this severity or a higher one.
    #[arg(long, value_enum, default_value = "warning")]
    pub fail_on: Severity,
    /// IPv4 CIDR peers with a shorter prefix (but /0) are too wide.
    #[arg(long, default_value_t = 8)]
    pub min_prefix_v4: u8,
    /// IPv6 CIDR peers with a shorter prefix (but /0) are too wide.
    #[arg(long, default_value_t = 32)]
    pub min_prefix_v6: u8,
    /// Audit-mode policies older than DAYS are findings (needs the agent).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub audit_days: u64,
    /// Rules without a match for DAYS are findings (needs the agent).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub unused_days: u64,
}

/// Runs the lint; `Ok(false)`: a finding reached `--fail-on`.
pub fn run(socket: &Path, args: &LintArgs) -> Result<bool> {
    let cfg = LintConfig {
        min_prefix_v4: args.min_prefix_v4,
        min_prefix_v6: args.min_prefix_v6,
        audit_days: args.audit_days,
        unused_days: args.unused_days,
        now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let (findings, suppressed) = if args.file.is_empty() {
        let docs: Vec<Document> = client::call(socket, &Request::Get { name: None })?;
        let set = PolicySet::from_documents(docs).map_err(|e| anyhow!("{e}"))?;
        let stats: Stats = client::call(socket, &Request::Stats)?;
        (lint(&set, Some(&usage_of(&stats)), &cfg), 0)
    } else {
        let mut texts = BTreeMap::new();
        for path in &args.file {
            texts.extend(super::policy::read_inputs(path)?);
        }
        let set = super::policy::load_set(&args.file)?;
        suppress::apply(lint(&set, None, &cfg), &texts)
    };
    print!("{}", render(&findings, suppressed, args.output)?);
    Ok(!findings.iter().any(|f| f.severity >= args.fail_on))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
}

/// `policy report`: the graph of the files, or of the agent's policy with its observed flows.
pub fn report(socket: &Path, files: &[PathBuf], format: ReportFormat) -> Result<()> {
    let mut r = if files.is_empty() {
        let docs: Vec<Document> = client::call(socket, &Request::Get { name: None })?;
        let set = PolicySet::from_documents(docs).map_err(|e| anyhow!("{e}"))?;
        let mut r = report::build(&set);
        let events: Vec<crate::api::FlowEvent> = client::call(
            socket,
            &Request::Flows {
                follow: false,
                verdict: None,
                service: None,
                limit: None,
            },
        )?;
        let seen = events
            .iter()
            .filter(|e| e.verdict != enforcer_common::Verdict::Deny)
            .map(|e| (e.src_identity.to_string(), e.dst_identity.to_string()))
            .collect();
        report::observe(&mut r, &seen);
        r
    } else {
        report::build(&super::policy::load_set(files)?)
    };
    r.edges
        .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    match format {
        ReportFormat::Html => print!("{}", report::html::render(&r)?),
        ReportFormat::Md => print!("{}", report::markdown::render(&r)),
    }
    Ok(())
}

/// The agent's counters as lint reads them.
fn usage_of(stats: &Stats) -> Usage {
    Usage {
        rules: stats
            .rules
            .iter()
            .map(|r| {
                let u = RuleUsage {
                    packets: r.packets,
                    first_seen: r.first_seen,
                    last_matched: r.last_matched,
                };
                (r.rule.clone(), u)
            })
            .collect(),
        policies: stats.policies_first_seen.clone(),
    }
}

/// The findings in `format`.
pub fn render(findings: &[Finding], suppressed: usize, format: LintFormat) -> Result<String> {
    Ok(match format {
        LintFormat::Json => {
            let out = serde_json::json!({"findings": findings, "suppressed": suppressed});
            format!("{}\n", serde_json::to_string_pretty(&out)?)
        }
        LintFormat::Sarif => format!("{}\n", serde_json::to_string_pretty(&sarif::log(findings))?),
        LintFormat::Text => text(findings, suppressed),
    })
}

fn text(findings: &[Finding], suppressed: usize) -> String {
    let mut out = String::new();
    for f in findings {
        let what = match (&f.policy, &f.rule) {
            (Some(p), Some(r)) => format!(" {p} {r}:"),
            (Some(p), None) => format!(" {p}:"),
            _ => String::new(),
        };
        let star = if f.sensitive { " [sensitive]" } else { "" };
        let _ = writeln!(
            out,
            "{}: {} {}{star}{what} {}",
            f.location, f.severity, f.id, f.message
        );
        let _ = writeln!(out, "  fix: {}", f.fix);
    }
    let _ = writeln!(
        out,
        "{} finding(s), {suppressed} suppressed",
        findings.len()
    );
    out
}
