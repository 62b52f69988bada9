//! The only code that touches the eBPF object and its maps: load (adopting pinned maps), attach
//! (adopting pinned links, swapping our programs onto them), install a policy generation
//! atomically, and read counters.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, MapError, RingBuf},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use enforcer_common::{maps::names, programs, Config, LAYOUT_VERSION};

mod attach;
mod batch;
mod capacity;
mod conntrack;
mod counters;
mod forget;
mod install;
mod maps;
mod ratelimit;
mod slot_map;
mod slots;
mod sweep;
pub use attach::{tcx_supported, TcAttach, TcAttachMode};
pub use capacity::{Capacities, ZeroCapacity};
pub use counters::{CounterReader, PacketCounts};
pub use forget::Forgotten;
pub use ratelimit::RateLimitStats;
pub use slots::InstallWrites;
pub use sweep::{monotonic_secs, ConntrackSweeper, CtTimeouts, Swept};

/// The eBPF object, built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {map} would need {needed} entries but holds {capacity}: nothing was applied")]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pinned link {path}: {message}")]
    Link { path: PathBuf, message: String },
    #[error(transparent)]
    ZeroCapacity(#[from] ZeroCapacity),
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn prog_err(name: &'static str) -> impl Fn(ProgramError) -> DatapathError {
    move |source| DatapathError::Program { name, source }
}

/// Where a layout version keeps its pins: `<bpffs>/v<LAYOUT_VERSION>/{maps,links}`.
#[derive(Debug, Clone)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(bpffs: &Path) -> Self {
        PinLayout {
            root: bpffs.join(format!("v{LAYOUT_VERSION}")),
        }
    }
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    /// A pin of the same link left by another layout version (an older agent), if any.
    pub fn legacy_link(&self, ifindex: u32, program: &str) -> Option<PathBuf> {
        let parent = self.root.parent()?;
        let current = self.root.file_name()?;
        fs::read_dir(parent)
            .ok()?
            .filter_map(std::result::Result::ok)
            .filter(|e| {
                e.file_name() != current && e.file_name().to_string_lossy().starts_with('v')
            })
            .map(|e| e.path().join("links").join(format!("{ifindex}_{program}")))
            .find(|p| p.exists())
    }

    pub fn link(&self, ifindex: u32, program: &str) -> PathBuf {
        // bpffs rejects dots in names.
        self.links().join(format!("{ifindex}_{program}"))
    }
}

/// A loaded datapath: it owns the programs (in the eBPF object) and every map userspace uses
/// (typed handles in [`maps::Maps`]); nothing else reaches a map.
pub struct Datapath {
    /// The programs, and the maps userspace never touches.
    ebpf: Ebpf,
    maps: maps::Maps,
    pins: Option<PinLayout>,
    tc_mode: TcAttachMode,
    capacities: Capacities,
    /// What each policy slot holds (`None`: unknown, read back from the maps when needed).
    slots: [Option<slots::SlotEntries>; 2],
    /// When `CONFIG` last flipped (the slot it left is not written again within a margin).
    last_flip: Option<std::time::Instant>,
    last_writes: InstallWrites,
}

/// The installed state: generation and active slot.
pub type Generation = u64;

impl Datapath {
    /// Load the object with the default capacities. With `pins`, maps already pinned there are
    /// adopted (their contents keep enforcing) and new ones are created and pinned.
    pub fn load(pins: Option<PinLayout>) -> Result<Self> {
        Self::load_with(pins, Capacities::default())
    }

