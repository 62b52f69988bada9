//! Agent settings: defaults, an optional YAML config file, and command-line flags on top.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::node::InterfaceGlobs;

/// The pod interfaces when nothing else is configured.
const DEFAULT_INTERFACES: &str = "ep*";

/// Everything the agent needs to run. Field names are also the keys of `--config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Directory of `*.yaml` policy files (a mounted `ConfigMap`), re-read on change.
    pub policy_dir: Option<PathBuf>,
    /// Comma-separated globs of pod host-side interfaces (e.g. `cali*,lxc*`).
    pub interfaces: InterfaceGlobs,
    /// The node's uplink (XDP early drop of traffic from other nodes).
    pub uplink: Option<String>,
    pub metrics_addr: SocketAddr,
    pub socket: PathBuf,
    /// Where maps and links are pinned (on bpffs).
    pub bpffs: PathBuf,
    /// Where the agent keeps the documents applied with the CLI and the installed generation.
    pub state_dir: PathBuf,
    /// Also attach XDP to pod interfaces (earlier spoofing drops; note that a veth with XDP
    /// disables GSO on its peer, which costs TCP throughput).
    pub xdp_pods: bool,
    /// How tc programs are attached: `auto` (tcx if the kernel has it, else legacy tc), `tcx`,
    /// `netlink` (legacy tc).
    pub tc_attach: crate::datapath::TcAttach,
    /// How often interfaces, routes and the policy directory are re-checked.
    #[serde(with = "secs")]
    pub resync: Duration,
    /// This node's pod address ranges (Kubernetes: the node's `spec.podCIDRs`). An address inside
    /// them is a workload's only once its interface is attached and its endpoint known (a CNI
    /// registration, or a Workload/Pod address routed to a pod interface); until then every flow
    /// from or to it is dropped (`unknown_endpoint`). Empty: such addresses are `world`.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// The labels whose value is a pod's service, tried in order (`KEY[,KEY...]`).
    pub service_label: crate::policy::identity::ServiceLabels,
    /// Map sizes (entries; per slot for the policy maps), set when the datapath is loaded.
    /// An adopted pinned map keeps its size until the pins are removed (`enforcer agent
    /// --unpin` or a layout change).
    pub capacities: crate::datapath::Capacities,
    /// The flow log (JSON lines, docs/flowlog.md): a file, or `-` for stdout; off when unset.
    pub flow_log: Option<crate::flowlog::Target>,
    /// A flow-log file that would grow past this size is rotated (`100MiB`, `512KiB`, bytes).
    pub flow_log_max_size: bytesize::ByteSize,
    /// Rotated flow-log files kept besides the current one (`PATH.1` ... `PATH.N`).
    pub flow_log_files: usize,
    /// Idle timeouts of conntrack entries and how often the agent sweeps them (seconds).
    pub conntrack: crate::datapath::CtTimeouts,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            policy_dir: None,
            interfaces: DEFAULT_INTERFACES.parse().expect("the default glob parses"),
            uplink: None,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], crate::metrics::DEFAULT_METRICS_PORT)),
            socket: PathBuf::from(crate::api::DEFAULT_SOCKET),
            bpffs: PathBuf::from("/sys/fs/bpf/enforcer"),
            state_dir: PathBuf::from("/var/lib/enforcer"),
            xdp_pods: false,
            tc_attach: crate::datapath::TcAttach::Auto,
            resync: Duration::from_secs(1),
            pod_cidrs: Vec::new(),
            service_label: crate::policy::identity::ServiceLabels::default(),
            capacities: crate::datapath::Capacities::default(),
            flow_log: None,
            flow_log_max_size: crate::flowlog::DEFAULT_MAX_SIZE,
            flow_log_files: crate::flowlog::DEFAULT_FILES,
            conntrack: crate::datapath::CtTimeouts::default(),
        }
    }
}

impl AgentConfig {
    /// Read a config file (YAML, keys as above; unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{}: invalid agent config", path.display()))
    }

    /// The flow log's settings, if it is on.
    pub fn flow_log(&self) -> Option<crate::flowlog::FlowLogConfig> {
        self.flow_log
            .clone()
            .map(|path| crate::flowlog::FlowLogConfig {
                path,
                max_size: self.flow_log_max_size,
                files: self.flow_log_files,
            })
    }

    /// Whether an interface name is a pod interface.
    pub fn is_pod_interface(&self, name: &str) -> bool {
        self.interfaces.matches(name)
    }
}

/// `resync`: a positive number of seconds. Zero would stop reconciling altogether (there is no
/// "off"), a negative or huge value is no duration: both are config errors.
mod secs {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_nan() || v <= 0.0 {
            return Err(D::Error::custom(format!(
                "resync must be a positive number of seconds (got {v}; there is no \"off\")"
            )));
        }
        Duration::try_from_secs_f64(v)
            .map_err(|e| D::Error::custom(format!("resync {v} seconds: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn service_label_is_a_list_of_label_keys() {
        let c = parse("serviceLabel: team, app").expect("valid");
        assert_eq!(c.service_label.to_string(), "team,app");
        assert_eq!(
            AgentConfig::default().service_label.to_string(),
            "app.kubernetes.io/name,app"
        );
        let err = parse("serviceLabel: 'bad key!'").expect_err("invalid key");
        assert!(err.contains("service label"), "{err}");
    }

    #[test]
    fn capacities_are_read_from_the_config_file() {
        let c = parse("capacities: {identities: 1000, rules: 500}").expect("valid");
        assert_eq!(c.capacities.identities, 1000);
        assert_eq!(c.capacities.rules, 500);
        assert_eq!(
            c.capacities.policy,
            crate::datapath::Capacities::default().policy,
            "unset sizes keep their default"
        );
        assert!(parse("capacities: {bogus: 1}").is_err());
    }

    #[test]
    fn flow_log_keys() {
        let c =
            parse("flowLog: /var/log/enforcer/flows.json\nflowLogMaxSize: 10MiB\nflowLogFiles: 3")
                .expect("valid");
        let f = c.flow_log().expect("on");
        assert_eq!(
            f.path,
            crate::flowlog::Target::File("/var/log/enforcer/flows.json".into())
        );
        assert_eq!(f.max_size.as_u64(), 10 * 1024 * 1024);
        assert_eq!(f.files, 3);
        assert_eq!(
            parse("flowLog: '-'")
                .expect("stdout")
                .flow_log()
                .map(|f| f.path),
            Some(crate::flowlog::Target::Stdout)
        );
        assert!(AgentConfig::default().flow_log().is_none());
        assert!(parse("flowLogMaxSize: lots").is_err());
    }

    #[test]
    fn resync_must_be_a_positive_duration() {
        assert_eq!(
            parse("resync: 0.5").map(|c| c.resync),
            Ok(Duration::from_millis(500))
        );
        for bad in ["resync: 0", "resync: -1", "resync: .nan", "resync: 1e300"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("resync"), "{bad}: {err}");
        }
        assert!(parse("resync: 0")
            .expect_err("0")
            .contains("there is no \"off\""));
    }
}
