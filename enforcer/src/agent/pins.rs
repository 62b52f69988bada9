//! Sweep pins that no current attachment owns: links of interfaces that vanished while no agent
//! ran (each holds a program alive), links of programs the configuration no longer attaches,
//! and maps or files the current layout does not define (leftovers of older versions or crashed
//! runs). Older layout versions are removed by `datapath::remove_old_layouts` after migration.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;
use enforcer_common::maps::{names, programs};

use super::Role;
use crate::datapath::PinLayout;

/// The link pins (`<ifindex>_<program>`) that the attachments own.
fn owned_links(attached: &BTreeMap<u32, (String, Role)>, xdp_pods: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (ifindex, (_, role)) in attached {
        let progs: &[&str] = match role {
            Role::Pod if xdp_pods => &[programs::FROM_POD, programs::TO_POD, programs::XDP_POD],
            Role::Pod => &[programs::FROM_POD, programs::TO_POD],
            Role::Uplink => &[programs::XDP_UPLINK],
        };
        out.extend(progs.iter().map(|p| format!("{ifindex}_{p}")));
    }
    out
}

/// Remove a pin: a link is unpinned (its program detaches when no fd is left), anything else
/// is removed as a file.
fn remove_pin(path: &Path) -> bool {
    match PinnedLink::from_pin(path) {
        Ok(link) => link.unpin().is_ok(),
        Err(_) => fs::remove_file(path).is_ok(),
    }
}

/// Names in `dir` that `keep` rejects.
fn unowned(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| !keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Remove the link pins that `attached` does not own and the map pins the layout does not
/// define. `skip`: interfaces whose attach failed (their pins may still be good: kept).
/// Returns what was removed.
pub fn sweep(
    pins: &PinLayout,
    attached: &BTreeMap<u32, (String, Role)>,
    skip: &BTreeSet<u32>,
    xdp_pods: bool,
) -> Vec<PathBuf> {
    let owned = owned_links(attached, xdp_pods);
    let keep_link = |name: &str| {
        owned.contains(name)
            || name
                .split_once('_')
                .and_then(|(i, _)| i.parse::<u32>().ok())
                .is_some_and(|i| skip.contains(&i))
    };
    let mut stale = unowned(&pins.links(), keep_link);
    stale.extend(unowned(&pins.maps(), |name| names::PINNED.contains(&name)));
    stale.retain(|p| remove_pin(p));
    stale
}

/// The pin directories of other layout versions (`<bpffs>/v<N>` but the current one): what an
/// agent of another version left, whose links a new agent migrates.
pub fn other_layouts(pins: &PinLayout) -> Vec<PathBuf> {
    let (Some(parent), Some(current)) = (pins.root.parent(), pins.root.file_name()) else {
        return Vec::new();
    };
    unowned(parent, |name| name == current || !name.starts_with('v'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_own_their_programs_only() {
        let attached = BTreeMap::from([
            (7, ("ep1".to_string(), Role::Pod)),
            (9, ("eth0".to_string(), Role::Uplink)),
        ]);
        let owned = owned_links(&attached, false);
        assert_eq!(
            owned,
            BTreeSet::from([
                "7_from_pod".to_string(),
                "7_to_pod".into(),
                "9_xdp_uplink".into()
            ])
        );
        assert!(owned_links(&attached, true).contains("7_xdp_pod"));
    }
}
