//! Which pod holds an address, as the policy in force says: the index the flow log resolves
//! sources and destinations with. Rebuilt only when the policy set changes (one pointer compare
//! per line otherwise).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::policy::{identity::View, Labels, PolicySet};

/// A workload endpoint (Workload or Pod document) as the flow log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    /// Its identity labels (a Workload's `spec.service` under the primary service label).
    pub labels: Labels,
}

/// address → endpoint, for one policy set.
#[derive(Default)]
pub struct Endpoints {
    /// The set the index was built from (compared by pointer).
    set: Option<Arc<PolicySet>>,
    by_address: HashMap<IpAddr, Arc<Endpoint>>,
}

impl Endpoints {
    /// The endpoint holding `addr` under `set`, rebuilding the index if `set` is new.
    pub fn resolve(&mut self, set: &Arc<PolicySet>, addr: IpAddr) -> Option<Arc<Endpoint>> {
        if !self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, set)) {
            self.rebuild(set);
        }
        self.by_address.get(&addr).cloned()
    }

    fn rebuild(&mut self, set: &Arc<PolicySet>) {
        self.by_address.clear();
        for e in View::new(set).endpoints {
            let endpoint = Arc::new(Endpoint {
                namespace: e.identity.namespace,
                name: e.key.name,
                labels: e.identity.labels,
            });
            for a in e.addresses {
                self.by_address
                    .entry(*a)
                    .or_insert_with(|| endpoint.clone());
            }
        }
        self.set = Some(set.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse_documents;

    #[test]
    fn workloads_and_pods_resolve_by_address_and_follow_a_new_set() {
        let yaml = "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-0, labels: {tier: front}}\n\
                    spec: {service: web, addresses: [10.0.0.1]}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: api-0, namespace: prod, labels: {app: api}}\n\
                    status: {podIP: 10.0.0.2}\n";
        let set = Arc::new(
            PolicySet::from_documents(parse_documents("t.yaml", yaml).expect("parses"))
                .expect("valid"),
        );
        let mut index = Endpoints::default();
        let web = index
            .resolve(&set, "10.0.0.1".parse().expect("ip"))
            .expect("web-0");
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web-0")
        );
        assert_eq!(web.labels.get("tier").map(String::as_str), Some("front"));
        assert!(web.labels.values().any(|v| v == "web"), "{:?}", web.labels);
        let api = index
            .resolve(&set, "10.0.0.2".parse().expect("ip"))
            .expect("api-0");
        assert_eq!(
            (api.namespace.as_str(), api.name.as_str()),
            ("prod", "api-0")
        );
        assert!(index
            .resolve(&set, "10.0.0.3".parse().expect("ip"))
            .is_none());
        let empty = Arc::new(PolicySet::new());
        assert!(index
            .resolve(&empty, "10.0.0.1".parse().expect("ip"))
            .is_none());
    }
}
