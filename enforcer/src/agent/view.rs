//! What the agent's readers see: a snapshot the owner publishes after every reconcile, apply and
//! delete. `/readyz`, `/metrics`, `status`, `get`, `explain`, `stats` and the event decoder read
//! the latest snapshot and never wait for the owner (an install in progress does not delay them).

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

use crate::{
    datapath::TcAttachMode,
    metrics::View,
    policy::{Compiled, NodeContext, PolicySet},
};

/// Role of an attached interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pod,
    Uplink,
}

/// ifindex → (name, role) of the interfaces the datapath is attached to.
pub type Attached = BTreeMap<u32, (String, Role)>;

/// The agent's state as of the last change.
pub struct Snapshot {
    /// What probes and scrapes read.
    pub view: Arc<View>,
    /// The policy set in force, what it compiled to, and the node facts it was compiled with.
    pub set: Arc<PolicySet>,
    pub compiled: Arc<Compiled>,
    pub ctx: Arc<NodeContext>,
    pub attached: Arc<Attached>,
    pub tc_attach: TcAttachMode,
    /// Problems that leave the agent ready (a missing uplink).
    pub warnings: Vec<String>,
}

/// The latest snapshot: one writer (the owner), any number of readers.
pub struct Published(watch::Sender<Arc<Snapshot>>);

impl Snapshot {
    /// Nothing in force yet.
    pub fn empty(tc_attach: TcAttachMode) -> Snapshot {
        Snapshot {
            view: Arc::default(),
            set: Arc::default(),
            compiled: Arc::default(),
            ctx: Arc::default(),
            attached: Arc::default(),
            tc_attach,
            warnings: Vec::new(),
        }
    }
}

impl Published {
    pub fn new(first: Snapshot) -> Published {
        Published(watch::Sender::new(Arc::new(first)))
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.0.borrow().clone()
    }

    pub fn set(&self, snapshot: Snapshot) {
        self.0.send_replace(Arc::new(snapshot));
    }
}
