//! Installing a policy generation: the inactive slot is written completely, then `CONFIG` flips
//! to it with one map write, then the old slot is emptied.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie};
use enforcer_common::{
    cidr_key_data, maps::names, CidrKeyData, Config, EndpointKey, IdentityKey, IdentityValue,
    PolicyKey, PolicyKeyData, PolicyValue, CIDR_CAPACITY, CIDR_KEY_FIXED_BITS, CONFIG_ACTIVE,
    ENDPOINT_CAPACITY, IDENTITY_CAPACITY, POLICY_CAPACITY,
};

use super::{map_err, Datapath, DatapathError, Generation, Result};
use crate::policy::{compile::addr_bits, Compiled};

/// How long after the flip the old slot is emptied: packets that read the old slot finish within
/// microseconds; this margin is not an RCU grace period.
const OLD_SLOT_MARGIN: Duration = Duration::from_millis(5);

/// Check every map's capacity before anything is written.
fn check_capacities(compiled: &Compiled, endpoints: &BTreeSet<(u32, IpAddr)>) -> Result<()> {
    check_capacity(
        names::IDENTITIES,
        compiled.identities.len(),
        IDENTITY_CAPACITY,
    )?;
    check_capacity(names::CIDR_IDENTITIES, compiled.cidrs.len(), CIDR_CAPACITY)?;
    check_capacity(names::POLICY, compiled.policy.len(), POLICY_CAPACITY)?;
    check_capacity(names::ENDPOINTS, endpoints.len(), ENDPOINT_CAPACITY)?;
    // Rule ids index RULE_COUNTERS (id 0 is "no rule").
    check_capacity(
        names::RULE_COUNTERS,
        compiled.rules.len() + 1,
        enforcer_common::RULE_CAPACITY,
    )
}

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
    /// Install a compiled policy as the next generation: write the inactive slot completely, then
    /// flip `CONFIG` with one map write. Capacity is checked before anything is written.
    pub fn install(
        &mut self,
        compiled: &Compiled,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<Generation> {
        check_capacities(compiled, endpoints)?;
        Self::check_rate_limits(compiled)?;
        let cfg = self.config()?;
        let slot: u32 = if cfg.flags & CONFIG_ACTIVE != 0 {
            1 - cfg.slot.min(1)
        } else {
            0
        };
        self.clear_slot(slot)?;
        self.write_slot(slot, compiled)?;
        self.write_rate_limits(slot, compiled)?;
        // Endpoints are not slotted: add the new ones before the flip, drop stale ones after.
        let stale = self.sync_endpoints_add(endpoints)?;
        let generation = cfg.generation + 1;
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)
            .map_err(map_err(names::CONFIG))?;
        let flags = CONFIG_ACTIVE | super::ratelimit::config_flags(compiled);
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
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        for k in stale {
            let _ = eps.remove(&k);
        }
        self.prune_rule_buckets(compiled)?;
        // Empty the previous slot once no packet can still be using it (programs run under RCU,
        // a packet that read the old slot finishes within microseconds; this is a margin, not an
        // RCU grace period): the tries hold one generation, so lookups stay as fast as the
        // policy allows.
        if cfg.flags & CONFIG_ACTIVE != 0 {
            std::thread::sleep(OLD_SLOT_MARGIN);
            self.clear_slot(cfg.slot)?;
        }
        Ok(generation)
    }

    /// Write identities, CIDR classes and policy entries of `compiled` into `slot`.
    fn write_slot(&mut self, slot: u32, compiled: &Compiled) -> Result<()> {
        let mut ids =
            HashMap::<_, IdentityKey, IdentityValue>::try_from(self.map_mut(names::IDENTITIES)?)
                .map_err(map_err(names::IDENTITIES))?;
        for (addr, value) in &compiled.identities {
            let key = IdentityKey {
                slot,
                addr: addr_bits(*addr).to_be_bytes(),
            };
            ids.insert(key, value, 0)
                .map_err(map_err(names::IDENTITIES))?;
        }
        let mut cidrs = LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(
            self.map_mut(names::CIDR_IDENTITIES)?,
        )
        .map_err(map_err(names::CIDR_IDENTITIES))?;
        for (prefix, value) in &compiled.cidrs {
            let key = Key::new(
                CIDR_KEY_FIXED_BITS + u32::from(prefix.len),
                cidr_key_data(u8::try_from(slot).unwrap_or(0), &prefix.octets()),
            );
            cidrs
                .insert(&key, value, 0)
                .map_err(map_err(names::CIDR_IDENTITIES))?;
        }
        let mut policy =
            LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map_mut(names::POLICY)?)
                .map_err(map_err(names::POLICY))?;
        for e in &compiled.policy {
            let data = PolicyKey {
                slot: u8::try_from(slot).unwrap_or(0),
                ..PolicyKey::decode(&e.key)
            }
            .encode();
            policy
                .insert(&Key::new(e.prefix_len, data), e.value, 0)
                .map_err(map_err(names::POLICY))?;
        }
        Ok(())
    }

    fn sync_endpoints_add(
        &mut self,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<Vec<EndpointKey>> {
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        // Each managed interface also gets a marker entry with the zero address.
        let wanted: BTreeSet<([u8; 16], u32)> = endpoints
            .iter()
            .flat_map(|(ifindex, addr)| {
                [
                    (addr_bits(*addr).to_be_bytes(), *ifindex),
                    ([0; 16], *ifindex),
                ]
            })
            .collect();
        let existing: Vec<EndpointKey> = eps.keys().filter_map(std::result::Result::ok).collect();
        let stale = existing
            .into_iter()
            .filter(|k| !wanted.contains(&(k.addr, k.ifindex)))
            .collect();
        for (addr, ifindex) in wanted {
            eps.insert(EndpointKey { ifindex, addr }, 1, 0)
                .map_err(map_err(names::ENDPOINTS))?;
        }
        Ok(stale)
    }

    /// Remove every entry of `slot` from the slotted maps.
    fn clear_slot(&mut self, slot: u32) -> Result<()> {
        {
            let mut ids = HashMap::<_, IdentityKey, IdentityValue>::try_from(
                self.map_mut(names::IDENTITIES)?,
            )
            .map_err(map_err(names::IDENTITIES))?;
            let keys: Vec<IdentityKey> = ids
                .keys()
                .filter_map(std::result::Result::ok)
                .filter(|k| k.slot == slot)
                .collect();
            for k in keys {
                let _ = ids.remove(&k);
            }
        }
        let slot_byte = u8::try_from(slot).unwrap_or(0);
        {
            let mut cidrs = LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(
                self.map_mut(names::CIDR_IDENTITIES)?,
            )
            .map_err(map_err(names::CIDR_IDENTITIES))?;
            let keys: Vec<Key<CidrKeyData>> = cidrs
                .keys()
                .filter_map(std::result::Result::ok)
                .filter(|k| k.data()[0] == slot_byte)
                .collect();
            for k in keys {
                let _ = cidrs.remove(&k);
            }
        }
        let mut policy =
            LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map_mut(names::POLICY)?)
                .map_err(map_err(names::POLICY))?;
        let keys: Vec<Key<PolicyKeyData>> = policy
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| k.data()[0] == slot_byte)
            .collect();
        for k in keys {
            let _ = policy.remove(&k);
        }
        Ok(())
    }
}
