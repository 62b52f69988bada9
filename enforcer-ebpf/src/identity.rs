//! Identities of addresses (exact workload and node addresses first, then the CIDR classes of
//! the active slot) and the anti-spoofing checks built on them.

use aya_ebpf::maps::lpm_trie::Key;
use enforcer_common::{
    cidr_key_data, identity, Addr, Config, EndpointKey, IdentityKey, IdentityValue,
    CIDR_KEY_FULL_BITS, CONFIG_ACTIVE, IDF_LOCAL,
};

use crate::{
    maps::{config, CIDR_IDENTITIES, ENDPOINTS, IDENTITIES},
    parse::Packet,
};

/// The identity of an address in the active slot: exact match first, then the CIDR classes.
#[inline(always)]
pub fn identity_of(slot: u32, addr: &Addr) -> IdentityValue {
    let key = IdentityKey { slot, addr: *addr };
    // SAFETY: `get` returns a reference into the map value; the value is copied out at once,
    // before any map update of ours could change it (the agent may rewrite it concurrently, but
    // only in the inactive slot, which this lookup does not read).
    if let Some(v) = unsafe { IDENTITIES.get(&key) } {
        return *v;
    }
    match CIDR_IDENTITIES.get(Key::new(
        CIDR_KEY_FULL_BITS,
        cidr_key_data(slot as u8, addr),
    )) {
        Some(v) => *v,
        None => IdentityValue {
            id: identity::WORLD,
            flags: 0,
        },
    }
}

/// What anti-spoofing at a pod's interface says about a packet's source address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `ENDPOINTS` holds (interface, source address): the pod may send from it.
    Proven,
    /// No check applies: no policy installed yet, or an interface the agent does not manage.
    Unchecked,
    /// A managed pod interface, and an address that is not its pod's.
    Spoofed,
}

/// Anti-spoofing at a pod's interface: once a policy is installed, a pod interface the agent
/// manages (it has a marker entry with the zero address) may only send from its pod's addresses.
#[inline(always)]
pub fn source_from_pod(p: &Packet, ifindex: u32, cfg: &Config) -> Source {
    if cfg.flags & CONFIG_ACTIVE == 0 {
        return Source::Unchecked;
    }
    let mut key = EndpointKey {
        ifindex,
        addr: p.src,
    };
    if ENDPOINTS.get_ptr(&key).is_some() {
        return Source::Proven;
    }
    key.addr = [0; 16];
    if ENDPOINTS.get_ptr(&key).is_some() {
        Source::Spoofed
    } else {
        Source::Unchecked
    }
}

/// Whether a packet from a pod's interface is spoofed (see `source_from_pod`).
#[inline(always)]
pub fn spoofed_from_pod(p: &Packet, ifindex: u32) -> bool {
    source_from_pod(p, ifindex, &config()) == Source::Spoofed
}

/// Anti-spoofing at the uplink: a packet from another node cannot carry a local pod's source.
#[inline(always)]
pub fn spoofed_from_uplink(p: &Packet) -> bool {
    let cfg = config();
    cfg.flags & CONFIG_ACTIVE != 0 && identity_of(cfg.slot, &p.src).flags & IDF_LOCAL != 0
}
