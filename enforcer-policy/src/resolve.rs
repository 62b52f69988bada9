//! Naming the ends of a flow (`explain --from/--to`): an address, `host`, `NAMESPACE/NAME` or
//! the name of a Workload or Pod.

use std::net::IpAddr;

use super::model::{ObjectKey, DEFAULT_NAMESPACE};
use super::{NodeContext, PolicySet};

/// The name that stands for the node's own addresses.
pub const HOST: &str = "host";

/// Every address `what` names, in order of preference.
pub fn addresses(set: &PolicySet, ctx: &NodeContext, what: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(a) = what.parse::<IpAddr>() {
        return Ok(vec![a]);
    }
    if what == HOST {
        if ctx.host_addresses.is_empty() {
            return Err("the node has no address to stand for `host`".to_string());
        }
        return Ok(ctx.host_addresses.iter().copied().collect());
    }
    let key = match what.split_once('/') {
        Some((ns, name)) => ObjectKey::namespaced(ns, name),
        None => ObjectKey::namespaced(DEFAULT_NAMESPACE, what),
    };
    let of_key = |key: &ObjectKey| {
        set.workloads
            .get(key)
            .map(|w| w.addresses.clone())
            .or_else(|| set.pods.get(key).map(|p| p.addresses.clone()))
    };
    let found = of_key(&key).or_else(|| {
        // A plain name outside the default namespace, if only one namespace has it.
        let mut keys = set
            .workloads
            .keys()
            .chain(set.pods.keys())
            .filter(|k| !what.contains('/') && k.name == what);
        match (keys.next(), keys.next()) {
            (Some(k), None) => of_key(k),
            _ => None,
        }
    });
    match found {
        Some(a) if a.is_empty() => Err(format!("{what:?} has no IP address")),
        Some(a) => Ok(a),
        None => Err(format!(
            "{what:?} is neither an address, `host`, nor a known workload or pod (NAMESPACE/NAME)"
        )),
    }
}

/// The source and destination addresses of a flow from `from` to `to`, of one family (IPv4
/// preferred).
pub fn flow_ends(
    set: &PolicySet,
    ctx: &NodeContext,
    from: &str,
    to: &str,
) -> Result<(IpAddr, IpAddr), String> {
    let src = addresses(set, ctx, from)?;
    let dst = addresses(set, ctx, to)?;
    let pair = |v4: bool| {
        let s = src.iter().find(|a| a.is_ipv4() == v4)?;
        let d = dst.iter().find(|a| a.is_ipv4() == v4)?;
        Some((*s, *d))
    };
    pair(true)
        .or_else(|| pair(false))
        .ok_or_else(|| format!("{from} and {to} have no address of the same family"))
}

/// For offline `explain`: gives each pod named in `names` that has no IP yet (a pod is written
/// without `status`) a placeholder address in `240.0.0.0/4` (reserved, never a pod address), so
/// that its identity can be judged. Returns a note per placeholder.
pub fn placeholder_addresses(set: &mut PolicySet, names: &[&str]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut next: u32 = 0;
    for name in names {
        let key = match name.split_once('/') {
            Some((ns, n)) => ObjectKey::namespaced(ns, n),
            None => ObjectKey::namespaced(DEFAULT_NAMESPACE, name),
        };
        let Some(pod) = set.pods.get_mut(&key) else {
            continue;
        };
        if !pod.addresses.is_empty() || pod.host_network {
            continue;
        }
        next += 1;
        let addr = IpAddr::V4(std::net::Ipv4Addr::from(0xf000_0000 | next));
        pod.addresses.push(addr);
        notes.push(format!(
            "pod {name} has no IP (no status.podIP): judged as if it had {addr}"
        ));
    }
    notes
}
