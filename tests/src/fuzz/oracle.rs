//! The fuzzer's judge: for every frame a program passed, is the pass one the installed policy
//! allows? Decisions come from the policy simulator (`enforcer::policy::simulate`, itself checked
//! against `explain`); the state the datapath is documented to keep (connection tracking, first
//! fragments) is modelled here from the frames the programs passed, so a reply passes only after
//! its request did, and a later fragment only after its first fragment.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use enforcer::policy::{simulate::Simulator, Direction, Flow, Verdict};
use enforcer_common::IDF_LOCAL;

use super::decode::{Decoded, Facts, Fragment, Tuple, ICMP, ICMPV6, TCP};

/// One end of a flow: address and port.
type End = (IpAddr, u16);

/// A datagram as one hook saw it: source, destination, identification, protocol, direction.
type FragKey = (IpAddr, IpAddr, u32, u8, u8);
/// What its first fragment carried: ports, ICMP type, TCP flags.
type FragFacts = (u16, u16, u8, u8);

/// A tracked flow: who opened it and which policy sides allowed it.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    origin: End,
    /// Indexed by `Direction` (ingress 0, egress 1).
    sides: [bool; 2],
}

/// Connection and fragment state as the datapath keeps it, built from passed frames.
pub struct Oracle<'a> {
    sim: Simulator<'a>,
    endpoints: HashSet<IpAddr>,
    flows: HashMap<(End, End, u8), Tracked>,
    fragments: HashMap<FragKey, FragFacts>,
}

/// Why a pass was wrong.
#[derive(Debug, Clone)]
pub struct Wrong(pub String);

