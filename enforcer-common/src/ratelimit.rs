//! Rate limits (`rateLimit:` of ingress allow rules): the configuration the agent writes to
//! `RATE_LIMITS` and the token buckets the datapath keeps in `RATE_BUCKETS` (one per rule and
//! source address, LRU) and `RULE_BUCKETS` (one per rule).
//!
//! Tokens are fixed point: one packet (or byte) is [`TOKEN_SCALE`] tokens, so a bucket refilled
//! for `elapsed` nanoseconds at `rate` per second gains exactly `elapsed * rate` tokens — no
//! rounding, whatever the rate. Token counts are signed: a packet larger than the whole burst may
//! pass when the bucket is full, leaving it in debt, so the long-run rate stays exact.
//!
//! The arithmetic lives here, shared by the eBPF side (which applies it with compare-and-swap on
//! the bucket fields) and the userspace tests.

// Token counts stay below 2^63 (see `MAX_RATE`), so the u64 → i64 conversions cannot wrap.
#![allow(clippy::cast_possible_wrap)]

use crate::addr::Addr;

/// Tokens per packet (or per byte).
pub const TOKEN_SCALE: u64 = 1_000_000_000;

/// Rules with a rate limit, per policy slot.
pub const RATE_LIMIT_CAPACITY: u32 = 4096;
/// Per-source buckets (LRU: the least recently used bucket is evicted when full).
pub const RATE_BUCKET_CAPACITY: u32 = 65_536;

/// Largest rate (per second) and burst a bucket holds; larger values saturate. Keeps every token
/// sum below 2^63 (`2 * MAX * TOKEN_SCALE` plus one largest packet).
pub const MAX_RATE: u64 = 2_000_000_000;
/// See [`MAX_RATE`].
pub const MAX_BURST: u64 = 2_000_000_000;

/// Largest cost one packet is charged, in packets (GSO aggregates count their segments).
pub const MAX_PACKET_COST: u64 = 256;
/// Largest cost one packet is charged, in bytes.
pub const MAX_BYTE_COST: u64 = 1 << 20;

/// Minimum time between two `rate_limited` events of one bucket; the drops in between are
/// counted in `EVENT_STATS[SAMPLED_OUT]`.
pub const EVENT_INTERVAL_NS: u64 = 100_000_000;

/// `RateLimitConfig::flags`: one bucket per source address (else one for the whole rule).
pub const RL_PER_SOURCE: u32 = 1;

/// Key of `RATE_LIMITS`: the policy slot and the rule id (`PolicyValue::ratelimit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateLimitKey {
    pub slot: u32,
    pub rule: u32,
}

/// One dimension (packets or bytes) of a limit. `rate == 0`: not limited in this dimension.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateDim {
    /// Units (packets or bytes) per second; tokens gained per nanosecond.
    pub rate: u64,
    /// Burst in tokens (`burst * TOKEN_SCALE`).
    pub capacity: u64,
    /// Nanoseconds after which a bucket is full whatever its debt: refills of that long are
    /// clamped before multiplying (no overflow).
    pub fill_ns: u64,
}

impl RateDim {
    /// A dimension limited to `rate` per second with `burst` units (both saturated to the
    /// maxima); `rate == 0` is unlimited.
    pub const fn new(rate: u64, burst: u64, max_cost: u64) -> RateDim {
        if rate == 0 {
            return RateDim {
                rate: 0,
                capacity: 0,
                fill_ns: 0,
            };
        }
        let rate = if rate > MAX_RATE { MAX_RATE } else { rate };
        let burst = if burst == 0 {
            1
        } else if burst > MAX_BURST {
            MAX_BURST
        } else {
            burst
        };
        let capacity = burst * TOKEN_SCALE;
        // From the deepest debt (one largest packet below an empty bucket) to full.
        let span = capacity + max_cost * TOKEN_SCALE;
        RateDim {
            rate,
            capacity,
            fill_ns: span.div_ceil(rate),
        }
    }

    /// Tokens gained in `elapsed` nanoseconds (at most a full bucket from the deepest debt).
    #[inline(always)]
    pub const fn refill(&self, elapsed: u64) -> i64 {
        let e = if elapsed > self.fill_ns {
            self.fill_ns
        } else {
            elapsed
        };
        (e * self.rate) as i64
    }

    /// `tokens` after gaining `add`, clamped to the burst.
    #[inline(always)]
    pub const fn add(&self, tokens: i64, add: i64) -> i64 {
        let cap = self.capacity as i64;
        let t = tokens + add;
        if t > cap {
            cap
        } else {
            t
        }
    }

    /// The cost of `units` (clamped to `max_cost`) in tokens.
    #[inline(always)]
    pub const fn cost(units: u64, max_cost: u64) -> i64 {
        let u = if units > max_cost { max_cost } else { units };
        let u = if u == 0 { 1 } else { u };
        (u * TOKEN_SCALE) as i64
    }

