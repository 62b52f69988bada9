//! A serde `Deserializer` over the marked YAML tree ([`Node`]), so that serde types can be read
//! from it while every error keeps the line and column of the innermost node it happened in,
//! and the path of that node (`spec.ingress[0].ports[1]`).
//!
//! Two modes: [`from_node`] reads the Kubernetes kinds as the API server does (any scalar reads
//! as a string; unknown fields are whatever the target type makes of them) and its errors are
//! serde's own text; [`from_node_strict`] reads the enforcer/v1 schema types (a string is a
//! string) and its errors are typed ([`DeErrorKind`]) and rendered by [`DeError::reason`] with
//! the path: `unknown field `x` in spec (expected one of: ...)`, `missing required field `x` in
//! spec`, `spec.service must be a string, found a list`. [`Spanned`] gives a schema type the
//! positions of a value and of its key, for the checks made after deserialization.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, value::StrDeserializer, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, Visitor,
};
use serde::Deserialize;

use super::yaml::{describe, Key, Node, Pos, Value};

/// Where a node is: the path of keys and indexes from the root, kept on the stack while
/// deserializing and rendered only for an error.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    Root,
    /// A path given as text (the hand-written readers pass theirs).
    Text(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Text(text) => f.write_str(text),
            Path::Key(parent, key) => match parent {
                Path::Root | Path::Text("") => f.write_str(key),
                _ => write!(f, "{parent}.{key}"),
            },
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// What went wrong, for the strict readers' messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeErrorKind {
    /// Anything else: `message` says it.
    Custom,
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
    /// A string that names none of the values of an enum.
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    /// `found` and `expected` as the messages name them (`a list`, `a string`).
    InvalidType {
        found: &'static str,
        expected: &'static str,
    },
}

/// An error with the position and path of the node it was raised in (`None` until a node
/// claims it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub pos: Option<Pos>,
    /// serde's own text.
    pub message: String,
    pub kind: DeErrorKind,
    pub path: Option<String>,
}

impl DeError {
    fn new(kind: DeErrorKind, message: String) -> DeError {
        DeError {
            pos: None,
            message,
            kind,
            path: None,
        }
    }

    /// The message of a strict reader: the error and the path of its node.
    pub fn reason(&self) -> String {
        let path = self.path.as_deref().unwrap_or_default();
        match &self.kind {
            DeErrorKind::UnknownField { field, expected } => format!(
                "unknown field `{field}` in {} (expected one of: {})",
                describe(path),
                expected.join(", ")
            ),
            DeErrorKind::MissingField(field) => {
                format!("missing required field `{field}` in {}", describe(path))
            }
            DeErrorKind::UnknownVariant { variant, expected } => {
                let expected = match expected.split_last() {
                    Some((last, [])) => (*last).to_string(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => "nothing".to_string(),
                };
                format!(
                    "invalid {} {variant:?}: expected {expected}",
                    describe(path)
                )
            }
            DeErrorKind::InvalidType { found, expected } => {
                format!("{} must be {expected}, found {found}", describe(path))
            }
            DeErrorKind::Custom if path.is_empty() => self.message.clone(),
            DeErrorKind::Custom => format!("{path}: {}", self.message),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// serde's text for an error (what [`DeError::message`] holds).
fn serde_text(error: &de::value::Error) -> String {
    error.to_string()
}

/// How a value is named in messages.
fn unexpected_name(unexpected: &Unexpected<'_>) -> &'static str {
    match unexpected {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a float",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "a list",
        Unexpected::Map => "a mapping",
        _ => "another value",
    }
}

/// How what serde expected is named in messages (`a sequence` is a list, a struct a mapping).
fn expected_name(expected: &dyn de::Expected) -> &'static str {
    let text = expected.to_string();
    match text.as_str() {
        "a sequence" => "a list",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a boolean" => "a boolean",
        "a map" => "a mapping",
        _ if text.starts_with("struct ") || text.starts_with("a map") => "a mapping",
        _ if text.starts_with('i') || text.starts_with('u') || text.contains("integer") => {
            "an integer"
        }
        _ => "another value",
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(DeErrorKind::Custom, msg.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        let kind = DeErrorKind::InvalidType {
            found: unexpected_name(&unexpected),
            expected: expected_name(expected),
        };
        let text = serde_text(&de::Error::invalid_type(unexpected, expected));
        DeError::new(kind, text)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let kind = DeErrorKind::UnknownField {
            field: field.to_string(),
            expected,
        };
        DeError::new(kind, serde_text(&de::Error::unknown_field(field, expected)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let kind = DeErrorKind::UnknownVariant {
            variant: variant.to_string(),
            expected,
        };
        DeError::new(
            kind,
            serde_text(&de::Error::unknown_variant(variant, expected)),
        )
    }

    fn missing_field(field: &'static str) -> Self {
        let text = serde_text(&de::Error::missing_field(field));
        DeError::new(DeErrorKind::MissingField(field), text)
    }
}

/// Deserializes `T` from `node` as the Kubernetes kinds are read (lenient scalars).
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: &Path::Root,
        anchor: node.pos,
        strict: false,
    })
}

/// Deserializes a schema type `T` from `node` at `path`, strictly; a missing field is reported
/// at `anchor` (the key that holds the node), or at the node.
pub fn from_node_strict<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &str,
    anchor: Option<Pos>,
) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: &Path::Text(path),
        anchor: anchor.unwrap_or(node.pos),
        strict: true,
    })
}

