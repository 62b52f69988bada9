//! When the agent first saw each rule and policy in force and last saw a rule's counter grow,
//! kept in the state dir (`rule-usage.json`) across restarts: `stats` reports them and
//! `policy lint` reads them (EN030 audit-mode age, EN031/EN032 rules that never matched).
//!
//! The agent observes the rule counters at startup, on every `stats` request and once a minute,
//! so a match is dated to within a minute, and a new rule's first sight too.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::state::{read_bounded, write_durable};
use crate::policy::RuleRef;

/// The file in the state dir.
pub const USAGE_FILE: &str = "rule-usage.json";

/// The largest usage file read back.
const MAX_BYTES: u64 = 16 << 20;

/// What is known about one rule (times in seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub first_seen: u64,
    #[serde(default)]
    pub last_matched: Option<u64>,
    /// The rule's counter when last observed (a larger one later means it matched).
    #[serde(default)]
    pub packets: u64,
}

/// One rule of the file.
#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    rule: RuleRef,
    #[serde(flatten)]
    seen: Seen,
}

/// The file: rules as a list (their key is a structure), policies by name.
#[derive(Default, Serialize, Deserialize)]
struct File {
    rules: Vec<Entry>,
    #[serde(default)]
    policies: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Book {
    rules: BTreeMap<RuleRef, Seen>,
    policies: BTreeMap<String, u64>,
}

/// The usage book of the rules in force.
pub struct Usage {
    path: PathBuf,
    book: Mutex<Book>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Usage {
    /// The book kept in `state_dir` (empty if there is none yet, or it does not read back).
    pub fn load(state_dir: &std::path::Path) -> Usage {
        let path = state_dir.join(USAGE_FILE);
        let file: File = match read_bounded(&path, MAX_BYTES) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                warn!("{}: invalid, starting a new one: {e}", path.display());
                File::default()
            }),
            Ok(None) => File::default(),
            Err(e) => {
                warn!("{}: {e}", path.display());
                File::default()
            }
        };
        let book = Book {
            rules: file.rules.into_iter().map(|e| (e.rule, e.seen)).collect(),
            policies: file.policies,
        };
        Usage {
            path,
            book: Mutex::new(book),
        }
    }

    /// Observe the counters of the rules in force at time `now`; returns what is known of each
    /// (in the order given) and of each policy. Rules and policies no longer in force are
    /// forgotten; the file is rewritten when anything changed.
    pub fn observe(
        &self,
        rules: &[(RuleRef, u64)],
        now: u64,
    ) -> (Vec<Seen>, BTreeMap<String, u64>) {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = book.rules.len() != rules.len();
        let mut next = BTreeMap::new();
        let mut policies = BTreeMap::new();
        let mut out = Vec::with_capacity(rules.len());
        for (rule, packets) in rules {
            let old = book.rules.get(rule).copied();
            let seen = match old {
                None => Seen {
                    first_seen: now,
                    last_matched: (*packets > 0).then_some(now),
                    packets: *packets,
                },
                Some(s) if *packets > s.packets => Seen {
                    last_matched: Some(now),
                    packets: *packets,
                    ..s
                },
                // Equal, or smaller (the counters were recreated): no new match.
                Some(s) => Seen {
                    packets: *packets,
                    ..s
                },
            };
            changed |= old != Some(seen);
            if let Some(p) = rule.policy() {
                let name = p.to_string();
                let first = book.policies.get(&name).copied().unwrap_or(now);
                changed |= !book.policies.contains_key(&name);
                policies.insert(name, first);
            }
            next.insert(rule.clone(), seen);
            out.push(seen);
        }
        changed |= policies.len() != book.policies.len();
        book.rules = next;
        book.policies = policies.clone();
        if changed {
            if let Err(e) = self.save(&book) {
                warn!("{}: {e:#}", self.path.display());
            }
        }
        (out, policies)
    }

    fn save(&self, book: &Book) -> Result<()> {
        let file = File {
            rules: book
                .rules
                .iter()
                .map(|(rule, seen)| Entry {
                    rule: rule.clone(),
                    seen: *seen,
                })
                .collect(),
            policies: book.policies.clone(),
        };
        write_durable(&self.path, &serde_json::to_vec(&file)?)
    }
}

/// How often the rule counters are observed (the resolution of `last_matched`).
const OBSERVE_EVERY: Duration = Duration::from_mins(1);

impl super::Agent {
    /// Observe the rule counters now: each rule in force with its packets, what is known of
    /// it, and when each policy in force was first seen.
    #[expect(
        clippy::type_complexity,
        reason = "three parallel results, named at the call"
    )]
    pub fn observe_usage(&self) -> Result<(Vec<(RuleRef, u64)>, Vec<Seen>, BTreeMap<String, u64>)> {
        let snapshot = self.snapshot();
        let rules = &snapshot.compiled.rules;
        let counts = self
            .counters
            .rule_packets(rules.iter().map(|r| r.id + 1).max().unwrap_or(0))?;
        let rules: Vec<(RuleRef, u64)> = rules
            .iter()
            .map(|r| {
                (
                    r.rule.clone(),
                    counts.get(r.id as usize).copied().unwrap_or(0),
                )
            })
            .collect();
        let (seen, policies) = self.usage.observe(&rules, now());
        Ok((rules, seen, policies))
    }
}

/// Observe the rule counters at start and every [`OBSERVE_EVERY`], off the runtime's workers.
pub async fn observe_loop(agent: Arc<super::Agent>) {
    let mut tick = tokio::time::interval(OBSERVE_EVERY);
    loop {
        tick.tick().await;
        let a = agent.clone();
        match tokio::task::spawn_blocking(move || a.observe_usage()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("observing the rule counters: {e:#}"),
            Err(e) => warn!("observing the rule counters: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{document::Kind, PolicyId, Section};

    fn rule(index: usize) -> RuleRef {
        RuleRef::Rule {
            policy: PolicyId::parse(Kind::NetworkPolicy, "x/p"),
            section: Section::Ingress,
            index,
        }
    }

    #[test]
    fn times_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("enforcer-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let usage = Usage::load(&dir);
        let (seen, policies) = usage.observe(&[(rule(0), 0), (rule(1), 5)], 100);
        assert_eq!(
            seen[0],
            Seen {
                first_seen: 100,
                last_matched: None,
                packets: 0
            }
        );
        assert_eq!(seen[1].last_matched, Some(100));
        assert_eq!(policies.get("x/p"), Some(&100));
        // A restart: the book is read back; rule 0 matches later, rule 1 does not.
        let usage = Usage::load(&dir);
        let (seen, policies) = usage.observe(&[(rule(0), 3), (rule(1), 5)], 200);
        assert_eq!(
            seen[0],
            Seen {
                first_seen: 100,
                last_matched: Some(200),
                packets: 3
            }
        );
        assert_eq!(
            seen[1],
            Seen {
                first_seen: 100,
                last_matched: Some(100),
                packets: 5
            }
        );
        assert_eq!(policies.get("x/p"), Some(&100));
        // Counters recreated (smaller): no match, times kept.
        let (seen, _) = usage.observe(&[(rule(0), 1)], 300);
        assert_eq!(seen[0].last_matched, Some(200));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
