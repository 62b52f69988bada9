//! Rate probes (`packets` sent at `ratePerSecond`): what got through is measured at the receiver
//! (the destination's UDP echo server), never with the datapath's own counters.
//!
//! - Every packet arrived: `allow`.
//! - Some were dropped: `rate_limited` when the rate admitted at the receiver is within
//!   [`TOLERANCE`] of the expected rate, else an error giving both rates. The admitted rate is
//!   counted over the last three quarters of the sending time: by then the bucket's burst is
//!   spent (the scenarios offer at least twice the limit), so what arrives is the refill rate.
//! - Nothing arrived: an error (a limiter never drops a whole burst).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::scenario::{
    model::{Expect, Probe},
    report::Outcome,
};
use anyhow::{anyhow, Context, Result};

use super::Live;
use crate::{send_udp_load, UdpEchoServer, UdpLoad};

/// How far the admitted rate may be from the expected one (±10 %).
pub const TOLERANCE: f64 = 0.10;

/// How long the receiver must see no new packet before the count is final.
const QUIET: Duration = Duration::from_millis(100);
/// At most this long after the last packet was sent.
const SETTLE_DEADLINE: Duration = Duration::from_secs(2);

/// Send the probe's burst from `ns` (source `src`) to `dst` and judge what arrived against
/// `expected` packets per second (`None`: nothing should limit it).
pub fn rate_probe(
    live: &Live,
    probe: &Probe,
    expected: Option<f64>,
    (ns, dst, src): (&str, IpAddr, Option<IpAddr>),
) -> Result<(Outcome, String)> {
    let port = probe.port.context("rate probe without a port")?;
    let packets = probe.packets.unwrap_or(100);
    let rate = probe.rate_per_second.unwrap_or(100);
    let server = live.udp_server(dst, port)?;
    let from = src.context("rate probes need a workload or external source")?;
    let count = || server.peers().get(&from).copied().unwrap_or(0);
    let before = count();
    let started = Instant::now();
    let sent = send_udp_load(
        ns,
        SocketAddr::new(dst, port),
        &UdpLoad {
            packets: u64::from(packets),
            size: 64,
            rate_pps: u32::try_from(rate).unwrap_or(u32::MAX),
            source: Some(from),
        },
    )?;
    let ended = Instant::now();
    let received = settled(&count, ended)? - before;
    let mut detail = format!(
        "{received}/{} packets arrived, sent at {:.0}/s",
        sent.sent,
        sent.rate()
    );
    if received == sent.sent && sent.send_errors == 0 {
        return Ok((Expect::Allow.into(), detail));
    }
    if received == 0 {
        return Ok((
            Outcome::Error(format!("none of {} packets arrived", sent.sent)),
            detail,
        ));
    }
    let Some(expected) = expected else {
        return Ok((
            Outcome::Error(format!(
                "{} of {} packets lost, and no rate limit binds this probe",
                sent.sent - received,
                sent.sent
            )),
            detail,
        ));
    };
    let admitted = admitted_rate(server, from, started, ended);
    detail = format!(
        "{detail}; admitted {admitted:.1}/s at the receiver, expected {expected}/s ±{:.0} %",
        TOLERANCE * 100.0
    );
    if (admitted - expected).abs() <= expected * TOLERANCE {
        return Ok((Expect::RateLimited.into(), detail));
    }
    Ok((
        Outcome::Error(format!(
            "admitted {admitted:.1}/s at the receiver, expected {expected}/s ±{:.0} %",
            TOLERANCE * 100.0
        )),
        detail,
    ))
}

/// Packets per second from `from` that reached `server` during the last three quarters of the
/// sending time `[started, ended]`.
fn admitted_rate(server: &UdpEchoServer, from: IpAddr, started: Instant, ended: Instant) -> f64 {
    let window_start = started + (ended - started) / 4;
    let n = server.arrivals_between(from, window_start, ended);
    #[expect(clippy::cast_precision_loss, reason = "packet counts are small")]
    let n = n as f64;
    n / (ended - window_start).as_secs_f64().max(1e-3)
}

/// The count once it has not moved for [`QUIET`] (at most [`SETTLE_DEADLINE`] after `ended`).
fn settled(count: &dyn Fn() -> u64, ended: Instant) -> Result<u64> {
    let mut last = count();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return Ok(now);
        }
        if ended.elapsed() > SETTLE_DEADLINE {
            return Err(anyhow!(
                "packets still arriving {SETTLE_DEADLINE:?} after the burst ended"
            ));
        }
    }
}
