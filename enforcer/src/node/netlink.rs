//! rtnetlink without a subprocess: dumps of links, addresses and routes (one `NETLINK_ROUTE`
//! socket per dump, synchronous: the owner thread calls them), and a socket subscribed to the
//! link, address and route multicast groups for change events.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::AddressMessage, link::LinkMessage, route::RouteMessage, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NodeError;

/// `RTMGRP_*` multicast groups (linux/rtnetlink.h): links, IPv4 and IPv6 addresses, and IPv4 and
/// IPv6 routes (a CNI wires a pod with a host route, which is how the agent finds its endpoint).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
pub const CHANGE_GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;

fn io_err(what: &str, e: &io::Error) -> NodeError {
    NodeError::Netlink {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Send a dump request and collect every message until `NLMSG_DONE`.
fn dump(what: &str, request: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NodeError> {
    let socket = Socket::new(NETLINK_ROUTE).map_err(|e| io_err(what, &e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| io_err(what, &e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| io_err(what, &e))?;
    let mut out = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(|e| io_err(what, &e))?;
        let mut rest = &datagram[..];
        while !rest.is_empty() {
            let message =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                    NodeError::Netlink {
                        what: what.to_string(),
                        message: e.to_string(),
                    }
                })?;
            let len = (message.header.length as usize).max(1).min(rest.len());
            rest = &rest[len..];
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    return Err(NodeError::Netlink {
                        what: what.to_string(),
                        message: e.to_string(),
                    })
                }
                _ => {}
            }
        }
    }
}

pub fn links() -> Result<Vec<LinkMessage>, NodeError> {
    let all = dump(
        "link dump",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )?;
    Ok(all
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .collect())
}

pub fn addresses() -> Result<Vec<AddressMessage>, NodeError> {
    let all = dump(
        "address dump",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )?;
    Ok(all
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        })
        .collect())
}

pub fn routes() -> Result<Vec<RouteMessage>, NodeError> {
    let all = dump(
        "route dump",
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
    )?;
    Ok(all
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// The BPF programs of the legacy tc (`cls_bpf`) filters under `parent` of interface `ifindex`:
/// (program id, program name). No filters, or no clsact qdisc, is an empty list.
pub fn tc_bpf_filters(ifindex: u32, parent: u32) -> Result<Vec<(u32, String)>, NodeError> {
    use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};
    let mut request = TcMessage::default();
    request.header.index = i32::try_from(ifindex).unwrap_or(i32::MAX);
    request.header.parent = parent.into();
    let all = match dump(
        "tc filter dump",
        RouteNetlinkMessage::GetTrafficFilter(request),
    ) {
        Ok(all) => all,
        // No clsact qdisc on the interface: nothing attached.
        Err(NodeError::Netlink { message, .. }) if message.contains("Invalid argument") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for m in all {
        let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
            continue;
        };
        let options = f.attributes.iter().filter_map(|a| match a {
            TcAttribute::Options(o) => Some(o),
            _ => None,
        });
        let (mut id, mut name) = (None, String::new());
        for o in options.flatten() {
            match o {
                TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => id = Some(*i),
                TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name.clone_from(n),
                _ => {}
            }
        }
        if let Some(id) = id {
            out.push((id, name));
        }
    }
    Ok(out)
}

/// A socket that receives the change events of [`CHANGE_GROUPS`].
pub fn subscribe() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, CHANGE_GROUPS))?;
    Ok(socket)
}
