//! The end-to-end tests' usual bed: one node `n1` running a real agent, pods web-0 (10.10.1.10)
//! and api-0 (10.10.2.10, TCP echo servers on 8080 and 9090), their Workloads applied, and the
//! real CLI to drive it.

use std::{net::IpAddr, process::Output, time::Duration};

use anyhow::Result;

use crate::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    fixtures::WEB_API_WORKLOADS,
    probe_tcp, spawn_tcp_echo, ProbeOptions, StreamOptions, TcpEchoServer, TcpEchoStream, Topology,
    ANY,
};

/// Node `n1` with pods web-0 (10.10.1.10) and api-0 (10.10.2.10), the addresses of
/// [`WEB_API_WORKLOADS`]; no agent, no servers.
pub fn web_api_topology() -> Result<Topology> {
    Topology::builder()
        .pod("web-0", "n1", &[ip("10.10.1.10")?])
        .pod("api-0", "n1", &[ip("10.10.2.10")?])
        .build()
}

/// [`web_api_topology`], a work directory and a real agent on `n1`; no servers, nothing
/// applied.
pub struct WebApi {
    pub topo: Topology,
    pub work: WorkDir,
    pub agent: AgentProcess,
    pub web_ns: String,
    pub api_ns: String,
}

impl WebApi {
    /// Build it (`tag` names the work directory); `extra` are more `enforcer agent` flags.
    pub fn start(tag: &str, extra: &[&str]) -> Result<WebApi> {
        Self::start_on(web_api_topology()?, tag, extra)
    }

    /// As [`WebApi::start`], on a topology the test prepared.
    pub fn start_on(topo: Topology, tag: &str, extra: &[&str]) -> Result<WebApi> {
        let work = WorkDir::new(tag)?;
        let agent = AgentProcess::start(&topo, "n1", &work.0, extra)?;
        let web_ns = topo.pod_netns("web-0")?.to_string();
        let api_ns = topo.pod_netns("api-0")?.to_string();
        Ok(WebApi {
            topo,
            work,
            agent,
            web_ns,
            api_ns,
        })
    }
}

/// One node with an agent, web-0 and api-0.
pub struct OneNode {
    pub topo: Topology,
    pub work: WorkDir,
    pub agent: AgentProcess,
    pub web_ns: String,
    _servers: Vec<TcpEchoServer>,
}

fn ip(s: &str) -> Result<IpAddr> {
    Ok(s.parse()?)
}

impl OneNode {
    /// Build it (`tag` names the work directory); `extra` are more `enforcer agent` flags.
    pub fn start(tag: &str, extra: &[&str]) -> Result<OneNode> {
        Self::start_on(web_api_topology()?, tag, extra)
    }

    /// The topology alone (node n1, pods web-0 and api-0), for a test that prepares the node
    /// before the agent starts ([`OneNode::start_on`]).
    pub fn topology() -> Result<Topology> {
        web_api_topology()
    }

    /// As [`OneNode::start`], on a topology built by [`OneNode::topology`].
    pub fn start_on(topo: Topology, tag: &str, extra: &[&str]) -> Result<OneNode> {
        let WebApi {
            topo,
            work,
            agent,
            web_ns,
            api_ns,
        } = WebApi::start_on(topo, tag, extra)?;
        let servers = vec![
            spawn_tcp_echo(&api_ns, ANY, 8080)?,
            spawn_tcp_echo(&api_ns, ANY, 9090)?,
        ];
        agent.apply("workloads.yaml", WEB_API_WORKLOADS)?;
        Ok(OneNode {
            topo,
            work,
            agent,
            web_ns,
            _servers: servers,
        })
    }

    /// Run the real CLI against the agent (in the node's namespace, with `--socket`).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let bin = enforcer_bin()?;
        let mut cmd = self
            .topo
            .node_command("n1", bin.to_str().unwrap_or("enforcer"))?;
        cmd.arg("--socket").arg(&self.agent.socket).args(args);
        Ok(cmd.output()?)
    }

    /// Write `text` to `name` in the work directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<String> {
        let p = self.work.0.join(name);
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    }

    /// An allowed connection web-0 → api-0:8080 streaming echo round trips every 20 ms; a round
    /// trip slower than `timeout` ends it.
    pub fn stream_to_api(&self, timeout: Duration) -> Result<TcpEchoStream> {
        TcpEchoStream::start(
            &self.web_ns,
            "10.10.2.10:8080".parse()?,
            &StreamOptions {
                interval: Duration::from_millis(20),
                timeout,
                source: None,
            },
        )
    }

    /// Whether web-0 gets an echo from api-0 on `port`.
    pub fn reaches(&self, port: u16) -> Result<bool> {
        let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
        Ok(probe_tcp(&self.web_ns, format!("10.10.2.10:{port}").parse()?, &opts)?.is_answered())
    }
}

/// stdout and stderr of a command, together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
