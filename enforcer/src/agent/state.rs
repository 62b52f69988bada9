//! The agent's policy state: documents from the policy directory and from the CLI, merged into
//! the set in force; persisted so a restarted agent comes back with the same policy.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    fs,
    hash::{DefaultHasher, Hash, Hasher},
    io::{Read, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use tracing::warn;

use crate::policy::{
    document::Kind,
    parse::parse_documents,
    set::{duplicate_error, slot},
    Document, NodeContext, ObjectKey, PolicyErrors, PolicySet, Source,
};

/// Documents by source.
#[derive(Debug, Default, Clone)]
pub struct Documents {
    /// From `--policy-dir`: (kind, name) → (file, document).
    pub dir: DirDocuments,
    /// Fingerprint of the directory's files at the last read.
    pub dir_fingerprint: u64,
    /// The files `dir` was parsed from (saved as the last good copy after an install).
    pub dir_files: Vec<(PathBuf, String)>,
    /// Whether the state dir holds `dir_files` as the last good copy.
    pub dir_saved: bool,
    /// Applied with the CLI (persisted in the state dir).
    pub cli: PolicySet,
    /// From the Kubernetes API (`--kubernetes`): Pods, Namespaces, `NetworkPolicies`, and the
    /// enforcer CRDs as `FlowPolicies`.
    pub cluster: Vec<Document>,
    /// Which labels name a pod's service in the merged set (`--service-label`).
    pub service_labels: crate::policy::identity::ServiceLabels,
}

impl Documents {
    /// The set in force: the directory's documents, then the CLI's, then the cluster's. A
    /// Workload and a Pod of one namespace and name are one endpoint (one name space): the
    /// directory wins over the CLI (which cannot apply a name the directory defines, see
    /// [`Documents::dir_file`]) and both win over the cluster; a document left out for that is
    /// logged as a warning naming both locations.
    pub fn merged(&self, cli: &PolicySet) -> Result<PolicySet, PolicyErrors> {
        let mut docs: Vec<Document> = self.dir.values().map(|(_, d)| d.clone()).collect();
        let mut taken: HashMap<(Kind, ObjectKey), Source> =
            docs.iter().map(|d| (slot(d), d.source().clone())).collect();
        for d in cli
            .documents()
            .into_iter()
            .chain(self.cluster.iter().cloned())
        {
            if let Some(winner) = taken.get(&slot(&d)) {
                warn!(
                    "{} {:?} ({}) is left out: {winner} defines the same name",
                    d.kind(),
                    d.key().to_string(),
                    d.source()
                );
                continue;
            }
            taken.insert(slot(&d), d.source().clone());
            docs.push(d);
        }
        PolicySet::from_documents(docs)?.with_service_labels(self.service_labels.clone())
    }

    /// Take the documents of a policy directory that parsed.
    pub fn set_dir(&mut self, files: Vec<(PathBuf, String)>, parsed: DirDocuments) {
        self.dir = parsed;
        self.dir_files = files;
        self.dir_saved = false;
    }

    /// The policy-dir file defining `doc`'s name (a Workload and a Pod of one namespace and
    /// name are one endpoint), if any.
    pub fn dir_file(&self, doc: &Document) -> Option<&Path> {
        let key = doc.key().to_string();
        let kinds: &[&str] = match slot(doc).0 {
            Kind::Workload => &[crate::policy::KIND_WORKLOAD, crate::policy::k8s::KIND_POD],
            _ => &[doc.kind()],
        };
        kinds
            .iter()
            .find_map(|k| self.dir.get(&((*k).to_string(), key.clone())))
            .map(|(p, _)| p.as_path())
    }
}

/// Every `*.yaml`/`*.yml` file of a policy directory (following symlinks, as a `ConfigMap` mount
/// swaps its `..data` link atomically), sorted, with a fingerprint of their contents. The
/// directory and each file must be trusted ([`super::trust`]): one that is not refuses the whole
/// directory.
pub fn read_policy_dir(dir: &Path) -> Result<(Vec<(PathBuf, String)>, u64)> {
    let real = super::trust::check_dir(dir)?;
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
        super::trust::check_file(&path, &real)?;
        let text = read_bounded(&path, crate::policy::yaml::MAX_INPUT_BYTES as u64)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .unwrap_or_default();
        files.push((path, text));
    }
    files.sort();
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    Ok((files, h.finish()))
}