/// Deserializer of one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a, 'p> {
    node: &'a Node,
    path: &'p Path<'p>,
    /// Where a missing field of this mapping is reported: its key, or itself.
    anchor: Pos,
    /// Scalars keep their YAML type (the enforcer/v1 kinds); otherwise any scalar reads as a
    /// string (the Kubernetes kinds).
    strict: bool,
}

impl NodeDe<'_, '_> {
    /// Gives an error raised while reading this node this node's position and path (inner
    /// errors keep theirs; a missing field is reported at the anchor).
    fn at<T>(self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|mut e| {
            if e.pos.is_none() && self.node.pos.line > 0 {
                e.pos = Some(match e.kind {
                    DeErrorKind::MissingField(_) => self.anchor,
                    _ => self.node.pos,
                });
            }
            if e.path.is_none() {
                e.path = Some(self.path.to_string());
            }
            e
        })
    }

    fn scalar_text(self) -> Option<String> {
        match &self.node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(f) => Some(f.clone()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => visitor.visit_i64(v),
                (_, Ok(v)) => visitor.visit_u64(v),
                _ if self.strict => visitor.visit_i128(*i),
                _ => Err(de::Error::custom(format!("integer {i} is out of range"))),
            },
            Value::Float(text) => match text.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => visitor.visit_str(text),
            },
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Items {
                nodes: items.iter().enumerate(),
                path: self.path,
                strict: self.strict,
            }),
            Value::Map(entries) => visitor.visit_map(Entries {
                pairs: entries.iter(),
                value: None,
                path: self.path,
                strict: self.strict,
            }),
        };
        self.at(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// Strings accept any scalar in the lenient mode (`labels: {tier: 1}` reads `"1"`).
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar_text().filter(|_| !self.strict) {
            Some(text) => self.at(visitor.visit_string(text)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let de: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                self.at(visitor.visit_enum(de))
            }
            other => self.at(Err(DeError::new(
                DeErrorKind::InvalidType {
                    found: other.type_name(),
                    expected: "a string",
                },
                format!("expected a string, found {}", other.type_name()),
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_i128 deserialize_u128
        deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    /// [`Spanned`] asks for the node's positions; every other struct is a mapping.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED && fields == SPANNED_FIELDS {
            return visitor.visit_map(SpanAccess { de: self, next: 0 });
        }
        self.deserialize_any(visitor)
    }
}

struct Items<'a, 'p> {
    nodes: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p Path<'p>,
    strict: bool,
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.nodes.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, i);
        let de = NodeDe {
            node,
            path: &path,
            anchor: node.pos,
            strict: self.strict,
        };
        de.at(seed.deserialize(de)).map(Some)
    }
}

struct Entries<'a, 'p> {
    pairs: std::slice::Iter<'a, (Key, Node)>,
    value: Option<(&'a Key, &'a Node)>,
    path: &'p Path<'p>,
    strict: bool,
}

impl<'de> MapAccess<'de> for Entries<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.pairs.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        let de: StrDeserializer<'_, DeError> = key.name.as_str().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|mut e| {
            e.pos = e.pos.or(Some(key.pos));
            e.path = e.path.or_else(|| Some(self.path.to_string()));
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, node)) = self.value.take() else {
            return Err(de::Error::custom("a value without a key"));
        };
        let path = Path::Key(self.path, &key.name);
        let de = NodeDe {
            node,
            path: &path,
            anchor: key.pos,
            strict: self.strict,
        };
        // Errors raised after the value was read (`try_from` checks) are the value's.
        de.at(seed.deserialize(de))
    }
}

const SPANNED: &str = "$enforcer::Spanned";
const SPANNED_FIELDS: &[&str] = &["line", "column", "keyLine", "keyColumn", "value"];

/// A value with the position of its node and of the key that holds it (the node's own position
/// when it has no key). Only [`NodeDe`] gives positions; schema types are read through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
    pub key: Pos,
}

/// Gives a [`Spanned`] the positions of the node, then its value.
struct SpanAccess<'a, 'p> {
    de: NodeDe<'a, 'p>,
    next: usize,
}

