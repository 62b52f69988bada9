//! The set of documents in force.
//!
//! Documents are named by kind, namespace and name. A Workload and a Pod are two spellings of
//! one endpoint: they share one name space (applying a Pod `default/web-0` replaces the Workload
//! `web-0`). No address is held by two endpoints (host-network pods excepted: they hold the
//! node's addresses).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::document::{Document, Kind};
use super::errors::{PolicyError, PolicyErrors, Source, Warning};
use super::identity::ServiceLabels;
use super::k8s::{Namespace, NetworkPolicy, Pod};
use super::model::{FlowPolicy, ObjectKey, Peer, Workload, ANY_SERVICE, DEFAULT_NAMESPACE};

/// What `apply` did with one document (kubectl wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// Which documents a `delete` removes: `name`, of `kind` (any when `None`), in `namespace`
/// (`None`: the default namespace and cluster-wide documents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub name: String,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kind) = self.kind {
            write!(f, "{kind} ")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl Selector {
    /// Whether `doc` is one this selector names.
    pub fn matches(&self, doc: &Document) -> bool {
        if doc.name() != self.name || self.kind.is_some_and(|k| k != doc.kind_enum()) {
            return false;
        }
        match (&self.namespace, doc.namespace()) {
            (Some(want), Some(ns)) => want == ns,
            (Some(_), None) => self.kind.is_some(),
            // Without a namespace: the default namespace and cluster-wide documents, but a
            // Namespace only when asked for by kind.
            (None, Some(ns)) => ns == DEFAULT_NAMESPACE,
            (None, None) => self.kind.is_some() || doc.kind_enum() != Kind::Namespace,
        }
    }
}

/// Every document in force. Serialized as a list of documents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    pub workloads: BTreeMap<ObjectKey, Workload>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub policies: BTreeMap<ObjectKey, FlowPolicy>,
    pub network_policies: BTreeMap<ObjectKey, NetworkPolicy>,
    /// Which labels name a pod's service (a setting of the reader, not a document).
    pub service_labels: ServiceLabels,
}

/// The name space a document lives in: Workloads and Pods share one.
pub fn slot(doc: &Document) -> (Kind, ObjectKey) {
    let kind = match doc.kind_enum() {
        Kind::Pod => Kind::Workload,
        k => k,
    };
    (kind, doc.key())
}

impl PolicySet {
    pub fn new() -> PolicySet {
        PolicySet::default()
    }

    /// The same set, with services read from `keys`. A Workload that gives both `spec.service`
    /// and a label under the key `spec.service` stands for (the first of `keys`) is an error
    /// at the Workload: the two would disagree.
    pub fn with_service_labels(mut self, keys: ServiceLabels) -> Result<PolicySet, PolicyErrors> {
        let errors: Vec<PolicyError> = self
            .workloads
            .values()
            .filter(|w| w.service.is_some() && w.labels.contains_key(keys.primary()))
            .map(|w| {
                let reason = format!(
                    "Workload {:?}: metadata.labels: {} is set by spec.service; give one of them",
                    Document::Workload(w.clone()).display_name(),
                    keys.primary()
                );
                PolicyError::new(&w.source.file, w.source.line, 0, reason)
            })
            .collect();
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        self.service_labels = keys;
        Ok(self)
    }

