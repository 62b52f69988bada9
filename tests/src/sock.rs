//! Thin `libc` socket helpers for what `std::net` cannot do: choosing `IPV6_V6ONLY` before `bind`,
//! binding a source address before a timed `connect`, ICMP ping sockets, and UDP replies sent from the
//! address a request arrived on (`IP_PKTINFO` / `IPV6_PKTINFO`).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// `size_of::<T>()` as a `socklen_t` (all socket structures are far below `u32::MAX`).
#[expect(
    clippy::cast_possible_truncation,
    reason = "socket structures are a few hundred bytes at most"
)]
const fn socklen<T>() -> libc::socklen_t {
    size_of::<T>() as libc::socklen_t
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a socket address to its C form.
fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            (storage, socklen::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or_default(),
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            (storage, socklen::<libc::sockaddr_in6>())
        }
    }
}

/// Converts a C socket address back; `None` for families other than IPv4/IPv6.
fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn family(ip: IpAddr) -> libc::c_int {
    if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// Creates a close-on-exec socket.
fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
pub(crate) fn set_int_opt(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            socklen::<libc::c_int>(),
        )
    })
    .map(drop)
}

fn bind(fd: &impl AsRawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid socket address of length `len`.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) }).map(drop)
}

/// A listening TCP socket on `addr`. An unspecified IPv6 address (`[::]`) listens dual-stack
/// (`IPV6_V6ONLY` off), a specific address only on that address.
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = socket(family(addr.ip()), libc::SOCK_STREAM, 0)?;
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        let v6only = i32::from(!addr.ip().is_unspecified());
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only)?;
    }
    bind(&fd, &addr)?;
    // SAFETY: plain syscall on a valid descriptor.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    Ok(TcpListener::from(fd))
}