impl<'de> MapAccess<'de> for SpanAccess<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(name) = SPANNED_FIELDS.get(self.next) else {
            return Ok(None);
        };
        let de: StrDeserializer<'_, DeError> = (*name).into_deserializer();
        seed.deserialize(de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (pos, anchor) = (self.de.node.pos, self.de.anchor);
        let number = match self.next {
            0 => pos.line,
            1 => pos.column,
            2 => anchor.line,
            3 => anchor.column,
            _ => {
                self.next += 1;
                return seed.deserialize(self.de);
            }
        };
        self.next += 1;
        let number = u64::try_from(number).unwrap_or(u64::MAX);
        seed.deserialize(number.into_deserializer())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Spanned<T>, D::Error> {
        deserializer.deserialize_struct(SPANNED, SPANNED_FIELDS, SpannedVisitor(PhantomData))
    }
}

struct SpannedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
    type Value = Spanned<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a node of the marked YAML tree")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
        let mut numbers = [0usize; 4];
        for number in &mut numbers {
            map.next_key::<de::IgnoredAny>()?;
            let n: u64 = map.next_value()?;
            *number = usize::try_from(n).unwrap_or(usize::MAX);
        }
        map.next_key::<de::IgnoredAny>()?;
        let value = map.next_value()?;
        Ok(Spanned {
            value,
            pos: Pos {
                line: numbers[0],
                column: numbers[1],
            },
            key: Pos {
                line: numbers[2],
                column: numbers[3],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::load;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        port: u16,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[test]
    fn errors_keep_the_innermost_position() {
        let node = load("f.yaml", "a: 1\nspec:\n  port: 70000\n")
            .expect("yaml")
            .remove(0);
        let spec = node.get("spec").expect("spec");
        let e = from_node::<Spec>(spec).expect_err("range");
        assert_eq!(e.pos, Some(Pos { line: 3, column: 9 }), "{e}");
        let node = load("f.yaml", "port: 80\nextra: [1]\nlabels: {tier: 1}\n")
            .expect("yaml")
            .remove(0);
        let spec: Spec = from_node(&node).expect("unknown fields ignored");
        assert_eq!(spec.port, 80);
        assert_eq!(spec.labels["tier"], "1");
        assert!(spec.name.is_none());
        let node = load("f.yaml", "name: x\n").expect("yaml").remove(0);
        let e = from_node::<Spec>(&node).expect_err("missing");
        assert_eq!(e.pos, Some(Pos { line: 1, column: 1 }));
        assert!(e.message.contains("missing field `port`"), "{e}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Strict {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Item {
        end_port: Spanned<u16>,
        #[serde(default)]
        per: Option<crate::rate_limit::RateScope>,
    }

    fn strict(text: &str) -> Result<Strict, DeError> {
        let node = load("f.yaml", text).expect("yaml").remove(0);
        from_node_strict::<Strict>(&node, "spec", None)
    }

    #[test]
    fn strict_errors_name_the_path_of_their_node() {
        let e = strict("name: [x]\n").expect_err("not a string");
        assert_eq!(e.reason(), "spec.name must be a string, found a list");
        assert_eq!(e.pos, Some(Pos { line: 1, column: 7 }));
        let e = strict("name: 1\n").expect_err("strict strings");
        assert_eq!(e.reason(), "spec.name must be a string, found an integer");
        let e = strict("name: x\nitems:\n  - {endPort: 1}\n  - {endPort: 2, bogus: 1}\n")
            .expect_err("unknown");
        assert_eq!(
            e.reason(),
            "unknown field `bogus` in spec.items[1] (expected one of: endPort, per)"
        );
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 4,
                column: 18
            })
        );
        let e = strict("items:\n  - {endPort: 1}\n").expect_err("missing");
        assert_eq!(e.reason(), "missing required field `name` in spec");
        let e = strict("name: x\nitems: {a: 1}\n").expect_err("not a list");
        assert_eq!(e.reason(), "spec.items must be a list, found a mapping");
        let e = strict("name: x\nitems: [{endPort: 1, per: all}]\n").expect_err("variant");
        assert_eq!(
            e.reason(),
            "invalid spec.items[0].per \"all\": expected source or rule"
        );
        let e = strict("name: x\nitems: [7]\n").expect_err("not a mapping");
        assert_eq!(
            e.reason(),
            "spec.items[0] must be a mapping, found an integer"
        );
    }

    #[test]
    fn spanned_values_keep_their_positions() {
        let s = strict("name: x\nitems:\n  - endPort:   80\n").expect("valid");
        assert_eq!(s.name, "x");
        let end = &s.items[0].end_port;
        assert_eq!(end.value, 80);
        assert_eq!(
            end.pos,
            Pos {
                line: 3,
                column: 16
            }
        );
        assert_eq!(end.key, Pos { line: 3, column: 5 });
        assert!(s.items[0].per.is_none());
    }
}
