//! Which policy files the agent trusts. Whoever can write a policy file controls the node's
//! network policy, so, as sshd's `StrictModes` does for `authorized_keys`, a file of the policy
//! directory is read only when it, the directory and every directory above them are owned by
//! root or by the agent's own user, and writable by no one else.
//!
//! Symbolic links are followed on purpose and judged by where they lead: a `ConfigMap` mount is
//! `NAME -> ..data/NAME` and `..data -> ..<timestamp>/`, all owned by root and read-only, so it
//! passes; a link to a file elsewhere passes only if that file and the directories above it pass
//! too. Above the policy directory (never in it or below), a directory writable by others is
//! accepted when it has the sticky bit (as `/tmp`): others cannot rename or replace in it what
//! they do not own.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The sticky bit of a directory's mode.
const STICKY: u32 = 0o1000;
/// Write permission for group or others.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Why a path of the policy directory is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "{}: owned by uid {uid}, not by root or the agent's user (uid {agent}): refused \
         (whoever can write it controls the node's network policy)",
        path.display()
    )]
    Owner { path: PathBuf, uid: u32, agent: u32 },
    #[error(
        "{}: mode {mode:04o} lets group or others write it: refused (chmod go-w; whoever can \
         write it controls the node's network policy)",
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The user the agent runs as.
fn agent_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Check the policy directory (and every directory above it); returns its resolved path, which
/// [`check_file`] needs.
pub fn check_dir(dir: &Path) -> Result<PathBuf, Untrusted> {
    let real = fs::canonicalize(dir).map_err(|source| Untrusted::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    check_chain(&real, &real)?;
    Ok(real)
}

/// Check one file of the policy directory whose resolved path is `dir`: the file it leads to
/// (after symbolic links) and every directory above that.
pub fn check_file(path: &Path, dir: &Path) -> Result<(), Untrusted> {
    let real = fs::canonicalize(path).map_err(|source| Untrusted::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_chain(&real, dir).map_err(|e| match e {
        // Name the file the user put in the directory, and where it leads.
        Untrusted::Owner {
            path: p,
            uid,
            agent,
        } if p == real && p != path => Untrusted::Owner {
            path: PathBuf::from(format!("{} (-> {})", path.display(), p.display())),
            uid,
            agent,
        },
        Untrusted::Writable { path: p, mode } if p == real && p != path => Untrusted::Writable {
            path: PathBuf::from(format!("{} (-> {})", path.display(), p.display())),
            mode,
        },
        e => e,
    })
}

/// Check the agent's config file (`--config`): it names the policy directory, the interfaces and
/// the state directory, so whoever can write it controls the node's network policy as surely as
/// through a policy file. It is judged as a policy file is, the directory it is in playing the
/// policy directory's part (a `ConfigMap` mount passes).
pub fn check_config(path: &Path) -> Result<(), Untrusted> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = fs::canonicalize(parent).map_err(|source| Untrusted::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    check_file(path, &dir)
}

/// `real` (a resolved path) and each directory above it: owned by root or the agent's user, and
/// not writable by group or others (but for sticky directories above `strict`).
fn check_chain(real: &Path, strict: &Path) -> Result<(), Untrusted> {
    let agent = agent_uid();
    for p in real.ancestors() {
        let meta = fs::symlink_metadata(p).map_err(|source| Untrusted::Io {
            path: p.to_path_buf(),
            source,
        })?;
        let uid = meta.uid();
        if uid != 0 && uid != agent {
            return Err(Untrusted::Owner {
                path: p.to_path_buf(),
                uid,
                agent,
            });
        }
        let mode = meta.mode() & 0o7777;
        let sticky_above = meta.is_dir() && mode & STICKY != 0 && !p.starts_with(strict);
        if mode & GROUP_OTHER_WRITE != 0 && !sticky_above {
            return Err(Untrusted::Writable {
                path: p.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A private directory under the temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A policy directory laid out as kubelet mounts a `ConfigMap`, under a private temp dir.
    fn configmap(name: &str) -> (Scratch, PathBuf) {
        let tmp =
            std::env::temp_dir().join(format!("enforcer-trust-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).expect("mkdir");
        chmod(&tmp, 0o700);
        let tmp = Scratch(tmp);
        let dir = tmp.path().join("policies");
        let ts = dir.join("..2026_12_07_19_00_00.000000001");
        fs::create_dir_all(&ts).expect("mkdir");
        chmod(&dir, 0o755);
        chmod(&ts, 0o755);
        fs::write(ts.join("a.yaml"), "").expect("write");
        chmod(&ts.join("a.yaml"), 0o644);
        symlink(ts.file_name().expect("name"), dir.join("..data")).expect("symlink");
        symlink("..data/a.yaml", dir.join("a.yaml")).expect("symlink");
        (tmp, dir)
    }

    #[test]
    fn the_config_file_is_judged_as_a_policy_file() {
        let (_tmp, dir) = configmap("config");
        check_config(&dir.join("a.yaml")).expect("a ConfigMap-mounted config file is trusted");
        let ts = dir.join("..data").canonicalize().expect("resolved");
        chmod(&ts.join("a.yaml"), 0o666);
        let e = check_config(&dir.join("a.yaml")).expect_err("refused");
        assert!(e.to_string().contains("mode 0666"), "{e}");
        let e = check_config(&dir.join("missing.yaml")).expect_err("refused");
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }

    #[test]
    fn a_configmap_layout_is_trusted() {
        let (_tmp, dir) = configmap("layout");
        let real = check_dir(&dir).expect("trusted dir");
        check_file(&dir.join("a.yaml"), &real).expect("trusted file");
    }

    #[test]
    fn writable_files_and_directories_are_refused_with_their_path() {
        let (_tmp, dir) = configmap("writable");
        let real = check_dir(&dir).expect("trusted dir");
        let ts = dir.join("..data").canonicalize().expect("resolved");
        chmod(&ts.join("a.yaml"), 0o666);
        let e = check_file(&dir.join("a.yaml"), &real).expect_err("refused");
        assert!(
            e.to_string().contains("a.yaml (->") && e.to_string().contains("mode 0666"),
            "{e}"
        );
        chmod(&ts.join("a.yaml"), 0o644);
        // A sticky directory is no exception inside the policy directory.
        chmod(&ts, 0o1777);
        let e = check_file(&dir.join("a.yaml"), &real).expect_err("refused");
        assert!(e.to_string().contains("mode 1777"), "{e}");
        chmod(&ts, 0o755);
        chmod(&dir, 0o775);
        let e = check_dir(&dir).expect_err("refused");
        assert!(e.to_string().contains("mode 0775"), "{e}");
        chmod(&dir, 0o755);
        // Owned by another user (only root can give a file away).
        if agent_uid() == 0 {
            std::os::unix::fs::chown(ts.join("a.yaml"), Some(65534), None).expect("chown");
            let e = check_file(&dir.join("a.yaml"), &real).expect_err("refused");
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_link_out_of_the_directory_is_judged_where_it_leads() {
        let (tmp, dir) = configmap("link");
        let real = check_dir(&dir).expect("trusted dir");
        let open = tmp.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::write(open.join("b.yaml"), "").expect("write");
        symlink(open.join("b.yaml"), dir.join("b.yaml")).expect("symlink");
        chmod(&open, 0o755);
        check_file(&dir.join("b.yaml"), &real).expect("a safe target passes");
        chmod(&open, 0o777);
        let e = check_file(&dir.join("b.yaml"), &real).expect_err("refused");
        assert!(e.to_string().contains("open: mode 0777"), "{e}");
        // Above the policy directory, a sticky directory (as /tmp) is fine.
        chmod(&open, 0o1777);
        check_file(&dir.join("b.yaml"), &real).expect("sticky above");
    }
}
