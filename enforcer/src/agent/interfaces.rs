//! The owner's interface work: attach the programs to new pod interfaces (and the uplink), forget
//! vanished ones, and sweep the pins no attachment owns.

use std::collections::{BTreeMap, HashMap};

use tracing::{info, warn};

use super::{endpoints::Registration, owner::Owner, pins, view::Role};
use crate::{datapath::PinLayout, node};

impl Owner {
    /// The pod interfaces present now: name → ifindex. With `podCidrs`, only those the programs
    /// are attached to (a pod address holds its identity only where it is enforced).
    pub(super) fn pod_interfaces(&self) -> HashMap<String, u32> {
        let config = &self.agent.config;
        let attached_only = !config.pod_cidrs.is_empty();
        node::interfaces()
            .into_iter()
            .filter(|(name, ifindex)| {
                config.is_pod_interface(name)
                    && config.uplink.as_deref() != Some(name.as_str())
                    && (!attached_only || self.attached.contains_key(ifindex))
            })
            .collect()
    }

    /// Remove the pins no attachment owns (interfaces whose attach failed keep theirs).
    pub(super) fn sweep_stale_pins(&self, pins: &PinLayout) {
        let present = node::interfaces();
        let failed = self
            .attach_errors
            .keys()
            .filter_map(|name| present.get(name).copied())
            .collect();
        for stale in pins::sweep(pins, &self.attached, &failed, self.agent.config.xdp_pods) {
            info!(pin = %stale.display(), "removed a stale pin");
        }
    }

    /// Attach new interfaces and forget vanished ones (and their registrations); returns
    /// whether the policy must be installed again (a registration was dropped, or, with
    /// `podCidrs`, a pod interface was attached, whose addresses get their identity now) and the
    /// dropped registrations.
    pub(super) fn reconcile_interfaces(&mut self) -> (bool, Vec<Registration>) {
        let present = node::interfaces();
        let dropped = self.installer.registry.retain_present(&present);
        for gone in &dropped {
            info!(container = %gone.container_id, interface = %gone.interface,
                  "registered pod interface vanished: registration dropped");
        }
        self.attach_errors
            .retain(|name, _| present.contains_key(name));
        self.check_uplink(&present);
        // Forget vanished interfaces (their links died with them).
        let gone: Vec<u32> = self
            .attached
            .iter()
            .filter(|(ifindex, (name, _))| present.get(name) != Some(ifindex))
            .map(|(i, _)| *i)
            .collect();
        for ifindex in gone {
            if let Some((name, _)) = self.attached.remove(&ifindex) {
                info!(interface = %name, ifindex, "interface vanished");
                self.installer.dp.forget_interface(ifindex);
            }
        }
        let before = self.attached.len();
        for (name, ifindex) in &present {
            if !self.attached.contains_key(ifindex) {
                self.attach(name, *ifindex);
            }
        }
        let reinstall = !dropped.is_empty()
            || (self.attached.len() > before && !self.agent.config.pod_cidrs.is_empty());
        (reinstall, dropped)
    }

    fn check_uplink(&mut self, present: &BTreeMap<String, u32>) {
        let Some(uplink) = &self.agent.config.uplink else {
            return;
        };
        if present.contains_key(uplink) {
            self.missing_uplink = None;
        } else if self.missing_uplink.is_none() {
            warn!(
                interface = %uplink,
                "the uplink interface does not exist: no early XDP drops of traffic from \
                 other nodes (the pod interfaces still enforce the policy)"
            );
            self.missing_uplink = Some(uplink.clone());
        }
    }

    /// Attach to `name` if it is the uplink or a pod interface.
    pub(super) fn attach(&mut self, name: &str, ifindex: u32) {
        let config = &self.agent.config;
        let role = if config.uplink.as_deref() == Some(name) {
            Role::Uplink
        } else if config.is_pod_interface(name) {
            Role::Pod
        } else {
            return;
        };
        let dp = &mut self.installer.dp;
        let result = match role {
            Role::Pod => dp.attach_pod(name, ifindex, config.xdp_pods),
            Role::Uplink => dp.attach_uplink(name, ifindex),
        };
        match result {
            Ok(()) => {
                info!(interface = %name, ifindex, ?role, "attached");
                self.attached.insert(ifindex, (name.to_string(), role));
                self.attach_errors.remove(name);
            }
            Err(e) => {
                if self
                    .attach_errors
                    .insert(name.to_string(), e.to_string())
                    .is_none()
                {
                    warn!(interface = %name, "attach failed: {e}");
                }
            }
        }
    }
}
