//! `v1 Namespace`: a name and labels; `kubernetes.io/metadata.name=<name>` is implicit.

use serde::{Deserialize, Serialize, Serializer};

use super::super::errors::Source;
use super::super::labels::{Labels, NAMESPACE_NAME_LABEL};
use super::meta::ObjectMeta;
use super::{CORE_V1, KIND_NAMESPACE};

/// A namespace and its labels (as written; see [`Namespace::effective_labels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    pub source: Source,
}

#[derive(Deserialize)]
pub struct RawNamespace {
    metadata: ObjectMeta,
}

impl Namespace {
    pub fn from_raw(raw: RawNamespace, source: Source) -> Namespace {
        Namespace {
            name: raw.metadata.name,
            labels: raw.metadata.labels,
            source,
        }
    }

    /// The labels namespace selectors see: its own plus the implicit name label.
    pub fn effective_labels(&self) -> Labels {
        implicit_labels(&self.name, &self.labels)
    }
}

/// `labels` plus `kubernetes.io/metadata.name=<name>` (a namespace without a Namespace object
/// has only that one).
pub fn implicit_labels(name: &str, labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceOut {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NamespaceOut {
            api_version: CORE_V1,
            kind: KIND_NAMESPACE,
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: None,
                labels: self.labels.clone(),
            },
        }
        .serialize(serializer)
    }
}
