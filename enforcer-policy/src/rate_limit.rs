//! `rateLimit:` of an ingress rule (the kernel's bucket parameters are computed from it once,
//! by the compiler).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `per:` of a rate limit: one bucket per source address (default) or one for the whole rule.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RateScope {
    #[default]
    Source,
    Rule,
}

impl RateScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Source => "source",
            RateScope::Rule => "rule",
        }
    }
}

impl fmt::Display for RateScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `rateLimit:` of an ingress rule. At least one of the rates is set (and > 0); `burst` ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    pub per: RateScope,
}
