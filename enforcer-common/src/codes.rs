//! The codes the datapath writes into counters and events, each with its one name table:
//! `Direction`, `Verdict`, `Reason` and the IP `Protocol`. Every name shown to users (events,
//! metric labels, the CLI) comes from `as_str` here; every byte read back from a map goes through
//! `TryFrom<u8>`.

/// An unknown code read from a map or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCode {
    /// The enum the byte was decoded as.
    pub kind: &'static str,
    pub code: u8,
}

impl core::fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown {} code {}", self.kind, self.code)
    }
}

/// A `#[repr(u8)]` enum with its one name table: `as_str`, `from_name`, `TryFrom<u8>`, `ALL`,
/// and (userspace, `user` feature) serde by the same names.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name of the code in events, metric labels and the CLI.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The code of a byte, if it is one.
            pub const fn from_u8(code: u8) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The code of a name as `as_str` writes it.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// Every name, in code order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
        }

        #[cfg(feature = "user")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "user")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(user::ByName {
                    what: stringify!($name),
                    from_name: $name::from_name,
                    names: $name::NAMES,
                })
            }
        }

        impl TryFrom<u8> for $name {
            type Error = UnknownCode;

            fn try_from(code: u8) -> Result<Self, UnknownCode> {
                Self::from_u8(code).ok_or(UnknownCode { kind: stringify!($name), code })
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Serde of the enums by their names.
#[cfg(feature = "user")]
mod user {
    use serde::de::{Error, Visitor};

    /// Reads one of `names` back with `from_name`.
    pub(super) struct ByName<T: 'static> {
        pub what: &'static str,
        pub from_name: fn(&str) -> Option<T>,
        pub names: &'static [&'static str],
    }

    impl<T> Visitor<'_> for ByName<T> {
        type Value = T;

        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "a {} name", self.what)
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
            (self.from_name)(v).ok_or_else(|| E::unknown_variant(v, self.names))
        }
    }
}

abi_enum! {
    /// The policy direction a packet is judged for.
    pub enum Direction {
        Ingress = 0 => "ingress",
        Egress = 1 => "egress",
    }
}

abi_enum! {
    /// What the datapath did with a packet.
    pub enum Verdict {
        Allow = 0 => "allowed",
        Deny = 1 => "denied",
        /// Passed, but only because the denying policy is in audit mode.
        Audit = 2 => "audit",
    }
}

abi_enum! {
    /// Why the datapath decided as it did.
    pub enum Reason {
        /// Allowed or denied by a policy rule.
        Policy = 0 => "policy",
        /// Allowed: the service is not isolated in this direction.
        NotIsolated = 1 => "not_isolated",
        /// Allowed: packet of an established flow (conntrack).
        Established = 2 => "established",
        /// Allowed: from the node itself to a local workload (health checks).
        Host = 3 => "host",
        /// Passed: not IP (ARP, ...).
        NonIp = 4 => "non_ip",
        /// Denied: the service is isolated and no rule allows the flow.
        DefaultDeny = 5 => "default_deny",
        /// Denied: over a rate limit.
        RateLimited = 6 => "rate_limited",
        /// Denied: source address does not belong to the pod that sent it.
        Spoofed = 7 => "spoofed",
        /// Denied: an IP packet that could not be parsed.
        Malformed = 8 => "malformed",
        /// Passed: IPv6 neighbour discovery / MLD, needed for the link to work.
        Control = 9 => "control",
        /// Passed: no policy installed yet.
        NoPolicy = 10 => "no_policy",
        /// Denied: a later IP fragment whose first fragment was not seen passing (or was denied).
        Fragment = 11 => "fragment",
        /// Denied: an end of the flow is a local pod address the agent has not registered (a
        /// pod whose identity is not known yet, or is gone): fail closed until it is.
        UnknownEndpoint = 12 => "unknown_endpoint",
    }
}

abi_enum! {
    /// The IP protocols the policy language names (ICMP is 1 for IPv4, 58 for IPv6).
    pub enum Protocol {
        Icmp = 1 => "ICMP",
        Tcp = 6 => "TCP",
        Udp = 17 => "UDP",
        Icmpv6 = 58 => "ICMPv6",
        Sctp = 132 => "SCTP",
    }
}

impl Direction {
    /// The other direction.
    #[must_use]
    pub const fn other(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

/// The `reason` label of `enforcer_drops_total` for each drop reason; every other reason is
/// `other` (see `Reason::drop_label`).
pub const DROP_LABELS: [&str; 5] = [
    POLICY_DENIED,
    Reason::RateLimited.as_str(),
    Reason::Spoofed.as_str(),
    Reason::Malformed.as_str(),
    Reason::UnknownEndpoint.as_str(),
];

/// Drops by a rule or by default deny, as metrics group them.
const POLICY_DENIED: &str = "policy_denied";

impl Reason {
    /// The `reason` label of `enforcer_drops_total`: drops by a rule and by default deny are
    /// both `policy_denied`; reasons outside `DROP_LABELS` are `other`.
    pub const fn drop_label(self) -> &'static str {
        match self {
            Reason::Policy | Reason::DefaultDeny => POLICY_DENIED,
            Reason::RateLimited | Reason::Spoofed | Reason::Malformed | Reason::UnknownEndpoint => {
                self.as_str()
            }
            _ => "other",
        }
    }

    /// The reason of a flow event: a packet denied by a rule is `policy_denied` (a rule that
    /// allowed it is `policy`); every other reason by its name.
    pub const fn event_name(self, verdict: Verdict) -> &'static str {
        match (verdict, self) {
            (Verdict::Deny, Reason::Policy) => POLICY_DENIED,
            _ => self.as_str(),
        }
    }

