//! The equivalence classes the analysis evaluates, as the compiler builds them: subjects are the
//! distinct endpoint identities; peers are (endpoint identity, longest CIDR prefix of its
//! address) and the world's CIDR classes (the addresses whose longest prefix among the policies'
//! CIDRs is the same), each with one representative address. Every flow of a class gets the
//! verdicts of its representative.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::super::identity::{Endpoint, Identity, Party, View};
use super::super::{NodeContext, Peer};

/// A peer class and its representative.
#[derive(Clone, Copy)]
pub struct PeerClass<'v, 'a> {
    pub party: Party<'v, 'a>,
    pub addr: IpAddr,
}

impl PeerClass<'_, '_> {
    pub fn endpoint(&self) -> Option<&Endpoint<'_>> {
        match self.party {
            Party::Endpoint(e) => Some(e),
            _ => None,
        }
    }
}

/// The classes of a view.
pub struct Classes<'v, 'a> {
    /// One endpoint per distinct identity.
    pub subjects: Vec<&'v Endpoint<'a>>,
    pub peers: Vec<PeerClass<'v, 'a>>,
}

/// Every CIDR and except network the policies name, plus both whole address families.
pub fn networks(view: &View<'_>) -> BTreeSet<IpNet> {
    let mut out: BTreeSet<IpNet> = BTreeSet::new();
    for p in &view.policies {
        for (_, _, rule) in p.policy.rules() {
            for peer in &rule.peers {
                if let Peer::Cidr { cidr, except } = peer {
                    out.insert(cidr.trunc());
                    out.extend(except.iter().map(IpNet::trunc));
                }
            }
        }
    }
    let whole = [
        IpAddr::from(Ipv4Addr::UNSPECIFIED),
        Ipv6Addr::UNSPECIFIED.into(),
    ];
    out.extend(whole.into_iter().filter_map(|a| IpNet::new(a, 0).ok()));
    out
}

/// The longest network of `nets` containing `addr`.
pub fn longest(nets: &BTreeSet<IpNet>, addr: IpAddr) -> Option<IpNet> {
    nets.iter()
        .filter(|n| n.contains(&addr))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

/// The address right after `net` (`None` at the end of the address space).
fn after(net: &IpNet) -> Option<IpAddr> {
    match net.broadcast() {
        IpAddr::V4(a) => u32::from(a)
            .checked_add(1)
            .map(|n| Ipv4Addr::from(n).into()),
        IpAddr::V6(a) => u128::from(a)
            .checked_add(1)
            .map(|n| Ipv6Addr::from(n).into()),
    }
}

impl<'v, 'a> Classes<'v, 'a> {
    pub fn new(view: &'v View<'a>) -> Classes<'v, 'a> {
        let nets = networks(view);
        let mut subjects: BTreeMap<&Identity, &Endpoint> = BTreeMap::new();
        let mut endpoint_classes: BTreeMap<(&Identity, Option<IpNet>), PeerClass> = BTreeMap::new();
        for e in &view.endpoints {
            subjects.entry(&e.identity).or_insert(e);
            for a in e.addresses {
                endpoint_classes
                    .entry((&e.identity, longest(&nets, *a)))
                    .or_insert(PeerClass {
                        party: Party::Endpoint(e),
                        addr: *a,
                    });
            }
        }
        let mut peers: Vec<PeerClass> = endpoint_classes.into_values().collect();
        peers.extend(world_classes(view, &nets));
        Classes {
            subjects: subjects.into_values().collect(),
            peers,
        }
    }
}

/// One representative world address per network with addresses of its own (not inside a
/// longer network of `nets`, not held by an endpoint or a host-network pod).
fn world_classes<'v, 'a>(view: &View<'_>, nets: &BTreeSet<IpNet>) -> Vec<PeerClass<'v, 'a>> {
    let ctx = NodeContext::default();
    let mut out = Vec::new();
    for net in nets {
        let inner: Vec<&IpNet> = nets
            .iter()
            .filter(|n| *n != net && net.contains(*n))
            .collect();
        let candidates = std::iter::once(Some(net.network())).chain(inner.iter().map(|n| after(n)));
        let found = candidates.flatten().find(|a| {
            net.contains(a)
                && longest(nets, *a) == Some(*net)
                && matches!(view.classify(&ctx, *a), Party::World)
                && !view.host_pod_addresses().contains(a)
        });
        if let Some(addr) = found {
            out.push(PeerClass {
                party: Party::World,
                addr,
            });
        }
    }
    out
}
