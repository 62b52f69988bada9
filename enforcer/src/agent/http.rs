//! A minimal HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz` (one request per
//! connection; Prometheus and kubelet probes need nothing more).

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use super::Agent;
use crate::metrics::{render, ScrapeInput};

pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(agent, stream).await {
                        debug!("http: {e}");
                    }
                });
            }
            Err(e) => warn!("http accept: {e}"),
        }
    }
}

async fn handle(agent: Arc<Agent>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (we ignore any body).
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let a = agent.clone();
            let body = tokio::task::spawn_blocking(move || {
                let inner = a.lock();
                render(&ScrapeInput {
                    dp: &inner.dp,
                    rules: &inner.compiled.rules,
                    policies: &inner.in_force,
                    metrics: &a.metrics,
                    attached: inner.attached.len(),
                })
            })
            .await;
            match body {
                Ok(Ok(text)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Ok(Err(e)) => (
                    "500 Internal Server Error",
                    "text/plain",
                    format!("{e:#}\n"),
                ),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            }
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/readyz") => {
            let inner = agent.lock();
            let generation = inner.installed.generation;
            if let Some((name, why)) = inner.attach_errors.iter().next() {
                let body = format!("not attached to {name}: {why}\n");
                ("503 Service Unavailable", "text/plain", body)
            } else if generation > 0 {
                let body = format!("ready (generation {generation})\n");
                ("200 OK", "text/plain", body)
            } else {
                let body = "no policy installed yet\n".to_string();
                ("503 Service Unavailable", "text/plain", body)
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