    /// Load the object with its maps sized by `capacities` (an adopted pinned map keeps the size
    /// it was created with).
    pub fn load_with(pins: Option<PinLayout>, capacities: Capacities) -> Result<Self> {
        capacities.validate()?;
        let mut loader = EbpfLoader::new();
        for (name, entries) in capacities.max_entries() {
            loader.map_max_entries(name, entries);
        }
        if let Some(p) = &pins {
            ensure_bpffs(&p.root)?;
            let dir = p.maps();
            fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
                path: dir.clone(),
                source,
            })?;
            fs::create_dir_all(p.links()).map_err(|source| DatapathError::Io {
                path: p.links(),
                source,
            })?;
            for name in names::PINNED {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT)?;
        for name in [programs::FROM_POD, programs::TO_POD] {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
        }
        for name in [programs::XDP_POD, programs::XDP_UPLINK] {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load().map_err(prog_err(name))?;
        }
        let maps = maps::Maps::take(&mut ebpf)?;
        let capacities = adopted_capacities(&maps, capacities);
        Ok(Datapath {
            ebpf,
            maps,
            pins,
            tc_mode: TcAttach::Auto.resolve(),
            capacities,
            slots: [None, None],
            last_flip: None,
            last_writes: InstallWrites::default(),
        })
    }

    /// How tc programs are attached from now on (probed at load; `choice` may force a mode).
    pub fn set_tc_attach(&mut self, choice: TcAttach) -> TcAttachMode {
        self.tc_mode = choice.resolve();
        self.tc_mode
    }

    pub fn tc_attach_mode(&self) -> TcAttachMode {
        self.tc_mode
    }

    /// The capacities of the loaded maps (per slot for the slotted ones).
    pub fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// Program `name`, for test harnesses only (feature `test-access`): they run programs with
    /// `BPF_PROG_TEST_RUN`. Maps are reached through the typed methods only.
    #[cfg(feature = "test-access")]
    pub fn program(&self, name: &str) -> Option<&aya::programs::Program> {
        self.ebpf.program(name)
    }

    /// As [`Datapath::program`], mutable: benchmarks load and attach the empty baseline
    /// programs (feature `test-access`).
    #[cfg(feature = "test-access")]
    pub fn program_mut(&mut self, name: &str) -> Option<&mut aya::programs::Program> {
        self.ebpf.program_mut(name)
    }

    /// Pin map `name` at `path`, so another object (a benchmark's reference program) can be
    /// loaded on the same maps (feature `test-access`).
    #[cfg(feature = "test-access")]
    pub fn pin_map(&self, name: &'static str, path: &Path) -> Result<()> {
        let pin_err = |e: aya::pin::PinError| DatapathError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        };
        let Some(fd) = self.maps.fd(name) else {
            // A map only the kernel side uses stays in the object.
            let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            return map.pin(path).map_err(pin_err);
        };
        let fd = fd
            .try_clone_to_owned()
            .map_err(|source| DatapathError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let data = MapData::from_fd(fd).map_err(map_err(name))?;
        data.pin(path).map_err(pin_err)
    }

    /// The flow-event ring buffer, for the one event reader (`None` once taken).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.maps.events.take()
    }

    /// Attach `from_pod`/`to_pod` (tcx or legacy tc, first in order) and, if `xdp`, `xdp_pod` to
    /// a pod's host-side interface. An existing pinned link (or our legacy tc filter) gets our
    /// program swapped in, without a gap.
    pub fn attach_pod(&mut self, ifname: &str, ifindex: u32, xdp: bool) -> Result<()> {
        self.attach_tc(ifname, ifindex, programs::FROM_POD, TcAttachType::Ingress)?;
        self.attach_tc(ifname, ifindex, programs::TO_POD, TcAttachType::Egress)?;
        if xdp {
            self.attach_xdp(ifname, ifindex, programs::XDP_POD)?;
        }
        Ok(())
    }

    /// Attach `xdp_uplink` to the node's uplink.
    pub fn attach_uplink(&mut self, ifname: &str, ifindex: u32) -> Result<()> {
        self.attach_xdp(ifname, ifindex, programs::XDP_UPLINK)
    }

    fn attach_tc(
        &mut self,
        ifname: &str,
        ifindex: u32,
        name: &'static str,
        attach: TcAttachType,
    ) -> Result<()> {
        if self.tc_mode == TcAttachMode::Netlink {
            let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
            return attach::attach_netlink(prog, ifname, attach).map_err(prog_err(name));
        }
        let pin = self.migrated_pin(ifindex, name)?;
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let link: SchedClassifierLink = adopt_link(path)?;
            prog.attach_to_link(link).map_err(prog_err(name))?;
            return Ok(());
        }
        let id = prog
            .attach_with_options(
                ifname,
                attach,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(prog_err(name))?;
        if let Some(path) = pin {
            pin_link(prog.take_link(id).map_err(prog_err(name))?, &path)?;
        }
        Ok(())
    }

    /// The pin path of a link; a link pinned by another layout version is moved here first, so
    /// it is adopted (our program swapped in) like our own: an upgrade never detaches.
    fn migrated_pin(&self, ifindex: u32, name: &str) -> Result<Option<PathBuf>> {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let path = pins.link(ifindex, name);
        if !path.exists() {
            if let Some(old) = pins.legacy_link(ifindex, name) {
                tracing::info!(from = %old.display(), to = %path.display(), "migrating a pinned link to the current layout");
                fs::rename(&old, &path)
                    .map_err(|source| DatapathError::Io { path: old, source })?;
            }
        }
        Ok(Some(path))
    }

    fn attach_xdp(&mut self, ifname: &str, ifindex: u32, name: &'static str) -> Result<()> {
        let pin = self.migrated_pin(ifindex, name)?;
        let prog: &mut Xdp = program(&mut self.ebpf, name)?;
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let link: XdpLink = adopt_link(path)?;
            prog.attach_to_link(link).map_err(prog_err(name))?;
            return Ok(());
        }
        let id = prog
            .attach(ifname, XdpMode::default())
            .map_err(prog_err(name))?;
        if let Some(path) = pin {
            pin_link(prog.take_link(id).map_err(prog_err(name))?, &path)?;
        }
        Ok(())
    }

    /// The active configuration.
    pub fn config(&self) -> Result<Config> {
        self.maps.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Forget an interface that vanished: its pinned links are dead, remove the pins.
    pub fn forget_interface(&mut self, ifindex: u32) {
        if let Some(p) = &self.pins {
            for name in [
                programs::FROM_POD,
                programs::TO_POD,
                programs::XDP_POD,
                programs::XDP_UPLINK,
            ] {
                let path = p.link(ifindex, name);
                if path.exists() {
                    let _ = PinnedLink::from_pin(&path).map(PinnedLink::unpin);
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

/// The capacities the loaded maps really have: a pinned map adopted from an earlier agent keeps
/// the size it was created with.
fn adopted_capacities(maps: &maps::Maps, asked: Capacities) -> Capacities {
    use aya::maps::IterableMap;
    use enforcer_common::SLOTS;
    fn size<K: aya::Pod, V>(map: &impl IterableMap<K, V>, per: u32) -> Option<u32> {
        Some(map.map().info().ok()?.max_entries() / per)
    }
    Capacities {
        identities: size(&maps.identities, SLOTS).unwrap_or(asked.identities),
        cidrs: size(&maps.cidrs, SLOTS).unwrap_or(asked.cidrs),
        policy: size(&maps.policy, SLOTS).unwrap_or(asked.policy),
        endpoints: size(&maps.endpoints, 1).unwrap_or(asked.endpoints),
        rules: size(&maps.rule_counters, 1).unwrap_or(asked.rules),
        conntrack: size(&maps.conntrack, 1).unwrap_or(asked.conntrack),
    }
}

/// A link error with its cause (aya's errors keep the OS error in `source()`).
fn link_error(path: &Path, e: &dyn std::error::Error) -> DatapathError {
    let cause = e.source().map(|c| format!(": {c}")).unwrap_or_default();
    DatapathError::Link {
        path: path.to_path_buf(),
        message: format!("{e}{cause}"),
    }
}

/// Open a pinned link as the link type of a program (to swap that program in).
fn adopt_link<L: TryFrom<FdLink, Error = LinkError>>(path: &Path) -> Result<L> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| link_error(path, &e))?;
    L::try_from(FdLink::from(pinned)).map_err(|e| link_error(path, &e))
}

/// Pin a link we just attached, so it outlives this process.
fn pin_link<L: TryInto<FdLink, Error = LinkError>>(link: L, path: &Path) -> Result<()> {
    let fd: FdLink = link.try_into().map_err(|e| link_error(path, &e))?;
    fd.pin(path).map_err(|e| link_error(path, &e))?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::UnexpectedProgramType,
    })?;
    prog.try_into().map_err(prog_err(name))
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type == BPF_FS_MAGIC }
}

