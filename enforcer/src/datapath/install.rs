//! Installing a policy generation: the inactive slot (which holds the generation before the
//! active one) gets only the entries that differ from the new generation (`slots`), then
//! `CONFIG` flips to it with one map write. The previous generation stays in the now inactive
//! slot, to be diffed against by the next install.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie};
use enforcer_common::{
    maps::names, CidrKeyData, Config, EndpointKey, IdentityKey, IdentityValue, PolicyKeyData,
    PolicyValue, RateLimitConfig, RateLimitKey, CONFIG_ACTIVE,
};

use super::{
    map_err,
    slots::{diff, Diff, InstallWrites, SlotEntries},
    Datapath, DatapathError, Generation, Result,
};
use crate::policy::{compile::addr_bits, Compiled};

/// How long after a flip the slot it left may be written again: packets that read the old slot
/// finish within microseconds; this margin is not an RCU grace period.
const OLD_SLOT_MARGIN: Duration = Duration::from_millis(5);

pub(super) fn check_capacity(map: &'static str, needed: usize, capacity: u32) -> Result<()> {
    if needed > capacity as usize {
        return Err(DatapathError::Capacity {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

impl Datapath {
    /// Check every map's capacity (per slot for the slotted maps) before anything is written.
    fn check_capacities(
        &self,
        compiled: &Compiled,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<()> {
        let c = &self.capacities;
        check_capacity(names::IDENTITIES, compiled.identities.len(), c.identities)?;
        check_capacity(names::CIDR_IDENTITIES, compiled.cidrs.len(), c.cidrs)?;
        check_capacity(names::POLICY, compiled.policy.len(), c.policy)?;
        // Each interface also takes a marker entry.
        let ifaces: BTreeSet<u32> = endpoints.iter().map(|(i, _)| *i).collect();
        check_capacity(
            names::ENDPOINTS,
            endpoints.len() + ifaces.len(),
            c.endpoints,
        )?;
        // Rule ids index RULE_COUNTERS (id 0 is "no rule").
        check_capacity(names::RULE_COUNTERS, compiled.rules.len() + 1, c.rules)?;
        Self::check_rate_limits(compiled)
    }

    /// Install a compiled policy as the next generation: bring the inactive slot to it (writing
    /// only the entries that differ), then flip `CONFIG` with one map write. Capacity is checked
    /// before anything is written; on an error the active generation stays in force.
    pub fn install(
        &mut self,
        compiled: &Compiled,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<Generation> {
        self.check_capacities(compiled, endpoints)?;
        let cfg = self.config()?;
        let active = cfg.flags & CONFIG_ACTIVE != 0;
        let slot: u32 = if active { 1 - cfg.slot.min(1) } else { 0 };
        if let Some(wait) = self
            .last_flip
            .map(|t| OLD_SLOT_MARGIN.saturating_sub(t.elapsed()))
        {
            std::thread::sleep(wait);
        }
        let mut writes = InstallWrites::default();
        // Unknown until this install succeeds.
        let old = if let Some(old) = self.slots[slot as usize].take() {
            old
        } else {
            writes.read_back = true;
            self.read_slot(slot)?
        };
        let new = SlotEntries::of(compiled);
        self.write_slot(slot, &old, &new, &mut writes)?;
        // Endpoints are not slotted: add the new ones before the flip, drop stale ones after.
        let stale = self.sync_endpoints_add(endpoints, &mut writes)?;
        let generation = cfg.generation + 1;
        let flags = CONFIG_ACTIVE | super::ratelimit::config_flags(compiled);
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)
            .map_err(map_err(names::CONFIG))?;
        config
            .set(
                0,
                Config {
                    generation,
                    slot,
                    flags,
                },
                0,
            )
            .map_err(map_err(names::CONFIG))?;
        self.last_flip = Some(Instant::now());
        self.slots[slot as usize] = Some(new);
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        for k in &stale {
            let _ = eps.remove(k);
        }
        writes.maps.push((names::ENDPOINTS, 0, stale.len()));
        self.prune_rule_buckets(compiled)?;
        self.last_writes = writes;
        Ok(generation)
    }

    /// Entries written and removed per map by the last successful install.
    pub fn last_install_writes(&self) -> &InstallWrites {
        &self.last_writes
    }

    /// Bring `slot` from `old` to `new`: each slotted map gets the difference.
    fn write_slot(
        &mut self,
        slot: u32,
        old: &SlotEntries,
        new: &SlotEntries,
        writes: &mut InstallWrites,
    ) -> Result<()> {
        self.write_hashes(slot, old, new, writes)?;
        self.write_tries(slot, old, new, writes)
    }

    /// The exact-match maps of `slot`: identities and rate limits.
    fn write_hashes(
        &mut self,
        slot: u32,
        old: &SlotEntries,
        new: &SlotEntries,
        writes: &mut InstallWrites,
    ) -> Result<()> {
        let d = diff(&old.identities, &new.identities);
        writes.record(names::IDENTITIES, &d);
        let mut ids =
            HashMap::<_, IdentityKey, IdentityValue>::try_from(self.map_mut(names::IDENTITIES)?)
                .map_err(map_err(names::IDENTITIES))?;
        apply(
            names::IDENTITIES,
            d,
            |addr| IdentityKey { slot, addr },
            |w| match w {
                Write::Put(k, v) => ids.insert(k, v, 0),
                Write::Delete(k) => ids.remove(&k),
            },
        )?;
        let d = diff(&old.rate_limits, &new.rate_limits);
        writes.record(names::RATE_LIMITS, &d);
        let mut limits = HashMap::<_, RateLimitKey, RateLimitConfig>::try_from(
            self.map_mut(names::RATE_LIMITS)?,
        )
        .map_err(map_err(names::RATE_LIMITS))?;
        apply(
            names::RATE_LIMITS,
            d,
            |rule| RateLimitKey { slot, rule },
            |w| match w {
                Write::Put(k, v) => limits.insert(k, v, 0),
                Write::Delete(k) => limits.remove(&k),
            },
        )
    }

    /// The longest-prefix-match maps of `slot`: CIDR identities and policy.
    fn write_tries(
        &mut self,
        slot: u32,
        old: &SlotEntries,
        new: &SlotEntries,
        writes: &mut InstallWrites,
    ) -> Result<()> {
        let slot_byte = u8::try_from(slot).unwrap_or(0);
        let d = diff(&old.cidrs, &new.cidrs);
        writes.record(names::CIDR_IDENTITIES, &d);
        let mut cidrs = LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(
            self.map_mut(names::CIDR_IDENTITIES)?,
        )
        .map_err(map_err(names::CIDR_IDENTITIES))?;
        apply(
            names::CIDR_IDENTITIES,
            d,
            |(len, mut data): (u32, CidrKeyData)| {
                data[0] = slot_byte;
                Key::new(len, data)
            },
            |w| match w {
                Write::Put(k, v) => cidrs.insert(&k, v, 0),
                Write::Delete(k) => cidrs.remove(&k),
            },
        )?;
        let d = diff(&old.policy, &new.policy);
        writes.record(names::POLICY, &d);
        let mut policy =
            LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map_mut(names::POLICY)?)
                .map_err(map_err(names::POLICY))?;
        apply(
            names::POLICY,
            d,
            |(len, mut data): (u32, PolicyKeyData)| {
                data[0] = slot_byte;
                Key::new(len, data)
            },
            |w| match w {
                Write::Put(k, v) => policy.insert(&k, v, 0),
                Write::Delete(k) => policy.remove(&k),
            },
        )
    }

    /// What `slot` of the slotted maps holds now, read from the maps (after a load, the pinned
    /// maps may hold anything an earlier agent wrote).
    fn read_slot(&self, slot: u32) -> Result<SlotEntries> {
        let slot_byte = u8::try_from(slot).unwrap_or(0);
        let mut out = SlotEntries::default();
        let ids = HashMap::<_, IdentityKey, IdentityValue>::try_from(self.map(names::IDENTITIES)?)
            .map_err(map_err(names::IDENTITIES))?;
        for (k, v) in ids.iter().filter_map(std::result::Result::ok) {
            if k.slot == slot {
                out.identities.insert(k.addr, v);
            }
        }
        let cidrs =
            LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(self.map(names::CIDR_IDENTITIES)?)
                .map_err(map_err(names::CIDR_IDENTITIES))?;
        for (k, v) in cidrs.iter().filter_map(std::result::Result::ok) {
            let mut data = k.data();
            if data[0] == slot_byte {
                data[0] = 0;
                out.cidrs.insert((k.prefix_len(), data), v);
            }
        }
        let policy = LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map(names::POLICY)?)
            .map_err(map_err(names::POLICY))?;
        for (k, v) in policy.iter().filter_map(std::result::Result::ok) {
            let mut data = k.data();
            if data[0] == slot_byte {
                data[0] = 0;
                out.policy.insert((k.prefix_len(), data), v);
            }
        }
        let limits =
            HashMap::<_, RateLimitKey, RateLimitConfig>::try_from(self.map(names::RATE_LIMITS)?)
                .map_err(map_err(names::RATE_LIMITS))?;
        for (k, v) in limits.iter().filter_map(std::result::Result::ok) {
            if k.slot == slot {
                out.rate_limits.insert(k.rule, v);
            }
        }
        Ok(out)
    }

    /// Add the endpoints that are missing; returns those to remove after the flip.
    fn sync_endpoints_add(
        &mut self,
        endpoints: &BTreeSet<(u32, IpAddr)>,
        writes: &mut InstallWrites,
    ) -> Result<Vec<EndpointKey>> {
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        // Each managed interface also gets a marker entry with the zero address.
        let wanted: StdHashMap<EndpointKey, u32> = endpoints
            .iter()
            .flat_map(|(ifindex, addr)| {
                [
                    EndpointKey {
                        ifindex: *ifindex,
                        addr: addr_bits(*addr).to_be_bytes(),
                    },
                    EndpointKey {
                        ifindex: *ifindex,
                        addr: [0; 16],
                    },
                ]
            })
            .map(|k| (k, 1))
            .collect();
        let existing: StdHashMap<EndpointKey, u32> =
            eps.iter().filter_map(std::result::Result::ok).collect();
        let d = diff(&existing, &wanted);
        writes.maps.push((names::ENDPOINTS, d.upsert.len(), 0));
        for (k, v) in d.upsert {
            eps.insert(k, v, 0).map_err(map_err(names::ENDPOINTS))?;
        }
        Ok(d.remove)
    }
}

/// One write to a map.
enum Write<K, V> {
    Put(K, V),
    Delete(K),
}

/// Write a diff to one map: `key` turns a slotless key into the map's key for the slot.
fn apply<K, V, MK>(
    name: &'static str,
    d: Diff<K, V>,
    key: impl Fn(K) -> MK,
    mut write: impl FnMut(Write<MK, V>) -> std::result::Result<(), aya::maps::MapError>,
) -> Result<()> {
    // Removals first: the slot never holds more than the larger of both generations.
    for k in d.remove {
        // A key already gone is what we wanted.
        let _ = write(Write::Delete(key(k)));
    }
    for (k, v) in d.upsert {
        write(Write::Put(key(k), v)).map_err(map_err(name))?;
    }
    Ok(())
}
