//! `enforcer suggest [--since SECONDS] [--mode enforce|audit] [--flows FILE]... [-o yaml|table|json]`:
//! fetches flow events (`Flows` API, or `enforcer flows -o json` files to merge several nodes),
//! hands them to the engine (`enforcer_policy::suggest`) and prints the inventory and the
//! suggested `FlowPolicies`.

use std::{
    fmt::Write as _,
    io::BufRead,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use enforcer_common::{Reason, Verdict};

use super::output::{utc, Format, Table};
use crate::{
    api::{FlowEvent, Request},
    client,
    policy::{
        suggest::{
            label, suggest, Edge, EdgeStatus, Observation, Outcome, Passed, Side, Suggestion,
        },
        Direction, Document, Mode,
    },
};

/// The engine's view of an event; `None` for events that say nothing about which flows the
/// services need (spoofed, malformed, rate-limited drops) and for unreadable addresses.
fn observation(e: &FlowEvent) -> Option<Observation> {
    let outcome = match (e.verdict, e.reason) {
        (Verdict::Audit, _) => Outcome::Audit,
        (Verdict::Allow, Reason::Policy) => Outcome::Passed(Passed::ByRule),
        (Verdict::Allow, Reason::Host) => Outcome::Passed(Passed::FromHost),
        (Verdict::Allow, _) => Outcome::Passed(Passed::Unisolated),
        (Verdict::Deny, Reason::Policy | Reason::DefaultDeny) => Outcome::Denied,
        (Verdict::Deny, _) => return None,
    };
    let direction = match e.direction {
        enforcer_common::Direction::Ingress => Direction::Ingress,
        enforcer_common::Direction::Egress => Direction::Egress,
    };
    let side = |addr: IpAddr, identity: &crate::policy::IdentityRef| Side {
        addr,
        identity: identity.clone(),
    };
    Some(Observation {
        time_ms: e.time_ms,
        src: side(e.src, &e.src_identity),
        dst: side(e.dst, &e.dst_identity),
        protocol: e.protocol_name(),
        dport: e.dport,
        direction,
        outcome,
        decided_by: e.rule.clone(),
    })
}

/// RFC 3339 UTC time of a Unix time in milliseconds, to the second (`1970-01-01T00:00:00Z`).
pub fn rfc3339(ms: u64) -> String {
    utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The inventory as a table.
pub fn table(edges: &[Edge]) -> Table {
    let mut t = Table::new(vec![
        "SOURCE",
        "DESTINATION",
        "PORT",
        "FLOWS",
        "FIRST SEEN",
        "LAST SEEN",
        "STATUS",
        "RULE",
    ]);
    for e in edges {
        let rule = match e.status {
            EdgeStatus::Allowed => e
                .allowed_by
                .iter()
                .map(label)
                .collect::<Vec<_>>()
                .join(", "),
            EdgeStatus::Audit | EdgeStatus::Denied => {
                e.denied_by.iter().map(label).collect::<Vec<_>>().join(", ")
            }
            EdgeStatus::Shadow => "(no rule: nothing isolates it)".into(),
            EdgeStatus::Host => "(host traffic, always allowed)".into(),
        };
        t.row(vec![
            e.src.to_string(),
            e.dst.to_string(),
            e.service_port(),
            e.flows.to_string(),
            rfc3339(e.first_seen_ms),
            rfc3339(e.last_seen_ms),
            e.status.to_string().to_uppercase(),
            rule,
        ]);
    }
    t
}

/// The suggestion as a reviewable YAML stream: the inventory as comments, then the documents.
pub fn to_yaml(s: &Suggestion, events: usize) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `enforcer suggest` from {events} flow events: {} edges observed.",
        s.edges.len()
    );
    if let (Some(first), Some(last)) = (
        s.edges.iter().map(|e| e.first_seen_ms).min(),
        s.edges.iter().map(|e| e.last_seen_ms).max(),
    ) {
        let _ = writeln!(
            out,
            "# Observed between {} and {}.",
            rfc3339(first),
            rfc3339(last)
        );
    }
    out.push_str(
        "# Review before applying: these policies isolate every service below in the direction\n\
         # listed, so any flow that was not observed (a job that runs monthly, a failover path)\n\
         # is denied once they are enforced. Apply with `--mode audit` first to watch for that.\n#\n",
    );
    for line in table(&s.edges).render().lines() {
        let _ = writeln!(out, "#   {line}");
    }
    if !s.skipped.is_empty() {
        out.push_str("#\n# Not in the policies:\n");
        for (what, why) in &s.skipped {
            let _ = writeln!(out, "#   {what}: {why}");
        }
    }
    if s.documents.is_empty() {
        out.push_str("#\n# No flow to allow: no document suggested.\n");
        return Ok(out);
    }
    out.push_str("---\n");
    out.push_str(&Document::to_yaml_stream(&s.documents)?);
    Ok(out)
}

pub struct SuggestArgs {
    /// Only events of the last SECONDS.
    pub since: Option<u64>,
    pub mode: Mode,
    /// Read events from these files (`enforcer flows -o json` output, `-` = stdin) instead of
    /// asking the agent.
    pub flows: Vec<PathBuf>,
    pub format: Format,
}

