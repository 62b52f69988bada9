//! What an identity number stands for, as typed data: the node, the world (with the CIDR class an
//! address falls in), a workload identity, or a number the policy in force does not know.
//!
//! Flow events carry it; its text form (`host`, `world (10.0.0.0/8)`, `web`, `identity 7`) is
//! the `src_identity`/`dst_identity` of `enforcer flows -o json`. `Display` and `FromStr` are
//! the one name table of that form, inverse of each other.

use std::{fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A flow side's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityRef {
    /// An address of the node itself.
    Host,
    /// An address of no workload; `cidr` is the longest CIDR peer prefix containing it.
    World { cidr: Option<IpNet> },
    /// A workload identity, by name: `SERVICE`, `NAMESPACE/SERVICE` or `{k=v,...}`.
    Workload(String),
    /// An identity number the policy in force does not name.
    Unknown(u32),
}

impl IdentityRef {
    /// The workload identity's name, `None` for the node, the world and unknown numbers.
    pub fn workload(&self) -> Option<&str> {
        match self {
            IdentityRef::Workload(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for IdentityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityRef::Host => f.write_str("host"),
            IdentityRef::World { cidr: None } => f.write_str("world"),
            IdentityRef::World { cidr: Some(net) } => write!(f, "world ({net})"),
            IdentityRef::Workload(name) => f.write_str(name),
            IdentityRef::Unknown(id) => write!(f, "identity {id}"),
        }
    }
}

/// The text form is not an identity (empty, or `world (...)` without a CIDR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an identity: {0:?}")]
pub struct BadIdentity(String);

impl FromStr for IdentityRef {
    type Err = BadIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadIdentity(s.to_string());
        if let Some(rest) = s.strip_prefix("world (") {
            let net = rest.strip_suffix(')').and_then(|n| n.parse().ok());
            return net
                .map(|n| IdentityRef::World { cidr: Some(n) })
                .ok_or_else(bad);
        }
        if let Some(id) = s.strip_prefix("identity ") {
            return id.parse().map(IdentityRef::Unknown).map_err(|_| bad());
        }
        match s {
            "" => Err(bad()),
            "host" => Ok(IdentityRef::Host),
            "world" => Ok(IdentityRef::World { cidr: None }),
            name => Ok(IdentityRef::Workload(name.to_string())),
        }
    }
}

impl Serialize for IdentityRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdentityRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for IdentityRef {
    /// Whether the text form is `other` (a workload name, `host`, ...).
    fn eq(&self, other: &str) -> bool {
        match self {
            IdentityRef::Workload(name) => name == other,
            _ => other.parse::<IdentityRef>().as_ref() == Ok(self),
        }
    }
}

impl PartialEq<&str> for IdentityRef {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl PartialEq<String> for IdentityRef {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::IdentityRef;

    #[test]
    fn text_form_round_trips() {
        let cases = [
            IdentityRef::Host,
            IdentityRef::World { cidr: None },
            IdentityRef::World {
                cidr: Some("10.0.0.0/8".parse().expect("net")),
            },
            IdentityRef::World {
                cidr: Some("fd00::/64".parse().expect("net")),
            },
            IdentityRef::Workload("web".into()),
            IdentityRef::Workload("shop/api".into()),
            IdentityRef::Workload("{app=x,tier=y}".into()),
            IdentityRef::Unknown(7),
        ];
        for id in cases {
            let text = id.to_string();
            assert_eq!(text.parse::<IdentityRef>(), Ok(id.clone()), "{text}");
            let json = serde_json::to_string(&id).expect("json");
            assert_eq!(json, format!("{text:?}"));
            assert_eq!(
                serde_json::from_str::<IdentityRef>(&json).expect("back"),
                id
            );
        }
        assert!("".parse::<IdentityRef>().is_err());
        assert!("world (nope)".parse::<IdentityRef>().is_err());
        assert!(IdentityRef::Workload("web".into()) == "web");
    }
}
