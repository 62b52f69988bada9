//! A minimal HTTP/1.0 client for the agent's `/metrics`, `/healthz` and `/readyz`, run inside a
//! network namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{anyhow, Result};

use crate::run_in_netns;

/// `GET path` over HTTP/1.0 from inside namespace `ns`: (status, body).
pub fn http_get(ns: &str, addr: &str, path: &str) -> Result<(u16, String)> {
    let addr: SocketAddr = addr.parse()?;
    let path = path.to_string();
    run_in_netns(ns, move || get_here(addr, &path))
}

/// `GET path` over HTTP/1.0 from the calling thread's network namespace: (status, body).
pub fn get_here(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {head:?}"))?;
    Ok((status, body.to_string()))
}
