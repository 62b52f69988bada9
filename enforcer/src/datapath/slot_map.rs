//! The slotted maps (`IDENTITIES`, `CIDR_IDENTITIES`, `POLICY`, `RATE_LIMITS`) behind one
//! interface: entries of one slot, keyed without the slot. An install reads, diffs and writes
//! each of them through the same generic code ([`sync`], [`SlotMap::entries`]).

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, MapError},
    Pod,
};
use enforcer_common::{IdentityKey, RateLimitKey};

use super::{
    map_err,
    slots::{diff, InstallWrites},
    Result,
};

/// A map whose keys carry a policy slot.
pub(super) trait SlotMap {
    /// The key without its slot.
    type Key: Eq + Hash + Copy;
    type Value: PartialEq + Copy;
    fn insert(&mut self, slot: u8, key: Self::Key, value: Self::Value) -> Result<(), MapError>;
    fn remove(&mut self, slot: u8, key: Self::Key) -> Result<(), MapError>;
    /// What `slot` holds now (entries the kernel fails to return are skipped).
    fn entries(&self, slot: u8) -> StdHashMap<Self::Key, Self::Value>;
}

/// A hash-map key made of a slot and the rest of the key.
pub(super) trait SlotKey: Pod + Eq + Hash {
    type Bare: Eq + Hash + Copy;
    fn with_slot(slot: u8, bare: Self::Bare) -> Self;
    fn slot(&self) -> u8;
    fn bare(&self) -> Self::Bare;
}

impl SlotKey for IdentityKey {
    type Bare = enforcer_common::Addr;
    fn with_slot(slot: u8, addr: Self::Bare) -> Self {
        IdentityKey {
            slot: slot.into(),
            addr,
        }
    }
    fn slot(&self) -> u8 {
        u8::try_from(self.slot).unwrap_or(u8::MAX)
    }
    fn bare(&self) -> Self::Bare {
        self.addr
    }
}

impl SlotKey for RateLimitKey {
    type Bare = u32;
    fn with_slot(slot: u8, rule: u32) -> Self {
        RateLimitKey {
            slot: slot.into(),
            rule,
        }
    }
    fn slot(&self) -> u8 {
        u8::try_from(self.slot).unwrap_or(u8::MAX)
    }
    fn bare(&self) -> u32 {
        self.rule
    }
}

impl<K: SlotKey, V: Pod + PartialEq> SlotMap for HashMap<MapData, K, V> {
    type Key = K::Bare;
    type Value = V;
    fn insert(&mut self, slot: u8, key: K::Bare, value: V) -> Result<(), MapError> {
        HashMap::insert(self, K::with_slot(slot, key), value, 0)
    }
    fn remove(&mut self, slot: u8, key: K::Bare) -> Result<(), MapError> {
        HashMap::remove(self, &K::with_slot(slot, key))
    }
    fn entries(&self, slot: u8) -> StdHashMap<K::Bare, V> {
        self.iter()
            .filter_map(std::result::Result::ok)
            .filter(|(k, _)| k.slot() == slot)
            .map(|(k, v)| (k.bare(), v))
            .collect()
    }
}

/// The trie keys (`CidrKeyData`, `PolicyKeyData`) hold the slot in their first byte; keyed
/// without the slot they are (prefix length, data with slot byte 0).
impl<const N: usize, V: Pod + PartialEq> SlotMap for LpmTrie<MapData, [u8; N], V>
where
    [u8; N]: Pod,
{
    type Key = (u32, [u8; N]);
    type Value = V;
    fn insert(&mut self, slot: u8, (len, data): (u32, [u8; N]), value: V) -> Result<(), MapError> {
        LpmTrie::insert(self, &Key::new(len, with_slot(slot, data)), value, 0)
    }
    fn remove(&mut self, slot: u8, (len, data): (u32, [u8; N])) -> Result<(), MapError> {
        LpmTrie::remove(self, &Key::new(len, with_slot(slot, data)))
    }
    fn entries(&self, slot: u8) -> StdHashMap<(u32, [u8; N]), V> {
        self.iter()
            .filter_map(std::result::Result::ok)
            .filter(|(k, _)| k.data().first() == Some(&slot))
            .map(|(k, v)| ((k.prefix_len(), with_slot(0, k.data())), v))
            .collect()
    }
}

fn with_slot<const N: usize>(slot: u8, mut data: [u8; N]) -> [u8; N] {
    if let Some(b) = data.first_mut() {
        *b = slot;
    }
    data
}

/// Bring `slot` of `map` from `old` to `new`, writing only the difference (recorded in
/// `writes`). Removals go first: the slot never holds more than the larger of both generations.
pub(super) fn sync<M: SlotMap>(
    map: &mut M,
    name: &'static str,
    slot: u8,
    old: &StdHashMap<M::Key, M::Value>,
    new: &StdHashMap<M::Key, M::Value>,
    writes: &mut InstallWrites,
) -> Result<()> {
    let d = diff(old, new);
    writes.record(name, &d);
    for k in d.remove {
        // A key already gone is what we wanted.
        let _ = map.remove(slot, k);
    }
    for (k, v) in d.upsert {
        map.insert(slot, k, v).map_err(map_err(name))?;
    }
    Ok(())
}
