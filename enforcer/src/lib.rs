//! enforcer: an eBPF traffic enforcer for microservices. The library holds the policy engine
//! (pure), the datapath loader (the only code touching maps), the agent and the CLI; `main.rs`
//! only wires them.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod cni;
pub mod conflist;
pub mod datapath;
pub mod flowlog;
pub mod kube;
pub mod metrics;
pub mod node;
/// The policy engine lives in its own crate (`enforcer-policy`), kept under its old path.
pub use enforcer_policy as policy;
