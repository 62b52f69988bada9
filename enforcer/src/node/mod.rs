//! What the agent reads from the node's network namespace over rtnetlink (the namespace of the
//! calling thread): interfaces, addresses, host routes, and change events of all three.

pub mod bypass;
mod glob;
mod netlink;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use netlink_packet_route::{
    address::AddressAttribute,
    link::LinkAttribute,
    route::{RouteAddress, RouteAttribute},
};

pub use self::glob::{BadGlob, InterfaceGlobs};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("rtnetlink {what}: {message}")]
    Netlink { what: String, message: String },
}

/// Interfaces of the current network namespace: name → ifindex (empty if the dump fails).
pub fn interfaces() -> BTreeMap<String, u32> {
    let links = netlink::links().unwrap_or_else(|e| {
        tracing::warn!("{e}");
        Vec::new()
    });
    links
        .into_iter()
        .filter_map(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some((name, l.header.index)),
                _ => None,
            })
        })
        .collect()
}

/// Every address configured in the current network namespace (rule 1: identity `host`): the
/// local address of each (`IFA_LOCAL`, or `IFA_ADDRESS` where there is none, as IPv6 has).
pub fn host_addresses() -> Result<BTreeSet<IpAddr>, NodeError> {
    Ok(netlink::addresses()?
        .into_iter()
        .filter_map(|a| {
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            local.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })
        })
        .collect())
}

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

/// Host routes (`/32`, `/128`) of the main table without a gateway: address → device. This is
/// how a CNI wires pods (Calico-style), and so how the agent finds which pod sits behind which
/// interface.
pub fn host_routes() -> Result<BTreeMap<IpAddr, String>, NodeError> {
    let names: BTreeMap<u32, String> = interfaces().into_iter().map(|(n, i)| (i, n)).collect();
    let mut out = BTreeMap::new();
    for r in netlink::routes()? {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        let (mut dst, mut oif, mut gateway) = (None, None, false);
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = true,
                _ => {}
            }
        }
        let (Some(dst), Some(dev)) = (dst, oif.and_then(|i| names.get(&i))) else {
            continue;
        };
        let host_len = if dst.is_ipv4() { 32 } else { 128 };
        if table == RT_TABLE_MAIN && !gateway && r.header.destination_prefix_length == host_len {
            out.insert(dst, dev.clone());
        }
    }
    Ok(out)
}

/// Changes arriving within this time of the first one are handled together.
const COALESCE: Duration = Duration::from_millis(50);

/// Call `on_change` (on a thread of its own) after links, addresses or routes of the current
/// network namespace change; it runs again if more changes arrived meanwhile. A lost event
/// (the socket's buffer overflowed) counts as a change.
pub fn watch_changes(
    mut on_change: impl FnMut() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let socket = netlink::subscribe()?;
    std::thread::Builder::new()
        .name("enforcer-netlink".into())
        .spawn(move || loop {
            if let Err(e) = socket.recv_from_full() {
                if e.raw_os_error() != Some(libc::ENOBUFS) {
                    tracing::warn!("rtnetlink events: {e}; no longer watching");
                    return;
                }
            }
            std::thread::sleep(COALESCE);
            // Drain what else arrived, then react once.
            let _ = socket.set_non_blocking(true);
            while socket.recv_from_full().is_ok() {}
            let _ = socket.set_non_blocking(false);
            on_change();
        })
}

#[cfg(test)]
mod tests {
    use super::{host_addresses, host_routes, interfaces};

    /// The dumps parse on the machine running the tests: loopback is there with its address.
    #[test]
    fn netlink_dumps_see_loopback() {
        assert_eq!(interfaces().get("lo"), Some(&1));
        let addrs = host_addresses().expect("address dump");
        assert!(
            addrs.contains(&"127.0.0.1".parse().expect("ip")),
            "{addrs:?}"
        );
        // Loopback's addresses are local-table routes, never pod host routes.
        let routes = host_routes().expect("route dump");
        assert!(!routes.values().any(|dev| dev == "lo"), "{routes:?}");
    }
}
