//! Test topologies: a fabric bridge joining node namespaces and externals, pods attached to nodes by
//! veth pairs with Calico-style addressing.
//!
//! ```text
//!            fabric netns: bridge br0 (10.255.0.0/24, fd00:255::/64)
//!        n1 |            n2 |                x1 |
//!   up0 10.255.0.1    up0 10.255.0.2       eth0 10.255.0.101 + external addresses
//!   node netns n1     node netns n2        external netns
//!   ep<id> -- eth0    ep<id> -- eth0
//!   pod netns         pod netns  (pod addresses /32 and /128, gateway 169.254.1.1 / fe80::1)
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::ip;
use crate::netns::{self, HARNESS_PREFIX};

/// Name of the node's uplink interface (inside the node namespace).
pub const UPLINK_IFNAME: &str = "up0";
/// Name of the pod's interface (inside the pod namespace).
pub const POD_IFNAME: &str = "eth0";
/// Name of an external's interface (inside the external namespace).
pub const EXTERNAL_IFNAME: &str = "eth0";
/// Prefix of the host-side names of pod veths (the agent's interface glob is `ep*`).
pub const HOST_IF_PREFIX: &str = "ep";
/// Glob matching every host-side pod veth, for the agent's `--interfaces`.
pub const HOST_IF_GLOB: &str = "ep*";
/// Bridge in the fabric namespace.
pub const BRIDGE_IFNAME: &str = "br0";
/// IPv4 gateway of every pod (carried by every host-side pod veth).
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// IPv6 gateway of every pod (carried by every host-side pod veth).
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Environment variable: when set to `1`, topologies are not deleted on drop (for debugging).
pub const KEEP_ENV: &str = "ENFORCER_KEEP_NETNS";

const MAX_NODES: u8 = 99;
const MAX_EXTERNALS: u8 = 150;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Family {
    /// IPv4.
    #[default]
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// Family of an address.
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

impl FromStr for Family {
    type Err = anyhow::Error;

    /// Parses `ipv4`/`ipv6` (also `v4`, `v6`, `4`, `6`, any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ipv4" | "v4" | "4" | "inet" => Ok(Family::Ipv4),
            "ipv6" | "v6" | "6" | "inet6" => Ok(Family::Ipv6),
            _ => bail!("unknown address family {s:?} (expected ipv4 or ipv6)"),
        }
    }
}

/// A node: a namespace joined to the fabric by its uplink, routing for its pods.
#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    netns: String,
    index: u8,
}

impl Node {
    /// Name given to the node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its network namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Name of its uplink interface (in its namespace).
    pub fn uplink_ifname(&self) -> &'static str {
        UPLINK_IFNAME
    }

    /// Its uplink IPv4 address, 10.255.0.N (N = 1-based node index).
    pub fn uplink_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, 0, self.index)
    }

    /// Its uplink IPv6 address, `fd00:255::N`.
    pub fn uplink_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x255, 0, 0, 0, 0, 0, u16::from(self.index))
    }

    /// The node's "host" address of `family`: its uplink address, which is also the source of
    /// traffic from the node namespace to its pods (health checks).
    pub fn host_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => self.uplink_v4().into(),
            Family::Ipv6 => self.uplink_v6().into(),
        }
    }

    /// Its uplink addresses (IPv4 first).
    pub fn addresses(&self) -> Vec<IpAddr> {
        vec![self.uplink_v4().into(), self.uplink_v6().into()]
    }
}

/// A pod: a namespace with `eth0`, joined to its node by a veth pair.
#[derive(Debug, Clone)]
pub struct Pod {
    name: String,
    node: String,
    netns: String,
    host_ifname: String,
    addresses: Vec<IpAddr>,
}

impl Pod {
    /// Name given to the pod.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Name of the node it runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its network namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Name of the host side of its veth pair, in the node namespace (`ep...`).
    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }

    /// Its addresses, as given.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// Its first address of `family`.
    pub fn addr(&self, family: Family) -> Option<IpAddr> {
        first_of(&self.addresses, family)
    }
}

/// An external host: a namespace on the fabric holding addresses outside the cluster.
#[derive(Debug, Clone)]
pub struct External {
    name: String,
    netns: String,
    index: u8,
    addresses: Vec<IpAddr>,
}

impl External {
    /// Name given to the external.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its network namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its configured addresses, as given.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// Its first configured address of `family`.
    pub fn addr(&self, family: Family) -> Option<IpAddr> {
        first_of(&self.addresses, family)
    }

