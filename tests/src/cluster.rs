//! A topology with a real `enforcer agent` running inside each node namespace, driven through
//! its API socket — what the live scenario runner and the end-to-end tests use.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use enforcer::{
    api::{ApplyResult, Request, Stats, Status},
    client,
};

use crate::Topology;

/// The `enforcer` binary: `$ENFORCER_BIN`, else `target/{debug,release}/enforcer` next to the
/// running test executable (built with `cargo build -p enforcer` if missing).
pub fn enforcer_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENFORCER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/test-xxxx or target/<profile>/scenario
    let mut dir = exe
        .parent()
        .context("test executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("enforcer");
    if !bin.exists() {
        let release = dir.ends_with("release");
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "enforcer"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build -p enforcer")?;
        if !status.success() {
            bail!("cargo build -p enforcer failed");
        }
    }
    Ok(bin)
}

/// How long an agent may take to answer after it starts: 60 s, or `$ENFORCER_AGENT_READY_SECS`
/// (the kernel matrix raises it: under qemu without KVM the verifier alone takes longer).
fn ready_timeout() -> Duration {
    std::env::var("ENFORCER_AGENT_READY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_mins(1), Duration::from_secs)
}

/// One agent process.
pub struct AgentProcess {
    pub node: String,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// The arguments after `enforcer agent`, kept for [`AgentProcess::restart`].
    args: Vec<String>,
    child: Option<Child>,
}

impl AgentProcess {
    /// Start `enforcer agent` in `node`'s namespace with the harness's flags (pod interface glob,
    /// uplink, socket, bpffs, state dir and metrics address, all under `work` or unique to the
    /// topology) and `extra`, and wait until it answers `status`. A flag given in `extra`
    /// replaces the harness's (e.g. `--uplink nosuch0`).
    pub fn start(topo: &Topology, node: &str, work: &Path, extra: &[&str]) -> Result<AgentProcess> {
        let mut a = Self::unstarted(topo, node, work);
        let defaults = [
            ("--interfaces", crate::HOST_IF_GLOB.to_string()),
            ("--uplink", crate::UPLINK_IFNAME.to_string()),
            ("--socket", a.socket.display().to_string()),
            ("--bpffs", a.bpffs.display().to_string()),
            ("--state-dir", a.state_dir.display().to_string()),
            ("--metrics-addr", "127.0.0.1:9963".to_string()),
        ];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                a.args.extend([flag.to_string(), value]);
            }
        }
        a.args.extend(extra.iter().map(ToString::to_string));
        if let Some(i) = extra.iter().position(|f| *f == "--socket") {
            a.socket = PathBuf::from(extra.get(i + 1).copied().unwrap_or_default());
        }
        if let Some(i) = extra.iter().position(|f| *f == "--bpffs") {
            a.bpffs = PathBuf::from(extra.get(i + 1).copied().unwrap_or_default());
        }
        a.spawn(topo)?;
        Ok(a)
    }

    /// Start `enforcer agent ARGS` exactly as given (for config-file tests): `socket` and
    /// `bpffs` are where `args` (or its config file) put them.
    pub fn start_raw(
        topo: &Topology,
        node: &str,
        work: &Path,
        args: &[&str],
        (socket, bpffs): (PathBuf, PathBuf),
    ) -> Result<AgentProcess> {
        let mut a = Self::unstarted(topo, node, work);
        a.args = args.iter().map(ToString::to_string).collect();
        a.socket = socket;
        a.bpffs = bpffs;
        a.spawn(topo)?;
        Ok(a)
    }

    /// The paths of an agent of `topo` on `node` under `work`, not started.
    fn unstarted(topo: &Topology, node: &str, work: &Path) -> AgentProcess {
        let tag = format!("{}-{node}", topo.prefix());
        AgentProcess {
            node: node.to_string(),
            socket: work.join(format!("{node}.sock")),
            bpffs: PathBuf::from("/sys/fs/bpf").join(format!("enforcer-test-{tag}")),
            state_dir: work.join(format!("{node}-state")),
            log: work.join(format!("{node}-agent.log")),
            args: Vec::new(),
            child: None,
        }
    }

    fn spawn(&mut self, topo: &Topology) -> Result<()> {
        let bin = enforcer_bin()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let bin = bin.to_str().context("binary path is not UTF-8")?;
        let mut cmd = topo.node_command(&self.node, bin)?;
        cmd.arg("agent")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting enforcer agent")?);
        self.wait_ready(ready_timeout())
    }

    /// Poll `status` until the agent answers.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if client::call::<Status>(&self.socket, &Request::Status).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "agent on {} exited ({status}):\n{}",
                        self.node,
                        self.log_tail()
                    );
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "agent on {} not ready after {timeout:?}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One request, its reply decoded as `T`.
    pub fn call<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T> {
        client::call(&self.socket, request).with_context(|| format!("agent on {}", self.node))
    }

    pub fn apply(&self, source: &str, yaml: &str) -> Result<ApplyResult> {
        self.call(&Request::Apply {
            source: source.into(),
            yaml: yaml.into(),
            dry_run: false,
        })
    }

    pub fn delete(&self, name: &str) -> Result<ApplyResult> {
        self.delete_matching(&enforcer::policy::set::Selector {
            name: name.into(),
            kind: None,
            namespace: None,
        })
    }

    /// `policy delete NAME [--kind KIND] [-n NAMESPACE]`.
    pub fn delete_matching(
        &self,
        selector: &enforcer::policy::set::Selector,
    ) -> Result<ApplyResult> {
        self.call(&Request::Delete {
            name: selector.name.clone(),
            kind: selector.kind,
            namespace: selector.namespace.clone(),
        })
    }

    pub fn status(&self) -> Result<Status> {
        self.call(&Request::Status)
    }

    pub fn stats(&self) -> Result<Stats> {
        self.call(&Request::Stats)
    }

    /// Packets counted with `verdict` (allowed, denied, audit) over every direction and reason.
    pub fn packets(&self, verdict: &str) -> Result<u64> {
        Ok(self
            .stats()?
            .packets
            .iter()
            .filter(|c| c.verdict.as_str() == verdict)
            .map(|c| c.packets)
            .sum())
    }

    /// SIGKILL the process (the pinned datapath stays).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGKILL, then start a new agent on the same pins and state, with the same arguments and
    /// `extra`.
    pub fn restart(&mut self, topo: &Topology, extra: &[&str]) -> Result<()> {
        self.kill()?;
        self.args.extend(extra.iter().map(ToString::to_string));
        self.spawn(topo)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.kill();
        // Remove the pins: detaches the datapath of this test.
        let _ = enforcer::datapath::unpin_all(&self.bpffs);
    }
}

/// A temporary work directory, removed on drop.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(tag: &str) -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("enforcer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os(crate::KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