/// Events in JSON lines (`enforcer flows -o json`), or a JSON array.
fn read_events(path: &Path) -> Result<Vec<FlowEvent>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            out.extend(
                serde_json::from_str::<Vec<FlowEvent>>(line)
                    .with_context(|| format!("{}:{}", path.display(), i + 1))?,
            );
        } else {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a flow event", path.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

pub fn run(socket: &Path, a: &SuggestArgs) -> Result<()> {
    let mut events: Vec<FlowEvent> = Vec::new();
    if a.flows.is_empty() {
        events = client::call(
            socket,
            &Request::Flows {
                follow: false,
                verdict: None,
                service: None,
                limit: None,
            },
        )?;
    } else {
        for f in &a.flows {
            events.extend(read_events(f)?);
        }
    }
    if let Some(since) = a.since {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let cutoff = now.saturating_sub(since.saturating_mul(1000));
        events.retain(|e| e.time_ms >= cutoff);
    }
    let observations: Vec<Observation> = events.iter().filter_map(observation).collect();
    let s = suggest(&observations, a.mode);
    match a.format {
        Format::Yaml => print!("{}", to_yaml(&s, events.len())?),
        Format::Table => print!("{}", table(&s.edges).render()),
        Format::Json => {
            let docs: Vec<serde_json::Value> = s
                .documents
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "edges": s.edges,
                    "skipped": s.skipped,
                    "documents": docs,
                }))?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse_documents;

    /// An event: `port` is `PROTO/PORT`, `what` is `direction verdict reason`.
    fn ev(
        t: u64,
        (src, si): (&str, &str),
        (dst, di): (&str, &str),
        port: &str,
        what: &str,
    ) -> FlowEvent {
        let (protocol, dport) = port.split_once('/').expect("PROTO/PORT");
        let what: Vec<&str> = what.split(' ').collect();
        FlowEvent {
            time_ms: t,
            src: src.parse().expect("address"),
            dst: dst.parse().expect("address"),
            src_identity: si.parse().expect("identity"),
            dst_identity: di.parse().expect("identity"),
            protocol: enforcer_common::Protocol::from_name(protocol)
                .expect("protocol")
                .into(),
            sport: 40000,
            dport: dport.parse().expect("port"),
            direction: enforcer_common::Direction::from_name(what[0]).expect("direction"),
            verdict: enforcer_common::Verdict::from_name(what[1]).expect("verdict"),
            reason: Reason::from_event_name(what[2]).expect("reason"),
            rule: None,
            interface: "ep1".into(),
            generation: 1,
        }
    }

    const WEB: (&str, &str) = ("10.10.1.10", "web");
    const API: (&str, &str) = ("10.10.2.10", "api");
    const DB: (&str, &str) = ("10.10.3.10", "db");

    #[test]
    fn events_become_observations() {
        let mut e = ev(1, WEB, DB, "TCP/5432", "ingress denied default_deny");
        e.rule = Some(crate::policy::RuleRef::DefaultDeny {
            subject: "db".into(),
            direction: Direction::Ingress,
        });
        let o = observation(&e).expect("observation");
        assert_eq!(o.outcome, Outcome::Denied);
        assert_eq!(o.direction, Direction::Ingress);
        let by = o.decided_by.as_ref().map(crate::policy::suggest::label);
        assert_eq!(by.as_deref(), Some("default-deny db/ingress"));
        let o = observation(&ev(
            1,
            ("10.0.0.1", "host"),
            API,
            "TCP/80",
            "ingress allowed host",
        ));
        assert_eq!(
            o.map(|o| o.outcome),
            Some(Outcome::Passed(Passed::FromHost))
        );
        let spoofed = ev(
            1,
            ("10.99.0.1", "world"),
            API,
            "UDP/1",
            "egress denied spoofed",
        );
        assert_eq!(
            observation(&spoofed),
            None,
            "spoofed drops are not observations"
        );
    }

    #[test]
    fn the_yaml_lists_the_inventory_and_parses() {
        let events = [
            ev(1000, WEB, API, "TCP/8080", "egress allowed not_isolated"),
            ev(2000, WEB, DB, "TCP/5432", "egress allowed not_isolated"),
            ev(2000, WEB, DB, "TCP/5432", "ingress denied default_deny"),
        ];
        let observations: Vec<Observation> = events.iter().filter_map(observation).collect();
        let s = suggest(&observations, Mode::Enforce);
        let yaml = to_yaml(&s, events.len()).expect("yaml");
        assert!(
            yaml.contains("from 3 flow events: 2 edges observed"),
            "{yaml}"
        );
        assert!(yaml.contains("SHADOW"), "{yaml}");
        assert!(yaml.contains("web -> db TCP/5432: denied"), "{yaml}");
        let docs =
            parse_documents("suggested.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(docs.len(), 2, "{yaml}");
    }

    #[test]
    fn nothing_observed_suggests_nothing() {
        let yaml = to_yaml(&suggest(&[], Mode::Enforce), 0).expect("yaml");
        assert!(yaml.contains("No flow to allow"), "{yaml}");
        assert!(parse_documents("empty.yaml", &yaml)
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199_000), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
