//! Conntrack aging: the datapath stamps each `CONNTRACK` entry with the second a packet of its
//! flow was last seen (`CtValue::seen`, coarse `CLOCK_MONOTONIC`) and with what TCP said
//! (`CtValue::state`); [`ConntrackSweeper`] removes the entries idle for longer than their
//! [`CtTimeouts`]. The LRU still evicts when the table is full; the sweep keeps it from filling
//! with flows that ended long ago.

use std::{path::Path, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use enforcer_common::{maps::names, CtKey, CtValue, Protocol, CT_STATE_CLOSING, CT_STATE_REPLIED};
use serde::Deserialize;

use super::{map_err, Result};

/// Idle timeouts of conntrack entries (agent config key `conntrack`, seconds). The defaults are
/// Cilium's: an established TCP flow may be idle for 6 hours, a closing one (FIN or RST seen)
/// for 10 s, an unanswered TCP opening for 60 s, any other flow (UDP, ICMP, ...) for 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CtTimeouts {
    /// TCP flows the responder answered and that are not closing.
    #[serde(with = "secs")]
    pub tcp_established: Duration,
    /// TCP flows the responder has not answered yet.
    #[serde(with = "secs")]
    pub tcp_opening: Duration,
    /// TCP flows after a FIN or RST.
    #[serde(with = "secs")]
    pub tcp_closing: Duration,
    /// Every other protocol.
    #[serde(with = "secs")]
    pub other: Duration,
    /// How often the agent sweeps.
    #[serde(with = "secs")]
    pub sweep_interval: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp_established: Duration::from_hours(6),
            tcp_opening: Duration::from_mins(1),
            tcp_closing: Duration::from_secs(10),
            other: Duration::from_mins(1),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

impl CtTimeouts {
    /// How long the entry `v` of a flow of `protocol` may stay idle.
    pub fn idle_limit(&self, protocol: u8, v: &CtValue) -> Duration {
        if protocol != Protocol::Tcp as u8 {
            self.other
        } else if v.state & CT_STATE_CLOSING != 0 {
            self.tcp_closing
        } else if v.state & CT_STATE_REPLIED != 0 {
            self.tcp_established
        } else {
            self.tcp_opening
        }
    }

    /// Whether the entry `v` of a flow of `protocol`, last seen at second `v.seen`, has expired
    /// at second `now` (both `CLOCK_MONOTONIC`).
    pub fn expired(&self, protocol: u8, v: &CtValue, now: u32) -> bool {
        let idle = u64::from(now.saturating_sub(v.seen));
        idle > self.idle_limit(protocol, v).as_secs()
    }
}

/// What one sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Entries left in the table.
    pub entries: u64,
    /// Entries removed as idle.
    pub expired: u64,
    /// The table's capacity.
    pub capacity: u32,
}

/// The agent's own handle on the pinned `CONNTRACK` (the sweep needs no owner of the datapath).
pub struct ConntrackSweeper {
    map: HashMap<MapData, CtKey, CtValue>,
    capacity: u32,
}

impl ConntrackSweeper {
    /// Open `CONNTRACK` pinned in `maps_dir`.
    pub fn open(maps_dir: &Path) -> Result<ConntrackSweeper> {
        let name = names::CONNTRACK;
        let data = MapData::from_pin(maps_dir.join(name)).map_err(map_err(name))?;
        let capacity = data.info().map_err(map_err(name))?.max_entries();
        let map = Map::from_map_data(data).map_err(map_err(name))?;
        let map = HashMap::try_from(map).map_err(map_err(name))?;
        Ok(ConntrackSweeper { map, capacity })
    }

    /// Remove every entry idle for longer than its timeout. An entry the kernel evicts or
    /// refreshes meanwhile is left as it is (a refreshed one is looked at again before removal).
    pub fn sweep(&mut self, timeouts: &CtTimeouts) -> Result<Swept> {
        let now = monotonic_secs();
        let mut entries = 0u64;
        let mut idle = Vec::new();
        for (k, v) in self.map.iter().filter_map(std::result::Result::ok) {
            entries += 1;
            if timeouts.expired(k.protocol, &v, now) {
                idle.push(k);
            }
        }
        let mut expired = 0u64;
        for k in &idle {
            // A packet may have refreshed the entry since it was read.
            let still = self
                .map
                .get(k, 0)
                .is_ok_and(|v| timeouts.expired(k.protocol, &v, now));
            if still && self.map.remove(k).is_ok() {
                expired += 1;
            }
        }
        Ok(Swept {
            entries: entries - expired,
            expired,
            capacity: self.capacity,
        })
    }
}

/// `CLOCK_MONOTONIC` in whole seconds, the clock of `CtValue::seen` (the kernel stamps the coarse
/// variant of the same clock).
pub fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    u32::try_from(ts.tv_sec).unwrap_or(u32::MAX)
}

/// Timeouts in seconds: positive numbers (0 would expire every flow at once).
mod secs {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = u64::deserialize(d)?;
        if v == 0 {
            return Err(D::Error::custom(
                "conntrack timeouts are positive whole seconds (got 0)",
            ));
        }
        Ok(Duration::from_secs(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: u8, seen: u32) -> CtValue {
        CtValue {
            state,
            seen,
            ..CtValue::default()
        }
    }

    #[test]
    fn timeouts_follow_protocol_and_tcp_state() {
        let t = CtTimeouts::default();
        let (tcp, udp) = (Protocol::Tcp as u8, Protocol::Udp as u8);
        assert_eq!(t.idle_limit(udp, &entry(CT_STATE_REPLIED, 0)), t.other);
        assert_eq!(t.idle_limit(tcp, &entry(0, 0)), t.tcp_opening);
        assert_eq!(
            t.idle_limit(tcp, &entry(CT_STATE_REPLIED, 0)),
            t.tcp_established
        );
        assert_eq!(
            t.idle_limit(tcp, &entry(CT_STATE_REPLIED | CT_STATE_CLOSING, 0)),
            t.tcp_closing
        );
        // Idle exactly the limit is not expired yet; one second more is.
        assert!(!t.expired(udp, &entry(0, 1000), 1060));
        assert!(t.expired(udp, &entry(0, 1000), 1061));
        // An entry stamped after `now` was read (another CPU) is not expired.
        assert!(!t.expired(udp, &entry(0, 2000), 1000));
    }

    #[test]
    fn config_reads_seconds_and_refuses_zero() {
        let t: CtTimeouts = serde_yaml_ng::from_str("{other: 2, tcpClosing: 3}").expect("valid");
        assert_eq!(t.other, Duration::from_secs(2));
        assert_eq!(t.tcp_closing, Duration::from_secs(3));
        assert_eq!(t.tcp_established, CtTimeouts::default().tcp_established);
        let err = serde_yaml_ng::from_str::<CtTimeouts>("{other: 0}").expect_err("zero");
        assert!(err.to_string().contains("positive"), "{err}");
        assert!(serde_yaml_ng::from_str::<CtTimeouts>("{bogus: 1}").is_err());
    }
}
