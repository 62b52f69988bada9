//! What the agent reads from the node's network namespace: interfaces (via `if_nameindex`, which
//! asks the kernel of the *current* namespace — `/sys/class/net` would show the namespace sysfs
//! was mounted in), addresses and routes (via iproute2's JSON output).

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CStr,
    net::IpAddr,
    process::Command,
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("running `{command}`: {message}")]
    Command { command: String, message: String },
    #[error("parsing the output of `{command}`: {source}")]
    Json {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Interfaces of the current network namespace: name → ifindex.
pub fn interfaces() -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.insert(name, (*p).if_index);
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Whether `name` matches a shell-style glob (`*` and `?`).
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match (g.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&g[1..], n) || (!n.is_empty() && go(g, &n[1..])),
            (Some(b'?'), Some(_)) => go(&g[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &n[1..]),
            _ => false,
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

fn ip_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<T, NodeError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NodeError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NodeError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|source| NodeError::Json { command, source })
}

#[derive(Deserialize)]
struct IpLink {
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    local: Option<IpAddr>,
}

/// Every address configured in the current network namespace (rule 1: identity `host`).
pub fn host_addresses() -> Result<BTreeSet<IpAddr>, NodeError> {
    let links: Vec<IpLink> = ip_json(&["-j", "addr", "show"])?;
    Ok(links
        .iter()
        .flat_map(|l| l.addr_info.iter().filter_map(|a| a.local))
        .collect())
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    dev: Option<String>,
    gateway: Option<String>,
}

/// Host routes (`/32`, `/128`) without a gateway: address → device. This is how a CNI wires
/// pods (Calico-style), and so how the agent finds which pod sits behind which interface.
pub fn host_routes() -> Result<BTreeMap<IpAddr, String>, NodeError> {
    let mut out = BTreeMap::new();
    for family in ["-4", "-6"] {
        let routes: Vec<IpRoute> = ip_json(&[family, "-j", "route", "show"])?;
        for r in routes {
            let Some(dev) = r.dev else { continue };
            if r.gateway.is_some() {
                continue;
            }
            let dst = r.dst.trim_end_matches("/32").trim_end_matches("/128");
            if let Ok(addr) = dst.parse::<IpAddr>() {
                out.insert(addr, dev);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("ep*", "ep1234"));
        assert!(glob_match("ep*", "ep"));
        assert!(!glob_match("ep*", "eth0"));
        assert!(glob_match("cali?x*", "cali1xyz"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("veth", "veth0"));
    }
}
