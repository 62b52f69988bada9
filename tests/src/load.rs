//! UDP load generation (paced in-process) and a counting UDP sink, for rate-limit tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::run_in_netns;
use crate::server::{bind_udp_pair, PeerLog, Worker, TICK};
use crate::sock;

/// A burst of UDP packets to send.
#[derive(Debug, Clone)]
pub struct UdpLoad {
    /// Number of packets.
    pub packets: u64,
    /// UDP payload size in bytes (at least 8: the payload starts with the packet's sequence number).
    pub size: usize,
    /// Packets per second; packet `i` leaves at `i / rate` seconds after the start.
    pub rate_pps: u32,
    /// Source address to bind; `None` lets routing choose.
    pub source: Option<IpAddr>,
}

impl Default for UdpLoad {
    fn default() -> Self {
        Self {
            packets: 100,
            size: 64,
            rate_pps: 100,
            source: None,
        }
    }
}

/// What [`send_udp_load`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Packets handed to the kernel.
    pub sent: u64,
    /// Packets the kernel refused (`ENOBUFS`, a queued ICMP error, ...).
    pub send_errors: u64,
    /// Time from the first to the last packet.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Achieved sending rate in packets per second.
    #[expect(
        clippy::cast_precision_loss,
        reason = "packet counts are far below 2^52"
    )]
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            self.sent as f64
        }
    }
}

/// Sends `load.packets` UDP packets of `load.size` bytes to `dst` from namespace `ns`, paced at
/// `load.rate_pps` (absolute schedule, so a late packet does not delay the following ones). Blocks until
/// the last packet is sent.
pub fn send_udp_load(ns: &str, dst: SocketAddr, load: &UdpLoad) -> Result<LoadReport> {
    if load.rate_pps == 0 {
        bail!("UDP load: rate must be positive");
    }
    if load.size < 8 {
        bail!("UDP load: payload size must be at least 8 bytes");
    }
    let load = load.clone();
    run_in_netns(ns, move || {
        let bind_ip = load.source.unwrap_or(if dst.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        });
        let sock = sock::udp_socket(SocketAddr::new(bind_ip, 0), true)?;
        let mut payload = vec![0x55u8; load.size];
        let mut report = LoadReport {
            sent: 0,
            send_errors: 0,
            elapsed: Duration::ZERO,
        };
        let start = Instant::now();
        for i in 0..load.packets {
            let offset_ns = u128::from(i) * 1_000_000_000 / u128::from(load.rate_pps);
            let due = start + Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            payload[..8].copy_from_slice(&i.to_be_bytes());
            match sock.send_to(&payload, dst) {
                Ok(_) => report.sent += 1,
                Err(_) => report.send_errors += 1,
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    })
}

/// A UDP sink in a namespace counting received packets per source address; stopped on drop.
#[derive(Debug)]
pub struct UdpSink {
    port: u16,
    total: Arc<AtomicU64>,
    peers: Arc<PeerLog>,
    worker: Worker,
}

/// Starts a UDP sink in namespace `ns` on `port` (0 = a free port), every IPv4 and IPv6 address.
pub fn spawn_udp_sink(ns: &str, port: u16) -> Result<UdpSink> {
    let total = Arc::new(AtomicU64::new(0));
    let peers = Arc::new(PeerLog::default());
    let (count, log) = (Arc::clone(&total), Arc::clone(&peers));
    let (worker, port) = Worker::start(ns, move |stop, ready| {
        let (v4, v6, port) = match bind_udp_pair(port) {
            Ok(t) => t,
            Err(e) => {
                let _ = ready.send(Err(e.context("UDP sink")));
                return Ok(());
            }
        };
        let sized = sock::set_rcvbuf(&v4, 8 << 20).and_then(|()| sock::set_rcvbuf(&v6, 8 << 20));
        if let Err(e) = sized {
            let _ = ready.send(Err(anyhow::Error::from(e).context("UDP sink")));
            return Ok(());
        }
        for s in [&v4, &v6] {
            s.set_nonblocking(true)?;
        }
        let _ = ready.send(Ok(port));
        let socks = [v4, v6];
        let fds = [socks[0].as_raw_fd(), socks[1].as_raw_fd()];
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            let ready = sock::poll(&fds, libc::POLLIN, TICK)?;
            for (s, _) in socks.iter().zip(ready).filter(|(_, r)| *r) {
                // Drain everything queued on this socket.
                while let Ok((_, from)) = s.recv_from(&mut buf) {
                    count.fetch_add(1, Ordering::SeqCst);
                    log.record(from.ip());
                }
            }
        }
        Ok(())
    })?;
    Ok(UdpSink {
        port,
        total,
        peers,
        worker,
    })
}

impl UdpSink {
    /// The port the sink listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Packets received in total.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Packets received from `source` (IPv4-mapped addresses count as IPv4).
    pub fn count_from(&self, source: IpAddr) -> u64 {
        self.peers
            .snapshot()
            .get(&source.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Packets received per source address.
    pub fn counts(&self) -> HashMap<IpAddr, u64> {
        self.peers.snapshot()
    }

    /// Resets all counters to zero.
    pub fn reset(&self) {
        self.peers.clear();
        self.total.store(0, Ordering::SeqCst);
    }

    /// Waits until no packet has arrived for `quiet` (or `max` passed) and returns the total.
    pub fn settle(&self, quiet: Duration, max: Duration) -> u64 {
        let deadline = Instant::now() + max;
        let mut last = self.total();
        let mut last_change = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.total();
            if now == last {
                if last_change.elapsed() >= quiet {
                    break;
                }
            } else {
                last = now;
                last_change = Instant::now();
            }
        }
        self.total()
    }

    /// Stops the sink and returns the final total.
    pub fn stop(mut self) -> Result<u64> {
        self.worker.stop()?;
        Ok(self.total())
    }
}
