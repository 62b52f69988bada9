//! The owner's side of the CNI plugin: register a pod interface (attach, then install its
//! identity, before answering), check and forget registrations.

use anyhow::{anyhow, bail, Result};
use enforcer_common::CONFIG_ACTIVE;
use tracing::{info, warn};

use super::{endpoints::Registration, owner::Owner};
use crate::{
    api::{EndpointRequest, EndpointStatus},
    datapath::Forgotten,
    node,
};

impl Owner {
    /// CNI ADD: the pod's interface gets the programs, then its addresses their identity; the
    /// answer comes only once both are in force. An error means the pod is not enforced (the
    /// plugin fails the pod's creation).
    pub(super) fn register_endpoint(&mut self, req: EndpointRequest) -> Result<EndpointStatus> {
        let config = &self.agent.config;
        let present = node::interfaces();
        let (interface, ifindex) = req
            .interfaces
            .iter()
            .filter(|n| config.is_pod_interface(n) && config.uplink.as_deref() != Some(n.as_str()))
            .find_map(|n| present.get(n).map(|i| (n.clone(), *i)))
            .ok_or_else(|| {
                anyhow!(
                    "none of the interfaces {:?} is a pod interface of this node (globs {:?}): \
                     the agent cannot enforce on this pod",
                    req.interfaces,
                    config.interfaces
                )
            })?;
        if req.addresses.is_empty() {
            bail!("the CNI result gives the pod no address");
        }
        if let Some(why) = self.installer.health.hold(false) {
            bail!("the agent cannot install now: {why}");
        }
        if self.installer.dp.config()?.flags & CONFIG_ACTIVE == 0 {
            bail!("no policy is installed yet: the agent cannot enforce on this pod");
        }
        if !self.attached.contains_key(&ifindex) {
            self.attach(&interface, ifindex);
            if let Some(e) = self.attach_errors.get(&interface) {
                let e = e.clone();
                self.publish();
                bail!("attaching the programs to {interface}: {e}");
            }
        }
        let registration = Registration {
            container_id: req.container_id,
            interface,
            ifindex,
            addresses: req.addresses,
            namespace: req.namespace,
            pod: req.pod,
        };
        let before = self.installer.registry.clone();
        self.installer.registry.insert(registration.clone());
        let cli = self.installer.docs.cli.clone();
        let installed = self.install(&cli, false);
        if installed.is_err() {
            self.installer.registry = before;
        }
        self.publish();
        let generation = installed.map_err(|e| anyhow!("installing the pod's identity: {e:#}"))?;
        self.save_registrations();
        info!(container = %registration.container_id, interface = %registration.interface,
              pod = %format!("{}/{}", registration.namespace, registration.pod),
              generation, "pod interface registered");
        Ok(self.status_of(&registration, generation))
    }

    /// CNI DEL: forget the registration (its addresses become unknown again) and install.
    /// Returns the generation in force.
    pub(super) fn unregister_endpoint(&mut self, container_id: &str) -> Result<u64> {
        let Some(gone) = self.installer.registry.remove(container_id) else {
            return Ok(self.installer.dp.config()?.generation);
        };
        let cli = self.installer.docs.cli.clone();
        let installed = self.install(&cli, false);
        if installed.is_err() {
            self.installer.registry.insert(gone.clone());
        }
        self.publish();
        let generation = installed?;
        self.save_registrations();
        let forgotten = self.forget_pod_state(&gone);
        info!(container = %container_id, interface = %gone.interface, generation,
              flows = forgotten.flows, buckets = forgotten.buckets,
              "pod interface unregistered");
        Ok(generation)
    }

    /// After the flip that made a pod's addresses `unknown`: remove their conntrack entries and
    /// per-source buckets (still held by another registration: kept).
    pub(super) fn forget_pod_state(&mut self, gone: &Registration) -> Forgotten {
        let held: std::collections::BTreeSet<_> = self
            .installer
            .registry
            .endpoints()
            .map(|(_, a)| a)
            .collect();
        let addresses = gone
            .addresses
            .iter()
            .filter(|a| !held.contains(a))
            .copied()
            .collect();
        self.installer.dp.forget_addresses(&addresses)
    }

    /// Keep the registrations in the state dir, so a restarted agent knows its pods at once.
    pub(super) fn save_registrations(&self) {
        let all = self.installer.registry.to_vec();
        if let Err(e) = self.installer.state.save_endpoints(&all) {
            warn!("saving the CNI registrations: {e:#}");
        }
    }

    /// CNI CHECK: the registration in force, an error when there is none.
    pub(super) fn check_endpoint(&self, container_id: &str) -> Result<EndpointStatus> {
        let r = self
            .installer
            .registry
            .get(container_id)
            .ok_or_else(|| anyhow!("container {container_id} is not registered"))?;
        if !self.attached.contains_key(&r.ifindex) {
            bail!("{} is registered but not attached", r.interface);
        }
        Ok(self.status_of(r, self.installer.installed.generation))
    }

    fn status_of(&self, r: &Registration, generation: u64) -> EndpointStatus {
        let set = &self.installer.in_force;
        let identified = set
            .pods
            .values()
            .any(|p| p.name == r.pod && p.namespace == r.namespace)
            || set
                .workloads
                .values()
                .any(|w| w.name == r.pod && w.namespace == r.namespace);
        EndpointStatus {
            container_id: r.container_id.clone(),
            interface: r.interface.clone(),
            ifindex: r.ifindex,
            addresses: r.addresses.clone(),
            identified,
            generation,
        }
    }
}
