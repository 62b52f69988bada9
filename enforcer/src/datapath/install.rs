//! Installing a policy generation: the inactive slot (which holds the generation before the
//! active one) gets only the entries that differ from the new generation (`slots`), then
//! `CONFIG` flips to it with one map write. The previous generation stays in the now inactive
//! slot, to be diffed against by the next install.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use enforcer_common::{maps::names, Config, EndpointKey, CONFIG_ACTIVE};

use super::{
    map_err,
    slot_map::{sync, SlotMap},
    slots::{diff, InstallWrites, SlotEntries},
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
        let slot: u8 = if active { u8::from(cfg.slot == 0) } else { 0 };
        if let Some(wait) = self
            .last_flip
            .map(|t| OLD_SLOT_MARGIN.saturating_sub(t.elapsed()))
        {
            std::thread::sleep(wait);
        }
        let mut writes = InstallWrites::default();
        // Unknown until this install succeeds.
        let old = if let Some(old) = self.slots[usize::from(slot)].take() {
            old
        } else {
            writes.read_back = true;
            self.read_slot(slot)
        };
        let new = SlotEntries::of(compiled);
        self.write_slot(slot, &old, &new, &mut writes)?;
        // Endpoints are not slotted: add the new ones before the flip, drop stale ones after.
        let stale = self.sync_endpoints_add(endpoints, &mut writes)?;
        let generation = cfg.generation + 1;
        let flags = CONFIG_ACTIVE | super::ratelimit::config_flags(compiled);
        let config = Config {
            generation,
            slot: slot.into(),
            flags,
        };
        self.maps
            .config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG))?;
        self.last_flip = Some(Instant::now());
        self.slots[usize::from(slot)] = Some(new);
        for k in &stale {
            let _ = self.maps.endpoints.remove(k);
        }
        writes.maps.push((names::ENDPOINTS, 0, stale.len()));
        self.prune_rule_buckets(compiled);
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
        slot: u8,
        old: &SlotEntries,
        new: &SlotEntries,
        writes: &mut InstallWrites,
    ) -> Result<()> {
        let m = &mut self.maps;
        sync(
            &mut m.identities,
            names::IDENTITIES,
            slot,
            &old.identities,
            &new.identities,
            writes,
        )?;
        sync(
            &mut m.rate_limits,
            names::RATE_LIMITS,
            slot,
            &old.rate_limits,
            &new.rate_limits,
            writes,
        )?;
        sync(
            &mut m.cidrs,
            names::CIDR_IDENTITIES,
            slot,
            &old.cidrs,
            &new.cidrs,
            writes,
        )?;
        sync(
            &mut m.policy,
            names::POLICY,
            slot,
            &old.policy,
            &new.policy,
            writes,
        )
    }

    /// What `slot` of the slotted maps holds now, read from the maps (after a load, the pinned
    /// maps may hold anything an earlier agent wrote).
    fn read_slot(&self, slot: u8) -> SlotEntries {
        let m = &self.maps;
        SlotEntries {
            identities: m.identities.entries(slot),
            cidrs: m.cidrs.entries(slot),
            policy: m.policy.entries(slot),
            rate_limits: m.rate_limits.entries(slot),
        }
    }

    /// Add the endpoints that are missing; returns those to remove after the flip.
    fn sync_endpoints_add(
        &mut self,
        endpoints: &BTreeSet<(u32, IpAddr)>,
        writes: &mut InstallWrites,
    ) -> Result<Vec<EndpointKey>> {
        let eps = &mut self.maps.endpoints;
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
