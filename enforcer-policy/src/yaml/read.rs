//! Reading the marked tree into typed values: [`Ctx`] collects every error with the position
//! of the offending node, [`MapReader`] reads the fields of one mapping.

use super::{Key, Node, Pos, Value};
use crate::errors::{PolicyError, PolicyErrors};

/// Collects errors while reading a tree; every error carries the file and the node's position.
#[derive(Debug)]
pub struct Ctx<'f> {
    pub file: &'f str,
    pub errors: Vec<PolicyError>,
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f str) -> Ctx<'f> {
        Ctx {
            file,
            errors: Vec::new(),
        }
    }

    /// Records an error at `pos`.
    pub fn error(&mut self, pos: Pos, reason: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            reason: reason.into(),
        });
    }

    /// `Ok(value)` if no error was recorded, else every error.
    /// Errors are sorted by position.
    pub fn finish<T>(mut self, value: T) -> Result<T, PolicyErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(PolicyErrors(self.errors))
        }
    }

    /// Opens `node` as a mapping whose keys must be among `allowed` (every other key is reported
    /// as an unknown field). `path` names the mapping in messages (`""` is the document root,
    /// e.g. `spec.ingress[0]` otherwise); `anchor` is where a missing field is reported (usually
    /// the key that holds this mapping; the mapping itself when `None`).
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        anchor: Option<Pos>,
        path: &str,
        allowed: &[&str],
    ) -> Option<MapReader<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "{} must be a mapping, found {}",
                    describe(path),
                    node.value.type_name()
                ),
            );
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.error(key.pos, unknown_field(&key.name, path, allowed));
            }
        }
        Some(MapReader {
            entries,
            anchor: anchor.unwrap_or(node.pos),
            path: path.to_string(),
        })
    }

    /// The items of a list (`null` counts as an empty list).
    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => Some(&[]),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be a list, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A string scalar.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        if let Value::Str(s) = &node.value {
            Some(s.clone())
        } else {
            self.error(
                node.pos,
                format!("{what} must be a string, found {}", node.value.type_name()),
            );
            None
        }
    }

    /// A non-empty string scalar.
    pub fn non_empty_string(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.trim().is_empty() {
            self.error(node.pos, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    /// An integer scalar within `min..=max`.
    pub fn int(&mut self, node: &Node, what: &str, min: i128, max: i128) -> Option<i128> {
        let Value::Int(i) = node.value else {
            self.error(
                node.pos,
                format!(
                    "{what} must be an integer, found {}",
                    node.value.type_name()
                ),
            );
            return None;
        };
        if i < min || i > max {
            self.error(node.pos, format!("{what} {i} out of range ({min}-{max})"));
            return None;
        }
        Some(i)
    }

    /// A map of strings to strings (labels, annotations).
    pub fn string_map(&mut self, node: &Node, what: &str) -> Option<Vec<(String, String)>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return Some(Vec::new()),
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", other.type_name()),
                );
                return None;
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if let Some(v) = self.string(value, &format!("{what}.{}", key.name)) {
                out.push((key.name.clone(), v));
            }
        }
        Some(out)
    }
}

/// How a path is named in messages.
pub fn describe(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

/// The message for an unknown key.
pub fn unknown_field(name: &str, path: &str, allowed: &[&str]) -> String {
    format!(
        "unknown field `{name}` in {} (expected one of: {})",
        describe(path),
        allowed.join(", ")
    )
}

/// A mapping opened by [`Ctx::map`].
#[derive(Debug, Clone)]
pub struct MapReader<'n> {
    entries: &'n [(Key, Node)],
    anchor: Pos,
    path: String,
}

impl<'n> MapReader<'n> {
    /// Where this mapping is reported (for missing fields).
    pub fn anchor(&self) -> Pos {
        self.anchor
    }

    /// The path of this mapping (`""` for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` inside this mapping.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The key and value of `key`, if present (even when `null`).
    pub fn entry(&self, key: &str) -> Option<(&'n Key, &'n Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, v)| (k, v))
    }

    /// The value of `key` if present and not `null`.
    pub fn optional(&self, key: &str) -> Option<&'n Node> {
        self.entry(key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// The value of `key`; a missing or `null` value is reported.
    pub fn required(&self, ctx: &mut Ctx, key: &str) -> Option<&'n Node> {
        match self.entry(key) {
            Some((_, v)) if !v.is_null() => Some(v),
            Some((k, _)) => {
                ctx.error(
                    k.pos,
                    format!("missing value for required field `{}`", self.child(key)),
                );
                None
            }
            None => {
                ctx.error(
                    self.anchor,
                    format!("missing required field `{key}` in {}", describe(&self.path)),
                );
                None
            }
        }
    }

    /// Opens the mapping under `key`; missing fields inside it are reported at the key.
    pub fn map(
        &self,
        ctx: &mut Ctx,
        key: &str,
        required: bool,
        allowed: &[&str],
    ) -> Option<MapReader<'n>> {
        let node = if required {
            self.required(ctx, key)?
        } else {
            self.optional(key)?
        };
        let anchor = self.entry(key).map(|(k, _)| k.pos);
        ctx.map(node, anchor, &self.child(key), allowed)
    }
}
