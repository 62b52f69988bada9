//! The CLI side of the agent API.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{bail, Context, Result};

use crate::api::{Request, Response};

/// Send one request and read one response.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value> {
    let stream = connect(socket)?;
    send(&stream, request)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the agent's response")?;
    let response: Response =
        serde_json::from_str(&line).context("decoding the agent's response")?;
    if !response.ok {
        bail!(
            "{}",
            response.error.unwrap_or_else(|| "request failed".into())
        );
    }
    Ok(response.data)
}

/// Send one request and hand each streamed line to `each` until the agent closes the stream or
/// `each` returns false.
pub fn stream(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(serde_json::Value) -> bool,
) -> Result<()> {
    let stream = connect(socket)?;
    send(&stream, request)?;
    for line in BufReader::new(&stream).lines() {
        let line = line.context("reading from the agent")?;
        let response: Response =
            serde_json::from_str(&line).context("decoding the agent's response")?;
        if !response.ok {
            bail!(
                "{}",
                response.error.unwrap_or_else(|| "request failed".into())
            );
        }
        if !each(response.data) {
            break;
        }
    }
    Ok(())
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the enforcer agent at {} (is `enforcer agent` running? use --socket to point elsewhere)",
            socket.display()
        )
    })
}

fn send(mut stream: &UnixStream, request: &Request) -> Result<()> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("sending the request to the agent")?;
    Ok(())
}
