//! Echo servers (TCP and UDP) running on threads inside a network namespace, stopped on drop.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::netns::spawn_in_netns;
use crate::sock;

/// How often server threads look at their stop flag.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// A background thread with a stop flag; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Worker {
    /// Starts `body` on a thread inside namespace `ns`. `body` does its setup, reports the setup result
    /// through the provided sender (the value of `T` is returned from here), then runs until the stop
    /// flag is set.
    pub(crate) fn start<T, F>(ns: &str, body: F) -> Result<(Self, T)>
    where
        T: Send + 'static,
        F: FnOnce(Arc<AtomicBool>, mpsc::Sender<Result<T>>) -> Result<()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = spawn_in_netns(ns, move || body(flag, tx))?;
        match rx.recv() {
            Ok(Ok(value)) => Ok((
                Self {
                    stop,
                    thread: Some(thread),
                },
                value,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(anyhow!("worker in netns {ns} exited during setup")),
                Err(_) => Err(anyhow!("worker in netns {ns} panicked during setup")),
            },
        }
    }

    /// Whether the thread still runs (a worker only ends by itself on an error).
    pub(crate) fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// `Ok` while the thread runs; once it has ended by itself, its error (or "exited"). A server
    /// that died turns later probes into non-answers: callers fail the run instead.
    pub(crate) fn check(&mut self) -> Result<()> {
        if self.running() {
            return Ok(());
        }
        match self.stop() {
            Ok(()) => Err(anyhow!("the server thread exited")),
            Err(e) => Err(e),
        }
    }

    /// Sets the stop flag, joins the thread and returns its result.
    pub(crate) fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("worker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Source addresses seen by a server with the number of connections or datagrams from each.
#[derive(Debug, Default)]
pub(crate) struct PeerLog(Mutex<HashMap<IpAddr, u64>>);

impl PeerLog {
    pub(crate) fn record(&self, ip: IpAddr) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(ip.to_canonical()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> HashMap<IpAddr, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The wildcard address that makes [`spawn_tcp_echo`] listen on every IPv4 and IPv6 address.
pub const ANY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// A TCP echo server running inside a namespace; stopped (listener and connections closed) on drop.
#[derive(Debug)]
pub struct TcpEchoServer {
    local: SocketAddr,
    peers: Arc<PeerLog>,
    worker: Worker,
}

/// Starts a TCP echo server in namespace `ns` on `addr`:`port`. `addr` = [`ANY`] (`[::]`) listens
/// dual-stack on every address, `0.0.0.0` on every IPv4 address, a specific address only there.
/// Port 0 picks a free port (see [`TcpEchoServer::port`]). Each connection is served on its own
/// thread and echoes every byte back until the client closes it or the server stops.
pub fn spawn_tcp_echo(ns: &str, addr: IpAddr, port: u16) -> Result<TcpEchoServer> {
    let peers = Arc::new(PeerLog::default());
    let log = Arc::clone(&peers);
    let bind = SocketAddr::new(addr, port);
    let (worker, local) = Worker::start(ns, move |stop, ready| {
        let listener = match sock::tcp_listener(bind)
            .and_then(|l| l.local_addr().map(|a| (l, a)))
            .with_context(|| format!("TCP echo server: listen on {bind}"))
        {
            Ok((l, a)) => {
                let _ = ready.send(Ok(a));
                l
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        };
        tcp_accept_loop(&listener, &stop, &log)
    })?;
    Ok(TcpEchoServer {
        local,
        peers,
        worker,
    })
}

fn tcp_accept_loop(listener: &TcpListener, stop: &Arc<AtomicBool>, log: &PeerLog) -> Result<()> {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if !sock::poll_one(listener.as_raw_fd(), libc::POLLIN, TICK)? {
            conns.retain(|h| !h.is_finished());
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                log.record(peer.ip());
                let stop = Arc::clone(stop);
                conns.push(std::thread::spawn(move || tcp_echo_conn(stream, &stop)));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("TCP echo server: accept"),
        }
    }
    for c in conns {
        let _ = c.join();
    }
    Ok(())
}

fn tcp_echo_conn(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(TICK)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

impl TcpEchoServer {
    /// The address the server listens on (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// Source addresses of accepted connections, with the number of connections from each
    /// (IPv4-mapped addresses are reported as IPv4).
    pub fn peers(&self) -> HashMap<IpAddr, u64> {
        self.peers.snapshot()
    }

    /// `Ok` while the server runs; once its thread ended by itself (an accept error, for
    /// instance), that error.
    pub fn check(&mut self) -> Result<()> {
        self.worker.check()
    }

    /// Stops the server and closes its connections.
    pub fn stop(mut self) -> Result<()> {
        self.worker.stop()
    }
}

/// Arrival times of datagrams, with their source address.
pub(crate) type Arrivals = Mutex<Vec<(IpAddr, Instant)>>;

/// A UDP echo server running inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct UdpEchoServer {
    port: u16,
    peers: Arc<PeerLog>,
    arrivals: Arc<Arrivals>,
    worker: Worker,
}

/// Binds one IPv4 (`0.0.0.0`) and one IPv6-only (`[::]`) UDP socket on `port` (0 = a free port,
/// the same for both) with destination-address reporting enabled.
pub(crate) fn bind_udp_pair(port: u16) -> Result<(UdpSocket, UdpSocket, u16)> {
    let v4 = sock::udp_socket(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), false)
        .with_context(|| format!("bind UDP 0.0.0.0:{port}"))?;
    let port = v4.local_addr()?.port();
    let v6 = sock::udp_socket(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port), true)
        .with_context(|| format!("bind UDP [::]:{port}"))?;
    sock::enable_pktinfo(&v4, false)?;
    sock::enable_pktinfo(&v6, true)?;
    Ok((v4, v6, port))
}

/// Starts a UDP echo server in namespace `ns` on `port` (0 = a free port), every address, IPv4 and
/// IPv6. Each datagram is sent back to its sender from the address it was sent to.
pub fn spawn_udp_echo(ns: &str, port: u16) -> Result<UdpEchoServer> {
    let peers = Arc::new(PeerLog::default());
    let log = Arc::clone(&peers);
    let arrivals = Arc::new(Arrivals::default());
    let times = Arc::clone(&arrivals);
    let (worker, port) = Worker::start(ns, move |stop, ready| {
        let (v4, v6, port) = match bind_udp_pair(port).context("UDP echo server") {
            Ok(t) => t,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        };
        let _ = ready.send(Ok(port));
        let socks = [v4, v6];
        let fds = [socks[0].as_raw_fd(), socks[1].as_raw_fd()];
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            let ready = sock::poll(&fds, libc::POLLIN, TICK)?;
            for (s, _) in socks.iter().zip(ready).filter(|(_, r)| *r) {
                // Errors on one received datagram (e.g. a queued ICMP error) must not kill the
                // server; an echo it cannot send does: later probes would read it as a drop.
                if let Ok((n, from, dst)) = sock::recv_with_dst(s, &mut buf) {
                    log.record(from.ip());
                    times
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((from.ip().to_canonical(), Instant::now()));
                    sock::send_from(s, &buf[..n], from, dst)
                        .with_context(|| format!("UDP echo server: reply to {from}"))?;
                }
            }
        }
        Ok(())
    })?;
    Ok(UdpEchoServer {
        port,
        peers,
        arrivals,
        worker,
    })
}

impl UdpEchoServer {
    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Source addresses of received datagrams with the number of datagrams from each.
    pub fn peers(&self) -> HashMap<IpAddr, u64> {
        self.peers.snapshot()
    }

    /// Datagrams from `src` that arrived in `[from, to]` (receiver clock).
    pub fn arrivals_between(&self, src: IpAddr, from: Instant, to: Instant) -> u64 {
        let src = src.to_canonical();
        let list = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let n = list
            .iter()
            .filter(|(ip, t)| *ip == src && *t >= from && *t <= to)
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// `Ok` while the server runs; its error once it died (see [`TcpEchoServer::check`]).
    pub fn check(&mut self) -> Result<()> {
        self.worker.check()
    }

    /// Stops the server.
    pub fn stop(mut self) -> Result<()> {
        self.worker.stop()
    }
}