    /// The tokens a bucket holding `tokens` needs to admit a packet of `cost`: the cost, or a
    /// full bucket for a packet larger than the burst (which then leaves the bucket in debt).
    #[inline(always)]
    pub const fn needed(&self, cost: i64) -> i64 {
        let cap = self.capacity as i64;
        if cost > cap {
            cap
        } else {
            cost
        }
    }

    /// `tokens` clamped to the burst (after a limit was lowered).
    #[inline(always)]
    pub const fn clamp(&self, tokens: i64) -> i64 {
        let cap = self.capacity as i64;
        if tokens > cap {
            cap
        } else {
            tokens
        }
    }

    /// Tokens after charging `cost`, if a bucket holding `tokens` admits it.
    #[inline(always)]
    pub const fn charge(&self, tokens: i64, cost: i64) -> Option<i64> {
        let base = self.clamp(tokens);
        if base >= self.needed(cost) {
            Some(base - cost)
        } else {
            None
        }
    }
}

/// Value of `RATE_LIMITS`: the limit of one rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub packets: RateDim,
    pub bytes: RateDim,
    /// `RL_*` flags.
    pub flags: u32,
    pub _pad: u32,
}

impl RateLimitConfig {
    /// The configuration of `rateLimit: {packetsPerSecond, bytesPerSecond, burst, per}` (rates
    /// 0 = not set).
    ///
    /// `burst` defaults to one second worth of each rate. It counts packets when
    /// `packetsPerSecond` is set (and then gives the byte bucket the same duration:
    /// `burst * bytesPerSecond / packetsPerSecond` bytes), bytes when only `bytesPerSecond` is.
    pub const fn new(
        packets_per_second: u64,
        bytes_per_second: u64,
        burst: Option<u64>,
        per_source: bool,
    ) -> RateLimitConfig {
        let pps = packets_per_second;
        let bps = bytes_per_second;
        let (burst_packets, burst_bytes) = match burst {
            None => (pps, bps),
            Some(b) if pps == 0 => (0, b),
            Some(b) => {
                let bytes = (b as u128 * bps as u128).div_ceil(pps as u128);
                #[allow(clippy::cast_possible_truncation)] // clamped to u64::MAX first
                let bytes = if bytes > u64::MAX as u128 {
                    u64::MAX
                } else {
                    bytes as u64
                };
                (b, bytes)
            }
        };
        RateLimitConfig {
            packets: RateDim::new(pps, burst_packets, MAX_PACKET_COST),
            bytes: RateDim::new(bps, burst_bytes, MAX_BYTE_COST),
            flags: if per_source { RL_PER_SOURCE } else { 0 },
            _pad: 0,
        }
    }

    pub const fn per_source(&self) -> bool {
        self.flags & RL_PER_SOURCE != 0
    }
}

/// Key of `RATE_BUCKETS`: a rule and a source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub rule: u32,
    pub addr: Addr,
}

/// Value of `RATE_BUCKETS` and `RULE_BUCKETS`. Every field is updated with compare-and-swap:
/// `last_ns` by the CPU that claims the refill of `(last_ns, now]`, the token counts by whoever
/// refills or charges them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    /// Packet tokens (`TOKEN_SCALE` per packet); negative = debt.
    pub packet_tokens: i64,
    /// Byte tokens (`TOKEN_SCALE` per byte); negative = debt.
    pub byte_tokens: i64,
    /// Time (`bpf_ktime_get_ns`) up to which the bucket has been refilled.
    pub last_ns: u64,
    /// Time of the last `rate_limited` event reported for this bucket.
    pub last_event_ns: u64,
}

impl RateBucket {
    /// A new bucket: full.
    pub const fn full(cfg: &RateLimitConfig, now: u64) -> RateBucket {
        RateBucket {
            packet_tokens: cfg.packets.capacity as i64,
            byte_tokens: cfg.bytes.capacity as i64,
            last_ns: now,
            last_event_ns: 0,
        }
    }

    /// The sequential algorithm (what the datapath does with compare-and-swap): refill up to
    /// `now`, then admit a packet of `packets` segments and `bytes` bytes if it fits both
    /// dimensions, charging both.
    pub fn admit(&mut self, cfg: &RateLimitConfig, now: u64, packets: u64, bytes: u64) -> bool {
        if now > self.last_ns {
            let elapsed = now - self.last_ns;
            self.last_ns = now;
            if cfg.packets.rate != 0 {
                self.packet_tokens = cfg
                    .packets
                    .add(self.packet_tokens, cfg.packets.refill(elapsed));
            }
            if cfg.bytes.rate != 0 {
                self.byte_tokens = cfg.bytes.add(self.byte_tokens, cfg.bytes.refill(elapsed));
            }
        }
        let p = RateDim::cost(packets, MAX_PACKET_COST);
        let b = RateDim::cost(bytes, MAX_BYTE_COST);
        let new_p = if cfg.packets.rate == 0 {
            Some(self.packet_tokens)
        } else {
            cfg.packets.charge(self.packet_tokens, p)
        };
        let new_b = if cfg.bytes.rate == 0 {
            Some(self.byte_tokens)
        } else {
            cfg.bytes.charge(self.byte_tokens, b)
        };
        match (new_p, new_b) {
            (Some(p), Some(b)) => {
                self.packet_tokens = p;
                self.byte_tokens = b;
                true
            }
            _ => false,
        }
    }
}

