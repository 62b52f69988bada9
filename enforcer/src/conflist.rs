//! The node's CNI configuration list, edited to chain `enforcer-cni` after the CNI's own plugins
//! (`enforcer cni install`, run by the daemon set's init container; `enforcer cni uninstall`).
//!
//! The container runtime (containerd and CRI-O, through libcni) takes the first file of its
//! configuration directory, in lexical order, whose name ends in `.conf`, `.conflist` or `.json`:
//! that is the file edited here. It must be a configuration list (a `plugins` array) of a CNI
//! version `enforcer-cni` speaks; anything else is refused and the file is left as it was.
//!
//! The plugin entry is added once, at the end of `plugins` (after the plugin that creates the
//! pod's interface); an entry already there with the same settings means nothing is written.
//! A change is written to a temporary file in the same directory, synced, then renamed over the
//! original (atomic: the runtime reads the old or the new list, never half of one), keeping its
//! permissions. Keys are written in sorted order (`serde_json`'s map).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::SUPPORTED_VERSIONS;

/// The `type` of the plugin entry, and the name of the binary in the CNI bin directory.
pub const PLUGIN_TYPE: &str = "enforcer-cni";
/// The extensions libcni reads, as it reads them.
const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    #[error(
        "no CNI configuration in {0} yet (no *.conf, *.conflist or *.json file): the CNI has not \
         written its configuration; retry once it has"
    )]
    NoConfiguration(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not a CNI configuration list: {message}; left unchanged")]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{0}: a single-plugin configuration (no \"plugins\" list) cannot be chained; convert it \
         to a .conflist; left unchanged"
    )]
    NotAList(PathBuf),
    #[error(
        "{path}: cniVersion {version:?} cannot chain enforcer-cni (supported: \
         {SUPPORTED_VERSIONS:?}); left unchanged"
    )]
    Version { path: PathBuf, version: String },
}

/// A CNI configuration list: the fields read here, the rest kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflist {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub plugins: Vec<Plugin>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One plugin of the list: its type, and its settings kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: Map<String, Value>,
}

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// The entry was added (or its settings updated), and the file rewritten.
    Written,
    /// The file already said so: not written.
    Unchanged,
}

/// The enforcer-cni entry, with the agent's socket.
pub fn plugin(socket: &Path) -> Plugin {
    let mut settings = Map::new();
    settings.insert("socket".into(), Value::String(socket.display().to_string()));
    Plugin {
        kind: PLUGIN_TYPE.into(),
        settings,
    }
}

/// The configuration file the runtime uses: the first in lexical order with a libcni extension.
pub fn active(dir: &Path) -> Result<PathBuf, ConflistError> {
    let io = |source| ConflistError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| {
        p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
    });
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| ConflistError::NoConfiguration(dir.to_path_buf()))
}

/// Read and check `path`: a list, of a version enforcer-cni speaks.
pub fn read(path: &Path) -> Result<Conflist, ConflistError> {
    let text = fs::read_to_string(path).map_err(|source| ConflistError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| malformed(path, &e))?;
    if value.get("plugins").is_none() && value.get("type").is_some() {
        return Err(ConflistError::NotAList(path.to_path_buf()));
    }
    let list: Conflist = serde_json::from_str(&text).map_err(|e| malformed(path, &e))?;
    if !SUPPORTED_VERSIONS.contains(&list.cni_version.as_str()) {
        return Err(ConflistError::Version {
            path: path.to_path_buf(),
            version: list.cni_version,
        });
    }
    Ok(list)
}

