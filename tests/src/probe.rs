//! One-shot traffic probes (TCP connect + echo, UDP request/response, ICMP echo) run from inside a
//! network namespace, each on its own short-lived thread.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::run_in_netns;
use crate::sock;

/// Default time a probe waits for a connection or an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Transport protocol of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP connect, send a message, read its echo.
    Tcp,
    /// UDP datagram, read the echoed datagram.
    Udp,
    /// ICMP / `ICMPv6` echo request and reply.
    Icmp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
        })
    }
}

impl FromStr for Protocol {
    type Err = anyhow::Error;

    /// Parses `TCP`, `UDP` or `ICMP` (any case; `ICMPv6` is accepted as `ICMP`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "ICMP" | "ICMPV6" => Ok(Protocol::Icmp),
            _ => bail!("unknown protocol {s:?} (expected TCP, UDP or ICMP)"),
        }
    }
}

/// Options shared by all probes.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// How long to wait for the connection and for the answer (each).
    pub timeout: Duration,
    /// Source address to bind before sending; `None` lets routing choose.
    pub source: Option<IpAddr>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            source: None,
        }
    }
}

impl ProbeOptions {
    /// Options with the given timeout and no source binding.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::default()
        }
    }
}

/// Why a probe got no (valid) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoAnswerKind {
    /// Nothing came back before the timeout (what a policy drop looks like).
    Timeout,
    /// The connection was refused (TCP RST to the SYN, or ICMP port unreachable for UDP).
    Refused,
    /// An established connection was reset or closed by the peer.
    Reset,
    /// The network or host is unreachable (no route, ICMP unreachable, neighbour resolution failed).
    Unreachable,
    /// Something came back, but not the expected echo.
    Mismatch,
    /// Any other socket error.
    Error,
}

/// Result of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The peer answered with the expected echo.
    Answered {
        /// Time from the first packet sent to the answer.
        rtt: Duration,
    },
    /// No valid answer.
    NoAnswer {
        /// Category of failure.
        kind: NoAnswerKind,
        /// Human-readable detail (the socket error, for instance).
        detail: String,
    },
}

impl ProbeOutcome {
    /// Whether the probe got its answer.
    pub fn is_answered(&self) -> bool {
        matches!(self, ProbeOutcome::Answered { .. })
    }

    fn no_answer(kind: NoAnswerKind, detail: impl Into<String>) -> Self {
        ProbeOutcome::NoAnswer {
            kind,
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error into a [`ProbeOutcome::NoAnswer`].
    pub(crate) fn from_io(context: &str, err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => NoAnswerKind::Timeout,
            io::ErrorKind::ConnectionRefused => NoAnswerKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => NoAnswerKind::Reset,
            _ => match err.raw_os_error() {
                Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
                    NoAnswerKind::Unreachable
                }
                _ => NoAnswerKind::Error,
            },
        };
        Self::no_answer(kind, format!("{context}: {err}"))
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Answered { rtt } => write!(f, "answered in {rtt:?}"),
            ProbeOutcome::NoAnswer { kind, detail } => write!(f, "no answer ({kind:?}): {detail}"),
        }
    }
}

/// A process-unique token put in probe payloads so answers can be matched to requests.
pub(crate) fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) ^ n
}

/// Runs a probe of `protocol` from namespace `ns` to `dst` (`port` is ignored for ICMP).
pub fn probe(
    ns: &str,
    protocol: Protocol,
    dst: IpAddr,
    port: u16,
    opts: &ProbeOptions,
) -> Result<ProbeOutcome> {
    match protocol {
        Protocol::Tcp => probe_tcp(ns, SocketAddr::new(dst, port), opts),
        Protocol::Udp => probe_udp(ns, SocketAddr::new(dst, port), opts),
        Protocol::Icmp => probe_icmp(ns, dst, opts),
    }
}

/// TCP probe from namespace `ns`: connects to `dst`, sends a message and expects it echoed back
/// (by a server such as [`crate::spawn_tcp_echo`]). Errors are reserved for harness failures
/// (missing namespace, cannot bind the source); network failures are a [`ProbeOutcome::NoAnswer`].
pub fn probe_tcp(ns: &str, dst: SocketAddr, opts: &ProbeOptions) -> Result<ProbeOutcome> {
    let opts = opts.clone();
    run_in_netns(ns, move || Ok(tcp_in_current_ns(dst, &opts)))
}