fn side(d: Direction) -> usize {
    usize::from(d.code() & 1)
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn key(t: &Tuple) -> ((End, End, u8), End) {
    let (a, b) = ((t.src, t.sport), (t.dst, t.dport));
    let k = if a <= b {
        (a, b, t.protocol)
    } else {
        (b, a, t.protocol)
    };
    (k, a)
}

/// The policy "port": the ICMP type, else the destination port.
fn policy_port(f: &Facts) -> u16 {
    if f.tuple.protocol == ICMP || f.tuple.protocol == ICMPV6 {
        u16::from(f.icmp_type)
    } else {
        f.tuple.dport
    }
}

/// Whether a packet may open a flow (a TCP SYN without ACK, any non-reply).
fn opens_flow(f: &Facts) -> bool {
    match f.tuple.protocol {
        TCP => f.tcp_flags & 0x12 == 0x02,
        ICMP => f.icmp_type != 0,
        ICMPV6 => f.icmp_type != 129,
        _ => true,
    }
}

fn is_link_control(f: &Facts) -> bool {
    f.tuple.protocol == ICMPV6 && matches!(f.icmp_type, 130..=137 | 143)
}

impl<'a> Oracle<'a> {
    pub fn new(sim: Simulator<'a>, endpoints: HashSet<IpAddr>) -> Self {
        Oracle {
            sim,
            endpoints,
            flows: HashMap::new(),
            fragments: HashMap::new(),
        }
    }

    fn allows(&self, d: Direction, f: &Facts) -> bool {
        let flow = Flow {
            src: f.tuple.src,
            dst: f.tuple.dst,
            protocol: f.tuple.protocol,
            port: policy_port(f),
        };
        self.sim.side(d, &flow) != Verdict::Deny
    }

    /// `xdp_pod`: malformed and spoofed frames must not pass.
    pub fn xdp_pod(&self, frame: &Decoded, passed: bool) -> Result<(), Wrong> {
        match frame {
            Decoded::Ip(f)
                if passed && !is_link_control(f) && !self.endpoints.contains(&f.tuple.src) =>
            {
                Err(Wrong(format!(
                    "xdp_pod passed a spoofed source {}",
                    f.tuple.src
                )))
            }
            Decoded::Malformed if passed => Err(Wrong("xdp_pod passed a malformed frame".into())),
            _ => Ok(()),
        }
    }

    /// `xdp_uplink`: a frame from outside must not carry a local workload's source.
    pub fn xdp_uplink(&self, frame: &Decoded, passed: bool) -> Result<(), Wrong> {
        match frame {
            Decoded::Ip(f) if passed && self.sim.identity(f.tuple.src).flags & IDF_LOCAL != 0 => {
                Err(Wrong(format!(
                    "xdp_uplink passed a local source {}",
                    f.tuple.src
                )))
            }
            _ => Ok(()),
        }
    }

    /// A tc hook judging `d` (`from_pod`: egress, `to_pod`: ingress) passed or dropped `frame`;
    /// check a pass, then update the modelled state.
    pub fn tc(&mut self, d: Direction, frame: &Decoded, passed: bool) -> Result<(), Wrong> {
        let f = match frame {
            Decoded::Malformed if passed => {
                return Err(Wrong("tc passed a malformed frame".into()))
            }
            Decoded::NonIp | Decoded::Malformed => return Ok(()),
            Decoded::Ip(f) => *f,
        };
        if is_link_control(&f) {
            return Ok(());
        }
        if d == Direction::Egress && !self.endpoints.contains(&f.tuple.src) {
            return if passed {
                Err(Wrong(format!(
                    "from_pod passed a spoofed source {}",
                    f.tuple.src
                )))
            } else {
                Ok(())
            };
        }
        let fkey = (
            f.tuple.src,
            f.tuple.dst,
            f.frag_id,
            f.tuple.protocol,
            d.code(),
        );
        let mut f = f;
        if f.fragment == Fragment::Later {
            let Some(&(sport, dport, icmp_type, flags)) = self.fragments.get(&fkey) else {
                return if passed {
                    Err(Wrong(
                        "tc passed a later fragment whose first fragment did not pass".into(),
                    ))
                } else {
                    Ok(())
                };
            };
            (f.tuple.sport, f.tuple.dport, f.icmp_type, f.tcp_flags) =
                (sport, dport, icmp_type, flags);
        }
        if passed && !self.legit(d, &f) {
            return Err(Wrong(format!(
                "{d:?} passed {f:?}, which the policy denies"
            )));
        }
        if f.fragment == Fragment::First {
            if passed {
                let v = (f.tuple.sport, f.tuple.dport, f.icmp_type, f.tcp_flags);
                self.fragments.insert(fkey, v);
            } else {
                self.fragments.remove(&fkey);
            }
        }
        if passed {
            self.track(d, &f);
        }
        Ok(())
    }

    /// Whether a pass of `f` at `d` is allowed: a related ICMP error, a packet of a flow tracked
    /// on the side it needs, or a new flow the policy allows.
    fn legit(&self, d: Direction, f: &Facts) -> bool {
        if let Some(inner) = f.error_of {
            if f.tuple.dst == inner.src && self.flows.contains_key(&key(&inner).0) {
                return true;
            }
        }
        let (k, src) = key(&f.tuple);
        if let Some(t) = self.flows.get(&k) {
            let needed = if t.origin == src { d } else { other(d) };
            if t.sides[side(needed)] {
                return true;
            }
        }
        self.allows(d, f)
    }

    /// State the datapath creates for a passed packet: a new flow (or a side of one) when the
    /// policy allows it and the packet may open a flow.
    fn track(&mut self, d: Direction, f: &Facts) {
        if !opens_flow(f) || !self.allows(d, f) {
            return;
        }
        if let Some(inner) = f.error_of {
            if f.tuple.dst == inner.src && self.flows.contains_key(&key(&inner).0) {
                return; // passed as related, creates nothing
            }
        }
        let (k, src) = key(&f.tuple);
        let t = self.flows.entry(k).or_insert(Tracked {
            origin: src,
            sides: [false; 2],
        });
        if t.origin == src {
            t.sides[side(d)] = true;
        }
    }
}
