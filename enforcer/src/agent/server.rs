//! The Unix-socket API: one JSON request per connection line, one JSON response line (or a stream
//! of them for `flows --follow`). Only root may talk to the agent: the socket is mode 0600 and
//! the peer's uid is checked.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use anyhow::{anyhow, bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use enforcer_common::Verdict;

use super::{owner::Command, Agent};
use crate::{
    api::{FlowEvent, Reply, Request, Response, Stats},
    policy::{explain, Flow},
};

/// Bind the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // A live socket belongs to another agent: refuse rather than steal it.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "{} is in use: another enforcer agent is running",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    // Created 0600 (no window at the umask's mode), checked again by the peer's uid.
    // SAFETY: umask has no preconditions; restored right after.
    let umask = unsafe { libc::umask(0o177) };
    let listener = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(umask) };
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The largest request line (a policy apply carries its YAML).
const MAX_REQUEST_BYTES: u64 = 64 << 20;

pub async fn serve(agent: Arc<Agent>, listener: UnixListener) {
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = std::time::Duration::from_millis(10);
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(agent, stream).await {
                        debug!("api connection: {e:#}");
                    }
                });
            }
            // EMFILE and the like: wait instead of spinning.
            Err(e) => {
                warn!("api accept: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

async fn write(stream: &mut UnixStream, response: &Response<Reply>) -> Result<()> {
    let mut line = serde_json::to_vec(response)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    Ok(())
}

async fn handle(agent: Arc<Agent>, mut stream: UnixStream) -> Result<()> {
    let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
    if uid != 0 {
        write(
            &mut stream,
            &Response::error("permission denied: only root may use the enforcer agent"),
        )
        .await?;
        return Ok(());
    }
    let mut line = String::new();
    BufReader::new((&mut stream).take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return write(&mut stream, &Response::error(format!("bad request: {e}"))).await,
    };
    if let Request::Flows {
        follow: true,
        verdict,
        service,
        ..
    } = &request
    {
        return follow(&agent, stream, *verdict, service.clone()).await;
    }
    let response = dispatch(agent, request)
        .await
        .unwrap_or_else(|e| Response::error(format!("{e:#}")));
    write(&mut stream, &response).await
}

/// Changes go to the owner; reads are answered from the published snapshot, off the runtime's
/// workers (`explain` and `stats` do real work).
async fn dispatch(agent: Arc<Agent>, request: Request) -> Result<Response<Reply>> {
    Ok(match request {
        Request::Apply {
            source,
            yaml,
            dry_run,
        } => Response::ok(Reply::Applied(agent.apply(source, yaml, dry_run).await?)),
        Request::Delete {
            name,
            kind,
            namespace,
        } => Response::ok(Reply::Applied(agent.delete(&name, kind, namespace).await?)),
        Request::EndpointAdd(endpoint) => Response::ok(Reply::Endpoint(
            agent
                .ask(|reply| Command::RegisterEndpoint { endpoint, reply })
                .await?,
        )),
        Request::EndpointDel { container_id } => Response::ok(Reply::Generation(
            agent
                .ask(|reply| Command::UnregisterEndpoint {
                    container_id,
                    reply,
                })
                .await?,
        )),
        Request::EndpointCheck { container_id } => Response::ok(Reply::Endpoint(
            agent
                .ask(|reply| Command::CheckEndpoint {
                    container_id,
                    reply,
                })
                .await?,
        )),
        read => tokio::task::spawn_blocking(move || query(&agent, read))
            .await
            .map_err(|e| anyhow!("internal error: {e}"))??,
    })
}

/// A request that only reads.
fn query(agent: &Agent, request: Request) -> Result<Response<Reply>> {
    Ok(match request {
        Request::Apply { .. }
        | Request::Delete { .. }
        | Request::EndpointAdd(_)
        | Request::EndpointDel { .. }
        | Request::EndpointCheck { .. } => bail!("not a query"),
        Request::Get { name } => {
            let snapshot = agent.snapshot();
            let docs: Vec<_> = snapshot
                .set
                .documents()
                .into_iter()
                .filter(|d| {
                    name.as_deref()
                        .is_none_or(|n| d.name() == n || d.key().to_string() == n)
                })
                .collect();
            if let (Some(n), true) = (&name, docs.is_empty()) {
                bail!("no document named {n:?}");
            }
            Response::ok(Reply::Documents(docs))
        }
        Request::Status => Response::ok(Reply::Status(Box::new(agent.status()))),
        Request::Stats => Response::ok(Reply::Stats(stats(agent)?)),
        Request::Explain {
            from,
            to,
            protocol,
            port,
        } => {
            let s = agent.snapshot();
            let (src, dst) = crate::policy::resolve::flow_ends(&s.set, &s.ctx, &from, &to)
                .map_err(|e| anyhow!(e))?;
            let flow = flow_of(src, dst, protocol, port)?;
            Response::ok(Reply::Explanation(explain(&s.set, &s.ctx, &flow)))
        }
        Request::Flows {
            verdict,
            service,
            limit,
            ..
        } => {
            let mut flows: Vec<FlowEvent> = agent
                .events
                .history()
                .into_iter()
                .filter(|e| matches_filter(e, verdict, service.as_deref()))
                .collect();
            if let Some(n) = limit {
                let skip = flows.len().saturating_sub(n);
                flows.drain(..skip);
            }
            Response::ok(Reply::Flows(flows))
        }
    })
}

/// A flow for `explain` from CLI words: protocol name, and port (ICMP: the echo request type).
pub fn flow_of(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    p: crate::policy::Protocol,
    port: Option<u16>,
) -> Result<Flow> {
    let v6 = dst.is_ipv6();
    if src.is_ipv6() != v6 {
        bail!("{src} and {dst} are of different address families");
    }
    let port = if p.has_ports() {
        port.ok_or_else(|| anyhow!("--port is required for {p}"))?
    } else {
        u16::from(enforcer_common::icmp::echo_request(v6))
    };
    Ok(Flow {
        src,
        dst,
        protocol: p.number(v6),
        port,
    })
}

fn matches_filter(e: &FlowEvent, verdict: Option<Verdict>, service: Option<&str>) -> bool {
    let v_ok = verdict.is_none_or(|v| e.verdict == v);
    let s_ok = service.is_none_or(|s| e.src_identity == s || e.dst_identity == s);
    v_ok && s_ok
}

async fn follow(
    agent: &Agent,
    mut stream: UnixStream,
    verdict: Option<Verdict>,
    service: Option<String>,
) -> Result<()> {
    let mut rx = agent.events.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) if matches_filter(&e, verdict, service.as_deref()) => {
                if write(&mut stream, &Response::ok(Reply::Flow(Box::new(e))))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Counters by (direction, verdict, reason) and by rule.
pub fn stats(agent: &Agent) -> Result<Stats> {
    let packets = agent
        .counters
        .packets()?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| crate::api::Counter {
            direction: c.direction,
            verdict: c.verdict,
            reason: c.reason,
            packets: n,
        })
        .collect();
    let (rules, seen, policies_first_seen) = agent.observe_usage()?;
    let rules = rules
        .into_iter()
        .zip(seen)
        .map(|((rule, packets), seen)| crate::api::RuleCounter {
            verdict: rule.verdict(),
            rule,
            packets,
            first_seen: Some(seen.first_seen),
            last_matched: seen.last_matched,
        })
        .collect();
    Ok(Stats {
        packets,
        rules,
        events_lost: agent.counters.events_lost(),
        policies_first_seen,
    })
}
