//! Endpoints registered by the CNI plugin (`enforcer-cni`), and the unknown-endpoint default
//! deny: a local pod address holds an identity only once the agent can enforce on its interface.
//!
//! - A registration (CNI ADD) names the pod's host-side interface, its addresses and the pod
//!   (`namespace/name`, from `K8S_POD_*` or the workload's name). The addresses join that pod's
//!   (or workload's) document for compiling, and leave any other document that held them (a
//!   recycled IP never keeps the old pod's identity). A registered address whose pod is not
//!   known yet gets the reserved identity `unknown`.
//! - With `podCidrs` set, every address inside them that is not a local endpoint on an attached
//!   interface is `unknown` too: the datapath drops every flow from or to it
//!   (`unknown_endpoint`), at the hooks of the pods already running, before the new pod's own
//!   interface is even attached.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use enforcer_common::{identity, IdentityValue};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::{compile::Prefix, Compiled, PolicySet};

/// One pod interface registered by the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The container runtime's id of the pod sandbox (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The pod's host-side interface.
    pub interface: String,
    pub ifindex: u32,
    pub addresses: Vec<IpAddr>,
    /// The pod's namespace (`default` when the runtime names none).
    pub namespace: String,
    /// The pod's name: a Pod document's, or a Workload's.
    pub pod: String,
}

/// The registrations in force, by container id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_container: BTreeMap<String, Registration>,
}

impl Registry {
    /// Add or replace a registration. Its addresses leave every other registration (an address
    /// belongs to the pod that registered it last: a recycled IP); one left without addresses is
    /// dropped.
    pub fn insert(&mut self, r: Registration) {
        for other in self.by_container.values_mut() {
            other.addresses.retain(|a| !r.addresses.contains(a));
        }
        self.by_container.retain(|_, o| !o.addresses.is_empty());
        self.by_container.insert(r.container_id.clone(), r);
    }

    pub fn remove(&mut self, container_id: &str) -> Option<Registration> {
        self.by_container.remove(container_id)
    }

    /// Every registration, for the state dir.
    pub fn to_vec(&self) -> Vec<Registration> {
        self.by_container.values().cloned().collect()
    }

    pub fn from_vec(registrations: Vec<Registration>) -> Registry {
        let mut r = Registry::default();
        for one in registrations {
            r.insert(one);
        }
        r
    }

    pub fn get(&self, container_id: &str) -> Option<&Registration> {
        self.by_container.get(container_id)
    }

    pub fn len(&self) -> usize {
        self.by_container.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_container.is_empty()
    }

    /// Drop the registrations whose interface is gone (or is another interface now); returns
    /// them.
    pub fn retain_present(&mut self, present: &BTreeMap<String, u32>) -> Vec<Registration> {
        let (keep, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.by_container)
            .into_iter()
            .partition(|(_, r)| present.get(&r.interface) == Some(&r.ifindex));
        self.by_container = keep;
        gone.into_values().collect()
    }

    /// (ifindex, address) of every registered address.
    pub fn endpoints(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.by_container
            .values()
            .flat_map(|r| r.addresses.iter().map(|a| (r.ifindex, *a)))
    }

    /// Give each registered address to its pod's document (and take it from any other), and
    /// return the registered addresses whose pod is in no document (identity `unknown`).
    pub fn apply_to(&self, set: &mut PolicySet) -> BTreeSet<IpAddr> {
        let mut unidentified = BTreeSet::new();
        for r in self.by_container.values() {
            for w in set.workloads.values_mut() {
                if !(w.name == r.pod && w.namespace == r.namespace) {
                    w.addresses.retain(|a| !r.addresses.contains(a));
                }
            }
            for p in set.pods.values_mut() {
                if !(p.name == r.pod && p.namespace == r.namespace) {
                    p.addresses.retain(|a| !r.addresses.contains(a));
                }
            }
            let holder = set
                .pods
                .values_mut()
                .find(|p| p.name == r.pod && p.namespace == r.namespace && !p.host_network)
                .map(|p| &mut p.addresses)
                .or_else(|| {
                    set.workloads
                        .values_mut()
                        .find(|w| w.name == r.pod && w.namespace == r.namespace)
                        .map(|w| &mut w.addresses)
                });
            match holder {
                Some(addresses) => {
                    for a in &r.addresses {
                        if !addresses.contains(a) {
                            addresses.push(*a);
                        }
                    }
                }
                None => unidentified.extend(r.addresses.iter().copied()),
            }
        }
        unidentified
    }
}

