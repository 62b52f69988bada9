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

use super::Agent;
use crate::metrics::{render, ScrapeInput};

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

pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
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
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(agent.clone(), req));
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

async fn respond(
    agent: Arc<Agent>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => metrics(agent).await,
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readyz(&agent),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    })
}

fn readyz(agent: &Agent) -> Response<Full<Bytes>> {
    let view = agent.view();
    let kube = agent.metrics.kube.not_ready();
    if view.reasons.is_empty() && kube.is_none() {
        let generation = view.generation;
        return text(StatusCode::OK, format!("ready (generation {generation})\n"));
    }
    let mut body = String::from("not ready:\n");
    for r in view.reasons.iter().map(String::as_str).chain(kube) {
        body.push_str(r);
        body.push('\n');
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn metrics(agent: Arc<Agent>) -> Response<Full<Bytes>> {
    let body = tokio::task::spawn_blocking(move || {
        let view = agent.view();
        render(&ScrapeInput {
            view: &view,
            maps: &agent.counters,
            metrics: &agent.metrics,
        })
    })
    .await;
    match body {
        Ok(Ok(body)) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
