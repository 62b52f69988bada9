//! Shared by the security tests: one node with pods web-0 and api-0 (echo servers on 8080 and
//! 9090), a real agent, probes, and a small HTTP client for the agent's listener.
#![allow(dead_code, unused_imports)]

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};
pub use enforcer_tests::fixtures::{
    API_INGRESS_TCP_8080 as POLICY, BAD_PORT_POLICY as BAD_POLICY, WEB_API_WORKLOADS as WORKLOADS,
};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess, WorkDir},
    one_node::web_api_topology,
    probe_tcp, spawn_tcp_echo, ProbeOptions, TcpEchoServer, Topology, ANY,
};

/// Where the test agents serve HTTP inside their node namespace (see `AgentProcess`).
pub const METRICS: &str = "127.0.0.1:9963";

pub struct Env {
    pub topo: Topology,
    pub work: WorkDir,
    pub agent: AgentProcess,
    pub web_ns: String,
    pub node_ns: String,
    /// The policy directory, if the agent has one.
    pub dir: PathBuf,
    _servers: Vec<TcpEchoServer>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

impl Env {
    /// web-0 and api-0 on n1; the agent has the workloads applied with the CLI.
    pub fn new(tag: &str) -> Result<Env> {
        let e = Self::start(tag, &[], &[])?;
        e.agent.apply("workloads.yaml", WORKLOADS)?;
        Ok(e)
    }

    /// As [`Env::new`], with the policy applied and enforced: web → api:8080 allowed, 9090 denied.
    pub fn enforcing(tag: &str) -> Result<Env> {
        let e = Self::new(tag)?;
        e.agent.apply("policy.yaml", POLICY)?;
        e.denied_with_drop_evidence()?;
        Ok(e)
    }

    /// The agent reads `files` from a policy directory.
    pub fn with_policy_dir(tag: &str, files: &[(&str, &str)]) -> Result<Env> {
        Self::start(tag, files, &[])
    }

    pub fn start(tag: &str, files: &[(&str, &str)], extra: &[&str]) -> Result<Env> {
        let topo = web_api_topology()?;
        let work = WorkDir::new(tag)?;
        let dir = work.0.join("policies");
        let mut extra: Vec<String> = extra.iter().map(ToString::to_string).collect();
        if !files.is_empty() {
            std::fs::create_dir_all(&dir)?;
            for (name, text) in files {
                std::fs::write(dir.join(name), text)?;
            }
            extra.extend(["--policy-dir".to_string(), dir.display().to_string()]);
        }
        let args: Vec<&str> = extra.iter().map(String::as_str).collect();
        let agent = AgentProcess::start(&topo, "n1", &work.0, &args)?;
        let api_ns = topo.pod_netns("api-0")?.to_string();
        let servers = vec![
            spawn_tcp_echo(&api_ns, ANY, 8080)?,
            spawn_tcp_echo(&api_ns, ANY, 9090)?,
        ];
        Ok(Env {
            web_ns: topo.pod_netns("web-0")?.to_string(),
            node_ns: topo.node_netns("n1")?.to_string(),
            topo,
            work,
            agent,
            dir,
            _servers: servers,
        })
    }

    /// Start the agent again (same flags, pins and state); it must answer its socket.
    pub fn restart(&mut self, more: &[&str]) -> Result<()> {
        // `AgentProcess::restart` reuses the flags the agent was started with.
        self.agent.restart(&self.topo, more)
    }

    /// Run the real CLI against the agent.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let bin = enforcer_bin()?;
        let mut cmd = self
            .topo
            .node_command("n1", bin.to_str().unwrap_or("enforcer"))?;
        cmd.arg("--socket").arg(&self.agent.socket).args(args);
        Ok(cmd.output()?)
    }

    /// Whether web-0 gets an answer from api-0 on `port`.
    pub fn reaches(&self, port: u16) -> Result<bool> {
        let opts = ProbeOptions::with_timeout(Duration::from_millis(700));
        Ok(probe_tcp(&self.web_ns, format!("10.10.2.10:{port}").parse()?, &opts)?.is_answered())
    }

    /// The allowed flow (web → api:8080) answers.
    pub fn allowed(&self) -> Result<bool> {
        self.reaches(8080)
    }

    /// The denied flow (web → api:9090) gets no answer *and* the datapath counted the drop (so
    /// the silence is the policy, not a dead server: 9090 has an echo server).
    pub fn denied_with_drop_evidence(&self) -> Result<()> {
        let before = self.agent.packets("denied")?;
        ensure!(!self.reaches(9090)?, "the denied flow got an answer");
        let after = self.agent.packets("denied")?;
        ensure!(
            after > before,
            "no drop counted for the denied flow ({before} → {after})"
        );
        Ok(())
    }
}

/// Poll `check` until it holds or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => last = None,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match last {
        Some(e) => bail!("{what}: not within {timeout:?}: {e:#}"),
        None => bail!("{what}: not within {timeout:?}"),
    }
}

/// `GET path` on the agent's listener inside `ns`: (status, body).
pub fn http_get(ns: &str, path: &str) -> Result<(u16, String)> {
    enforcer_tests::http_get(ns, METRICS, path)
}
