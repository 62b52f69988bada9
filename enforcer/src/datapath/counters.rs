//! Reading the counter maps. [`CounterReader`] holds its own read-only handles on the pinned
//! counter maps, so a scrape reads them without the owner of the [`Datapath`] (an install in
//! progress does not delay it). The per-rule counters are read with one batched lookup per
//! chunk (`BPF_MAP_LOOKUP_BATCH`), not one syscall per rule.

use std::{
    borrow::Borrow,
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, IterableMap, Map, MapData, PerCpuArray, PerCpuValues};
use enforcer_common::{
    event_stat,
    maps::names,
    ratelimit::{BucketKey, RateBucket},
    CounterIndex, COUNTER_ENTRIES,
};

use super::{map_err, Datapath, DatapathError, Result};

/// How long the count of per-source rate-limit buckets (a walk of an LRU map) is reused.
const BUCKET_COUNT_TTL: Duration = Duration::from_secs(10);

/// Packets per (direction, verdict, reason), summed over CPUs.
pub type PacketCounts = BTreeMap<(u8, u8, u8), u64>;

fn sum<T: Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
    name: &'static str,
    index: u32,
) -> Result<u64> {
    Ok(map.get(&index, 0).map_err(map_err(name))?.iter().sum())
}

fn packet_counts<T: Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<PacketCounts> {
    CounterIndex::all()
        .map(|(i, c)| {
            let key = (c.direction as u8, c.verdict as u8, c.reason as u8);
            Ok((key, sum(map, names::COUNTERS, i)?))
        })
        .collect()
}

/// Read-only handles on the pinned counter maps.
pub struct CounterReader {
    packets: PerCpuArray<MapData, u64>,
    rules: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    buckets: HashMap<MapData, BucketKey, RateBucket>,
    bucket_count: Mutex<Option<(Instant, u64)>>,
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &'static str) -> Result<T> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(map_err(name))?;
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    T::try_from(map).map_err(map_err(name))
}

fn raw_fd(map: &PerCpuArray<MapData, u64>) -> std::os::fd::RawFd {
    IterableMap::map(map).fd().as_fd().as_raw_fd()
}

impl CounterReader {
    /// Open the counter maps pinned in `maps_dir`.
    pub fn open(maps_dir: &Path) -> Result<CounterReader> {
        Ok(CounterReader {
            packets: open(maps_dir, names::COUNTERS)?,
            rules: open(maps_dir, names::RULE_COUNTERS)?,
            events: open(maps_dir, names::EVENT_STATS)?,
            buckets: open(maps_dir, names::RATE_BUCKETS)?,
            bucket_count: Mutex::new(None),
        })
    }

    /// Packets per (direction, verdict, reason), summed over CPUs (one batched read).
    pub fn packets(&self) -> Result<BTreeMap<CounterIndex, u64>> {
        let sums = super::batch::per_cpu_sums(raw_fd(&self.packets), COUNTER_ENTRIES)?;
        Ok(CounterIndex::all()
            .map(|(i, c)| (c, sums.get(i as usize).copied().unwrap_or(0)))
            .collect())
    }

    /// Packets counted for each rule id in `0..n`, summed over CPUs, read in batches.
    pub fn rule_packets(&self, n: u32) -> Result<Vec<u64>> {
        super::batch::per_cpu_sums(raw_fd(&self.rules), n)
    }

    pub fn events_lost(&self) -> u64 {
        sum(&self.events, names::EVENT_STATS, event_stat::LOST).unwrap_or(0)
    }

    pub fn events_sampled_out(&self) -> u64 {
        sum(&self.events, names::EVENT_STATS, event_stat::SAMPLED_OUT).unwrap_or(0)
    }

    /// Entries of the per-source rate-limit buckets, counted at most every [`BUCKET_COUNT_TTL`].
    pub fn rate_buckets(&self) -> u64 {
        let mut cached = self
            .bucket_count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, n)) = *cached {
            if at.elapsed() < BUCKET_COUNT_TTL {
                return n;
            }
        }
        let n = self.buckets.keys().flatten().count() as u64;
        *cached = Some((Instant::now(), n));
        n
    }
}

impl Datapath {
    /// Events the datapath could not queue because the ring buffer was full.
    pub fn events_lost(&self) -> Result<u64> {
        sum(&self.maps.event_stats, names::EVENT_STATS, event_stat::LOST)
    }

    /// Events left out by sampling.
    pub fn events_sampled_out(&self) -> Result<u64> {
        sum(
            &self.maps.event_stats,
            names::EVENT_STATS,
            event_stat::SAMPLED_OUT,
        )
    }

    /// Packets per (direction, verdict, reason), summed over CPUs.
    pub fn counters(&self) -> Result<PacketCounts> {
        packet_counts(&self.maps.counters)
    }

    /// Packets counted for rule `id`, summed over CPUs.
    pub fn rule_packets(&self, id: u32) -> Result<u64> {
        sum(&self.maps.rule_counters, names::RULE_COUNTERS, id)
    }

    /// Move per-rule counters after an install: `(to, from)` gives rule id `to` the count of rule
    /// id `from` (`None`: zero). Every source is read before anything is written, since a rule's
    /// old id may be another rule's new id.
    pub fn move_rule_counters(&mut self, moves: &[(u32, Option<u32>)]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let name = names::RULE_COUNTERS;
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DatapathError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source,
        })?;
        let counters = &mut self.maps.rule_counters;
        let values: Vec<(u32, Vec<u64>)> = moves
            .iter()
            .map(|(to, from)| {
                let v = from
                    .and_then(|f| counters.get(&f, 0).ok())
                    .map_or_else(|| vec![0; cpus], |v| v.iter().copied().collect());
                (*to, v)
            })
            .collect();
        for (to, v) in values {
            let v = PerCpuValues::try_from(v).map_err(|source| DatapathError::Io {
                path: name.into(),
                source,
            })?;
            counters.set(to, v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Number of entries in a map (both slots for the slotted ones; 0 for a map that is not
    /// counted).
    pub fn map_entries(&self, name: &'static str) -> usize {
        let m = &self.maps;
        match name {
            names::IDENTITIES => m.identities.keys().count(),
            names::ENDPOINTS => m.endpoints.keys().count(),
            names::CIDR_IDENTITIES => m.cidrs.keys().count(),
            names::POLICY => m.policy.keys().count(),
            _ => 0,
        }
    }
}