/// A policy directory read and parsed.
pub struct DirRead {
    /// Of the files read (0 if the directory could not be read).
    pub fingerprint: u64,
    /// The files and their documents, or why the directory is rejected.
    pub parsed: Result<(Vec<(PathBuf, String)>, DirDocuments), String>,
}

/// Read and parse a policy directory; every failure is a message naming the file.
pub fn read_and_parse_dir(dir: &Path) -> DirRead {
    match read_policy_dir(dir) {
        Ok((files, fingerprint)) => DirRead {
            fingerprint,
            parsed: parse_policy_dir(&files)
                .map(|parsed| (files, parsed))
                .map_err(|e| e.to_string()),
        },
        Err(e) => DirRead {
            fingerprint: 0,
            parsed: Err(format!("{e:#}")),
        },
    }
}

/// Documents of the policy directory: (kind, `NAMESPACE/NAME` or `NAME`) → (file, document).
pub type DirDocuments = BTreeMap<(String, String), (PathBuf, Document)>;

/// Parse a policy directory's files; all of them or nothing. A name defined twice (one kind,
/// namespace and name; a Workload and a Pod share one name space), in one file or two, is an
/// error naming both places: no file silently wins.
pub fn parse_policy_dir(files: &[(PathBuf, String)]) -> Result<DirDocuments, PolicyErrors> {
    let mut out = BTreeMap::new();
    let mut first: HashMap<(Kind, ObjectKey), Source> = HashMap::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        match parse_documents(&path.display().to_string(), text) {
            Ok(docs) => {
                for d in docs {
                    if let Some(at) = first.get(&slot(&d)) {
                        errors.push(duplicate_error(&d, at));
                        continue;
                    }
                    first.insert(slot(&d), d.source().clone());
                    out.insert(
                        (d.kind().to_string(), d.key().to_string()),
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

/// The files of the policy directory as they were at the last install that succeeded: what a
/// restart falls back to when the directory has become invalid meanwhile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirSnapshot {
    pub files: Vec<(PathBuf, String)>,
}

/// A state file that could not be used: moved aside (`<name>.corrupt-<unix seconds>`) so the
/// agent starts, and reported.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub file: PathBuf,
    pub moved_to: Option<PathBuf>,
    pub reason: String,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.moved_to {
            Some(to) => write!(f, "{} (moved to {})", self.reason, to.display()),
            None => write!(f, "{} (could not be moved aside)", self.reason),
        }
    }
}

/// What loading a state file gives.
pub enum Loaded<T> {
    /// No such file (a first start).
    Missing,
    Valid(T),
    Quarantined(Quarantined),
}

/// The first line of `applied.yaml` (files of older versions lack it).
const APPLIED_HEADER: &str = "# enforcer: applied documents, ends with their count";
/// The last line of `applied.yaml`: a file cut short lacks it.
const APPLIED_TRAILER: &str = "# enforcer: end of applied documents, count ";

/// The largest state file the agent reads.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// Files of the state dir (mode 0700; files 0600: they hold policy and workload addresses).
pub struct StateDir {
    pub dir: PathBuf,
    /// The YAML of each CLI document last saved, with the document it was written from: a
    /// save serializes only the documents that changed since (a one-Pod relabel among 10 000
    /// Pods re-serializes one document, not 10 000).
    applied_yaml: HashMap<(Kind, ObjectKey), (Document, String)>,
}

impl StateDir {
    pub fn new(dir: PathBuf) -> StateDir {
        StateDir {
            dir,
            applied_yaml: HashMap::new(),
        }
    }

    pub const APPLIED: &'static str = "applied.yaml";
    pub const INSTALLED: &'static str = "installed.json";
    pub const POLICY_DIR: &'static str = "policy-dir.json";
    /// The pod interfaces registered by the CNI plugin (`agent/endpoints.rs`).
    pub const ENDPOINTS: &'static str = "endpoints.json";

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Read a state file and check it with `parse`; a file that fails is quarantined.
    fn load<T>(&self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Loaded<T> {
        let path = self.path(name);
        let text = match read_bounded(&path, MAX_STATE_BYTES) {
            Ok(None) => return Loaded::Missing,
            Ok(Some(text)) => parse(&text),
            Err(e) => Err(e),
        };
        match text {
            Ok(v) => Loaded::Valid(v),
            Err(reason) => Loaded::Quarantined(quarantine(&path, reason)),
        }
    }

    /// The documents applied with the CLI before a restart.
    pub fn load_applied(&self) -> Loaded<PolicySet> {
        let file = self.path(Self::APPLIED).display().to_string();
        self.load(Self::APPLIED, |text| parse_applied(&file, text))
    }

    /// Writes the CLI documents (durably): the same text as `Document::to_yaml_stream`, with
    /// the YAML of unchanged documents reused from the previous save.
    pub fn save_applied(&mut self, set: &PolicySet) -> Result<()> {
        let docs = set.documents();
        let count = docs.len();
        let mut previous = std::mem::take(&mut self.applied_yaml);
        let mut yaml = format!("{APPLIED_HEADER}\n");
        for (i, doc) in docs.into_iter().enumerate() {
            let key = slot(&doc);
            let text = match previous.remove(&key) {
                Some((old, text)) if old == doc => text,
                _ => doc.to_yaml()?,
            };
            if i > 0 {
                yaml.push_str("---\n");
            }
            yaml.push_str(&text);
            self.applied_yaml.insert(key, (doc, text));
        }
        if !yaml.ends_with('\n') {
            yaml.push('\n');
        }
        let _ = writeln!(yaml, "{APPLIED_TRAILER}{count}");
        let written = write_durable(&self.path(Self::APPLIED), yaml.as_bytes());
        if written.is_err() {
            // What is on disk is unknown: serialize everything next time.
            self.applied_yaml.clear();
        }
        written
    }

    pub fn load_installed(&self) -> Loaded<Installed> {
        self.load(Self::INSTALLED, |text| {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
        })
    }

    pub fn save_installed(&self, installed: &Installed) -> Result<()> {
        write_durable(&self.path(Self::INSTALLED), &serde_json::to_vec(installed)?)
    }

    pub fn load_dir_snapshot(&self) -> Loaded<DirSnapshot> {
        self.load(Self::POLICY_DIR, |text| {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
        })
    }

    pub fn save_dir_snapshot(&self, snapshot: &DirSnapshot) -> Result<()> {
        write_durable(&self.path(Self::POLICY_DIR), &serde_json::to_vec(snapshot)?)
    }

    pub fn load_endpoints(&self) -> Loaded<Vec<super::endpoints::Registration>> {
        self.load(Self::ENDPOINTS, |text| {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
        })
    }

    pub fn save_endpoints(&self, registrations: &[super::endpoints::Registration]) -> Result<()> {
        write_durable(
            &self.path(Self::ENDPOINTS),
            &serde_json::to_vec(registrations)?,
        )
    }
}

/// `applied.yaml`: the header, the documents, then the trailer with their count. A file with
/// the header must end with the trailer (else it was cut short); a file without it (written by
/// an older version) is accepted if it holds documents; an empty one never is.
fn parse_applied(file: &str, text: &str) -> Result<PolicySet, String> {
    let trailer = text
        .trim_end()
        .rsplit_once('\n')
        .map_or(text.trim_end(), |(_, last)| last);
    let count = trailer
        .strip_prefix(APPLIED_TRAILER)
        .map(str::parse::<usize>);
    if count.is_none() && text.starts_with(APPLIED_HEADER) {
        return Err("cut short (no end marker)".into());
    }
    if count.is_none() && text.trim().is_empty() {
        return Err("empty file (no end marker)".into());
    }
    let docs = parse_documents(file, text).map_err(|e| e.to_string())?;
    match count {
        Some(Ok(n)) if n != docs.len() => {
            return Err(format!("{} documents, the end marker says {n}", docs.len()));
        }
        Some(Err(e)) => return Err(format!("bad end marker: {e}")),
        _ => {}
    }
    PolicySet::from_documents(docs).map_err(|e| e.to_string())
}

/// A file's text, `None` if it does not exist; an error if it is larger than `max` bytes or not
/// UTF-8.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<String>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("not UTF-8: {e}"))
}

/// Move a corrupt state file aside, keeping it for inspection.
fn quarantine(path: &Path, reason: String) -> Quarantined {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".corrupt-{stamp}"));
    let to = PathBuf::from(to);
    let moved_to = fs::rename(path, &to).ok().map(|()| to);
    Quarantined {
        file: path.to_path_buf(),
        moved_to,
        reason,
    }
}

