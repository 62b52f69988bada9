//! The datapath's counter maps, opened from their pins with handles of their own, so a scrape
//! reads them without the agent's lock (an install in progress does not delay it).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use enforcer_common::{
    event_stat,
    maps::names,
    ratelimit::{BucketKey, RateBucket},
    CounterIndex,
};

/// How long the count of per-source rate-limit buckets (a walk of an LRU map) is reused.
const BUCKET_COUNT_TTL: Duration = Duration::from_secs(10);

/// Read-only handles on the pinned counter maps.
pub struct CounterMaps {
    packets: PerCpuArray<MapData, u64>,
    rules: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    buckets: HashMap<MapData, BucketKey, RateBucket>,
    bucket_count: Mutex<Option<(Instant, u64)>>,
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

fn sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    map.get(&index, 0).map_or(0, |v| v.iter().sum())
}

impl CounterMaps {
    /// Open the counter maps pinned in `maps_dir`.
    pub fn open(maps_dir: &Path) -> Result<CounterMaps> {
        Ok(CounterMaps {
            packets: open(maps_dir, names::COUNTERS)?,
            rules: open(maps_dir, names::RULE_COUNTERS)?,
            events: open(maps_dir, names::EVENT_STATS)?,
            buckets: open(maps_dir, names::RATE_BUCKETS)?,
            bucket_count: Mutex::new(None),
        })
    }

    /// Packets per (direction, verdict, reason), summed over CPUs.
    pub fn packets(&self) -> BTreeMap<CounterIndex, u64> {
        CounterIndex::all()
            .map(|(i, c)| (c, sum(&self.packets, i)))
            .collect()
    }

    /// Packets counted for rule `id`.
    pub fn rule_packets(&self, id: u32) -> u64 {
        sum(&self.rules, id)
    }

    pub fn events_lost(&self) -> u64 {
        sum(&self.events, event_stat::LOST)
    }

    pub fn events_sampled_out(&self) -> u64 {
        sum(&self.events, event_stat::SAMPLED_OUT)
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
