//! The CLI side of the agent API.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;

use crate::api::{Request, Response};

/// Send one request and read one response, decoded as `T` (the type the agent answers that
/// request with, see [`crate::api::Reply`]).
pub fn call<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T> {
    let stream = connect(socket)?;
    send(&stream, request)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the agent's response")?;
    data(&line)
}

/// The data of a response line, or its error.
fn data<T: DeserializeOwned>(line: &str) -> Result<T> {
    let response: Response<T> =
        serde_json::from_str(line).context("decoding the agent's response")?;
    if !response.ok {
        return Err(anyhow!(
            "{}",
            response.error.unwrap_or_else(|| "request failed".into())
        ));
    }
    response
        .data
        .ok_or_else(|| anyhow!("the agent's response has no data"))
}

/// Send one request and hand each streamed line to `each` until the agent closes the stream or
/// `each` returns false.
pub fn stream<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
    mut each: impl FnMut(T) -> bool,
) -> Result<()> {
    let stream = connect(socket)?;
    send(&stream, request)?;
    for line in BufReader::new(&stream).lines() {
        let line = line.context("reading from the agent")?;
        if !each(data(&line)?) {
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
