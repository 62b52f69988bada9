//! Deserialization of documents and their parts from any serde input (JSON API requests,
//! stored state) through the same strict readers as the YAML parser ([`super::parse`]);
//! positions are then unknown (file `""`, line 0).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::document::Document;
use super::errors::PolicyErrors;
use super::model::{FlowPolicy, Mode, Peer, Rule, Workload};
use super::parse;
use super::ports::{PortSpec, Protocol};
use super::rate_limit::RateLimit;
use super::yaml::{Ctx, Node, PlainNode};

fn from_node<'de, D, T>(
    deserializer: D,
    read: impl FnOnce(&mut Ctx, &Node) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let node = PlainNode::deserialize(deserializer)?.0;
    let mut ctx = Ctx::new("");
    let value = read(&mut ctx, &node);
    match value {
        Some(value) if ctx.errors.is_empty() => Ok(value),
        _ if !ctx.errors.is_empty() => Err(D::Error::custom(PolicyErrors(ctx.errors))),
        _ => Err(D::Error::custom("invalid value")),
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        from_node(deserializer, |ctx, node| {
            if node.is_null() {
                ctx.error(node.pos, "empty document");
                return None;
            }
            parse::read_document(ctx, node)
        })
    }
}

impl<'de> Deserialize<'de> for Workload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Workload, D::Error> {
        match Document::deserialize(deserializer)? {
            Document::Workload(w) => Ok(w),
            _ => Err(D::Error::custom("expected kind Workload")),
        }
    }
}

impl<'de> Deserialize<'de> for FlowPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FlowPolicy, D::Error> {
        match Document::deserialize(deserializer)? {
            Document::FlowPolicy(p) => Ok(p),
            _ => Err(D::Error::custom("expected kind FlowPolicy")),
        }
    }
}

impl<'de> Deserialize<'de> for Rule {
    /// Accepts the peers under `peers`, `from` or `to` (one of them), and `rateLimit`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
        from_node(deserializer, |ctx, node| {
            parse::read_rule(ctx, node, None, "")
        })
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Peer, D::Error> {
        from_node(deserializer, |ctx, node| parse::read_peer(ctx, node, ""))
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PortSpec, D::Error> {
        from_node(deserializer, |ctx, node| parse::read_port(ctx, node, ""))
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RateLimit, D::Error> {
        from_node(deserializer, |ctx, node| {
            parse::read_rate_limit(ctx, node, None, "")
        })
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Protocol, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}
