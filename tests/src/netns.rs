//! Network namespace primitives: entering a namespace on a dedicated thread, sysctls, commands run
//! inside a namespace, and cleanup.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::ip;

/// Directory where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Prefix of every namespace the harness creates.
pub const HARNESS_PREFIX: &str = "enf-";

/// Path of the handle of the named namespace (`/run/netns/NAME`).
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns` and returns its result.
///
/// The thread is never reused: it enters the namespace with `setns(2)`, runs `f` and exits, so the
/// calling thread and the rest of the process stay in their own namespace. Sockets created by `f` keep
/// belonging to `ns` after the thread exits, and threads spawned by `f` start inside `ns`.
pub fn run_in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let handle = spawn_in_netns(ns, f)?;
    handle
        .join()
        .map_err(|_| anyhow!("thread inside netns {ns} panicked"))?
}

/// Spawns a thread that enters the network namespace `ns` and then runs `f`.
///
/// The namespace handle is opened before the thread starts so a missing namespace is reported here;
/// failing to enter it is reported by the thread's result.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> Result<std::thread::JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = netns_path(ns);
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = ns.to_owned();
    std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            // SAFETY: plain syscall on a valid descriptor; it only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into netns {name}"));
            }
            drop(file);
            f()
        })
        .context("cannot spawn thread")
}

/// Writes sysctls inside namespace `ns`. Keys use slashes or dots relative to `/proc/sys`
/// (`net/ipv4/ip_forward` or `net.ipv4.ip_forward`; dotted keys must not contain interface names with
/// dots).
pub fn set_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    run_in_netns(ns, move || {
        for (key, value) in &settings {
            let rel = if key.contains('/') {
                key.clone()
            } else {
                key.replace('.', "/")
            };
            let path = PathBuf::from("/proc/sys").join(&rel);
            std::fs::write(&path, value)
                .with_context(|| format!("sysctl {} = {value:?}", path.display()))?;
        }
        Ok(())
    })
}

/// Reads a sysctl (same key forms as [`set_sysctls`]) inside namespace `ns`.
pub fn get_sysctl(ns: &str, key: &str) -> Result<String> {
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    run_in_netns(ns, move || {
        let path = PathBuf::from("/proc/sys").join(&rel);
        let value =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(value.trim().to_owned())
    })
}

/// Builds `nsenter --net=/run/netns/NS PROGRAM`: the program runs in the namespace's network stack but
/// keeps the caller's mounts (unlike `ip netns exec`, which remounts `/sys` and hides bpffs). Add
/// arguments with [`Command::arg`].
pub fn ns_command(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `PROGRAM ARGS...` inside namespace `ns` (via [`ns_command`]) and returns its stdout; a
/// non-zero exit status is an error with the command line and stderr.
pub fn ns_exec(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    crate::cmd::run_stdout(ns_command(ns, program).args(args))
}

/// Lists the names of all namespaces known to `ip netns`.
pub fn list_netns() -> Result<Vec<String>> {
    let out = ip(None, ["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Returns the PIDs of processes (other than this one) whose network namespace is `ns`.
pub fn netns_pids(ns: &str) -> Result<Vec<i32>> {
    let out = ip(None, ["netns", "pids", ns])?;
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| p != me)
        .collect())
}

/// Deletes namespace `ns` after killing (SIGKILL) every other process still running in it (an agent
/// started with [`ns_command`] whose test panicked, for instance). Interfaces in the namespace
/// disappear with it; veth peers in other namespaces go too.
pub fn delete_netns(ns: &str) -> Result<()> {
    if !netns_path(ns).exists() {
        return Ok(());
    }
    if let Ok(pids) = netns_pids(ns) {
        for pid in pids {
            // SAFETY: plain syscall; the pid was just found running inside our namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    ip(None, ["netns", "del", ns]).map(drop)
}

/// Deletes every namespace whose name starts with `prefix` (for instance [`HARNESS_PREFIX`]) and
/// returns their names. Meant for the start of a test run, to remove what a crashed run left behind;
/// it also deletes the namespaces of topologies running concurrently in other processes.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    if prefix.is_empty() {
        bail!("refusing to delete every namespace (empty prefix)");
    }
    let mut deleted = Vec::new();
    for ns in list_netns()? {
        if ns.starts_with(prefix) {
            delete_netns(&ns)?;
            deleted.push(ns);
        }
    }
    Ok(deleted)
}

/// Deletes the harness namespaces (`enf-<pid in hex>-...`) created by processes that no longer exist,
/// leaving those of live processes alone; safe to call while other test processes run.
pub fn cleanup_orphans() -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for ns in list_netns()? {
        let Some(rest) = ns.strip_prefix(HARNESS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|p| u32::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            delete_netns(&ns)?;
            deleted.push(ns);
        }
    }
    Ok(deleted)
}
