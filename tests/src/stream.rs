//! A long-lived TCP connection that keeps exchanging echo messages in the background, to show that
//! an established flow survives something (an agent restart) or is cut by something (a policy change).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::probe::{ProbeOutcome, DEFAULT_TIMEOUT};
use crate::server::Worker;
use crate::sock;

/// Settings of a [`TcpEchoStream`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Pause between round trips.
    pub interval: Duration,
    /// Time allowed for the connection and for each echo; a round trip slower than this ends the stream.
    pub timeout: Duration,
    /// Source address to bind; `None` lets routing choose.
    pub source: Option<IpAddr>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(50),
            timeout: DEFAULT_TIMEOUT,
            source: None,
        }
    }
}

#[derive(Debug, Default)]
struct StreamState {
    round_trips: AtomicU64,
    dead: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A TCP connection from a namespace to an echo server, exchanging a numbered message every
/// `interval` on a background thread until it fails or is stopped (on drop).
#[derive(Debug)]
pub struct TcpEchoStream {
    dst: SocketAddr,
    state: Arc<StreamState>,
    worker: Worker,
}

/// Final numbers of a stopped [`TcpEchoStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// Successful round trips.
    pub round_trips: u64,
    /// Why the stream died, if it did before being stopped.
    pub error: Option<String>,
}

impl TcpEchoStream {
    /// Connects from namespace `ns` to the echo server at `dst` and starts exchanging messages. Fails
    /// if the connection cannot be established within `opts.timeout`.
    pub fn start(ns: &str, dst: SocketAddr, opts: &StreamOptions) -> Result<Self> {
        let state = Arc::new(StreamState::default());
        let shared = Arc::clone(&state);
        let opts = opts.clone();
        let (worker, ()) = Worker::start(ns, move |stop, ready| {
            let mut stream = match sock::tcp_connect(dst, opts.source, opts.timeout) {
                Ok(s) => s,
                Err(e) => {
                    let outcome = ProbeOutcome::from_io(&format!("connect {dst}"), &e);
                    let _ = ready.send(Err(anyhow!("TCP stream: {outcome}")));
                    return Ok(());
                }
            };
            let _ = ready.send(Ok(()));
            let mut seq = 0u64;
            let mut echo = Vec::new();
            let result = loop {
                if stop.load(Ordering::SeqCst) {
                    break Ok(());
                }
                let msg = format!("enforcer-stream {seq:020}\n");
                let mut round_trip = || -> std::io::Result<bool> {
                    stream.set_read_timeout(Some(opts.timeout))?;
                    stream.set_write_timeout(Some(opts.timeout))?;
                    stream.write_all(msg.as_bytes())?;
                    echo.resize(msg.len(), 0);
                    stream.read_exact(&mut echo)?;
                    Ok(echo == msg.as_bytes())
                };
                match round_trip() {
                    Ok(true) => {
                        shared.round_trips.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(false) => break Err(format!("round trip {seq}: echo mismatch")),
                    Err(e) => {
                        break Err(format!(
                            "round trip {seq}: {}",
                            ProbeOutcome::from_io(&dst.to_string(), &e)
                        ))
                    }
                }
                seq += 1;
                let resume = Instant::now() + opts.interval;
                while !stop.load(Ordering::SeqCst) && Instant::now() < resume {
                    std::thread::sleep(
                        resume
                            .saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(10)),
                    );
                }
            };
            if let Err(e) = result {
                *shared.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                shared.dead.store(true, Ordering::SeqCst);
            }
            Ok(())
        })?;
        Ok(Self { dst, state, worker })
    }

    /// The server this stream talks to.
    pub fn peer(&self) -> SocketAddr {
        self.dst
    }

    /// Whether the connection still works (no round trip has failed yet).
    pub fn is_alive(&self) -> bool {
        !self.state.dead.load(Ordering::SeqCst)
    }

    /// Number of successful round trips so far.
    pub fn round_trips(&self) -> u64 {
        self.state.round_trips.load(Ordering::SeqCst)
    }

    /// Why the stream died, if it did.
    pub fn error(&self) -> Option<String> {
        self.state
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` round trips succeeded in total; `false` if the stream died or
    /// `timeout` passed first.
    pub fn wait_for_round_trips(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.round_trips() >= n {
                return true;
            }
            if !self.is_alive() || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the stream dies; `false` if it is still alive after `timeout`.
    pub fn wait_until_dead(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops the stream (closing the connection) and returns its final numbers.
    pub fn stop(mut self) -> StreamReport {
        let _ = self.worker.stop();
        StreamReport {
            round_trips: self.round_trips(),
            error: self.error(),
        }
    }
}
