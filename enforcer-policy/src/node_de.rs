//! A serde `Deserializer` over the marked YAML tree ([`Node`]), so that serde types (the
//! Kubernetes kinds) can be read from it while every error keeps the line and column of the
//! innermost node it happened in. Unknown fields are whatever the target type makes of them
//! (the Kubernetes types ignore them).

use std::fmt;

use serde::de::{
    self, value::StrDeserializer, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};

use super::yaml::{Node, Pos, Value};

/// An error with the position of the node it was raised in (`None` until a node claims it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
        }
    }
}

/// Deserializes `T` from `node`.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node))
}

/// Deserializer of one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

impl NodeDe<'_> {
    /// Gives an error raised while reading this node this node's position (inner errors keep
    /// theirs).
    fn at<T>(self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|mut e| {
            if e.pos.is_none() && self.0.pos.line > 0 {
                e.pos = Some(self.0.pos);
            }
            e
        })
    }

    fn scalar_text(self) -> Option<String> {
        match &self.0.value {
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

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.0.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => visitor.visit_i64(v),
                (_, Ok(v)) => visitor.visit_u64(v),
                _ => Err(de::Error::custom(format!("integer {i} is out of range"))),
            },
            Value::Float(text) => match text.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => visitor.visit_str(text),
            },
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Items(items.iter())),
            Value::Map(entries) => visitor.visit_map(Entries {
                entries: entries.iter(),
                value: None,
            }),
        };
        self.at(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// Strings accept any scalar (`labels: {tier: 1}` reads `"1"`).
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar_text() {
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
        match &self.0.value {
            Value::Str(s) => {
                let de: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                self.at(visitor.visit_enum(de))
            }
            other => self.at(Err(de::Error::custom(format!(
                "expected a string, found {}",
                other.type_name()
            )))),
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

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

struct Items<'a>(std::slice::Iter<'a, Node>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            Some(node) => NodeDe(node).at(seed.deserialize(NodeDe(node))).map(Some),
            None => Ok(None),
        }
    }
}

struct Entries<'a> {
    entries: std::slice::Iter<'a, (super::yaml::Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        let de: StrDeserializer<'_, DeError> = key.name.as_str().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|mut e| {
            e.pos = e.pos.or(Some(key.pos));
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            // Errors raised after the value was read (`try_from` checks) are the value's.
            Some(node) => NodeDe(node).at(seed.deserialize(NodeDe(node))),
            None => Err(de::Error::custom("a value without a key")),
        }
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
}
