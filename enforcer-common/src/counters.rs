//! The layout of the `COUNTERS` per-CPU array: one counter per (direction, verdict, reason).

// Indices below `COUNTER_ENTRIES` (96) and their parts fit every integer type used here.
#![allow(clippy::cast_possible_truncation)]

use crate::codes::{Direction, Reason, Verdict};

/// Directions in the counter layout.
pub const DIRECTIONS: u32 = 2;
/// Verdicts in the counter layout.
pub const VERDICTS: u32 = 3;
/// Reasons in the counter layout (room for more than are defined).
pub const REASONS: u32 = 16;
/// Number of entries of `COUNTERS`.
pub const COUNTER_ENTRIES: u32 = DIRECTIONS * VERDICTS * REASONS;

/// Index into `COUNTERS` for a (direction, verdict, reason) triple, as bytes (the kernel's form).
#[inline(always)]
pub const fn counter_index(direction: u8, verdict: u8, reason: u8) -> u32 {
    (direction as u32 * VERDICTS + verdict as u32) * REASONS + reason as u32
}

/// One counter of `COUNTERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterIndex {
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: Reason,
}

impl CounterIndex {
    /// The index of this counter in `COUNTERS`.
    pub const fn encode(self) -> u32 {
        counter_index(self.direction as u8, self.verdict as u8, self.reason as u8)
    }

    /// The counter at `index`, if the index holds a defined (direction, verdict, reason).
    pub const fn decode(index: u32) -> Option<CounterIndex> {
        if index >= COUNTER_ENTRIES {
            return None;
        }
        let reason = (index % REASONS) as u8;
        let verdict = ((index / REASONS) % VERDICTS) as u8;
        let direction = (index / REASONS / VERDICTS) as u8;
        match (
            Direction::from_u8(direction),
            Verdict::from_u8(verdict),
            Reason::from_u8(reason),
        ) {
            (Some(direction), Some(verdict), Some(reason)) => Some(CounterIndex {
                direction,
                verdict,
                reason,
            }),
            _ => None,
        }
    }

    /// Every defined counter with its index, in index order.
    pub fn all() -> impl Iterator<Item = (u32, CounterIndex)> {
        (0..COUNTER_ENTRIES).filter_map(|i| CounterIndex::decode(i).map(|c| (i, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut n = 0;
        for (i, c) in CounterIndex::all() {
            assert_eq!(c.encode(), i);
            assert_eq!(CounterIndex::decode(c.encode()), Some(c));
            n += 1;
        }
        assert_eq!(
            n,
            Direction::ALL.len() * Verdict::ALL.len() * Reason::ALL.len()
        );
        assert_eq!(CounterIndex::decode(COUNTER_ENTRIES), None);
        // Reasons 13..16 are room in the layout, not codes.
        assert_eq!(CounterIndex::decode(13), None);
    }
}