/// A UDP socket bound to `addr`. IPv6 sockets get `IPV6_V6ONLY` = `v6only`.
pub(crate) fn udp_socket(addr: SocketAddr, v6only: bool) -> io::Result<UdpSocket> {
    let fd = socket(family(addr.ip()), libc::SOCK_DGRAM, 0)?;
    if addr.is_ipv6() {
        set_int_opt(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(v6only),
        )?;
    }
    bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

/// Grows the receive buffer of `sock` to `bytes` (ignoring the system limit when privileged),
/// and checks that the kernel really holds that much (it reports twice what it was asked):
/// a sink whose buffer silently stayed small would lose datagrams at high rates.
pub(crate) fn set_rcvbuf(sock: &impl AsRawFd, bytes: libc::c_int) -> io::Result<()> {
    if set_int_opt(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        set_int_opt(sock, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    }
    let mut got: libc::c_int = 0;
    let mut len = socklen::<libc::c_int>();
    // SAFETY: the pointers describe a live c_int and its length.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut got).cast(),
            &raw mut len,
        )
    })?;
    if got < bytes {
        return Err(io::Error::other(format!(
            "receive buffer is {got} bytes, {bytes} asked (net.core.rmem_max too low, not root)"
        )));
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` or `timeout` passes; returns whether it became ready.
pub(crate) fn poll_one(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let ready = poll(&[fd], events, timeout)?;
    Ok(ready.first().copied().unwrap_or(false))
}

/// Waits until one of `fds` is ready for `events` or `timeout` passes; returns readiness per fd.
pub(crate) fn poll(
    fds: &[RawFd],
    events: libc::c_short,
    timeout: Duration,
) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `pfds` is a live array of `nfds` pollfd structures.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Connects a TCP socket to `dst` within `timeout`, optionally bound to source address `src` first.
pub(crate) fn tcp_connect(
    dst: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fd = socket(family(dst.ip()), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    if let Some(src) = src {
        bind(&fd, &SocketAddr::new(src, 0))?;
    }
    let (storage, len) = to_sockaddr(&dst);
    // SAFETY: `storage` holds a valid socket address of length `len`.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const storage).cast(), len) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {dst} timed out after {timeout:?}"),
                ));
            }
            if poll_one(fd.as_raw_fd(), libc::POLLOUT, left)? {
                break;
            }
        }
        let mut so_error: libc::c_int = 0;
        let mut optlen = socklen::<libc::c_int>();
        // SAFETY: the pointers describe a live c_int and its length.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut so_error).cast(),
                &raw mut optlen,
            )
        })?;
        if so_error != 0 {
            return Err(io::Error::from_raw_os_error(so_error));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// An unprivileged ICMP echo ("ping") socket for the family of `dst`, optionally bound to `src`.
/// Needs `net.ipv4.ping_group_range` to include the caller's group (the harness sets it in every
/// namespace it creates). Datagrams sent and received are ICMP headers plus payload; the kernel sets
/// the identifier and the checksum.
pub(crate) fn ping_socket(dst: IpAddr, src: Option<IpAddr>) -> io::Result<UdpSocket> {
    let proto = if dst.is_ipv4() {
        libc::IPPROTO_ICMP
    } else {
        libc::IPPROTO_ICMPV6
    };
    let fd = socket(family(dst), libc::SOCK_DGRAM, proto)?;
    if let Some(src) = src {
        bind(&fd, &SocketAddr::new(src, 0))?;
    }
    Ok(UdpSocket::from(fd))
}

/// Where a received datagram was addressed to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalDst {
    pub addr: IpAddr,
    pub ifindex: u32,
}

/// Enables reception of the destination address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) on `sock`.
pub(crate) fn enable_pktinfo(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    if v6 {
        set_int_opt(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set_int_opt(sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Control buffer with room for one pktinfo message, suitably aligned.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

/// Receives one datagram with its source and (if pktinfo is enabled) local destination address.
pub(crate) fn recv_with_dst(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<LocalDst>)> {
    // SAFETY: plain old data; all-zero is valid.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = socklen::<libc::sockaddr_storage>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len();
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated length.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let from = from_sockaddr(&name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    let mut dst = None;
    // SAFETY: `msg` was filled by recvmsg; the CMSG_* macros walk its control buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let pi: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(LocalDst {
                    addr: IpAddr::V4(Ipv4Addr::from(pi.ipi_addr.s_addr.to_ne_bytes())),
                    ifindex: u32::try_from(pi.ipi_ifindex).unwrap_or(0),
                });
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let pi: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(LocalDst {
                    addr: IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)),
                    ifindex: pi.ipi6_ifindex,
                });
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, from, dst))
}

/// Sends `buf` to `to`, from local address `from` when given (so a reply leaves from the address
/// the request was sent to, whatever the routing would pick).
pub(crate) fn send_from(
    sock: &UdpSocket,
    buf: &[u8],
    to: SocketAddr,
    from: Option<LocalDst>,
) -> io::Result<usize> {
    let Some(from) = from else {
        return sock.send_to(buf, to);
    };
    let (name, namelen) = to_sockaddr(&to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw const name).cast_mut().cast();
    msg.msg_namelen = namelen;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    // SAFETY: the control buffer is 128 bytes, more than one pktinfo cmsg needs; the CMSG_* macros
    // compute offsets inside it.
    unsafe {
        let (level, ty, len) = match from.addr {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                socklen::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                socklen::<libc::in6_pktinfo>(),
            ),
        };
        msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = ty;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len) as usize;
        match from.addr {
            IpAddr::V4(a) => std::ptr::write_unaligned(
                libc::CMSG_DATA(cmsg).cast(),
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            ),
            IpAddr::V6(a) => std::ptr::write_unaligned(
                libc::CMSG_DATA(cmsg).cast(),
                libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    // A link-local source only means something on the interface it came in on.
                    ipi6_ifindex: if a.is_unicast_link_local() {
                        from.ifindex
                    } else {
                        0
                    },
                },
            ),
        }
    }
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated length.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
