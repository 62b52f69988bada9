//! The only code that touches the eBPF object and its maps: load (adopting pinned maps), attach
//! (adopting pinned links, swapping our programs onto them), install a policy generation
//! atomically, and read counters.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapError, PerCpuArray},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use enforcer_common::{
    cidr_key_data, maps::names, programs, CidrKeyData, Config, CounterIndex, EndpointKey,
    IdentityKey, IdentityValue, PolicyKey, PolicyKeyData, PolicyValue, CIDR_CAPACITY,
    CIDR_KEY_FIXED_BITS, CONFIG_ACTIVE, ENDPOINT_CAPACITY, IDENTITY_CAPACITY, LAYOUT_VERSION,
    POLICY_CAPACITY,
};

use crate::policy::{compile::addr_bits, Compiled};

mod attach;
mod ratelimit;
pub use attach::{tcx_supported, TcAttach, TcAttachMode};
pub use ratelimit::{rate_limit_config, rate_limit_configs, RateLimitStats};

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

/// A loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Option<PinLayout>,
    tc_mode: TcAttachMode,
}

/// The installed state: generation and active slot.
pub type Generation = u64;

impl Datapath {
    /// Load the object. With `pins`, maps already pinned there are adopted (their contents keep
    /// enforcing) and new ones are created and pinned.
    pub fn load(pins: Option<PinLayout>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
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
        Ok(Datapath {
            ebpf,
            pins,
            tc_mode: TcAttach::Auto.resolve(),
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

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
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
        let map = Array::<_, Config>::try_from(self.map(names::CONFIG)?)
            .map_err(map_err(names::CONFIG))?;
        map.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Install a compiled policy as the next generation: write the inactive slot completely, then
    /// flip `CONFIG` with one map write. Capacity is checked before anything is written.
    pub fn install(
        &mut self,
        compiled: &Compiled,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<Generation> {
        check_capacity(
            names::IDENTITIES,
            compiled.identities.len(),
            IDENTITY_CAPACITY,
        )?;
        check_capacity(names::CIDR_IDENTITIES, compiled.cidrs.len(), CIDR_CAPACITY)?;
        check_capacity(names::POLICY, compiled.policy.len(), POLICY_CAPACITY)?;
        check_capacity(names::ENDPOINTS, endpoints.len(), ENDPOINT_CAPACITY)?;
        // Rule ids index RULE_COUNTERS (id 0 is "no rule").
        check_capacity(
            names::RULE_COUNTERS,
            compiled.rules.len() + 1,
            enforcer_common::RULE_CAPACITY,
        )?;
        Self::check_rate_limits(compiled)?;
        let cfg = self.config()?;
        let slot: u32 = if cfg.flags & CONFIG_ACTIVE != 0 {
            1 - cfg.slot.min(1)
        } else {
            0
        };
        self.clear_slot(slot)?;
        {
            let mut ids = HashMap::<_, IdentityKey, IdentityValue>::try_from(
                self.map_mut(names::IDENTITIES)?,
            )
            .map_err(map_err(names::IDENTITIES))?;
            for (addr, value) in &compiled.identities {
                let key = IdentityKey {
                    slot,
                    addr: addr_bits(*addr).to_be_bytes(),
                };
                ids.insert(key, value, 0)
                    .map_err(map_err(names::IDENTITIES))?;
            }
        }
        {
            let mut cidrs = LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(
                self.map_mut(names::CIDR_IDENTITIES)?,
            )
            .map_err(map_err(names::CIDR_IDENTITIES))?;
            for (prefix, value) in &compiled.cidrs {
                let key = Key::new(
                    CIDR_KEY_FIXED_BITS + u32::from(prefix.len),
                    cidr_key_data(u8::try_from(slot).unwrap_or(0), &prefix.octets()),
                );
                cidrs
                    .insert(&key, value, 0)
                    .map_err(map_err(names::CIDR_IDENTITIES))?;
            }
        }
        {
            let mut policy =
                LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map_mut(names::POLICY)?)
                    .map_err(map_err(names::POLICY))?;
            for e in &compiled.policy {
                let data = PolicyKey {
                    slot: u8::try_from(slot).unwrap_or(0),
                    ..PolicyKey::decode(&e.key)
                }
                .encode();
                policy
                    .insert(&Key::new(e.prefix_len, data), e.value, 0)
                    .map_err(map_err(names::POLICY))?;
            }
        }
        self.write_rate_limits(slot, compiled)?;
        // Endpoints are not slotted: add the new ones before the flip, drop stale ones after.
        let stale = self.sync_endpoints_add(endpoints)?;
        let generation = cfg.generation + 1;
        let mut config = Array::<_, Config>::try_from(self.map_mut(names::CONFIG)?)
            .map_err(map_err(names::CONFIG))?;
        config
            .set(
                0,
                Config {
                    generation,
                    slot,
                    flags: CONFIG_ACTIVE | ratelimit::config_flags(compiled),
                },
                0,
            )
            .map_err(map_err(names::CONFIG))?;
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        for k in stale {
            let _ = eps.remove(&k);
        }
        self.prune_rule_buckets(compiled)?;
        // Empty the previous slot once no packet can still be using it (programs run under RCU,
        // a packet that read the old slot finishes within microseconds): the tries hold one
        // generation, so lookups stay as fast as the policy allows.
        if cfg.flags & CONFIG_ACTIVE != 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            self.clear_slot(cfg.slot)?;
        }
        Ok(generation)
    }

    fn sync_endpoints_add(
        &mut self,
        endpoints: &BTreeSet<(u32, IpAddr)>,
    ) -> Result<Vec<EndpointKey>> {
        let mut eps = HashMap::<_, EndpointKey, u32>::try_from(self.map_mut(names::ENDPOINTS)?)
            .map_err(map_err(names::ENDPOINTS))?;
        // Each managed interface also gets a marker entry with the zero address.
        let wanted: BTreeSet<([u8; 16], u32)> = endpoints
            .iter()
            .flat_map(|(ifindex, addr)| {
                [
                    (addr_bits(*addr).to_be_bytes(), *ifindex),
                    ([0; 16], *ifindex),
                ]
            })
            .collect();
        let existing: Vec<EndpointKey> = eps.keys().filter_map(std::result::Result::ok).collect();
        let stale = existing
            .into_iter()
            .filter(|k| !wanted.contains(&(k.addr, k.ifindex)))
            .collect();
        for (addr, ifindex) in wanted {
            eps.insert(EndpointKey { ifindex, addr }, 1, 0)
                .map_err(map_err(names::ENDPOINTS))?;
        }
        Ok(stale)
    }

    /// Remove every entry of `slot` from the slotted maps.
    fn clear_slot(&mut self, slot: u32) -> Result<()> {
        {
            let mut ids = HashMap::<_, IdentityKey, IdentityValue>::try_from(
                self.map_mut(names::IDENTITIES)?,
            )
            .map_err(map_err(names::IDENTITIES))?;
            let keys: Vec<IdentityKey> = ids
                .keys()
                .filter_map(std::result::Result::ok)
                .filter(|k| k.slot == slot)
                .collect();
            for k in keys {
                let _ = ids.remove(&k);
            }
        }
        let slot_byte = u8::try_from(slot).unwrap_or(0);
        {
            let mut cidrs = LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(
                self.map_mut(names::CIDR_IDENTITIES)?,
            )
            .map_err(map_err(names::CIDR_IDENTITIES))?;
            let keys: Vec<Key<CidrKeyData>> = cidrs
                .keys()
                .filter_map(std::result::Result::ok)
                .filter(|k| k.data()[0] == slot_byte)
                .collect();
            for k in keys {
                let _ = cidrs.remove(&k);
            }
        }
        let mut policy =
            LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(self.map_mut(names::POLICY)?)
                .map_err(map_err(names::POLICY))?;
        let keys: Vec<Key<PolicyKeyData>> = policy
            .keys()
            .filter_map(std::result::Result::ok)
            .filter(|k| k.data()[0] == slot_byte)
            .collect();
        for k in keys {
            let _ = policy.remove(&k);
        }
        Ok(())
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

    /// Events the datapath could not queue because the ring buffer was full.
    pub fn events_lost(&self) -> Result<u64> {
        let map = PerCpuArray::<_, u64>::try_from(self.map(names::EVENT_STATS)?)
            .map_err(map_err(names::EVENT_STATS))?;
        Ok(map
            .get(&enforcer_common::event_stat::LOST, 0)
            .map_err(map_err(names::EVENT_STATS))?
            .iter()
            .sum())
    }

    /// Packets per (direction, verdict, reason), summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<(u8, u8, u8), u64>> {
        let map = PerCpuArray::<_, u64>::try_from(self.map(names::COUNTERS)?)
            .map_err(map_err(names::COUNTERS))?;
        let mut out = BTreeMap::new();
        for (i, c) in CounterIndex::all() {
            let total: u64 = map
                .get(&i, 0)
                .map_err(map_err(names::COUNTERS))?
                .iter()
                .sum();
            out.insert((c.direction as u8, c.verdict as u8, c.reason as u8), total);
        }
        Ok(out)
    }

    /// Packets counted for rule `id`, summed over CPUs.
    pub fn rule_packets(&self, id: u32) -> Result<u64> {
        let map = PerCpuArray::<_, u64>::try_from(self.map(names::RULE_COUNTERS)?)
            .map_err(map_err(names::RULE_COUNTERS))?;
        Ok(map
            .get(&id, 0)
            .map_err(map_err(names::RULE_COUNTERS))?
            .iter()
            .sum())
    }

    /// Number of entries in a map (both slots for the slotted ones).
    pub fn map_entries(&self, name: &'static str) -> Result<usize> {
        let map = self.map(name)?;
        let n = match name {
            names::IDENTITIES => HashMap::<_, IdentityKey, IdentityValue>::try_from(map)
                .map_err(map_err(name))?
                .keys()
                .count(),
            names::ENDPOINTS => HashMap::<_, EndpointKey, u32>::try_from(map)
                .map_err(map_err(name))?
                .keys()
                .count(),
            names::CIDR_IDENTITIES => LpmTrie::<_, CidrKeyData, IdentityValue>::try_from(map)
                .map_err(map_err(name))?
                .keys()
                .count(),
            names::POLICY => LpmTrie::<_, PolicyKeyData, PolicyValue>::try_from(map)
                .map_err(map_err(name))?
                .keys()
                .count(),
            _ => 0,
        };
        Ok(n)
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))
    }
}

fn check_capacity(map: &'static str, needed: usize, capacity: u32) -> Result<()> {
    if needed > capacity as usize {
        return Err(DatapathError::Capacity {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
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