fn malformed(path: &Path, e: &serde_json::Error) -> ConflistError {
    ConflistError::Malformed {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

impl Conflist {
    /// Chain `entry` at the end (once); an entry of its type is replaced in place when its
    /// settings differ. Returns whether the list changed.
    pub fn chain(&mut self, entry: Plugin) -> bool {
        match self.plugins.iter_mut().find(|p| p.kind == entry.kind) {
            Some(existing) if *existing == entry => false,
            Some(existing) => {
                *existing = entry;
                true
            }
            None => {
                self.plugins.push(entry);
                true
            }
        }
    }

    /// Remove every entry of type `kind`. Returns whether the list changed.
    pub fn unchain(&mut self, kind: &str) -> bool {
        let before = self.plugins.len();
        self.plugins.retain(|p| p.kind != kind);
        self.plugins.len() != before
    }
}

/// Chain `entry` into `path` (see the module's documentation).
pub fn install(path: &Path, entry: Plugin) -> Result<Edit, ConflistError> {
    let mut list = read(path)?;
    if !list.chain(entry) {
        return Ok(Edit::Unchanged);
    }
    write(path, &list)?;
    Ok(Edit::Written)
}

/// Remove the `enforcer-cni` entries from `path`.
pub fn uninstall(path: &Path) -> Result<Edit, ConflistError> {
    let mut list = read(path)?;
    if !list.unchain(PLUGIN_TYPE) {
        return Ok(Edit::Unchanged);
    }
    write(path, &list)?;
    Ok(Edit::Written)
}

/// Replace `path` with `list` atomically, keeping its permissions.
fn write(path: &Path, list: &Conflist) -> Result<(), ConflistError> {
    let mut text = serde_json::to_string_pretty(list).map_err(|e| malformed(path, &e))?;
    text.push('\n');
    replace_file(path, text.as_bytes(), 0o644)
}

/// Write `contents` to a temporary file beside `path` (a name libcni ignores), sync it, give it
/// `path`'s permissions (`mode` for a new file) and rename it over `path` (a process running the
/// old file keeps it).
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ConflistError> {
    let io = |source| ConflistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let permissions = fs::metadata(path).map_or_else(
        |_| std::os::unix::fs::PermissionsExt::from_mode(mode),
        |m| m.permissions(),
    );
    let mut tmp = tempfile::Builder::new()
        .prefix(".enforcer-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(contents).map_err(io)?;
    tmp.as_file().set_permissions(permissions).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "calico", "log_level": "info", "datastore_type": "kubernetes",
     "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
     "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}},
    {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
"#;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    fn socket() -> PathBuf {
        PathBuf::from("/run/enforcer/enforcer.sock")
    }

    #[test]
    fn the_runtime_s_file_is_the_first_by_name_with_a_cni_extension() {
        let dir = dir_with(&[
            ("99-loopback.conf", "{}"),
            ("10-calico.conflist", CALICO),
            ("05-notes.txt", "x"),
            ("calico-kubeconfig", "x"),
        ]);
        assert_eq!(
            active(dir.path()).expect("active"),
            dir.path().join("10-calico.conflist")
        );
        let empty = dir_with(&[("README", "x")]);
        assert!(matches!(
            active(empty.path()),
            Err(ConflistError::NoConfiguration(_))
        ));
    }

    #[test]
    fn install_chains_once_last_and_keeps_the_other_plugins() {
        let dir = dir_with(&[("10-calico.conflist", CALICO)]);
        let path = dir.path().join("10-calico.conflist");
        let before: Value = serde_json::from_str(CALICO).expect("json");
        assert_eq!(
            install(&path, plugin(&socket())).expect("install"),
            Edit::Written
        );
        let after: Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("json");
        let plugins = after["plugins"].as_array().expect("plugins");
        assert_eq!(plugins.len(), 4);
        assert_eq!(
            &plugins[..3],
            before["plugins"].as_array().expect("plugins").as_slice()
        );
        assert_eq!(
            plugins[3],
            serde_json::json!({"type": "enforcer-cni", "socket": "/run/enforcer/enforcer.sock"})
        );
        assert_eq!(after["name"], before["name"]);
        assert_eq!(after["cniVersion"], before["cniVersion"]);

        // Idempotent: the second install writes nothing (same inode, same bytes).
        let written = fs::read(&path).expect("read");
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("meta"));
        assert_eq!(
            install(&path, plugin(&socket())).expect("again"),
            Edit::Unchanged
        );
        assert_eq!(fs::read(&path).expect("read"), written);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("meta")),
            inode
        );
        // A new socket updates the entry in place, still once.
        install(&path, plugin(Path::new("/run/other.sock"))).expect("update");
        let list = read(&path).expect("read");
        assert_eq!(list.plugins.len(), 4);
        assert_eq!(list.plugins[3], plugin(Path::new("/run/other.sock")));
        // Uninstall gives the CNI's list back.
        assert_eq!(uninstall(&path).expect("uninstall"), Edit::Written);
        let back: Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back, before);
        assert_eq!(uninstall(&path).expect("again"), Edit::Unchanged);
    }

    #[test]
    fn the_file_is_replaced_whole_with_its_permissions_and_no_leftovers() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = dir_with(&[("10-calico.conflist", CALICO)]);
        let path = dir.path().join("10-calico.conflist");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("meta"));
        install(&path, plugin(&socket())).expect("install");
        let meta = fs::metadata(&path).expect("meta");
        // A rename, not an in-place write: readers see the old file or the new one.
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), inode);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("10-calico.conflist")]);
    }

    #[test]
    fn a_malformed_or_unchainable_file_is_refused_and_left_untouched() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "10-broken.conflist",
                "{\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\"type\": \"calico\",}\n  ]\n}\n",
                "10-broken.conflist:4:23: not a CNI configuration list",
            ),
            (
                "10-untyped.conflist",
                "{\"cniVersion\": \"1.0.0\", \"plugins\": [{\"name\": \"x\"}]}",
                "10-untyped.conflist:1:",
            ),
            (
                "10-bridge.conf",
                "{\"cniVersion\": \"1.0.0\", \"name\": \"b\", \"type\": \"bridge\"}",
                "single-plugin configuration",
            ),
            (
                "10-old.conflist",
                "{\"cniVersion\": \"0.2.0\", \"plugins\": [{\"type\": \"bridge\"}]}",
                "cniVersion \"0.2.0\" cannot chain enforcer-cni",
            ),
        ];
        for (name, text, expected) in cases {
            let dir = dir_with(&[(name, text)]);
            let path = dir.path().join(name);
            let err = install(&path, plugin(&socket()))
                .expect_err(name)
                .to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert_eq!(
                fs::read_to_string(&path).expect("read"),
                *text,
                "{name} touched"
            );
            assert_eq!(
                fs::read_dir(dir.path()).expect("dir").count(),
                1,
                "{name}: leftovers"
            );
        }
    }
}
