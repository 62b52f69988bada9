//! Suppressions: a comment `# enforcer:ignore=EN001 reason` (several ids: `EN001,EN002`) on
//! the line of a finding, on the line above it, or on (or above) the line of its policy. A
//! suppression without a reason suppresses nothing and is itself a finding (EN090).

use std::collections::BTreeMap;

use super::{Check, Finding, Location};

const MARK: &str = "enforcer:ignore=";

/// A suppression comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub ids: Vec<String>,
    pub reason: String,
}

/// The suppression on a line, if any.
pub fn parse_line(line: &str) -> Option<Suppression> {
    let comment = &line[line.find('#')?..];
    let rest = &comment[comment.find(MARK)? + MARK.len()..];
    let (ids, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some(Suppression {
        ids: ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        reason: reason.trim().to_string(),
    })
}

/// Findings minus the suppressed ones, plus EN090 for suppressions without a reason; and the
/// number suppressed. `texts`: file → its text.
pub fn apply(findings: Vec<Finding>, texts: &BTreeMap<String, String>) -> (Vec<Finding>, usize) {
    let lines: BTreeMap<&str, Vec<&str>> = texts
        .iter()
        .map(|(f, t)| (f.as_str(), t.lines().collect()))
        .collect();
    let at = |file: &str, line: usize| -> Option<Suppression> {
        let text = lines.get(file)?;
        line.checked_sub(1)
            .and_then(|i| text.get(i))
            .and_then(|l| parse_line(l))
    };
    let mut kept = Vec::new();
    let mut suppressed = 0;
    for f in findings {
        let anchors = [f.location.line, f.policy_line];
        let hit = anchors
            .iter()
            .filter(|l| **l > 0)
            .flat_map(|l| [*l, l - 1])
            .filter_map(|l| at(&f.location.file, l))
            .any(|s| !s.reason.is_empty() && s.ids.contains(&f.id));
        if hit {
            suppressed += 1;
        } else {
            kept.push(f);
        }
    }
    for (file, text) in &lines {
        for (i, line) in text.iter().enumerate() {
            if let Some(s) = parse_line(line).filter(|s| s.reason.is_empty()) {
                kept.push(Finding::new(
                    Check::SuppressionWithoutReason,
                    Location {
                        file: (*file).to_string(),
                        line: i + 1,
                    },
                    format!(
                        "suppression of {} without a reason suppresses nothing",
                        s.ids.join(",")
                    ),
                    "write why after the ids: # enforcer:ignore=EN001 reason",
                ));
            }
        }
    }
    (kept, suppressed)
}