/// Make sure `path` can live on bpffs: if it is under /sys/fs/bpf and nothing is mounted there,
/// mount bpffs (as Cilium does); otherwise its nearest existing ancestor must be on bpffs.
pub fn ensure_bpffs(path: &Path) -> Result<()> {
    let mut ancestor = path;
    while !ancestor.exists() {
        ancestor = ancestor.parent().unwrap_or(Path::new("/"));
    }
    if is_bpffs(ancestor) {
        return Ok(());
    }
    let mount = Path::new(BPFFS_MOUNT);
    if path.starts_with(mount) && !is_bpffs(mount) {
        let target =
            std::ffi::CString::new(BPFFS_MOUNT).map_err(|e| io_err(mount, io::Error::other(e)))?;
        let fstype = c"bpf";
        // SAFETY: valid C strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io_err(mount, io::Error::last_os_error()));
        }
        return Ok(());
    }
    Err(io_err(
        path,
        io::Error::other("not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)"),
    ))
}

fn io_err(path: &Path, source: io::Error) -> DatapathError {
    DatapathError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Unpin every link (detaching its program) and map under `bpffs`, for every layout version, and
/// remove our legacy tc filters from the interfaces of this network namespace.
pub fn unpin_all(bpffs: &Path) -> io::Result<()> {
    for name in [programs::FROM_POD, programs::TO_POD] {
        let n = attach::detach_netlink_everywhere(name);
        if n > 0 {
            tracing::info!(program = name, hooks = n, "removed legacy tc filters");
        }
    }
    if !bpffs.exists() {
        return Ok(());
    }
    for version in fs::read_dir(bpffs)? {
        unpin_version(&version?.path())?;
    }
    fs::remove_dir(bpffs)
}

/// Remove the pins of every layout version but the current one (after an upgrade has moved
/// their links over). Returns the versions removed.
pub fn remove_old_layouts(pins: &PinLayout) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let (Some(parent), Some(current)) = (pins.root.parent(), pins.root.file_name()) else {
        return Ok(removed);
    };
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        if entry.file_name() != current && entry.file_name().to_string_lossy().starts_with('v') {
            unpin_version(&entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Unpin the links (detaching them) and maps of one layout version directory, and remove it.
fn unpin_version(version: &Path) -> io::Result<()> {
    let links = version.join("links");
    if links.is_dir() {
        for l in fs::read_dir(&links)? {
            let path = l?.path();
            match PinnedLink::from_pin(&path) {
                // Unpinning removes the file; dropping the last fd detaches the program.
                Ok(pinned) => drop(pinned.unpin()?),
                Err(_) => fs::remove_file(&path)?,
            }
        }
    }
    if version.is_dir() {
        // Map pins are plain bpffs files.
        fs::remove_dir_all(version)?;
    }
    Ok(())
}
