//! Object names, labels and Kubernetes label selectors (`matchLabels` AND
//! `matchExpressions`), shared by `NetworkPolicy` and `FlowPolicy`.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/apis/meta/v1.LabelSelector`: every `matchLabels`
//! entry and every expression must hold; `In` / `NotIn` take a non-empty `values` list,
//! `Exists` / `DoesNotExist` take none; `NotIn` and `DoesNotExist` match objects that lack the
//! key. The empty selector `{}` matches everything.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels of an object (sorted by key).
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries implicitly (Kubernetes ≥ 1.21 sets it on every namespace).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The operator of a selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRequirement")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    key: String,
    operator: Operator,
    #[serde(default)]
    values: Option<Vec<String>>,
}

impl TryFrom<RawRequirement> for Requirement {
    type Error = String;

    fn try_from(raw: RawRequirement) -> Result<Requirement, String> {
        check_label_key(&raw.key)?;
        let values = raw.values.unwrap_or_default();
        match raw.operator {
            Operator::In | Operator::NotIn if values.is_empty() => Err(format!(
                "matchExpressions: operator {:?} on key {:?} needs at least one value",
                raw.operator, raw.key
            )),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Err(format!(
                "matchExpressions: operator {:?} on key {:?} takes no values",
                raw.operator, raw.key
            )),
            _ => Ok(Requirement {
                key: raw.key,
                operator: raw.operator,
                values,
            }),
        }
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector. `LabelSelector::default()` (`{}`) selects everything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawSelector")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    match_labels: Option<Labels>,
    #[serde(default)]
    match_expressions: Option<Vec<Requirement>>,
}

impl TryFrom<RawSelector> for LabelSelector {
    type Error = String;

    fn try_from(raw: RawSelector) -> Result<LabelSelector, String> {
        let match_labels = raw.match_labels.unwrap_or_default();
        for (k, v) in &match_labels {
            check_label_key(k)?;
            check_label_value(v)?;
        }
        Ok(LabelSelector {
            match_labels,
            match_expressions: raw.match_expressions.unwrap_or_default(),
        })
    }
}

impl LabelSelector {
    /// Whether the selector is `{}` (selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// A selector of exactly these labels.
    pub fn of(labels: Labels) -> LabelSelector {
        LabelSelector {
            match_labels: labels,
            match_expressions: Vec::new(),
        }
    }
}

impl fmt::Display for LabelSelector {
    /// kubectl's selector syntax: `a=b,c in (d,e),!f`; `{}` for the empty selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// Checks the characters and length of a name or service.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(format!(
            "character {c:?} not allowed (use letters, digits, '-', '_' and '.')"
        ));
    }
    Ok(())
}

/// A label key: an optional DNS prefix and `/`, then a name of 1–63 characters
/// (alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            return Err(format!("invalid label key {key:?}: bad prefix {p:?}"));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "invalid label key {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or 1–63 alphanumerics, `-`, `_`, `.` beginning and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks every key and value of a label map.
pub fn check_labels(labels: &Labels) -> Result<(), String> {
    for (k, v) in labels {
        check_label_key(k)?;
        check_label_value(v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn selector(json: &str) -> Result<LabelSelector, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn operators() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let bare = labels(&[]);
        let s = |j: &str| selector(j).expect("valid");
        assert!(s("{}").matches(&pod) && s("{}").matches(&bare));
        assert!(s(r#"{"matchLabels":{"app":"web"}}"#).matches(&pod));
        assert!(!s(r#"{"matchLabels":{"app":"web","x":"y"}}"#).matches(&pod));
        let expr = |op: &str, values: &str| {
            s(&format!(
                r#"{{"matchExpressions":[{{"key":"app","operator":"{op}"{values}}}]}}"#
            ))
        };
        assert!(expr("In", r#","values":["web","db"]"#).matches(&pod));
        assert!(!expr("In", r#","values":["db"]"#).matches(&pod));
        assert!(!expr("In", r#","values":["web"]"#).matches(&bare));
        assert!(!expr("NotIn", r#","values":["web"]"#).matches(&pod));
        assert!(expr("NotIn", r#","values":["web"]"#).matches(&bare));
        assert!(expr("Exists", "").matches(&pod));
        assert!(!expr("Exists", "").matches(&bare));
        assert!(expr("DoesNotExist", "").matches(&bare));
        assert!(!expr("DoesNotExist", "").matches(&pod));
        // AND of labels and expressions.
        let both = s(
            r#"{"matchLabels":{"tier":"front"},"matchExpressions":[{"key":"app","operator":"NotIn","values":["db"]}]}"#,
        );
        assert!(both.matches(&pod));
        assert_eq!(both.to_string(), "tier=front,app notin (db)");
    }

    #[test]
    fn invalid_selectors() {
        let e = selector(r#"{"matchExpressions":[{"key":"a","operator":"Equals"}]}"#);
        assert!(e.expect_err("bad op").contains("unknown variant"));
        let e = selector(r#"{"matchExpressions":[{"key":"a","operator":"In","values":[]}]}"#);
        assert!(e.expect_err("empty").contains("at least one value"));
        let e = selector(r#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#);
        assert!(e.expect_err("none").contains("at least one value"));
        let e =
            selector(r#"{"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]}"#);
        assert!(e.expect_err("values").contains("takes no values"));
        assert!(selector(r#"{"matchLabels":{"a b":"c"}}"#).is_err());
        assert!(selector(r#"{"matchLabels":{"app.kubernetes.io/name":"c"}}"#).is_ok());
    }
}
