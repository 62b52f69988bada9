//! The agent's policy state: documents from the policy directory and from the CLI, merged into
//! the set in force; persisted so a restarted agent comes back with the same policy.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::policy::{parse::parse_documents, Document, NodeContext, PolicyErrors, PolicySet};

/// Documents by source.
#[derive(Debug, Default, Clone)]
pub struct Documents {
    /// From `--policy-dir`: (kind, name) → (file, document).
    pub dir: DirDocuments,
    /// Fingerprint of the directory's files at the last read.
    pub dir_fingerprint: u64,
    /// Applied with the CLI (persisted in the state dir).
    pub cli: PolicySet,
}

impl Documents {
    /// The set in force: the directory's documents, then the CLI's (a name the directory
    /// defines cannot be applied with the CLI, so they do not collide).
    pub fn merged(&self, cli: &PolicySet) -> Result<PolicySet, PolicyErrors> {
        let mut docs: Vec<Document> = self.dir.values().map(|(_, d)| d.clone()).collect();
        docs.extend(cli.documents().into_iter().filter(|d| {
            !self
                .dir
                .contains_key(&(d.kind().to_string(), d.name().to_string()))
        }));
        PolicySet::from_documents(docs)
    }

    /// The policy-dir file defining (kind, name), if any.
    pub fn dir_file(&self, kind: &str, name: &str) -> Option<&Path> {
        self.dir
            .get(&(kind.to_string(), name.to_string()))
            .map(|(p, _)| p.as_path())
    }
}

/// Every `*.yaml`/`*.yml` file of a policy directory (following symlinks, as a `ConfigMap` mount
/// swaps its `..data` link atomically), sorted, with a fingerprint of their contents.
pub fn read_policy_dir(dir: &Path) -> Result<(Vec<(PathBuf, String)>, u64)> {
    let mut files = Vec::new();
    let entries =
        fs::read_dir(dir).with_context(|| format!("reading policy dir {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let yaml = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if name.starts_with('.') || !yaml || !path.is_file() {
            continue;
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push((path, text));
    }
    files.sort();
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    Ok((files, h.finish()))
}

/// Documents of the policy directory: (kind, name) → (file, document).
pub type DirDocuments = BTreeMap<(String, String), (PathBuf, Document)>;

/// Parse a policy directory's files; all of them or nothing.
pub fn parse_policy_dir(files: &[(PathBuf, String)]) -> Result<DirDocuments, PolicyErrors> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        match parse_documents(&path.display().to_string(), text) {
            Ok(docs) => {
                for d in docs {
                    out.insert(
                        (d.kind().to_string(), d.name().to_string()),
                        (path.clone(), d),
                    );
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// What the state dir remembers about the last install.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installed {
    pub generation: u64,
    pub digest: u64,
}

/// Files of the state dir.
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    fn applied(&self) -> PathBuf {
        self.dir.join("applied.yaml")
    }

    fn installed(&self) -> PathBuf {
        self.dir.join("installed.json")
    }

    /// The documents applied with the CLI before a restart.
    pub fn load_applied(&self) -> Result<PolicySet> {
        let path = self.applied();
        if !path.exists() {
            return Ok(PolicySet::new());
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let docs = parse_documents(&path.display().to_string(), &text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        PolicySet::from_documents(docs).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn save_applied(&self, set: &PolicySet) -> Result<()> {
        let yaml = Document::to_yaml_stream(&set.documents())?;
        write_atomic(&self.applied(), yaml.as_bytes())
    }

    pub fn load_installed(&self) -> Installed {
        fs::read(self.installed())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_installed(&self, installed: &Installed) -> Result<()> {
        write_atomic(&self.installed(), &serde_json::to_vec(installed)?)
    }
}

/// Write via a temporary file and rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// A digest of everything compiling depends on: the documents (without their source
/// positions, so a restart that re-reads them from the state dir matches), the node context
/// and the endpoints.
pub fn digest(set: &PolicySet, ctx: &NodeContext, endpoints: &BTreeSet<(u32, IpAddr)>) -> u64 {
    let mut h = DefaultHasher::new();
    // A new release may compile the same documents differently.
    env!("CARGO_PKG_VERSION").hash(&mut h);
    for d in set.documents() {
        format!("{:?}", d.without_positions()).hash(&mut h);
    }
    ctx.host_addresses.hash(&mut h);
    ctx.local_addresses.hash(&mut h);
    endpoints.hash(&mut h);
    h.finish()
}

/// Endpoints (pod interface, address) and local addresses of the workloads routed to one of
/// our pod interfaces.
pub fn local_endpoints(
    set: &PolicySet,
    routes: &BTreeMap<IpAddr, String>,
    pod_ifaces: &HashMap<String, u32, impl std::hash::BuildHasher>,
) -> (BTreeSet<(u32, IpAddr)>, BTreeSet<IpAddr>) {
    let mut endpoints = BTreeSet::new();
    let mut local = BTreeSet::new();
    for w in set.workloads.values() {
        for a in &w.addresses {
            if let Some(ifindex) = routes.get(a).and_then(|dev| pod_ifaces.get(dev)) {
                endpoints.insert((*ifindex, *a));
                local.insert(*a);
            }
        }
    }
    (endpoints, local)
}

/// The node context for compiling: host addresses and local workload addresses.
pub fn node_context(host: BTreeSet<IpAddr>, local: BTreeSet<IpAddr>) -> NodeContext {
    NodeContext {
        host_addresses: host,
        local_addresses: local,
    }
}
