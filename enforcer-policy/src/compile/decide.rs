//! The decision table of one (subject, direction, peer): every (protocol, port) point decided
//! with deny-wins, isolation, audit and enforce folded in, as nested LPM prefixes.

use std::collections::BTreeSet;

use enforcer_common::{
    PolicyValue, Protocol, POLICY_KEY_FIXED_BITS, POLICY_KEY_PROTO_BITS, REASON_DEFAULT_DENY,
    REASON_NOT_ISOLATED, REASON_POLICY, VERDICT_ALLOW, VERDICT_DENY,
};

use super::super::named_port::ResolvedPorts;

/// Protocols whose ports (or ICMP types) the trie distinguishes; any other protocol is decided
/// by the rules without ports.
pub const PROTOCOLS: [u8; 5] = [
    Protocol::Tcp as u8,
    Protocol::Udp as u8,
    Protocol::Sctp as u8,
    Protocol::Icmp as u8,
    Protocol::Icmpv6 as u8,
];
/// A protocol number no port entry names, to evaluate "every other protocol".
const OTHER_PROTOCOL: u8 = 255;

/// A decision table: `(prefix_len, protocol, port, value)` entries of one (subject, direction,
/// peer).
pub type Table = Vec<(u32, u8, u16, PolicyValue)>;

/// A rule as the decision sees it: its id, whether it denies, whether its policy audits, its
/// ports resolved for the destination, and whether it carries a rate limit.
#[derive(Clone, Debug)]
pub struct Decider {
    pub id: u32,
    pub deny: bool,
    pub audit: bool,
    pub ports: ResolvedPorts,
    pub rate_limited: bool,
}

/// The value of a lookup that finds nothing: not isolated, nothing denies.
pub const MISS: PolicyValue = PolicyValue {
    rule: 0,
    audit_rule: 0,
    ratelimit: 0,
    verdict: VERDICT_ALLOW,
    audit_verdict: VERDICT_ALLOW,
    reason: REASON_NOT_ISOLATED,
    audit_reason: REASON_NOT_ISOLATED,
};

/// Decide one (protocol, port) point for one mode (`with_audit`: audit policies count too).
fn eval(
    rules: &[&Decider],
    proto: u8,
    port: u16,
    with_audit: bool,
    isolated: bool,
    default_id: u32,
) -> (u8, u32, u8, u32) {
    let applies = |r: &&&Decider| (with_audit || !r.audit) && r.ports.matches(proto, port);
    if let Some(r) = rules.iter().filter(|r| r.deny).find(applies) {
        return (VERDICT_DENY, r.id, REASON_POLICY, 0);
    }
    if !isolated {
        return (VERDICT_ALLOW, 0, REASON_NOT_ISOLATED, 0);
    }
    if let Some(r) = rules.iter().filter(|r| !r.deny).find(applies) {
        let bucket = if r.rate_limited { r.id } else { 0 };
        return (VERDICT_ALLOW, r.id, REASON_POLICY, bucket);
    }
    (VERDICT_DENY, default_id, REASON_DEFAULT_DENY, 0)
}

fn value_at(
    rules: &[&Decider],
    proto: u8,
    port: u16,
    iso: (bool, bool),
    default_id: u32,
) -> PolicyValue {
    let (verdict, rule, reason, ratelimit) = eval(rules, proto, port, false, iso.0, default_id);
    let (audit_verdict, audit_rule, audit_reason, _) =
        eval(rules, proto, port, true, iso.1, default_id);
    PolicyValue {
        rule,
        audit_rule,
        ratelimit,
        verdict,
        audit_verdict,
        reason,
        audit_reason,
    }
}

/// The trie entries `(prefix_len, protocol, port, value)` of one (subject, direction, peer).
pub fn decision_table(rules: &[&Decider], iso: (bool, bool), default_id: u32) -> Table {
    let mut out = Vec::new();
    let root = value_at(rules, OTHER_PROTOCOL, 0, iso, default_id);
    if root != MISS {
        out.push((POLICY_KEY_FIXED_BITS, 0, 0, root));
    }
    for proto in PROTOCOLS {
        // Elementary port intervals: every range start and end + 1 of a matching port entry.
        let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 65_536]);
        for r in rules {
            for spec in r.ports.specs() {
                if super::super::protocol_matches(spec.protocol, proto) && spec.protocol.has_ports()
                {
                    let (lo, hi) = spec.range();
                    cuts.insert(u32::from(lo));
                    cuts.insert(u32::from(hi) + 1);
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut intervals: Vec<(u32, u32, PolicyValue)> = Vec::new();
        for w in cuts.windows(2) {
            let port = u16::try_from(w[0]).unwrap_or(u16::MAX);
            let v = value_at(rules, proto, port, iso, default_id);
            match intervals.last_mut() {
                Some(last) if last.2 == v => last.1 = w[1] - 1,
                _ => intervals.push((w[0], w[1] - 1, v)),
            }
        }
        // The most common value becomes the protocol entry; the rest are port prefixes.
        let mut coverage: Vec<(PolicyValue, u32)> = Vec::new();
        for (lo, hi, v) in &intervals {
            match coverage.iter_mut().find(|(c, _)| c == v) {
                Some(c) => c.1 += hi - lo + 1,
                None => coverage.push((*v, hi - lo + 1)),
            }
        }
        let base = coverage
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(root, |(v, _)| *v);
        if base != root {
            out.push((POLICY_KEY_PROTO_BITS, proto, 0, base));
        }
        for (lo, hi, v) in intervals {
            if v != base {
                for (start, bits) in port_blocks(lo, hi) {
                    out.push((POLICY_KEY_PROTO_BITS + 16 - bits, proto, start, v));
                }
            }
        }
    }
    out
}

/// Split the inclusive port range `[lo, hi]` into aligned power-of-two blocks
/// `(start, log2(size))`.
pub fn port_blocks(lo: u32, hi: u32) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        let mut size: u32 = if start == 0 {
            1 << 16
        } else {
            start & start.wrapping_neg()
        };
        while start + size - 1 > hi {
            size >>= 1;
        }
        out.push((
            u16::try_from(start).unwrap_or(u16::MAX),
            size.trailing_zeros(),
        ));
        start += size;
    }
    out
}