/// Write `path` so that after a crash or power loss it holds either the old or the new content:
/// write a temporary file (0600), fsync it, rename it over `path`, fsync the directory.
pub fn write_durable(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
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
    let pods = set.pods.values().filter(|p| !p.host_network);
    let addresses = set
        .workloads
        .values()
        .flat_map(|w| &w.addresses)
        .chain(pods.flat_map(|p| &p.addresses));
    for a in addresses {
        if let Some(ifindex) = routes.get(a).and_then(|dev| pod_ifaces.get(dev)) {
            endpoints.insert((*ifindex, *a));
            local.insert(*a);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(file: &str, text: &str) -> Vec<Document> {
        parse_documents(file, text).expect("valid")
    }

    /// A save after a one-document change writes exactly what a first save of the same set
    /// writes (the YAML of unchanged documents is reused), and it loads back as that set.
    #[test]
    fn saving_after_a_change_writes_what_a_fresh_save_writes() {
        let pods = |label: &str| {
            let mut text = String::new();
            for i in 0..3 {
                let app = if i == 1 { label } else { "a" };
                let _ = write!(
                    text,
                    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: default, labels: {{app: {app}}}}}\nstatus: {{podIP: 10.0.0.{i}}}\n"
                );
            }
            text
        };
        let root = std::env::temp_dir().join(format!("enforcer-applied-{}", std::process::id()));
        let (cached, fresh) = (root.join("cached"), root.join("fresh"));
        let mut state = StateDir::new(cached.clone());
        let set = |text: &str| PolicySet::from_documents(docs("t.yaml", text)).expect("set");
        state.save_applied(&set(&pods("a"))).expect("save");
        let changed = set(&pods("b"));
        state.save_applied(&changed).expect("save");
        StateDir::new(fresh.clone())
            .save_applied(&changed)
            .expect("save");
        let read = |dir: &Path| std::fs::read_to_string(dir.join(StateDir::APPLIED)).expect("read");
        assert_eq!(read(&cached), read(&fresh));
        assert!(read(&cached).contains("app: b"));
        let Loaded::Valid(loaded) = state.load_applied() else {
            panic!("the saved file does not load");
        };
        assert_eq!(loaded.documents().len(), 3);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A Workload of the policy directory and a Pod of the same namespace and name are one
    /// endpoint: the CLI cannot apply the Pod (it is refused naming the directory's file), and a
    /// cluster Pod of that name is left out (the directory wins) instead of failing the set.
    #[test]
    fn a_pod_does_not_shadow_a_directory_workload() {
        let workload = "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-0}\nspec: {service: web, addresses: [10.0.0.1]}\n";
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: default, labels: {app: other}}\nstatus: {podIP: 10.0.0.9}\n";
        let file = PathBuf::from("/etc/enforcer/policies/web.yaml");
        let mut state = Documents::default();
        let dir = parse_policy_dir(&[(file.clone(), workload.to_string())]).expect("dir");
        state.set_dir(Vec::new(), dir);
        let pod = docs("kubectl.yaml", pod).remove(0);
        assert_eq!(state.dir_file(&pod), Some(file.as_path()));
        state.cluster = vec![pod];
        let set = state.merged(&PolicySet::new()).expect("the directory wins");
        assert_eq!(set.workloads.len(), 1);
        assert!(set.pods.is_empty());
    }

    /// Two files of the policy directory defining one name: an error naming both places (the
    /// last file does not silently win); a Workload and a Pod share one name space.
    #[test]
    fn a_name_defined_twice_in_the_policy_dir_is_an_error() {
        let policy = |service: &str| {
            format!("apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: p}}\nspec: {{service: {service}}}\n")
        };
        let a = PathBuf::from("/p/a.yaml");
        let b = PathBuf::from("/p/b.yaml");
        let errors = parse_policy_dir(&[
            (a.clone(), policy("web")),
            (b.clone(), format!("# other\n{}", policy("api"))),
        ])
        .expect_err("duplicate");
        assert_eq!(
            errors.to_string(),
            "/p/b.yaml:2: duplicate FlowPolicy name \"p\" (first defined at /p/a.yaml:1)"
        );
        let workload = "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-0}\nspec: {service: web, addresses: [10.0.0.1]}\n";
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: default}\n";
        let errors = parse_policy_dir(&[(a.clone(), workload.into()), (b.clone(), pod.into())])
            .expect_err("one endpoint name");
        assert!(
            errors
                .to_string()
                .contains("/p/b.yaml:1: duplicate Pod name")
                && errors
                    .to_string()
                    .contains("(first defined at /p/a.yaml:1)"),
            "{errors}"
        );
        // Other namespaces or kinds are other names.
        let other = policy("web").replace("{name: p}", "{name: p, namespace: team}");
        let dir = parse_policy_dir(&[(a, policy("web")), (b, other)]).expect("two names");
        assert_eq!(dir.len(), 2);
    }
}
