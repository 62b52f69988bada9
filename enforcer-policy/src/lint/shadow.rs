//! Shadowed and redundant rules, decided exactly over the equivalence classes: a rule is
//! shadowed when it decides no point of any side (other rules decide everything it matches); it
//! is redundant when it decides some, but deciding those points without it (and without the
//! shadowed rules) gives the same verdicts, audit verdicts and rate-limit buckets.

use std::collections::{BTreeMap, BTreeSet};

use super::super::identity::View;
use super::classes::Classes;
use super::sides::{decide, for_each_side, RuleKey};

/// Which rules decide some flow, and which of those change some verdict when removed.
#[derive(Debug, Default)]
pub struct RuleUse {
    pub decides: BTreeSet<RuleKey>,
    pub changes: BTreeSet<RuleKey>,
    /// For each rule, some of the rules that decide points it matches (for the message).
    pub decided_by: BTreeMap<RuleKey, BTreeSet<RuleKey>>,
}

impl RuleUse {
    pub fn shadowed(&self, key: &RuleKey) -> bool {
        !self.decides.contains(key)
    }

    pub fn redundant(&self, key: &RuleKey) -> bool {
        self.decides.contains(key) && !self.changes.contains(key)
    }
}

/// Computes the use of every rule of `view`.
pub fn rule_use<'v, 'a>(view: &'v View<'a>, classes: &Classes<'v, 'a>) -> RuleUse {
    let mut decides = BTreeSet::new();
    let mut decided_by: BTreeMap<RuleKey, BTreeSet<RuleKey>> = BTreeMap::new();
    for_each_side(view, classes, |side| {
        for p in side.points.iter() {
            let (e, a) = side.decisions(p);
            decides.extend(e.by.into_iter().chain(a.by));
            for c in &p.matching {
                let others = decided_by.entry(c.key).or_default();
                if others.len() < 3 {
                    others.extend(e.by.into_iter().chain(a.by).filter(|k| *k != c.key));
                }
            }
        }
    });
    let mut changes = BTreeSet::new();
    for_each_side(view, classes, |side| {
        for p in side.points.iter() {
            let (e, a) = side.decisions(p);
            for r in e.by.into_iter().chain(a.by) {
                if changes.contains(&r) {
                    continue;
                }
                let skip = |k: &RuleKey| *k == r || !decides.contains(k);
                let e2 = decide(&p.matching, side.isolated.0, false, skip);
                let a2 = decide(&p.matching, side.isolated.1, true, skip);
                if (e2.allow, e2.bucket, a2.allow) != (e.allow, e.bucket, a.allow) {
                    changes.insert(r);
                }
            }
        }
    });
    RuleUse {
        decides,
        changes,
        decided_by,
    }
}
