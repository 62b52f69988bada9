//! Reading the conntrack table (`CONNTRACK`, LRU): the kernel inserts and refreshes entries;
//! userspace looks them up and removes them (`forget`).

use enforcer_common::{CtKey, CtValue};

use super::Datapath;

impl Datapath {
    /// The conntrack entry of `key`, if the table holds one.
    pub fn conntrack_entry(&self, key: &CtKey) -> Option<CtValue> {
        self.maps.conntrack.get(key, 0).ok()
    }
}
