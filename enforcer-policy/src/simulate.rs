//! A userspace model of the datapath's lookups over `Compiled` entries: identity (exact, then
//! longest CIDR prefix), then the policy trie (the peer's table, then any peer's). Tests use it to
//! check the compiler against `explain`, without a kernel.

use std::{collections::HashMap, net::IpAddr};

use enforcer_common::{identity, IdentityValue, PolicyKey, PolicyValue, IDF_HOST, VERDICT_DENY};

use super::{
    compile::{addr_bits, PolicyEntry},
    Compiled, Direction, Flow, Verdict,
};

/// Index of a `Compiled` for lookups.
pub struct Simulator<'a> {
    compiled: &'a Compiled,
    exact: HashMap<IpAddr, IdentityValue>,
    tables: HashMap<(u8, u32, u32), Vec<&'a PolicyEntry>>,
}

impl<'a> Simulator<'a> {
    pub fn new(compiled: &'a Compiled) -> Self {
        let mut tables: HashMap<(u8, u32, u32), Vec<&PolicyEntry>> = HashMap::new();
        for e in &compiled.policy {
            let k = PolicyKey::decode(&e.key);
            tables
                .entry((k.direction, k.subject, k.peer))
                .or_default()
                .push(e);
        }
        Simulator {
            compiled,
            exact: compiled.identities.iter().copied().collect(),
            tables,
        }
    }

    pub fn identity(&self, addr: IpAddr) -> IdentityValue {
        if let Some(v) = self.exact.get(&addr) {
            return *v;
        }
        let a = addr_bits(addr);
        self.compiled
            .cidrs
            .iter()
            .filter(|(p, _)| p.contains_addr(a))
            .max_by_key(|(p, _)| p.len)
            .map_or(
                IdentityValue {
                    id: identity::WORLD,
                    flags: 0,
                },
                |(_, v)| *v,
            )
    }

    fn lookup(
        &self,
        dir: u8,
        subject: u32,
        peer: u32,
        proto: u8,
        port: u16,
    ) -> Option<PolicyValue> {
        let table = self.tables.get(&(dir, subject, peer))?;
        let point = (u32::from(proto) << 16) | u32::from(port);
        table
            .iter()
            .filter(|e| PolicyKey::decode(&e.key).covers(e.prefix_len, point))
            .max_by_key(|e| e.prefix_len)
            .map(|e| e.value)
    }

    /// The decision of one side, as the datapath makes it for a new flow.
    pub fn side(&self, dir: Direction, flow: &Flow) -> Verdict {
        let src = self.identity(flow.src);
        let dst = self.identity(flow.dst);
        if dir == Direction::Ingress && src.flags & IDF_HOST != 0 {
            return Verdict::Allow;
        }
        let (subject, peer) = match dir {
            Direction::Ingress => (dst.id, src.id),
            Direction::Egress => (src.id, dst.id),
        };
        let code = dir.code();
        let v = self
            .lookup(code, subject, peer, flow.protocol, flow.port)
            .or_else(|| self.lookup(code, subject, identity::ANY, flow.protocol, flow.port));
        match v {
            Some(v) if v.verdict == VERDICT_DENY => Verdict::Deny,
            Some(v) if v.audit_verdict == VERDICT_DENY => Verdict::Audit,
            _ => Verdict::Allow,
        }
    }

    /// The verdict of a new flow judged on both sides (source's egress, destination's ingress).
    pub fn verdict(&self, flow: &Flow) -> Verdict {
        let e = self.side(Direction::Egress, flow);
        let i = self.side(Direction::Ingress, flow);
        if e == Verdict::Deny || i == Verdict::Deny {
            Verdict::Deny
        } else if e == Verdict::Audit || i == Verdict::Audit {
            Verdict::Audit
        } else {
            Verdict::Allow
        }
    }
}
