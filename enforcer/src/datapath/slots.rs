//! What each policy slot holds, and the writes that turn one generation into the next.
//!
//! Both slots keep a complete generation: the active one, and the previous one in the inactive
//! slot. An install writes into the inactive slot only the entries that differ between what it
//! holds and the new generation (a set difference per map, keyed by the map's own key type),
//! then flips `CONFIG`. So every install stays atomic (the datapath sees the old or the new
//! generation, never a mix) and a one-rule or one-label change writes O(changed) entries.

use std::{collections::HashMap, hash::Hash};

use enforcer_common::{
    addr::Addr, CidrKeyData, IdentityValue, PolicyKey, PolicyKeyData, PolicyValue, RateLimitConfig,
    CIDR_KEY_FIXED_BITS,
};

use crate::policy::{compile::addr_bits, Compiled};

/// The entries of one generation in the slotted maps, keyed without the slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotEntries {
    /// `IDENTITIES`: address → identity.
    pub identities: HashMap<Addr, IdentityValue>,
    /// `CIDR_IDENTITIES`: (prefix length, key data with slot byte 0) → identity.
    pub cidrs: HashMap<(u32, CidrKeyData), IdentityValue>,
    /// `POLICY`: (prefix length, key data with slot byte 0) → decision.
    pub policy: HashMap<(u32, PolicyKeyData), PolicyValue>,
    /// `RATE_LIMITS`: rule id → limit.
    pub rate_limits: HashMap<u32, RateLimitConfig>,
}

impl SlotEntries {
    /// The entries of `compiled`.
    pub fn of(compiled: &Compiled) -> SlotEntries {
        SlotEntries {
            identities: compiled
                .identities
                .iter()
                .map(|(addr, v)| (addr_bits(*addr).to_be_bytes(), *v))
                .collect(),
            cidrs: compiled
                .cidrs
                .iter()
                .map(|(p, v)| {
                    let key = enforcer_common::cidr_key_data(0, &p.octets());
                    ((CIDR_KEY_FIXED_BITS + u32::from(p.len), key), *v)
                })
                .collect(),
            policy: compiled
                .policy
                .iter()
                .map(|e| {
                    let key = PolicyKey {
                        slot: 0,
                        ..PolicyKey::decode(&e.key)
                    };
                    ((e.prefix_len, key.encode()), e.value)
                })
                .collect(),
            rate_limits: compiled.rate_limits().collect(),
        }
    }
}

/// The writes that turn a map's `old` entries into `new`: entries to insert or overwrite, and
/// keys to remove.
#[derive(Debug)]
pub struct Diff<K, V> {
    pub upsert: Vec<(K, V)>,
    pub remove: Vec<K>,
}

/// The set difference of two entry sets of one map.
pub fn diff<K: Eq + Hash + Copy, V: PartialEq + Copy>(
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
) -> Diff<K, V> {
    Diff {
        upsert: new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        remove: old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .copied()
            .collect(),
    }
}

/// Entries written (inserted or overwritten) and removed per map by one install.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallWrites {
    /// (map name, entries written, entries removed), for every map the install touched.
    pub maps: Vec<(&'static str, usize, usize)>,
    /// Whether the inactive slot's content was read back from the maps first (after a load,
    /// or after a failed install left it unknown).
    pub read_back: bool,
}

impl InstallWrites {
    /// Entries written plus removed, over every map.
    pub fn total(&self) -> usize {
        self.maps.iter().map(|(_, w, r)| w + r).sum()
    }

    pub(super) fn record<K, V>(&mut self, map: &'static str, d: &Diff<K, V>) {
        self.maps.push((map, d.upsert.len(), d.remove.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_only_what_changed() {
        let old: HashMap<u32, u8> = [(1, 1), (2, 2), (3, 3)].into();
        let new: HashMap<u32, u8> = [(1, 1), (2, 20), (4, 4)].into();
        let mut d = diff(&old, &new);
        d.upsert.sort_unstable();
        assert_eq!(d.upsert, vec![(2, 20), (4, 4)]);
        assert_eq!(d.remove, vec![3]);
        let same = diff(&new, &new);
        assert!(same.upsert.is_empty() && same.remove.is_empty());
    }
}
