//! A marked YAML tree for strict parsing, read by serde-saphyr.
//!
//! serde-saphyr parses the text (YAML 1.2 core schema; quoted scalars are strings), rejects
//! duplicate keys, unknown tags and unknown aliases, and enforces the input budget (nesting
//! depth, documents, alias expansion); every node keeps its 1-based line and column
//! ([`serde_saphyr::Spanned`]) and mapping keys keep their order. Every error is
//! `file:line:column: reason`.
//!
//! The [`Ctx`] and [`MapReader`] helpers ([`read`]) turn the tree into typed values while
//! collecting every error with the position of the offending node.

mod read;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::Spanned;
use serde_saphyr::{DefaultMessageFormatter, Error as YamlError, Location, MessageFormatter};

pub use self::read::{describe, unknown_field, Ctx, MapReader};
use super::errors::{PolicyError, PolicyErrors};

/// A position in a file: 1-based line and column (0 when unknown, e.g. for JSON input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(location: Location) -> Pos {
        let convert = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Pos {
            line: convert(location.line()),
            column: convert(location.column()),
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
    /// A floating-point number.
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

/// The most events that aliases may replay in one input.
const MAX_ALIAS_EXPANSION: usize = 100_000;
/// The largest input parsed (a `ConfigMap` holds at most 1 MiB).
pub const MAX_INPUT_BYTES: usize = 16 << 20;
/// The deepest nesting of collections (policies need fewer than 10).
pub const MAX_DEPTH: usize = 64;
/// The most documents in one input.
pub const MAX_DOCUMENTS: usize = 100_000;
/// The most nodes (collections and scalars) in one input. The parser's own default (250 000)
/// refuses a 10 000-rule policy; a node takes at least two bytes of input, so this bound
/// only restates [`MAX_INPUT_BYTES`] and caps the tree's memory in proportion to it.
pub const MAX_NODES: usize = MAX_INPUT_BYTES / 2;
/// The most parser events in one input (each node is one or two events).
const MAX_EVENTS: usize = 2 * MAX_NODES;

/// The stack of the parser thread: deserialization recurses once per nesting level (up to
/// [`MAX_DEPTH`]), and a debug build needs about 40 KiB a level, more than the 2 MiB of a
/// spawned thread. Reserved, not committed, memory.
const PARSER_STACK: usize = 64 << 20;

/// Parses `text` (possibly several `---`-separated documents) into one root node per
/// non-empty document, on a thread whose stack fits the deepest input allowed.
pub fn load(file: &str, text: &str) -> Result<Vec<Node>, PolicyErrors> {
    if text.len() > MAX_INPUT_BYTES {
        let reason = format!("input larger than {MAX_INPUT_BYTES} bytes");
        return Err(PolicyError::new(file, 1, 1, reason).into());
    }
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("yaml".to_string())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || load_here(file, text));
        match parser.map(std::thread::ScopedJoinHandle::join) {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => {
                Err(PolicyError::new(file, 1, 1, format!("cannot start the parser: {e}")).into())
            }
        }
    })
}

fn load_here(file: &str, text: &str) -> Result<Vec<Node>, PolicyErrors> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: MAX_DOCUMENTS,
            max_nodes: MAX_NODES,
            max_events: MAX_EVENTS,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EXPANSION,
        },
        reject_unsupported_tags: true,
        strict_booleans: true,
        // Duplicates reach the tree, which reports them with the first key's line.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    };
    let documents = serde_saphyr::from_multiple_with_options::<Node>(text, options)
        .map_err(|e| PolicyErrors::from(error(file, &e)))?;
    let mut errors = Vec::new();
    for document in &documents {
        duplicate_keys(file, document, &mut errors);
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// Reports every key defined twice in one mapping, at the second one.
fn duplicate_keys(file: &str, node: &Node, errors: &mut Vec<PolicyError>) {
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                duplicate_keys(file, item, errors);
            }
        }
        Value::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.name == key.name) {
                    let reason = format!(
                        "duplicate key `{}` (first defined at line {})",
                        key.name, first.pos.line
                    );
                    errors.push(PolicyError::new(file, key.pos.line, key.pos.column, reason));
                }
                duplicate_keys(file, value, errors);
            }
        }
        _ => {}
    }
}

/// A serde-saphyr error as `file:line:column: reason`.
fn error(file: &str, err: &YamlError) -> PolicyError {
    // Located where the error surfaced (an alias: where it is used).
    let pos = err.location().map_or(Pos { line: 1, column: 1 }, Pos::of);
    let mut err = err;
    #[allow(deprecated)]
    while let YamlError::AliasError { error, .. } | YamlError::WithSnippet { error, .. } = err {
        err = error;
    }
    let reason = match err {
        YamlError::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => format!("nested deeper than {MAX_DEPTH} levels"),
            BudgetBreach::Documents { .. } => format!("more than {MAX_DOCUMENTS} documents"),
            BudgetBreach::Nodes { .. } => format!("more than {MAX_NODES} YAML nodes"),
            other => format!("input over a parser limit: {other:?}"),
        },
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. } => {
            "too many nodes through YAML aliases".to_string()
        }
        YamlError::UnsupportedTag { tag, .. } => format!("unsupported YAML tag {tag}"),
        YamlError::Message { msg, .. } => msg.clone(),
        other => format!(
            "invalid YAML: {}",
            DefaultMessageFormatter.format_message(other)
        ),
    };
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    PolicyError::new(file, pos.line, pos.column, reason)
}