    /// Its fabric IPv4 address, 10.255.0.(100+k).
    pub fn fabric_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, 0, 100 + self.index)
    }

    /// Its fabric IPv6 address, `fd00:255::(100+k)` (hex digits of the decimal number).
    pub fn fabric_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x255, 0, 0, 0, 0, 0, 100 + u16::from(self.index))
    }

    fn fabric_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => self.fabric_v4().into(),
            Family::Ipv6 => self.fabric_v6().into(),
        }
    }
}

fn first_of(addrs: &[IpAddr], family: Family) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| Family::of(*a) == family)
}

/// Builder for a [`Topology`]; see [`Topology::builder`].
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct TopologyBuilder {
    prefix: Option<String>,
    nodes: Vec<String>,
    pods: Vec<(String, String, Vec<IpAddr>)>,
    externals: Vec<(String, Vec<IpAddr>)>,
}

impl TopologyBuilder {
    /// Uses `prefix` for namespace names instead of a generated unique one (it should start with
    /// [`HARNESS_PREFIX`] so that cleanup finds it).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Adds a node. Without any node, the topology has one node named `n1`.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.nodes.push(name.into());
        self
    }

    /// Adds several nodes.
    pub fn nodes<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds a pod (see [`Topology::add_pod`]).
    pub fn pod(
        mut self,
        name: impl Into<String>,
        node: impl Into<String>,
        addresses: &[IpAddr],
    ) -> Self {
        self.pods
            .push((name.into(), node.into(), addresses.to_vec()));
        self
    }

    /// Adds an external (see [`Topology::add_external`]).
    pub fn external(mut self, name: impl Into<String>, addresses: &[IpAddr]) -> Self {
        self.externals.push((name.into(), addresses.to_vec()));
        self
    }

    /// Creates the namespaces and links. On error, whatever was created is deleted.
    pub fn build(self) -> Result<Topology> {
        let mut topo = Topology::empty(self.prefix)?;
        let nodes = if self.nodes.is_empty() {
            vec!["n1".to_owned()]
        } else {
            self.nodes
        };
        for n in &nodes {
            topo.add_node(n)?;
        }
        for (name, node, addrs) in &self.pods {
            topo.add_pod(name, node, addrs)?;
        }
        for (name, addrs) in &self.externals {
            topo.add_external(name, addrs)?;
        }
        Ok(topo)
    }
}

/// A set of network namespaces forming a small cluster: a fabric bridge, nodes, pods, externals.
///
/// Every namespace is named `<prefix>-<kind>-<name>` with a prefix unique to the topology
/// (`enf-<pid hex>-<random hex>`), so tests can build topologies in parallel. Dropping the topology
/// kills the processes left in its namespaces and deletes them (unless `ENFORCER_KEEP_NETNS=1`).
///
/// Routing: a node has a host route to each of its pods' addresses through the pod's veth (source:
/// the node's uplink address) and a route to every other pod address via the owning node's uplink
/// address; externals route pod addresses the same way (source: their own address of the family), and
/// nodes route external addresses via the external's fabric address.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    short_id: u16,
    fabric: String,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    externals: Vec<External>,
    namespaces: Vec<String>,
    next_pod: u32,
    keep: bool,
}

/// Settings every harness namespace gets.
const BASE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
    ("net/ipv6/bindv6only", "0"),
];

/// Extra settings of node namespaces.
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv6/conf/default/forwarding", "1"),
];

fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = (nanos ^ n.wrapping_mul(0x9e37_79b9)).wrapping_add(n) & 0xff_ffff;
    format!("{HARNESS_PREFIX}{:x}-{tag:06x}", std::process::id())
}

