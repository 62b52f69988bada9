//! enforcer: an eBPF traffic enforcer for microservices. The library holds the policy engine
//! (pure), the datapath loader, the agent and the CLI; `main.rs` only wires them.

pub mod datapath;
pub mod policy;
pub mod scenario;