/// The identity `unknown`, as the maps hold it.
const UNKNOWN: IdentityValue = IdentityValue {
    id: identity::UNKNOWN,
    flags: 0,
};

/// Make every address the agent cannot enforce on `unknown` in `compiled`:
/// - `unidentified` (registered, pod not known yet) get an exact `unknown` entry;
/// - inside `pod_cidrs`, exact entries of addresses that are not `local` (a local endpoint on an
///   attached interface) are removed, the prefixes themselves map to `unknown`, and so does any
///   CIDR class inside them (a policy's CIDR peer never makes an unregistered pod `world`).
///
/// The node's own addresses (`host`) keep their identity.
pub fn mask_unknown(
    compiled: &mut Compiled,
    pod_cidrs: &[IpNet],
    local: &BTreeSet<IpAddr>,
    unidentified: &BTreeSet<IpAddr>,
) {
    let inside = |a: &IpAddr| pod_cidrs.iter().any(|n| n.contains(a));
    compiled.identities.retain(|(a, v)| {
        !unidentified.contains(a)
            && (v.flags & enforcer_common::IDF_HOST != 0 || local.contains(a) || !inside(a))
    });
    compiled
        .identities
        .extend(unidentified.iter().map(|a| (*a, UNKNOWN)));
    if pod_cidrs.is_empty() {
        return;
    }
    let pods: Vec<Prefix> = pod_cidrs.iter().map(Prefix::from_net).collect();
    for (prefix, value) in &mut compiled.cidrs {
        if pods.iter().any(|p| p.contains(prefix)) {
            *value = UNKNOWN;
        }
    }
    for p in pods {
        if !compiled.cidrs.iter().any(|(c, _)| *c == p) {
            compiled.cidrs.push((p, UNKNOWN));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn value(id: u32, flags: u32) -> IdentityValue {
        IdentityValue { id, flags }
    }

    #[test]
    fn unregistered_pod_addresses_are_unknown_and_registered_ones_keep_their_identity() {
        let mut c = Compiled {
            identities: vec![
                (ip("10.10.1.10"), value(16, enforcer_common::IDF_LOCAL)),
                (ip("10.10.3.1"), value(17, 0)),
                (
                    ip("10.10.0.1"),
                    value(identity::HOST, enforcer_common::IDF_HOST),
                ),
                (ip("10.20.0.5"), value(18, 0)),
            ],
            cidrs: vec![
                (Prefix::from_net(&net("10.0.0.0/8")), value(20, 0)),
                (Prefix::from_net(&net("10.10.3.0/24")), value(21, 0)),
            ],
            ..Compiled::default()
        };
        let local = BTreeSet::from([ip("10.10.1.10")]);
        let unidentified = BTreeSet::from([ip("10.10.4.4")]);
        mask_unknown(&mut c, &[net("10.10.0.0/16")], &local, &unidentified);
        let ids: BTreeMap<IpAddr, u32> = c.identities.iter().map(|(a, v)| (*a, v.id)).collect();
        assert_eq!(ids.get(&ip("10.10.1.10")), Some(&16), "local endpoint");
        assert_eq!(
            ids.get(&ip("10.10.3.1")),
            None,
            "not attached here: falls to the CIDR"
        );
        assert_eq!(ids.get(&ip("10.10.0.1")), Some(&identity::HOST));
        assert_eq!(
            ids.get(&ip("10.20.0.5")),
            Some(&18),
            "outside the pod CIDRs"
        );
        assert_eq!(ids.get(&ip("10.10.4.4")), Some(&identity::UNKNOWN));
        let cidrs: BTreeMap<Prefix, u32> = c.cidrs.iter().map(|(p, v)| (*p, v.id)).collect();
        assert_eq!(cidrs[&Prefix::from_net(&net("10.0.0.0/8"))], 20);
        assert_eq!(
            cidrs[&Prefix::from_net(&net("10.10.3.0/24"))],
            identity::UNKNOWN
        );
        assert_eq!(
            cidrs[&Prefix::from_net(&net("10.10.0.0/16"))],
            identity::UNKNOWN
        );
    }

    #[test]
    fn without_pod_cidrs_only_unidentified_registrations_are_unknown() {
        let mut c = Compiled {
            identities: vec![(ip("10.10.3.1"), value(17, 0))],
            ..Compiled::default()
        };
        mask_unknown(
            &mut c,
            &[],
            &BTreeSet::new(),
            &BTreeSet::from([ip("10.10.4.4")]),
        );
        assert_eq!(c.identities.len(), 2);
        assert!(c.cidrs.is_empty());
    }
}