/// Keeps namespace names short and filesystem-safe.
fn sanitize(name: &str) -> String {
    name.chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn plen(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn is_fabric(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[..3] == [10, 255, 0],
        IpAddr::V6(a) => a.segments()[..4] == [0xfd00, 0x255, 0, 0],
    }
}

/// `ip -n NS [-6] route add ADDR/LEN [via VIA] [dev DEV] [src SRC]`.
fn route_add(
    ns: &str,
    dst: IpAddr,
    via: Option<IpAddr>,
    dev: Option<&str>,
    src: Option<IpAddr>,
) -> Result<()> {
    let mut args = Vec::new();
    if dst.is_ipv6() {
        args.push("-6".to_owned());
    }
    args.extend([
        "route".to_owned(),
        "add".to_owned(),
        format!("{dst}/{}", plen(dst)),
    ]);
    if let Some(via) = via {
        args.extend(["via".to_owned(), via.to_string()]);
    }
    if let Some(dev) = dev {
        args.extend(["dev".to_owned(), dev.to_owned()]);
    }
    if let Some(src) = src {
        args.extend(["src".to_owned(), src.to_string()]);
    }
    ip(Some(ns), &args).map(drop)
}

/// `ip -n NS addr add ADDR/LEN dev DEV` (`nodad` for IPv6).
fn addr_add(ns: &str, addr: IpAddr, plen: u8, dev: &str) -> Result<()> {
    let cidr = format!("{addr}/{plen}");
    if addr.is_ipv6() {
        ip(Some(ns), ["-6", "addr", "add", &cidr, "dev", dev, "nodad"]).map(drop)
    } else {
        ip(Some(ns), ["addr", "add", &cidr, "dev", dev]).map(drop)
    }
}

fn link_up(ns: &str, dev: &str) -> Result<()> {
    ip(Some(ns), ["link", "set", dev, "up"]).map(drop)
}

fn iface_sysctls(ns: &str, dev: &str) -> Result<()> {
    let rp = format!("net/ipv4/conf/{dev}/rp_filter");
    let dad = format!("net/ipv6/conf/{dev}/accept_dad");
    netns::set_sysctls(ns, &[(&rp, "0"), (&dad, "0")])
}

impl Topology {
    /// Starts building a topology.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// A topology with the given nodes (no pods yet).
    pub fn new(nodes: &[&str]) -> Result<Self> {
        Self::builder().nodes(nodes.iter().copied()).build()
    }

    /// The fabric alone: namespace and bridge.
    fn empty(prefix: Option<String>) -> Result<Self> {
        let prefix = prefix.unwrap_or_else(unique_prefix);
        // Host-side veth names only need to be unique inside a node namespace; the hash just makes
        // them differ between topologies, which helps when reading logs.
        let short_id = prefix
            .bytes()
            .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
        let mut topo = Self {
            fabric: format!("{prefix}-fabric"),
            prefix,
            short_id,
            nodes: Vec::new(),
            pods: Vec::new(),
            externals: Vec::new(),
            namespaces: Vec::new(),
            next_pod: 0,
            keep: std::env::var(KEEP_ENV).is_ok_and(|v| v == "1"),
        };
        let fabric = topo.fabric.clone();
        topo.create_ns(&fabric, &[])?;
        ip(
            Some(&fabric),
            [
                "link",
                "add",
                BRIDGE_IFNAME,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        link_up(&fabric, BRIDGE_IFNAME)?;
        Ok(topo)
    }

    /// Creates namespace `ns` (registered for deletion first), sets the base sysctls plus `extra`, and
    /// brings up `lo`.
    fn create_ns(&mut self, ns: &str, extra: &[(&str, &str)]) -> Result<()> {
        ip(None, ["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        let mut settings = BASE_SYSCTLS.to_vec();
        settings.extend_from_slice(extra);
        netns::set_sysctls(ns, &settings)?;
        link_up(ns, "lo")
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            bail!("empty name");
        }
        if self.pods.iter().any(|p| p.name == name) || self.externals.iter().any(|e| e.name == name)
        {
            bail!("a pod or external named {name:?} already exists");
        }
        Ok(())
    }

    fn check_new_addresses(&self, addresses: &[IpAddr]) -> Result<()> {
        let mut seen = HashSet::new();
        let existing: HashSet<IpAddr> = self
            .pods
            .iter()
            .flat_map(|p| p.addresses.iter())
            .chain(self.externals.iter().flat_map(|e| e.addresses.iter()))
            .copied()
            .collect();
        for &a in addresses {
            if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
                bail!("address {a} cannot be used");
            }
            if let IpAddr::V6(v6) = a {
                if v6.is_unicast_link_local() {
                    bail!("link-local address {v6} cannot be used");
                }
            }
            if is_fabric(a) || a == IpAddr::V4(POD_GATEWAY_V4) {
                bail!("address {a} is reserved by the harness (fabric 10.255.0.0/24, fd00:255::/64, 169.254.1.1)");
            }
            if existing.contains(&a) || !seen.insert(a) {
                bail!("address {a} is used twice");
            }
        }
        Ok(())
    }

    /// Adds a node: a namespace with forwarding on, joined to the fabric bridge by its uplink
    /// ([`UPLINK_IFNAME`]) with 10.255.0.N/24 and `fd00:255::N/64`, and routes to the existing pods and
    /// externals.
    pub fn add_node(&mut self, name: &str) -> Result<&Node> {
        if name.is_empty() || self.nodes.iter().any(|n| n.name == name) {
            bail!("node name {name:?} is empty or already used");
        }
        let index = u8::try_from(self.nodes.len() + 1)
            .ok()
            .filter(|&i| i <= MAX_NODES)
            .ok_or_else(|| anyhow!("at most {MAX_NODES} nodes"))?;
        let node = Node {
            name: name.to_owned(),
            netns: format!("{}-node-{}", self.prefix, sanitize(name)),
            index,
        };
        let ns = node.netns.clone();
        self.create_ns(&ns, NODE_SYSCTLS)
            .with_context(|| format!("node {name}"))?;
        let fabric_if = format!("n{index}");
        ip(
            Some(&self.fabric),
            [
                "link",
                "add",
                &fabric_if,
                "type",
                "veth",
                "peer",
                "name",
                UPLINK_IFNAME,
                "netns",
                &ns,
            ],
        )?;
        ip(
            Some(&self.fabric),
            ["link", "set", &fabric_if, "master", BRIDGE_IFNAME, "up"],
        )?;
        iface_sysctls(&ns, UPLINK_IFNAME)?;
        addr_add(&ns, node.uplink_v4().into(), 24, UPLINK_IFNAME)?;
        addr_add(&ns, node.uplink_v6().into(), 64, UPLINK_IFNAME)?;
        link_up(&ns, UPLINK_IFNAME)?;
        for pod in &self.pods {
            let owner = self.node_ref(&pod.node)?;
            for &a in &pod.addresses {
                route_add(&ns, a, Some(owner.host_addr(Family::of(a))), None, None)?;
            }
        }
        for ext in &self.externals {
            for &a in &ext.addresses {
                route_add(&ns, a, Some(ext.fabric_addr(Family::of(a))), None, None)?;
            }
        }
        self.nodes.push(node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Adds a pod on `node` with `addresses` (IPv4 and/or IPv6), Calico-style:
    ///
    /// - pod namespace: `eth0` with each address as /32 or /128, routes `169.254.1.1 dev eth0 scope
    ///   link`, `default via 169.254.1.1 dev eth0`, `default via fe80::1 dev eth0` (per family present);
    /// - node namespace: host side `ep<id>` with `169.254.1.1/32` and `fe80::1/64`, and a route
    ///   `<addr> dev ep<id> src <node uplink address>` per pod address;
    /// - other nodes and externals: `<addr> via <node uplink address>`.
    pub fn add_pod(&mut self, name: &str, node: &str, addresses: &[IpAddr]) -> Result<&Pod> {
        self.check_new_name(name)?;
        self.check_new_addresses(addresses)?;
        let owner = self.node_ref(node)?.clone();
        let host_ifname = format!("{HOST_IF_PREFIX}{:04x}{:x}", self.short_id, self.next_pod);
        self.next_pod += 1;
        let pod = Pod {
            name: name.to_owned(),
            node: node.to_owned(),
            netns: format!("{}-pod-{}", self.prefix, sanitize(name)),
            host_ifname,
            addresses: addresses.to_vec(),
        };
        let (pns, nns, hif) = (
            pod.netns.clone(),
            owner.netns.clone(),
            pod.host_ifname.clone(),
        );
        self.create_ns(&pns, &[])
            .with_context(|| format!("pod {name}"))?;
        ip(
            Some(&nns),
            [
                "link", "add", &hif, "type", "veth", "peer", "name", POD_IFNAME, "netns", &pns,
            ],
        )?;
        // Node side.
        iface_sysctls(&nns, &hif)?;
        addr_add(&nns, POD_GATEWAY_V4.into(), 32, &hif)?;
        addr_add(&nns, POD_GATEWAY_V6.into(), 64, &hif)?;
        link_up(&nns, &hif)?;
        // Pod side.
        iface_sysctls(&pns, POD_IFNAME)?;
        link_up(&pns, POD_IFNAME)?;
        for &a in addresses {
            addr_add(&pns, a, plen(a), POD_IFNAME)?;
        }
        if pod.addr(Family::Ipv4).is_some() {
            ip(
                Some(&pns),
                [
                    "route",
                    "add",
                    &POD_GATEWAY_V4.to_string(),
                    "dev",
                    POD_IFNAME,
                    "scope",
                    "link",
                ],
            )?;
            ip(
                Some(&pns),
                [
                    "route",
                    "add",
                    "default",
                    "via",
                    &POD_GATEWAY_V4.to_string(),
                    "dev",
                    POD_IFNAME,
                ],
            )?;
        }
        if pod.addr(Family::Ipv6).is_some() {
            ip(
                Some(&pns),
                [
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &POD_GATEWAY_V6.to_string(),
                    "dev",
                    POD_IFNAME,
                ],
            )?;
        }
        // Routes towards the pod.
        for &a in addresses {
            let fam = Family::of(a);
            route_add(&nns, a, None, Some(&hif), Some(owner.host_addr(fam)))?;
            for other in self.nodes.iter().filter(|n| n.name != owner.name) {
                route_add(&other.netns, a, Some(owner.host_addr(fam)), None, None)?;
            }
            for ext in &self.externals {
                route_add(
                    &ext.netns,
                    a,
                    Some(owner.host_addr(fam)),
                    None,
                    ext.addr(fam),
                )?;
            }
        }
        self.pods.push(pod);
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Removes a pod as a runtime does when it is deleted: its namespace goes (and with it both
    /// ends of its veth and the node's routes through it), and the routes other nodes and
    /// externals had to it. Its name and addresses can be used again ([`Topology::add_pod`]).
    pub fn remove_pod(&mut self, name: &str) -> Result<()> {
        let i = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| anyhow!("no pod {name:?}"))?;
        let pod = self.pods.remove(i);
        // As the main CNI plugin's DEL does: the host side first (its routes go with it at
        // once; a namespace's own teardown is asynchronous in the kernel).
        let node = self.node_ref(&pod.node)?.netns.clone();
        ip(Some(&node), ["link", "del", &pod.host_ifname])?;
        netns::delete_netns(&pod.netns).with_context(|| format!("pod {name}"))?;
        self.namespaces.retain(|ns| *ns != pod.netns);
        for &a in &pod.addresses {
            let dst = format!("{a}/{}", plen(a));
            for other in self.nodes.iter().filter(|n| n.name != pod.node) {
                ip(Some(&other.netns), ["route", "del", &dst])?;
            }
            for ext in &self.externals {
                ip(Some(&ext.netns), ["route", "del", &dst])?;
            }
        }
        Ok(())
    }

    /// Adds an external host: a namespace joined to the fabric bridge with fabric addresses
    /// 10.255.0.(100+k)/24 and `fd00:255::(100+k)/64` plus its own `addresses` (/32, /128) on
    /// [`EXTERNAL_IFNAME`]; routes to every pod address via the pod's node (source: the external's own
    /// address of that family), and routes on every node to its addresses.
    pub fn add_external(&mut self, name: &str, addresses: &[IpAddr]) -> Result<&External> {
        self.check_new_name(name)?;
        self.check_new_addresses(addresses)?;
        let index = u8::try_from(self.externals.len() + 1)
            .ok()
            .filter(|&i| i <= MAX_EXTERNALS)
            .ok_or_else(|| anyhow!("at most {MAX_EXTERNALS} externals"))?;
        let ext = External {
            name: name.to_owned(),
            netns: format!("{}-ext-{}", self.prefix, sanitize(name)),
            index,
            addresses: addresses.to_vec(),
        };
        let ns = ext.netns.clone();
        self.create_ns(&ns, &[])
            .with_context(|| format!("external {name}"))?;
        let fabric_if = format!("x{index}");
        ip(
            Some(&self.fabric),
            [
                "link",
                "add",
                &fabric_if,
                "type",
                "veth",
                "peer",
                "name",
                EXTERNAL_IFNAME,
                "netns",
                &ns,
            ],
        )?;
        ip(
            Some(&self.fabric),
            ["link", "set", &fabric_if, "master", BRIDGE_IFNAME, "up"],
        )?;
        iface_sysctls(&ns, EXTERNAL_IFNAME)?;
        addr_add(&ns, ext.fabric_v4().into(), 24, EXTERNAL_IFNAME)?;
        addr_add(&ns, ext.fabric_v6().into(), 64, EXTERNAL_IFNAME)?;
        for &a in addresses {
            addr_add(&ns, a, plen(a), EXTERNAL_IFNAME)?;
        }
        link_up(&ns, EXTERNAL_IFNAME)?;
        for pod in &self.pods {
            let owner = self.node_ref(&pod.node)?;
            for &a in &pod.addresses {
                let fam = Family::of(a);
                route_add(&ns, a, Some(owner.host_addr(fam)), None, ext.addr(fam))?;
            }
        }
        for node in &self.nodes {
            for &a in addresses {
                route_add(
                    &node.netns,
                    a,
                    Some(ext.fabric_addr(Family::of(a))),
                    None,
                    None,
                )?;
            }
        }
        self.externals.push(ext);
        Ok(self.externals.last().expect("just pushed"))
    }

    fn node_ref(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node named {name:?}"))
    }

    /// The unique prefix of this topology's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The fabric namespace (holding the bridge).
    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }

    /// Every namespace of the topology, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// All pods.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// All externals.
    pub fn externals(&self) -> &[External] {
        &self.externals
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.node_ref(name)
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow!("no pod named {name:?}"))
    }

    /// The external named `name`.
    pub fn external(&self, name: &str) -> Result<&External> {
        self.externals
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| anyhow!("no external named {name:?}"))
    }

    /// Namespace of the node named `node`.
    pub fn node_netns(&self, node: &str) -> Result<&str> {
        Ok(self.node(node)?.netns())
    }

    /// Namespace of the pod named `pod`.
    pub fn pod_netns(&self, pod: &str) -> Result<&str> {
        Ok(self.pod(pod)?.netns())
    }

    /// Namespace of the external named `ext`.
    pub fn external_netns(&self, ext: &str) -> Result<&str> {
        Ok(self.external(ext)?.netns())
    }

    /// Host-side interface name of the pod's veth (in its node's namespace).
    pub fn pod_host_ifname(&self, pod: &str) -> Result<&str> {
        Ok(self.pod(pod)?.host_ifname())
    }

    /// The node the pod runs on.
    pub fn pod_node(&self, pod: &str) -> Result<&Node> {
        self.node_ref(self.pod(pod)?.node())
    }

    /// The pod's addresses.
    pub fn pod_addresses(&self, pod: &str) -> Result<&[IpAddr]> {
        Ok(self.pod(pod)?.addresses())
    }

    /// Namespace of the pod or external that holds address `addr`.
    pub fn netns_holding(&self, addr: IpAddr) -> Option<&str> {
        self.pods
            .iter()
            .find(|p| p.addresses().contains(&addr))
            .map(Pod::netns)
            .or_else(|| {
                self.externals
                    .iter()
                    .find(|e| e.addresses().contains(&addr))
                    .map(External::netns)
            })
    }

    /// Namespace of a pod, external or node called `name` (looked up in that order).
    pub fn netns_of(&self, name: &str) -> Result<&str> {
        if let Ok(p) = self.pod(name) {
            return Ok(p.netns());
        }
        if let Ok(e) = self.external(name) {
            return Ok(e.netns());
        }
        self.node_ref(name)
            .map(Node::netns)
            .map_err(|_| anyhow!("no pod, external or node named {name:?}"))
    }

    /// The first address of `family` of a pod or external called `name`, or a node's host address.
    pub fn addr_of(&self, name: &str, family: Family) -> Result<IpAddr> {
        let addr = if let Ok(p) = self.pod(name) {
            p.addr(family)
        } else if let Ok(e) = self.external(name) {
            e.addr(family)
        } else if let Ok(n) = self.node_ref(name) {
            Some(n.host_addr(family))
        } else {
            bail!("no pod, external or node named {name:?}")
        };
        addr.ok_or_else(|| anyhow!("{name} has no {family} address"))
    }

    /// `nsenter --net=/run/netns/<node ns> PROGRAM`: runs a program (the agent) in the node's network
    /// namespace, keeping the caller's mounts (bpffs, /sys). Processes still running in the namespace
    /// when the topology is dropped are killed.
    pub fn node_command(&self, node: &str, program: &str) -> Result<Command> {
        Ok(netns::ns_command(self.node_netns(node)?, program))
    }

    /// `nsenter --net=/run/netns/NS PROGRAM` (see [`netns::ns_command`]).
    pub fn ns_command(ns: &str, program: &str) -> Command {
        netns::ns_command(ns, program)
    }

    /// Deletes every namespace now (also done on drop); errors are collected, not fatal.
    pub fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(ns) = self.namespaces.pop() {
            if let Err(e) = netns::delete_netns(&ns) {
                errors.push(format!("{ns}: {e:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("teardown: {}", errors.join("; "))
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "{KEEP_ENV}=1: keeping namespaces {}",
                self.namespaces.join(" ")
            );
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}
