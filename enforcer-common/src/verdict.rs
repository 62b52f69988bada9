//! Verdicts, reasons and directions, and the layout of the `COUNTERS` per-CPU array.

/// Policy direction a packet is judged for.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const DIRECTIONS: u32 = 2;

pub const VERDICT_ALLOW: u8 = 0;
pub const VERDICT_DENY: u8 = 1;
/// Passed, but only because the denying policy is in audit mode.
pub const VERDICT_AUDIT: u8 = 2;
pub const VERDICTS: u32 = 3;

/// Allowed or denied by a policy rule.
pub const REASON_POLICY: u8 = 0;
/// Allowed: the service is not isolated in this direction.
pub const REASON_NOT_ISOLATED: u8 = 1;
/// Allowed: packet of an established flow (conntrack).
pub const REASON_ESTABLISHED: u8 = 2;
/// Allowed: from the node itself to a local workload (health checks).
pub const REASON_HOST: u8 = 3;
/// Passed: not IP (ARP, ...).
pub const REASON_NON_IP: u8 = 4;
/// Denied: the service is isolated and no rule allows the flow.
pub const REASON_DEFAULT_DENY: u8 = 5;
/// Denied: over a rate limit.
pub const REASON_RATE_LIMITED: u8 = 6;
/// Denied: source address does not belong to the pod that sent it.
pub const REASON_SPOOFED: u8 = 7;
/// Denied: an IP packet that could not be parsed.
pub const REASON_MALFORMED: u8 = 8;
/// Passed: IPv6 neighbour discovery / MLD, needed for the link to work.
pub const REASON_CONTROL: u8 = 9;
/// Passed: no policy installed yet.
pub const REASON_NO_POLICY: u8 = 10;
/// Denied: a later IP fragment whose first fragment was not seen passing (or was denied).
pub const REASON_FRAGMENT: u8 = 11;
pub const REASONS: u32 = 16;

/// Index into `COUNTERS` for a (direction, verdict, reason) triple.
#[inline(always)]
pub const fn counter_index(direction: u8, verdict: u8, reason: u8) -> u32 {
    (direction as u32 * VERDICTS + verdict as u32) * REASONS + reason as u32
}

/// Number of entries of `COUNTERS`.
pub const COUNTER_ENTRIES: u32 = DIRECTIONS * VERDICTS * REASONS;

/// Name of a reason as it appears in metrics and events.
pub const fn reason_name(reason: u8) -> &'static str {
    match reason {
        REASON_POLICY => "policy",
        REASON_NOT_ISOLATED => "not_isolated",
        REASON_ESTABLISHED => "established",
        REASON_HOST => "host",
        REASON_NON_IP => "non_ip",
        REASON_DEFAULT_DENY => "default_deny",
        REASON_RATE_LIMITED => "rate_limited",
        REASON_SPOOFED => "spoofed",
        REASON_MALFORMED => "malformed",
        REASON_CONTROL => "control",
        REASON_NO_POLICY => "no_policy",
        REASON_FRAGMENT => "fragment",
        _ => "unknown",
    }
}

pub const fn verdict_name(verdict: u8) -> &'static str {
    match verdict {
        VERDICT_ALLOW => "allowed",
        VERDICT_DENY => "denied",
        VERDICT_AUDIT => "audit",
        _ => "unknown",
    }
}

pub const fn direction_name(direction: u8) -> &'static str {
    if direction == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    }
}
