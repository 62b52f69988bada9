//! `enforcer cni install|uninstall`: put the chained plugin `enforcer-cni` on a node (the
//! daemon set's init container, with the host's directories mounted) or take it away (the
//! uninstall daemon set). The conflist editing is [`crate::conflist`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::conflist::{self, Edit, PLUGIN_TYPE};

#[derive(Debug, clap::Subcommand)]
pub enum CniCommand {
    /// Copy enforcer-cni into the CNI bin directory and chain it, once, at the end of the
    /// runtime's configuration list (atomic replace; a malformed list is refused untouched).
    Install(Dirs),
    /// Remove enforcer-cni from the configuration list, then its binary.
    Uninstall(Dirs),
}

#[derive(Debug, clap::Args)]
pub struct Dirs {
    /// The CNI plugin binaries' directory.
    #[arg(long, default_value = "/opt/cni/bin", value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The CNI configuration directory the container runtime reads.
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The configuration list to edit [default: the runtime's: the first *.conf, *.conflist or
    /// *.json of --conf-dir by name].
    #[arg(long, value_name = "FILE")]
    pub conflist: Option<PathBuf>,
    /// The plugin binary to copy [default: enforcer-cni beside this program].
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
}

impl Dirs {
    fn conflist(&self) -> Result<PathBuf> {
        match &self.conflist {
            Some(path) => Ok(path.clone()),
            None => Ok(conflist::active(&self.conf_dir)?),
        }
    }
}

/// Run `command`; `socket` is the agent's socket written into the plugin's entry.
pub fn run(command: &CniCommand, socket: &Path) -> Result<()> {
    match command {
        CniCommand::Install(dirs) => install(dirs, socket),
        CniCommand::Uninstall(dirs) => uninstall(dirs),
    }
}

fn install(dirs: &Dirs, socket: &Path) -> Result<()> {
    let plugin = match &dirs.plugin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name(PLUGIN_TYPE),
    };
    // The list is checked before anything is copied: a refused list leaves the node as it was.
    let list = dirs.conflist()?;
    conflist::read(&list)?;
    let binary = std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
    let target = dirs.bin_dir.join(PLUGIN_TYPE);
    conflist::replace_file(&target, &binary, 0o755)?;
    println!("copied {} to {}", plugin.display(), target.display());
    match conflist::install(&list, conflist::plugin(socket))? {
        Edit::Written => println!("chained {PLUGIN_TYPE} into {}", list.display()),
        Edit::Unchanged => println!("{} already chains {PLUGIN_TYPE}", list.display()),
    }
    Ok(())
}

fn uninstall(dirs: &Dirs) -> Result<()> {
    // The entry first: a list naming a missing binary would fail every pod's creation.
    match dirs.conflist() {
        Ok(list) => match conflist::uninstall(&list)? {
            Edit::Written => println!("removed {PLUGIN_TYPE} from {}", list.display()),
            Edit::Unchanged => println!("{} does not chain {PLUGIN_TYPE}", list.display()),
        },
        Err(e) => println!("no configuration list to edit: {e:#}"),
    }
    let target = dirs.bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&target) {
        Ok(()) => println!("removed {}", target.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", target.display())),
    }
    Ok(())
}
