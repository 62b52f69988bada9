//! `metadata` of a Kubernetes object: name, namespace and labels (the rest is ignored).

use serde::{Deserialize, Serialize};

use super::super::labels::{check_labels, check_name, Labels};
use super::super::model::DEFAULT_NAMESPACE;

/// The part of `metadata` the engine uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMeta")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

#[derive(Deserialize)]
struct RawMeta {
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<Labels>,
}

impl TryFrom<RawMeta> for ObjectMeta {
    type Error = String;

    fn try_from(raw: RawMeta) -> Result<ObjectMeta, String> {
        let name = raw
            .name
            .ok_or_else(|| "missing field `name` in metadata".to_string())?;
        check_name(&name).map_err(|e| format!("invalid metadata.name {name:?}: {e}"))?;
        if let Some(ns) = &raw.namespace {
            check_name(ns).map_err(|e| format!("invalid metadata.namespace {ns:?}: {e}"))?;
        }
        let labels = raw.labels.unwrap_or_default();
        check_labels(&labels).map_err(|e| format!("metadata.labels: {e}"))?;
        Ok(ObjectMeta {
            name,
            namespace: raw.namespace,
            labels,
        })
    }
}

impl ObjectMeta {
    /// The namespace, `default` when omitted.
    pub fn namespace_or_default(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }
}
