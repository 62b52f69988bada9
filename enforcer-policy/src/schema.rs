//! The enforcer/v1 schema as serde types, read strictly from the marked YAML tree
//! ([`from_node_strict`]): the structure and the scalar types come from serde
//! (`deny_unknown_fields`, typed enums), and the semantic checks follow, with the positions
//! that the [`Spanned`] fields keep. Every refusal is `file:line:column: reason` naming the
//! field (`spec.ingress[0].ports[1].endPort`).
//!
//! Port entries and rate limits are read here; the rest of the enforcer/v1 kinds is still read
//! by [`super::parse`]'s readers, which call these.

use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::node_de::{from_node_strict, DeError, Spanned};
use super::ports::{PortName, PortSpec, Protocol};
use super::rate_limit::{RateLimit, RateScope};
use super::yaml::{Ctx, Node, Pos};

/// Reads a schema type at `path`, reporting a deserialization error at its node.
pub fn read<'n, T: Deserialize<'n>>(
    ctx: &mut Ctx,
    node: &'n Node,
    path: &str,
    anchor: Option<Pos>,
) -> Option<T> {
    from_node_strict(node, path, anchor)
        .map_err(|e: DeError| ctx.error(e.pos.unwrap_or(node.pos), e.reason()))
        .ok()
}

/// A port entry as written: `{protocol, port, endPort}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortEntry {
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<PortValue>>,
    #[serde(default)]
    pub end_port: Option<Spanned<PortValue>>,
}

/// `port:` / `endPort:`: a number, or a port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortValue {
    Number(i128),
    Name(String),
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PortValue, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortValue, E> {
                Ok(PortValue::Number(i128::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortValue, E> {
                Ok(PortValue::Number(i128::from(v)))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<PortValue, E> {
                Ok(PortValue::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortValue, E> {
                Ok(PortValue::Name(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A port number (1 to 65535) and where it is.
fn port_number(ctx: &mut Ctx, value: &Spanned<PortValue>, what: &str) -> Option<(u16, Pos)> {
    match &value.value {
        PortValue::Number(n) => match u16::try_from(*n) {
            Ok(port) if port > 0 => Some((port, value.pos)),
            _ => {
                ctx.error(value.pos, format!("{what} {n} out of range (1-65535)"));
                None
            }
        },
        PortValue::Name(s) => {
            let reason = format!("{what} must be a number from 1 to 65535, not {s:?}");
            ctx.error(value.pos, reason);
            None
        }
    }
}

/// `protocol:` (TCP when omitted), case-insensitive.
fn protocol(ctx: &mut Ctx, text: Option<&Spanned<String>>, path: &str) -> Option<Protocol> {
    let Some(text) = text else {
        return Some(Protocol::Tcp);
    };
    Protocol::from_str(&text.value)
        .map_err(|reason| ctx.error(text.pos, format!("{path}.protocol: {reason}")))
        .ok()
}

impl PortEntry {
    /// The checks serde does not make: protocol, port range, named port, ICMP without ports.
    pub fn validate(self, ctx: &mut Ctx, path: &str) -> Option<PortSpec> {
        let errors_before = ctx.errors.len();
        let protocol = protocol(ctx, self.protocol.as_ref(), path)?;
        let mut name = None;
        let port = match &self.port {
            Some(Spanned {
                value: PortValue::Name(text),
                pos,
                ..
            }) => {
                match text.parse::<PortName>() {
                    Ok(n) => name = Some(n),
                    Err(reason) => ctx.error(*pos, format!("{path}.port: {reason}")),
                }
                None
            }
            Some(value) => port_number(ctx, value, &format!("{path}.port")),
            None => None,
        };
        let end_port = self
            .end_port
            .as_ref()
            .and_then(|value| port_number(ctx, value, &format!("{path}.endPort")));
        if protocol == Protocol::Icmp {
            for (key, value) in [("port", &self.port), ("endPort", &self.end_port)] {
                if let Some(value) = value {
                    ctx.error(value.key, format!("{path}.{key}: ICMP has no ports"));
                }
            }
        }
        if let Some((_, end_pos)) = end_port.filter(|_| name.is_some()) {
            let reason = format!("{path}: endPort requires a numeric port, not a named one");
            ctx.error(end_pos, reason);
        }
        if let Some((end, end_pos)) = end_port {
            match port {
                None if self.port.is_none() => {
                    ctx.error(end_pos, format!("{path}: endPort requires port"));
                }
                Some((port, _)) if end < port => {
                    let reason = format!("{path}: endPort {end} is less than port {port}");
                    ctx.error(end_pos, reason);
                }
                _ => {}
            }
        }
        (ctx.errors.len() == errors_before).then_some(PortSpec {
            protocol,
            port: port.map(|(p, _)| p),
            end_port: end_port.map(|(p, _)| p),
            name,
        })
    }
}

/// `rateLimit:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitEntry {
    #[serde(default)]
    pub packets_per_second: Option<Spanned<i128>>,
    #[serde(default)]
    pub bytes_per_second: Option<Spanned<i128>>,
    #[serde(default)]
    pub burst: Option<Spanned<i128>>,
    /// `source` when omitted.
    #[serde(default)]
    pub per: Option<RateScope>,
}

/// A rate or burst: 1 to `u64::MAX`.
fn positive(ctx: &mut Ctx, value: Option<&Spanned<i128>>, what: &str) -> Option<u64> {
    let value = value?;
    match u64::try_from(value.value) {
        _ if value.value < 1 => {
            let reason = format!("{what} must be greater than 0, got {}", value.value);
            ctx.error(value.pos, reason);
            None
        }
        Ok(v) => Some(v),
        Err(_) => {
            let reason = format!("{what} {} out of range (1-{})", value.value, u64::MAX);
            ctx.error(value.pos, reason);
            None
        }
    }
}

impl RateLimitEntry {
    /// The checks serde does not make: rates and burst > 0, at least one rate (reported at
    /// `anchor`, the `rateLimit` key).
    pub fn validate(self, ctx: &mut Ctx, path: &str, anchor: Pos) -> Option<RateLimit> {
        let errors_before = ctx.errors.len();
        let pps = self.packets_per_second.as_ref();
        let bps = self.bytes_per_second.as_ref();
        let packets_per_second = positive(ctx, pps, &format!("{path}.packetsPerSecond"));
        let bytes_per_second = positive(ctx, bps, &format!("{path}.bytesPerSecond"));
        let burst = positive(ctx, self.burst.as_ref(), &format!("{path}.burst"));
        if pps.is_none() && bps.is_none() {
            let reason = format!("{path} needs packetsPerSecond and/or bytesPerSecond");
            ctx.error(anchor, reason);
        }
        (ctx.errors.len() == errors_before).then_some(RateLimit {
            packets_per_second,
            bytes_per_second,
            burst,
            per: self.per.unwrap_or_default(),
        })
    }
}