    /// Builds a set from documents, reporting every duplicate name and shared address.
    pub fn from_documents(docs: Vec<Document>) -> Result<PolicySet, PolicyErrors> {
        let mut set = PolicySet::new();
        let mut errors = Vec::new();
        // Addresses are checked with one index for all documents (not a scan per workload).
        let mut held = AddressIndex::default();
        for doc in docs {
            if let Some(existing) = set.find_slot(&doc) {
                errors.push(duplicate_error(&doc, existing.source()));
                continue;
            }
            if let Err(error) = held.claim(&doc) {
                errors.push(error);
                continue;
            }
            set.put(doc);
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// Adds a document. A name already used in its name space, or a workload address already
    /// held by another workload, is an error naming both locations.
    pub fn insert(&mut self, doc: Document) -> Result<(), PolicyError> {
        if let Some(existing) = self.find_slot(&doc) {
            return Err(duplicate_error(&doc, existing.source()));
        }
        let mut held = AddressIndex::of(self);
        held.claim(&doc)?;
        self.put(doc);
        Ok(())
    }

    /// The document in `doc`'s name space under its name.
    fn find_slot(&self, doc: &Document) -> Option<Document> {
        let key = doc.key();
        match slot(doc).0 {
            Kind::Workload | Kind::Pod => self
                .workloads
                .get(&key)
                .cloned()
                .map(Document::Workload)
                .or_else(|| self.pods.get(&key).cloned().map(Document::Pod)),
            Kind::FlowPolicy => self.policies.get(&key).cloned().map(Document::FlowPolicy),
            Kind::Namespace => self
                .namespaces
                .get(&key.name)
                .cloned()
                .map(Document::Namespace),
            Kind::NetworkPolicy => self
                .network_policies
                .get(&key)
                .cloned()
                .map(Document::NetworkPolicy),
        }
    }

    /// Stores a document (replacing whatever had its name).
    fn put(&mut self, doc: Document) {
        let key = doc.key();
        match doc {
            Document::Workload(w) => {
                self.pods.remove(&key);
                self.workloads.insert(key, w);
            }
            Document::Pod(p) => {
                self.workloads.remove(&key);
                self.pods.insert(key, p);
            }
            Document::FlowPolicy(p) => {
                self.policies.insert(key, p);
            }
            Document::Namespace(n) => {
                self.namespaces.insert(n.name.clone(), n);
            }
            Document::NetworkPolicy(p) => {
                self.network_policies.insert(key, p);
            }
        }
    }

    /// Removes the document in `doc`'s name space under its name.
    fn take_slot(&mut self, doc: &Document) -> Option<Document> {
        let key = doc.key();
        match slot(doc).0 {
            Kind::Workload | Kind::Pod => self
                .workloads
                .remove(&key)
                .map(Document::Workload)
                .or_else(|| self.pods.remove(&key).map(Document::Pod)),
            Kind::FlowPolicy => self.policies.remove(&key).map(Document::FlowPolicy),
            Kind::Namespace => self.namespaces.remove(&key.name).map(Document::Namespace),
            Kind::NetworkPolicy => self
                .network_policies
                .remove(&key)
                .map(Document::NetworkPolicy),
        }
    }

    /// Removes every document named `name` in the default namespace or cluster-wide (a Workload
    /// and a `FlowPolicy` may share a name; Namespaces are only removed by kind).
    pub fn remove(&mut self, name: &str) -> Vec<Document> {
        self.delete(&Selector {
            name: name.to_string(),
            kind: None,
            namespace: None,
        })
    }

    /// Removes every document `selector` names.
    pub fn delete(&mut self, selector: &Selector) -> Vec<Document> {
        let doomed: Vec<Document> = self
            .documents()
            .into_iter()
            .filter(|d| selector.matches(d))
            .collect();
        for d in &doomed {
            self.take_slot(d);
        }
        doomed
    }

    /// The documents `selector` names.
    pub fn get(&self, selector: &Selector) -> Vec<Document> {
        self.documents()
            .into_iter()
            .filter(|d| selector.matches(d))
            .collect()
    }

    /// kubectl-apply semantics: each document creates or replaces the one of the same kind,
    /// namespace and name. All or nothing: on any error (a name twice in `docs`, an address
    /// held by two workloads afterwards) the set is unchanged.
    pub fn apply(
        &mut self,
        docs: Vec<Document>,
    ) -> Result<Vec<(Document, ApplyOutcome)>, PolicyErrors> {
        let mut seen: BTreeMap<(Kind, ObjectKey), Source> = BTreeMap::new();
        let mut errors = Vec::new();
        for doc in &docs {
            if let Some(first) = seen.get(&slot(doc)) {
                errors.push(duplicate_error(doc, first));
            } else {
                seen.insert(slot(doc), doc.source().clone());
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let mut next = self.clone();
        let mut outcomes = Vec::with_capacity(docs.len());
        for doc in docs {
            let outcome = match next.take_slot(&doc) {
                None => ApplyOutcome::Created,
                Some(prev) if prev.same_content(&doc) => ApplyOutcome::Unchanged,
                Some(_) => ApplyOutcome::Configured,
            };
            outcomes.push((doc, outcome));
        }
        // The remaining workloads were valid together already.
        let mut held = AddressIndex::of(&next);
        for (doc, _) in &outcomes {
            if let Err(error) = held.claim(doc) {
                errors.push(error);
                continue;
            }
            next.put(doc.clone());
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        *self = next;
        Ok(outcomes)
    }

    /// Every document: namespaces, workloads, pods, flow policies, network policies, each
    /// sorted by namespace and name.
    pub fn documents(&self) -> Vec<Document> {
        let namespaces = self.namespaces.values().cloned().map(Document::Namespace);
        let workloads = self.workloads.values().cloned().map(Document::Workload);
        let pods = self.pods.values().cloned().map(Document::Pod);
        let policies = self.policies.values().cloned().map(Document::FlowPolicy);
        let netpols = self
            .network_policies
            .values()
            .cloned()
            .map(Document::NetworkPolicy);
        namespaces
            .chain(workloads)
            .chain(pods)
            .chain(policies)
            .chain(netpols)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.workloads.len()
            + self.pods.len()
            + self.namespaces.len()
            + self.policies.len()
            + self.network_policies.len()
    }

    /// The services of the workloads, sorted, without duplicates.
    pub fn services(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .workloads
            .values()
            .filter_map(|w| w.service.as_deref())
            .chain(
                self.pods
                    .values()
                    .filter_map(|p| self.service_labels.service_of(&p.labels)),
            )
            .collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The Workload holding `addr`.
    pub fn workload_of(&self, addr: IpAddr) -> Option<&Workload> {
        self.workloads
            .values()
            .find(|w| w.addresses.contains(&addr))
    }

    /// The `FlowPolicies` that apply to `service` (its own and the `"*"` ones), sorted by name.
    pub fn policies_for<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a FlowPolicy> {
        self.policies
            .values()
            .filter(move |p| p.applies_to(service))
    }

    /// Non-fatal findings: a peer `{service: X}` naming a service that no Workload has.
    pub fn warnings(&self) -> Vec<Warning> {
        let services: BTreeSet<String> = self.services().into_iter().collect();
        let mut warnings = Vec::new();
        for policy in self.policies.values() {
            for (_, _, rule) in policy.rules() {
                for peer in &rule.peers {
                    if let Peer::Service(name) = peer {
                        if name != ANY_SERVICE && !services.contains(name) {
                            warnings.push(Warning {
                                file: policy.source.file.clone(),
                                line: if rule.line > 0 { rule.line } else { policy.source.line },
                                message: format!(
                                    "unknown service {name} (no Workload has it) in FlowPolicy {:?}",
                                    policy.name
                                ),
                            });
                        }
                    }
                }
            }
        }
        warnings
    }
}

/// Which endpoint holds each address.
#[derive(Default)]
struct AddressIndex {
    held: HashMap<IpAddr, (ObjectKey, &'static str, Source)>,
}

impl AddressIndex {
    fn of(set: &PolicySet) -> AddressIndex {
        let mut index = AddressIndex::default();
        for d in set
            .workloads
            .values()
            .cloned()
            .map(Document::Workload)
            .chain(set.pods.values().cloned().map(Document::Pod))
        {
            let _ = index.claim(&d);
        }
        index
    }

    /// Records the addresses of an endpoint document; an address another endpoint holds is an
    /// error naming both (and nothing of `doc` is recorded then).
    fn claim(&mut self, doc: &Document) -> Result<(), PolicyError> {
        let addresses = match doc {
            Document::Workload(w) => &w.addresses,
            Document::Pod(p) if !p.host_network => &p.addresses,
            _ => return Ok(()),
        };
        let key = doc.key();
        for addr in addresses {
            if let Some((other, kind, source)) = self.held.get(addr).filter(|(o, ..)| *o != key) {
                return Err(PolicyError::new(
                    &doc.source().file,
                    doc.source().line,
                    0,
                    format!(
                        "address {addr} of {} {:?} is already held by {kind} {:?} ({source})",
                        doc.kind(),
                        doc.display_name(),
                        display_key(other)
                    ),
                ));
            }
        }
        for addr in addresses {
            self.held
                .insert(*addr, (key.clone(), doc.kind(), doc.source().clone()));
        }
        Ok(())
    }
}

/// `NAME` in the default namespace, `NAMESPACE/NAME` elsewhere.
fn display_key(key: &ObjectKey) -> String {
    match key.namespace.as_deref() {
        None => key.name.clone(),
        Some(ns) if ns == DEFAULT_NAMESPACE => key.name.clone(),
        Some(ns) => format!("{ns}/{}", key.name),
    }
}

/// `FILE:LINE: duplicate KIND name "NAME" (first defined at FILE:LINE)`.
pub fn duplicate_error(doc: &Document, first: &Source) -> PolicyError {
    let at = doc.source();
    PolicyError::new(
        &at.file,
        at.line,
        0,
        format!(
            "duplicate {} name {:?} (first defined at {first})",
            doc.kind(),
            doc.display_name()
        ),
    )
}

impl Serialize for PolicySet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let docs = self.documents();
        let mut seq = serializer.serialize_seq(Some(docs.len()))?;
        for d in &docs {
            seq.serialize_element(d)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PolicySet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PolicySet, D::Error> {
        let docs = Vec::<Document>::deserialize(deserializer)?;
        PolicySet::from_documents(docs).map_err(D::Error::custom)
    }
}
