//! Identity numbers that do not depend on the other identities of the set: each class is
//! numbered from a hash of what it is (kind, namespace, labels, named ports, CIDR class), so
//! adding, removing or relabelling one pod renumbers nothing else, and every agent (and every
//! restart) numbers a set the same way. That keeps a pod label change or a one-rule change to
//! the map entries that really change (the installer writes only those, see
//! `docs/architecture.md`).
//!
//! Collisions are resolved by probing upwards, in class order, so the numbering is a function of
//! the set alone; a class only moves when another class that sorts before it takes its number.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    hash::Hasher,
};

use enforcer_common::identity;
use fnv::FnvHasher;

use super::{IdentityClass, Kind};

/// Dynamic identities are numbered in `FIRST_DYNAMIC..FIRST_DYNAMIC + SPACE` (2^31 numbers: with
/// 150 000 identities, a handful of collisions).
const SPACE: u64 = 1 << 31;

/// The number every class gets: the reserved classes their reserved ids, every other class its
/// hash (probed upwards past numbers already taken by classes that sort before it).
pub fn number_classes(classes: BTreeSet<IdentityClass>) -> BTreeMap<IdentityClass, u32> {
    let reserved = |kind, id| (IdentityClass { kind, class: None }, id);
    let mut ids = BTreeMap::from([
        reserved(Kind::Host, identity::HOST),
        reserved(Kind::World, identity::WORLD),
    ]);
    let mut taken: HashSet<u32> = HashSet::with_capacity(classes.len());
    for c in classes {
        if ids.contains_key(&c) {
            continue;
        }
        let mut slot = class_hash(&c) % SPACE;
        let id = loop {
            let id = identity::FIRST_DYNAMIC + u32::try_from(slot).unwrap_or(0);
            if taken.insert(id) {
                break id;
            }
            slot = (slot + 1) % SPACE;
        };
        ids.insert(c, id);
    }
    ids
}

/// FNV-1a of the class's fields, each written with an explicit separator, so the number of a
/// class does not change across builds or Rust versions.
fn class_hash(c: &IdentityClass) -> u64 {
    let mut h = FnvHasher::default();
    let mut field = |bytes: &[u8]| {
        h.write(bytes);
        h.write(&[0xff]);
    };
    match &c.kind {
        Kind::Host => field(b"host"),
        Kind::World => field(b"world"),
        Kind::Endpoint(id) => {
            field(b"endpoint");
            field(id.namespace.as_bytes());
            for (k, v) in &id.labels {
                field(k.as_bytes());
                field(v.as_bytes());
            }
            if let Some(service) = &id.service {
                field(b"service");
                field(service.as_bytes());
            }
            field(b"ports");
            for p in &id.ports {
                field(p.name.as_bytes());
                field(&p.port.to_be_bytes());
                field(&[p.protocol.number(false)]);
            }
        }
    }
    if let Some(p) = c.class {
        field(&p.addr.to_be_bytes());
        field(&[p.len]);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::Prefix, identity::Identity};

    fn endpoint(ns: &str, app: &str) -> IdentityClass {
        IdentityClass {
            kind: Kind::Endpoint(Identity {
                namespace: ns.into(),
                labels: [("app".to_string(), app.to_string())].into(),
                ports: Vec::new(),
                service: None,
            }),
            class: None,
        }
    }

    #[test]
    fn a_class_keeps_its_number_whatever_else_the_set_holds() {
        let few: BTreeSet<_> = ["a", "m", "z"].map(|a| endpoint("ns", a)).into();
        let mut many = few.clone();
        many.extend((0..1000).map(|i| endpoint("ns", &format!("x{i}"))));
        many.insert(IdentityClass {
            kind: Kind::World,
            class: Some(Prefix { addr: 0, len: 8 }),
        });
        let (a, b) = (number_classes(few.clone()), number_classes(many));
        for c in &few {
            assert_eq!(a[c], b[c], "{c}");
        }
        assert_eq!(
            a[&IdentityClass {
                kind: Kind::Host,
                class: None
            }],
            identity::HOST
        );
        let distinct: BTreeSet<u32> = b.values().copied().collect();
        assert_eq!(distinct.len(), b.len(), "numbers are unique");
        assert!(b.values().all(|id| *id == identity::HOST
            || *id == identity::WORLD
            || *id >= identity::FIRST_DYNAMIC));
    }
}
