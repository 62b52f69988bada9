//! `/metrics`, `/healthz` and `/readyz` over HTTP/1.1 (hyper). Hardened for a listener other
//! processes can reach: a connection cap (extra connections are closed at once), a deadline for
//! the request head and one for the whole connection, no keep-alive, a backoff on accept errors
//! (EMFILE must not spin), and bounded work per request: probes and scrapes read the agent's
//! published view and its own handles on the counter maps, never the agent's lock.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::Bytes, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use prometheus::{Encoder, Registry, TextEncoder};

use super::Agent;
use crate::metrics::Collector;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// A client must send its request head within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection lasts at most this long.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Waits after a failed accept (doubling up to the maximum).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The agent's registry: its collector, registered once.
pub fn registry(agent: &Arc<Agent>) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(Collector(agent.clone())))?;
    Ok(registry)
}

pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
    let registry = match registry(&agent) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            warn!("metrics registry: {e}; /metrics is not served");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                warn!("http accept: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!("http: {MAX_CONNECTIONS} connections open, closing a new one");
            drop(stream);
            continue;
        };
        let (agent, registry) = (agent.clone(), registry.clone());
        tokio::spawn(async move {
            // Answered as soon as hyper has the request head: nothing here awaits.
            let service = service_fn(move |req| {
                std::future::ready(Ok::<_, Infallible>(respond(&agent, &registry, &req)))
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!("http: {e}"),
                Err(_) => debug!("http: connection closed after {CONNECTION_TIMEOUT:?}"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn respond(
    agent: &Agent,
    registry: &Registry,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => metrics(registry),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readyz(agent),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Why the agent is not ready (empty: ready): `/readyz`, and the node taint's removal.
pub fn not_ready(agent: &Agent) -> Vec<String> {
    let view = agent.snapshot().view.clone();
    let kube = agent.metrics.kube.not_ready().map(str::to_owned);
    view.reasons.iter().cloned().chain(kube).collect()
}

fn readyz(agent: &Agent) -> Response<Full<Bytes>> {
    let reasons = not_ready(agent);
    if reasons.is_empty() {
        let generation = agent.snapshot().view.generation;
        return text(StatusCode::OK, format!("ready (generation {generation})\n"));
    }
    let mut body = String::from("not ready:\n");
    for r in &reasons {
        body.push_str(r);
        body.push('\n');
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Gather and encode. The collector reads the counter maps (a few batched syscalls) and encodes
/// one series per rule: blocking work, done in place with the worker's other tasks handed to
/// another thread (no hop to the blocking pool, which costs a wake-up on a busy node).
fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let body = tokio::task::block_in_place(move || -> anyhow::Result<String> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    });
    match body {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")),
    }
}
