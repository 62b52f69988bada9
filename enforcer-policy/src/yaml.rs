//! A small marked YAML tree for strict parsing.
//!
//! The tree is built from `saphyr-parser` events so that every node keeps its 1-based line and
//! column, mapping keys keep their order, and duplicate keys are reported instead of silently
//! overwritten (which a generic YAML loader does). Scalars are typed with the YAML 1.2 core schema;
//! quoted scalars are always strings.
//!
//! The [`Ctx`] and [`MapReader`] helpers turn the tree into typed values while collecting every
//! error with the position of the offending node.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::model::{PolicyError, PolicyErrors};

/// A position in a file: 1-based line and column (0 when unknown, e.g. for JSON input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A mapping key: its text and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// The typed content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer; values beyond `i128` saturate (they are out of every range we accept).
    Int(i128),
    /// A floating-point number, kept as written.
    Float(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Node {
        Node { value, pos }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value of `key` if this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses `text` (possibly several `---`-separated documents) into one root node per document.
/// Empty documents are returned as [`Value::Null`] nodes.
pub fn load(file: &str, text: &str) -> Result<Vec<Node>, PolicyErrors> {
    let mut builder = Builder {
        file,
        ..Builder::default()
    };
    if text.len() > MAX_INPUT_BYTES {
        let reason = format!("input larger than {MAX_INPUT_BYTES} bytes");
        builder.error(Pos { line: 1, column: 1 }, reason);
        return Err(PolicyErrors(builder.errors));
    }
    for event in Parser::new_from_str(text) {
        match event {
            Ok((event, span)) => {
                builder.on_event(event, &span);
                if let Some(reason) = builder.over_limit() {
                    builder.error(Pos::from_span(&span), reason);
                    break;
                }
            }
            Err(err) => {
                builder.errors.push(scan_error(file, &err));
                break;
            }
        }
    }
    if builder.errors.is_empty() {
        Ok(builder.documents)
    } else {
        Err(PolicyErrors(builder.errors))
    }
}

/// The most nodes that aliases may add to one input.
const MAX_ALIAS_EXPANSION: usize = 100_000;
/// The largest input parsed (a `ConfigMap` holds at most 1 MiB).
pub const MAX_INPUT_BYTES: usize = 16 << 20;
/// The deepest nesting of collections (policies need fewer than 10; the tree is built and
/// dropped recursively, so depth must be bounded).
pub const MAX_DEPTH: usize = 64;
/// The most documents in one input.
pub const MAX_DOCUMENTS: usize = 100_000;

/// The number of nodes in a tree (keys included).
fn node_count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + node_count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn scan_error(file: &str, err: &ScanError) -> PolicyError {
    PolicyError {
        file: file.to_string(),
        line: err.marker().line(),
        column: err.marker().col() + 1,
        reason: format!("invalid YAML: {}", err.info()),
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending: Pending,
    },
}

/// What the next node of a mapping is.
#[derive(Default)]
enum Pending {
    /// A key.
    #[default]
    None,
    /// The value of this key.
    Key(Key),
    /// The value of a rejected (duplicate or non-scalar) key.
    Discard,
}

#[derive(Default)]
struct Builder<'f> {
    file: &'f str,
    stack: Vec<Frame>,
    /// Anchored nodes and their number of nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes created by expanding aliases (bounded, against "billion laughs" inputs).
    expanded: usize,
    documents: Vec<Node>,
    errors: Vec<PolicyError>,
}

impl Builder<'_> {
    /// Which input limit was passed, if any (parsing stops there).
    fn over_limit(&self) -> Option<String> {
        if self.expanded > MAX_ALIAS_EXPANSION {
            Some("too many nodes through YAML aliases".to_string())
        } else if self.stack.len() > MAX_DEPTH {
            Some(format!("nested deeper than {MAX_DEPTH} levels"))
        } else if self.documents.len() > MAX_DOCUMENTS {
            Some(format!("more than {MAX_DOCUMENTS} documents"))
        } else {
            None
        }
    }

    fn error(&mut self, pos: Pos, reason: String) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            reason,
        });
    }

    fn on_event(&mut self, event: Event<'_>, span: &Span) {
        let pos = Pos::from_span(span);
        match event {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
            Event::Alias(id) => {
                if let Some((node, size)) = self.anchors.get(&id) {
                    self.expanded = self.expanded.saturating_add(*size);
                    if self.expanded > MAX_ALIAS_EXPANSION {
                        return;
                    }
                    let node = Node {
                        value: node.value.clone(),
                        pos,
                    };
                    self.complete(node, None, 0);
                } else {
                    self.error(pos, "unknown YAML alias".to_string());
                    self.complete(Node::new(Value::Null, pos), None, 0);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = match scalar_value(&text, style, tag.as_deref()) {
                    Ok(value) => value,
                    Err(reason) => {
                        self.error(pos, reason);
                        Value::Null
                    }
                };
                self.complete(Node::new(value, pos), Some(text.into_owned()), anchor);
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(pos, tag.as_deref(), "seq");
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(pos, tag.as_deref(), "map");
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    pending: Pending::None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => {
                    self.complete(Node::new(Value::Seq(items), pos), None, anchor);
                }
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => {
                    self.complete(Node::new(Value::Map(entries), pos), None, anchor);
                }
                None => {}
            },
        }
    }

    fn check_collection_tag(&mut self, pos: Pos, tag: Option<&Tag>, expected: &str) {
        if let Some(tag) = tag {
            if !(tag.is_yaml_core_schema() && tag.suffix == expected) {
                self.error(
                    pos,
                    format!("unsupported YAML tag {}{}", tag.handle, tag.suffix),
                );
            }
        }
    }

    /// Adds a finished node to its parent (or as a document root). `raw` is the scalar's text,
    /// used when the node is a mapping key.
    fn complete(&mut self, node: Node, raw: Option<String>, anchor: usize) {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (node.clone(), node_count(&node)));
        }
        let mut error = None;
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, pending, ..
            }) => match std::mem::take(pending) {
                Pending::Key(key) => entries.push((key, node)),
                Pending::Discard => {}
                Pending::None => {
                    let name = match (&node.value, raw) {
                        (Value::Str(s), _) => Some(s.clone()),
                        (Value::Seq(_) | Value::Map(_), _) | (_, None) => None,
                        (_, Some(raw)) => Some(raw),
                    };
                    *pending = Pending::Discard;
                    match name {
                        None => {
                            error = Some((node.pos, "mapping keys must be scalars".to_string()));
                        }
                        Some(name) => {
                            if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                                error = Some((
                                    node.pos,
                                    format!(
                                        "duplicate key `{name}` (first defined at line {})",
                                        first.pos.line
                                    ),
                                ));
                            } else {
                                *pending = Pending::Key(Key {
                                    name,
                                    pos: node.pos,
                                });
                            }
                        }
                    }
                }
            },
        }
        if let Some((pos, reason)) = error {
            self.error(pos, reason);
        }
    }
}

fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!("unsupported YAML tag {}{}", tag.handle, tag.suffix));
        }
        return match tag.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_string())),
            "null" if is_null(text) => Ok(Value::Null),
            "bool" => parse_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| bad_tag(text, tag)),
            "int" => parse_int(text)
                .map(Value::Int)
                .ok_or_else(|| bad_tag(text, tag)),
            "float" if is_float(text) || parse_int(text).is_some() => {
                Ok(Value::Float(text.to_string()))
            }
            _ => Err(bad_tag(text, tag)),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    Ok(if is_null(text) {
        Value::Null
    } else if let Some(b) = parse_bool(text) {
        Value::Bool(b)
    } else if let Some(i) = parse_int(text) {
        Value::Int(i)
    } else if is_float(text) {
        Value::Float(text.to_string())
    } else {
        Value::Str(text.to_string())
    })
}

fn bad_tag(text: &str, tag: &Tag) -> String {
    format!(
        "value {text:?} does not match its YAML tag !!{}",
        tag.suffix
    )
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// YAML 1.2 core schema integers: decimal with optional sign, `0o` octal, `0x` hexadecimal.
fn parse_int(text: &str) -> Option<i128> {
    let (digits, radix) = if let Some(rest) = text.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = text.strip_prefix("0x") {
        (rest, 16)
    } else {
        (text, 10)
    };
    let (negative, body) = match digits.as_bytes().first() {
        Some(b'-') if radix == 10 => (true, &digits[1..]),
        Some(b'+') if radix == 10 => (false, &digits[1..]),
        _ => (false, digits),
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).unwrap_or(i128::MAX);
    Some(if negative { -magnitude } else { magnitude })
}

/// YAML 1.2 core schema floats (also `.inf` and `.nan`).
fn is_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(int_part)
        && frac_part.is_none_or(all_digits)
        && (!int_part.is_empty() || frac_part.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// Builds a [`Node`] (without positions) from any self-describing serde input, e.g. JSON.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn node(value: Value) -> Node {
        Node::new(value, Pos::default())
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Self::node(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Self::node(Value::Int(i128::from(v))))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Self::node(Value::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Self::node(Value::Int(i128::from(v))))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Self::node(Value::Int(
            i128::try_from(v).unwrap_or(i128::MAX),
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Self::node(Value::Float(v.to_string())))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Self::node(Value::Str(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Self::node(Value::Str(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Self::node(Value::Null))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Self::node(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Self::node(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let name = match key.value {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Float(f) => f,
                Value::Null | Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom("mapping keys must be strings"));
                }
            };
            let value = map.next_value::<Node>()?;
            if entries.iter().any(|(k, _)| k.name == name) {
                return Err(de::Error::custom(format!("duplicate key `{name}`")));
            }
            entries.push((
                Key {
                    name,
                    pos: Pos::default(),
                },
                value,
            ));
        }
        Ok(Self::node(Value::Map(entries)))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_one(text: &str) -> Node {
        load("y.yaml", text).expect("valid").remove(0)
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let node = load_one(
            "a: 1\nb: '1'\nc: 1.5\nd: true\ne: ~\nf:\ng: 10.0.0.1\nh: 0x1F\ni: -7\nj: .inf\nk: 1e3\nl: yes\n",
        );
        let value = |k: &str| node.get(k).map(|n| n.value.clone());
        assert_eq!(value("a"), Some(Value::Int(1)));
        assert_eq!(value("b"), Some(Value::Str("1".into())));
        assert_eq!(value("c"), Some(Value::Float("1.5".into())));
        assert_eq!(value("d"), Some(Value::Bool(true)));
        assert_eq!(value("e"), Some(Value::Null));
        assert_eq!(value("f"), Some(Value::Null));
        assert_eq!(value("g"), Some(Value::Str("10.0.0.1".into())));
        assert_eq!(value("h"), Some(Value::Int(31)));
        assert_eq!(value("i"), Some(Value::Int(-7)));
        assert_eq!(value("j"), Some(Value::Float(".inf".into())));
        assert_eq!(value("k"), Some(Value::Float("1e3".into())));
        assert_eq!(value("l"), Some(Value::Str("yes".into())));
    }

    #[test]
    fn positions_are_one_based() {
        let node = load_one("# c\nkey:\n  inner: [a, b]\n");
        assert_eq!(node.pos, Pos { line: 2, column: 1 });
        let inner = node.get("key").and_then(|k| k.get("inner")).expect("inner");
        assert_eq!(
            inner.pos,
            Pos {
                line: 3,
                column: 10
            }
        );
        let Value::Seq(items) = &inner.value else {
            panic!("seq")
        };
        assert_eq!(
            items[1].pos,
            Pos {
                line: 3,
                column: 14
            }
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errors = load("y.yaml", "a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(errors.0[0].line, 3);
        assert!(errors.0[0]
            .reason
            .contains("duplicate key `a` (first defined at line 1)"));
        let errors = load("y.yaml", "{a: 1, 'a': 2}").expect_err("duplicate");
        assert_eq!(errors.0[0].column, 8);
        assert!(load("y.yaml", "[1, 2]: x\n").is_err());
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            let refs = vec![format!("*a{p}"); 10].join(", ");
            text.push_str(
                &[
                    "a",
                    &i.to_string(),
                    ": &a",
                    &i.to_string(),
                    " [",
                    &refs,
                    "]\n",
                ]
                .concat(),
            );
        }
        let errors = load("y.yaml", &text).expect_err("bomb");
        assert!(errors.0[0].reason.contains("aliases"), "{errors}");
    }

    #[test]
    fn multiple_documents() {
        let docs = load("y.yaml", "a: 1\n---\n---\nb: 2\n").expect("valid");
        assert_eq!(docs.len(), 3);
        assert!(docs[1].is_null());
        assert_eq!(docs[2].pos.line, 4);
        assert!(load("y.yaml", "").expect("empty").is_empty());
    }
}