fn tcp_in_current_ns(dst: SocketAddr, opts: &ProbeOptions) -> ProbeOutcome {
    let start = Instant::now();
    let mut stream = match sock::tcp_connect(dst, opts.source, opts.timeout) {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::from_io(&format!("connect {dst}"), &e),
    };
    let msg = format!("enforcer-probe {:016x}\n", nonce());
    let mut exchange = || -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(opts.timeout))?;
        stream.set_write_timeout(Some(opts.timeout))?;
        stream.write_all(msg.as_bytes())?;
        let mut echo = vec![0u8; msg.len()];
        stream.read_exact(&mut echo)?;
        Ok(echo)
    };
    match exchange() {
        Ok(echo) if echo == msg.as_bytes() => ProbeOutcome::Answered {
            rtt: start.elapsed(),
        },
        Ok(echo) => ProbeOutcome::no_answer(
            NoAnswerKind::Mismatch,
            format!(
                "{dst} echoed {:?} instead of {msg:?}",
                String::from_utf8_lossy(&echo)
            ),
        ),
        Err(e) => ProbeOutcome::from_io(&format!("echo from {dst}"), &e),
    }
}

/// UDP probe from namespace `ns`: sends one datagram to `dst` and expects it echoed back from `dst`
/// (by a server such as [`crate::spawn_udp_echo`]) within the timeout.
pub fn probe_udp(ns: &str, dst: SocketAddr, opts: &ProbeOptions) -> Result<ProbeOutcome> {
    let opts = opts.clone();
    run_in_netns(ns, move || {
        let bind_ip = opts.source.unwrap_or(if dst.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        });
        let sock = sock::udp_socket(SocketAddr::new(bind_ip, 0), true)?;
        Ok(udp_in_current_ns(&sock, dst, &opts))
    })
}

fn udp_in_current_ns(
    sock: &std::net::UdpSocket,
    dst: SocketAddr,
    opts: &ProbeOptions,
) -> ProbeOutcome {
    let start = Instant::now();
    if let Err(e) = sock.connect(dst) {
        return ProbeOutcome::from_io(&format!("connect {dst}"), &e);
    }
    let msg = format!("enforcer-probe {:016x}", nonce());
    if let Err(e) = sock.send(msg.as_bytes()) {
        return ProbeOutcome::from_io(&format!("send to {dst}"), &e);
    }
    let deadline = start + opts.timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ProbeOutcome::no_answer(
                NoAnswerKind::Timeout,
                format!("no UDP answer from {dst} within {:?}", opts.timeout),
            );
        }
        if let Err(e) = sock.set_read_timeout(Some(left)) {
            return ProbeOutcome::from_io("set timeout", &e);
        }
        match sock.recv(&mut buf) {
            // A connected socket only receives datagrams from `dst`; ignore stale answers.
            Ok(n) if &buf[..n] == msg.as_bytes() => {
                return ProbeOutcome::Answered {
                    rtt: start.elapsed(),
                }
            }
            Ok(_) => {}
            Err(e) => return ProbeOutcome::from_io(&format!("recv from {dst}"), &e),
        }
    }
}

/// ICMP echo probe (`ICMPv4` or `ICMPv6` after the family of `dst`) from namespace `ns`, using an
/// unprivileged ping socket. Only a reply with our sequence number and payload counts.
pub fn probe_icmp(ns: &str, dst: IpAddr, opts: &ProbeOptions) -> Result<ProbeOutcome> {
    let opts = opts.clone();
    run_in_netns(ns, move || {
        let sock = sock::ping_socket(dst, opts.source)?;
        Ok(icmp_in_current_ns(&sock, dst, &opts))
    })
}

fn icmp_in_current_ns(
    sock: &std::net::UdpSocket,
    dst: IpAddr,
    opts: &ProbeOptions,
) -> ProbeOutcome {
    let (request_type, reply_type) = if dst.is_ipv4() {
        (8u8, 0u8)
    } else {
        (128, 129)
    };
    let token = nonce();
    let seq = token.to_be_bytes();
    let seq = [seq[6], seq[7]];
    let payload = format!("enforcer-probe {token:016x}");
    // type, code, checksum (kernel), identifier (kernel), sequence, payload
    let mut packet = vec![request_type, 0, 0, 0, 0, 0, seq[0], seq[1]];
    packet.extend_from_slice(payload.as_bytes());
    let start = Instant::now();
    if let Err(e) = sock.send_to(&packet, SocketAddr::new(dst, 0)) {
        return ProbeOutcome::from_io(&format!("echo request to {dst}"), &e);
    }
    let deadline = start + opts.timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ProbeOutcome::no_answer(
                NoAnswerKind::Timeout,
                format!("no ICMP echo reply from {dst} within {:?}", opts.timeout),
            );
        }
        if let Err(e) = sock.set_read_timeout(Some(left)) {
            return ProbeOutcome::from_io("set timeout", &e);
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let reply = &buf[..n];
                if from.ip() == dst
                    && n >= 8
                    && reply[0] == reply_type
                    && reply[6..8] == seq
                    && &reply[8..] == payload.as_bytes()
                {
                    return ProbeOutcome::Answered {
                        rtt: start.elapsed(),
                    };
                }
            }
            Err(e) => return ProbeOutcome::from_io(&format!("echo reply from {dst}"), &e),
        }
    }
}