/// Index of `RATE_STATS` (per-CPU counters about the buckets).
pub mod rate_stat {
    /// Per-source buckets created (a new source, or one whose bucket was evicted).
    pub const BUCKETS_CREATED: u32 = 0;
    /// Compare-and-swap loops that gave up under contention (the packet was dropped).
    pub const CONTENDED: u32 = 1;
    /// Packets dropped early by `xdp_uplink` (also counted in `COUNTERS` as `rate_limited`).
    pub const XDP_DROPS: u32 = 2;
    /// Packets dropped because no bucket could be created for them (bucket table full).
    pub const NO_BUCKET: u32 = 3;
    pub const COUNT: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let cfg = RateLimitConfig::new(100, 0, Some(10), true);
        let mut b = RateBucket::full(&cfg, 1000);
        let passed = (0..50).filter(|_| b.admit(&cfg, 1000, 1, 100)).count();
        assert_eq!(passed, 10);
        // 1 s later: 100 more tokens, but the burst caps them at 10.
        let passed = (0..50)
            .filter(|_| b.admit(&cfg, 1000 + SEC, 1, 100))
            .count();
        assert_eq!(passed, 10);
        // Steady 1000 pps for 10 s admits 100 pps (plus nothing: the bucket starts empty).
        let mut admitted = 0;
        for i in 1..=10_000u64 {
            if b.admit(&cfg, 1000 + SEC + i * SEC / 1000, 1, 100) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn both_dimensions_must_fit() {
        // 1000 pps but 10 000 B/s: 100-byte packets are limited by bytes to 100 pps.
        let cfg = RateLimitConfig::new(1000, 10_000, None, false);
        assert_eq!(cfg.packets.capacity, 1000 * TOKEN_SCALE);
        assert_eq!(cfg.bytes.capacity, 10_000 * TOKEN_SCALE);
        let mut b = RateBucket::full(&cfg, 0);
        let passed = (0..1000).filter(|_| b.admit(&cfg, 0, 1, 100)).count();
        assert_eq!(passed, 100);
        // The packet tokens of the refused packets were not spent.
        assert_eq!(b.packet_tokens, 900 * TOKEN_SCALE as i64);
    }

    #[test]
    fn burst_has_one_duration_in_both_dimensions() {
        let cfg = RateLimitConfig::new(100, 1_000_000, Some(20), true);
        assert_eq!(cfg.packets.capacity, 20 * TOKEN_SCALE);
        assert_eq!(cfg.bytes.capacity, 200_000 * TOKEN_SCALE);
        let bytes_only = RateLimitConfig::new(0, 1_000_000, Some(3000), true);
        assert_eq!(bytes_only.bytes.capacity, 3000 * TOKEN_SCALE);
        assert_eq!(bytes_only.packets.rate, 0);
    }

    #[test]
    fn oversized_packets_go_into_debt() {
        // 1000 B/s with a 100-byte burst: a 1000-byte packet passes once a second.
        let cfg = RateLimitConfig::new(0, 1000, Some(100), true);
        let mut b = RateBucket::full(&cfg, 0);
        assert!(b.admit(&cfg, 0, 1, 1000));
        assert!(!b.admit(&cfg, SEC / 2, 1, 1000));
        assert!(!b.admit(&cfg, SEC - 1, 1, 1000));
        assert!(b.admit(&cfg, SEC, 1, 1000));
    }

    #[test]
    fn long_idle_refills_without_overflow() {
        let cfg = RateLimitConfig::new(MAX_RATE * 4, MAX_RATE * 4, Some(u64::MAX), false);
        let mut b = RateBucket::full(&cfg, 0);
        assert!(b.admit(&cfg, u64::MAX / 2, 1, MAX_BYTE_COST * 8));
        assert!(b.packet_tokens > 0);
        let slow = RateLimitConfig::new(1, 1, None, true);
        let mut b = RateBucket::full(&slow, 0);
        assert!(b.admit(&slow, 1, 1, 1));
        assert!(!b.admit(&slow, 2, 1, 1));
        assert!(b.admit(&slow, u64::MAX, 1, 1));
    }

    #[test]
    fn lowering_the_burst_clamps_tokens() {
        let big = RateLimitConfig::new(100, 0, Some(100), true);
        let small = RateLimitConfig::new(100, 0, Some(5), true);
        let mut b = RateBucket::full(&big, 0);
        let passed = (0..50).filter(|_| b.admit(&small, 0, 1, 64)).count();
        assert_eq!(passed, 5);
    }
}