    /// The reason of an event's name (the inverse of `event_name`).
    pub fn from_event_name(name: &str) -> Option<Reason> {
        if name == POLICY_DENIED {
            Some(Reason::Policy)
        } else {
            Reason::from_name(name)
        }
    }
}

impl Protocol {
    /// Whether the protocol is ICMP or `ICMPv6` (whose policy "port" is the message type).
    pub const fn is_icmp(number: u8) -> bool {
        number == Protocol::Icmp as u8 || number == Protocol::Icmpv6 as u8
    }

    /// Whether the protocol has ports (TCP, UDP, SCTP).
    pub const fn has_ports(number: u8) -> bool {
        number == Protocol::Tcp as u8
            || number == Protocol::Udp as u8
            || number == Protocol::Sctp as u8
    }
}

/// ICMP and `ICMPv6` message types the datapath looks at.
pub mod icmp {
    /// ICMP echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// ICMP destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// ICMP echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// ICMP time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// ICMP parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// `ICMPv6` errors: destination unreachable (1), packet too big (2), time exceeded (3),
    /// parameter problem (4).
    pub const V6_ERROR_FIRST: u8 = 1;
    /// See `V6_ERROR_FIRST`.
    pub const V6_ERROR_LAST: u8 = 4;
    /// `ICMPv6` echo request.
    pub const V6_ECHO_REQUEST: u8 = 128;
    /// `ICMPv6` echo reply.
    pub const V6_ECHO_REPLY: u8 = 129;
    /// `ICMPv6` link control the datapath always passes: MLD query .. redirect (130..=137).
    pub const V6_LINK_CONTROL_FIRST: u8 = 130;
    /// See `V6_LINK_CONTROL_FIRST`.
    pub const V6_LINK_CONTROL_LAST: u8 = 137;
    /// `ICMPv6` `MLDv2` report.
    pub const V6_MLD2_REPORT: u8 = 143;

    /// The echo request type of ICMP (`v6 == false`) or `ICMPv6`.
    pub const fn echo_request(v6: bool) -> u8 {
        if v6 {
            V6_ECHO_REQUEST
        } else {
            ECHO_REQUEST
        }
    }
}

/// TCP header flags.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// `Direction` as the byte maps and events carry.
pub const DIR_INGRESS: u8 = Direction::Ingress as u8;
/// See `DIR_INGRESS`.
pub const DIR_EGRESS: u8 = Direction::Egress as u8;
/// `Verdict` as the byte maps and events carry.
pub const VERDICT_ALLOW: u8 = Verdict::Allow as u8;
/// See `VERDICT_ALLOW`.
pub const VERDICT_DENY: u8 = Verdict::Deny as u8;
/// See `VERDICT_ALLOW`.
pub const VERDICT_AUDIT: u8 = Verdict::Audit as u8;
/// `Reason` as the byte maps and events carry.
pub const REASON_POLICY: u8 = Reason::Policy as u8;
/// See `REASON_POLICY`.
pub const REASON_NOT_ISOLATED: u8 = Reason::NotIsolated as u8;
/// See `REASON_POLICY`.
pub const REASON_ESTABLISHED: u8 = Reason::Established as u8;
/// See `REASON_POLICY`.
pub const REASON_HOST: u8 = Reason::Host as u8;
/// See `REASON_POLICY`.
pub const REASON_NON_IP: u8 = Reason::NonIp as u8;
/// See `REASON_POLICY`.
pub const REASON_DEFAULT_DENY: u8 = Reason::DefaultDeny as u8;
/// See `REASON_POLICY`.
pub const REASON_RATE_LIMITED: u8 = Reason::RateLimited as u8;
/// See `REASON_POLICY`.
pub const REASON_SPOOFED: u8 = Reason::Spoofed as u8;
/// See `REASON_POLICY`.
pub const REASON_MALFORMED: u8 = Reason::Malformed as u8;
/// See `REASON_POLICY`.
pub const REASON_CONTROL: u8 = Reason::Control as u8;
/// See `REASON_POLICY`.
pub const REASON_NO_POLICY: u8 = Reason::NoPolicy as u8;
/// See `REASON_POLICY`.
pub const REASON_FRAGMENT: u8 = Reason::Fragment as u8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_codes_are_refused() {
        for r in Reason::ALL {
            assert_eq!(Reason::try_from(*r as u8), Ok(*r));
            assert_eq!(Reason::from_name(r.as_str()), Some(*r));
        }
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_u8(*p as u8), Some(*p));
        }
        // The first code past the last reason is refused.
        let past_last = Reason::ALL.iter().map(|r| *r as u8).max().unwrap_or(0) + 1;
        assert_eq!(
            Reason::try_from(past_last),
            Err(UnknownCode {
                kind: "Reason",
                code: past_last
            })
        );
        assert_eq!(Verdict::from_u8(3), None);
        assert_eq!(Direction::Ingress.other(), Direction::Egress);
    }

    #[test]
    fn drop_and_event_labels() {
        assert_eq!(Reason::DefaultDeny.drop_label(), "policy_denied");
        assert_eq!(Reason::Policy.drop_label(), "policy_denied");
        assert_eq!(Reason::Fragment.drop_label(), "other");
        assert_eq!(Reason::Policy.event_name(Verdict::Deny), "policy_denied");
        assert_eq!(Reason::Policy.event_name(Verdict::Allow), "policy");
        assert_eq!(
            Reason::DefaultDeny.event_name(Verdict::Deny),
            "default_deny"
        );
        for r in Reason::ALL {
            let l = r.drop_label();
            assert!(l == "other" || DROP_LABELS.contains(&l));
        }
    }
}