/// A node read by serde-saphyr, with its position.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        let spanned = Spanned::<Content<true>>::deserialize(deserializer)?;
        Ok(Node::new(spanned.value.0, Pos::of(spanned.referenced)))
    }
}

/// A node from any other self-describing serde input (e.g. JSON): no positions (line 0).
pub struct PlainNode(pub Node);

impl<'de> Deserialize<'de> for PlainNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PlainNode, D::Error> {
        let content = Content::<false>::deserialize(deserializer)?;
        Ok(PlainNode(Node::new(content.0, Pos::default())))
    }
}

/// The content of a node; `SPANNED`: its children and keys keep their positions.
struct Content<const SPANNED: bool>(Value);

impl<'de, const SPANNED: bool> Deserialize<'de> for Content<SPANNED> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ContentVisitor::<SPANNED>)
            .map(Content)
    }
}

/// A child node.
fn next_node<'de, A: SeqAccess<'de>, const SPANNED: bool>(
    seq: &mut A,
) -> Result<Option<Node>, A::Error> {
    if SPANNED {
        seq.next_element::<Node>()
    } else {
        Ok(seq.next_element::<PlainNode>()?.map(|n| n.0))
    }
}

/// A mapping key and its position.
fn next_key<'de, A: MapAccess<'de>, const SPANNED: bool>(
    map: &mut A,
) -> Result<Option<Key>, A::Error> {
    if SPANNED {
        let key = map.next_key::<Spanned<KeyText>>()?;
        Ok(key.map(|k| Key {
            name: k.value.0,
            pos: Pos::of(k.referenced),
        }))
    } else {
        let key = map.next_key::<KeyText>()?;
        Ok(key.map(|k| Key {
            name: k.0,
            pos: Pos::default(),
        }))
    }
}

/// A mapping key: a scalar's text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyText, D::Error> {
        let text = match deserializer.deserialize_any(ContentVisitor::<false>)? {
            Value::Str(s) | Value::Float(s) => s,
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            Value::Seq(_) | Value::Map(_) => {
                return Err(de::Error::custom("mapping keys must be scalars"))
            }
        };
        Ok(KeyText(text))
    }
}

struct ContentVisitor<const SPANNED: bool>;

impl<'de, const SPANNED: bool> Visitor<'de> for ContentVisitor<SPANNED> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }

    /// Integers too large for 128 bits arrive as floats: they saturate (out of every range).
    #[allow(clippy::cast_possible_truncation)]
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() >= 2f64.powi(63) {
            return Ok(Value::Int(v as i128));
        }
        Ok(Value::Float(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Content::<SPANNED>::deserialize(deserializer).map(|c| c.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = next_node::<A, SPANNED>(&mut seq)? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = next_key::<A, SPANNED>(&mut map)? {
            // In YAML, duplicates are kept and reported by `duplicate_keys` with positions.
            if !SPANNED && entries.iter().any(|(k, _)| k.name == key.name) {
                let name = &key.name;
                return Err(de::Error::custom(format!("duplicate key `{name}`")));
            }
            let value = if SPANNED {
                map.next_value::<Node>()?
            } else {
                map.next_value::<PlainNode>()?.0
            };
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
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
        assert_eq!(value("j"), Some(Value::Float("inf".into())));
        assert_eq!(value("k"), Some(Value::Float("1000".into())));
        assert_eq!(value("l"), Some(Value::Str("yes".into())));
    }

    #[test]
    fn large_policies_fit_the_node_budget() {
        // 100 000 rules of 3 nodes each (a 10 000-rule policy has ~250 000 nodes).
        let text: String = std::iter::once("rules:\n".to_string())
            .chain((0..100_000).map(|i| format!("  - {{port: {i}, protocol: TCP}}\n")))
            .collect();
        let node = load_one(&text);
        match node.get("rules").map(|n| &n.value) {
            Some(Value::Seq(items)) => assert_eq!(items.len(), 100_000),
            other => panic!("expected a sequence, got {other:?}"),
        }
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
        assert!(
            errors.0[0]
                .reason
                .contains("duplicate key `a` (first defined at line 1)"),
            "{errors}"
        );
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
    fn the_deepest_input_allowed_fits_a_small_stack() {
        // A spawned thread has 2 MiB; the parser runs on its own (found by the fuzzer: a
        // 64-level flow sequence overflowed a debug build's 2 MiB stack).
        let deepest = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        let small = std::thread::Builder::new().stack_size(2 << 20);
        let results = small
            .spawn(move || (load("y.yaml", &deepest), load("y.yaml", &too_deep)))
            .expect("spawn")
            .join()
            .expect("no overflow");
        assert!(results.0.is_ok(), "{:?}", results.0);
        let errors = results.1.expect_err("too deep");
        assert_eq!(
            errors.to_string(),
            "y.yaml:1:65: nested deeper than 64 levels"
        );
    }

    #[test]
    fn multiple_documents() {
        // Empty documents are left out.
        let docs = load("y.yaml", "a: 1\n---\n---\nb: 2\n").expect("valid");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].pos.line, 4);
        assert!(load("y.yaml", "").expect("empty").is_empty());
    }
}
