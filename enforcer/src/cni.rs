//! `enforcer-cni`: a chained CNI plugin (CNI spec 1.0) that makes a new pod enforced before the
//! runtime starts it. In ADD it registers the pod's host-side interface, addresses and name
//! (`K8S_POD_NAMESPACE`/`K8S_POD_NAME` of `CNI_ARGS`) with the agent over its Unix socket, and
//! the agent answers only once the programs are attached and the pod's identity is installed; any
//! failure (agent down, interface not a pod interface, install refused) fails ADD, so the pod is
//! not created (fail closed). DEL unregisters, CHECK asks whether the registration is in force,
//! VERSION lists the spec versions. The previous plugin's result passes through unchanged.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{EndpointRequest, EndpointStatus, Request, DEFAULT_SOCKET};

/// The spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A CNI error, with its well-known code (spec 1.0, "Error").
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version {0:?} (supported: {SUPPORTED_VERSIONS:?})")]
    IncompatibleVersion(String),
    #[error("invalid environment: {0}")]
    InvalidEnvironment(String),
    #[error("decoding the network configuration from stdin: {0}")]
    Decoding(#[from] serde_json::Error),
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The agent cannot be reached: the runtime may retry later.
    #[error(
        "the enforcer agent at {socket} is not reachable, the pod would not be enforced: {why}"
    )]
    AgentUnreachable { socket: PathBuf, why: String },
    /// The agent refused: it cannot enforce on this pod.
    #[error("the enforcer agent refused the pod: {0}")]
    Refused(String),
}

impl CniError {
    /// The CNI error code: 1, 4, 6, 7 and 11 are the spec's; 100 is this plugin's "refused".
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => 1,
            CniError::InvalidEnvironment(_) => 4,
            CniError::Decoding(_) => 6,
            CniError::InvalidConfig(_) => 7,
            CniError::AgentUnreachable { .. } => 11,
            CniError::Refused(_) => 100,
        }
    }

    /// The error object the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.to_string(),
        })
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl std::str::FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Command, CniError> {
        match s {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            other => Err(CniError::InvalidEnvironment(format!(
                "CNI_COMMAND {other:?} is not ADD, DEL, CHECK or VERSION"
            ))),
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// `CNI_ARGS`: `K=V` pairs separated by `;`.
    pub args: BTreeMap<String, String>,
}

impl Invocation {
    /// Read the environment through `var` (`std::env::var` in the binary).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let command: Command = var("CNI_COMMAND")
            .ok_or_else(|| CniError::InvalidEnvironment("CNI_COMMAND is not set".into()))?
            .parse()?;
        let container_id = var("CNI_CONTAINERID").unwrap_or_default();
        if container_id.is_empty() && command != Command::Version {
            return Err(CniError::InvalidEnvironment(
                "CNI_CONTAINERID is not set".into(),
            ));
        }
        let args = var("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Invocation {
            command,
            container_id,
            args,
        })
    }
}

/// The network configuration on stdin (only what this plugin reads; the rest passes through).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    /// The agent's socket [default: `/run/enforcer/enforcer.sock`].
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The previous plugin's result, kept as is for the output.
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// The parts of a CNI result this plugin reads.
#[derive(Debug, Clone, Deserialize)]
struct PrevResult {
    #[serde(default)]
    interfaces: Vec<ResultInterface>,
    #[serde(default)]
    ips: Vec<ResultIp>,
}

#[derive(Debug, Clone, Deserialize)]
struct ResultInterface {
    name: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ResultIp {
    address: IpNet,
}

/// What the plugin writes on stdout on success.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<&'static str>,
}

/// How the plugin reaches the agent (the socket, or a stand-in in tests).
pub trait Agent {
    fn call(&self, socket: &Path, request: &Request) -> anyhow::Result<Value>;
}

/// The real agent, over its Unix socket.
pub struct SocketAgent;

impl Agent for SocketAgent {
    fn call(&self, socket: &Path, request: &Request) -> anyhow::Result<Value> {
        crate::client::call(socket, request)
    }
}

/// Run one invocation: `stdin` is the network configuration. Returns what to print on stdout.
pub fn run(inv: &Invocation, stdin: &str, agent: &impl Agent) -> Result<Value, CniError> {
    if inv.command == Command::Version {
        let version = serde_json::from_str::<NetConf>(stdin)
            .map_or_else(|_| "1.0.0".to_string(), |c| c.cni_version);
        return Ok(serde_json::to_value(VersionResult {
            cni_version: version,
            supported_versions: SUPPORTED_VERSIONS.to_vec(),
        })?);
    }
    let conf: NetConf = serde_json::from_str(stdin)?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::IncompatibleVersion(conf.cni_version));
    }
    let socket = conf
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    match inv.command {
        Command::Add => add(inv, &conf, &socket, agent),
        Command::Del => {
            let request = Request::EndpointDel {
                container_id: inv.container_id.clone(),
            };
            // DEL completes even when the agent is away: its registrations do not outlive it,
            // and the pod's interface (whose removal also drops them) is going away.
            if let Err(e) = agent.call(&socket, &request) {
                eprintln!("enforcer-cni: DEL {}: {e:#}", inv.container_id);
            }
            Ok(Value::Null)
        }
        Command::Check => check(inv, &conf, &socket, agent),
        Command::Version => unreachable!("answered above"),
    }
}

fn add(
    inv: &Invocation,
    conf: &NetConf,
    socket: &Path,
    agent: &impl Agent,
) -> Result<Value, CniError> {
    let prev = conf.prev_result.clone().ok_or_else(|| {
        CniError::InvalidConfig(
            "no prevResult: enforcer-cni is a chained plugin, after the one that creates the \
             pod's interface"
                .into(),
        )
    })?;
    let request = Request::EndpointAdd(endpoint_request(inv, &prev)?);
    call(agent, socket, &request)?;
    Ok(prev)
}

fn check(
    inv: &Invocation,
    conf: &NetConf,
    socket: &Path,
    agent: &impl Agent,
) -> Result<Value, CniError> {
    let request = Request::EndpointCheck {
        container_id: inv.container_id.clone(),
    };
    let status: EndpointStatus = serde_json::from_value(call(agent, socket, &request)?)?;
    if let Some(prev) = &conf.prev_result {
        let wanted = endpoint_request(inv, prev)?;
        let mut got = status.addresses.clone();
        let mut want = wanted.addresses;
        got.sort();
        want.sort();
        if got != want {
            return Err(CniError::Refused(format!(
                "registered addresses {got:?} differ from the result's {want:?}"
            )));
        }
    }
    Ok(Value::Null)
}

fn call(agent: &impl Agent, socket: &Path, request: &Request) -> Result<Value, CniError> {
    if !socket.exists() {
        return Err(CniError::AgentUnreachable {
            socket: socket.to_path_buf(),
            why: "no socket".into(),
        });
    }
    agent.call(socket, request).map_err(|e| {
        let why = format!("{e:#}");
        if e.chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some())
        {
            CniError::AgentUnreachable {
                socket: socket.to_path_buf(),
                why,
            }
        } else {
            CniError::Refused(why)
        }
    })
}

/// The registration the previous result describes: host-side interfaces (no sandbox) and the
/// pod's addresses; the pod's name from `K8S_POD_*`.
fn endpoint_request(inv: &Invocation, prev: &Value) -> Result<EndpointRequest, CniError> {
    let prev: PrevResult = serde_json::from_value(prev.clone())
        .map_err(|e| CniError::InvalidConfig(format!("prevResult: {e}")))?;
    let interfaces: Vec<String> = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.as_deref().unwrap_or("").is_empty())
        .map(|i| i.name.clone())
        .collect();
    if interfaces.is_empty() {
        return Err(CniError::InvalidConfig(
            "prevResult names no host-side interface (one without a sandbox)".into(),
        ));
    }
    let addresses: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.addr()).collect();
    if addresses.is_empty() {
        return Err(CniError::InvalidConfig(
            "prevResult gives the pod no address".into(),
        ));
    }
    let pod = inv
        .args
        .get("K8S_POD_NAME")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            CniError::InvalidEnvironment(
                "CNI_ARGS has no K8S_POD_NAME: the pod's identity cannot be known".into(),
            )
        })?;
    let namespace = inv
        .args
        .get("K8S_POD_NAMESPACE")
        .filter(|n| !n.is_empty())
        .map_or_else(|| "default".to_string(), Clone::clone);
    Ok(EndpointRequest {
        container_id: inv.container_id.clone(),
        interfaces,
        addresses,
        namespace,
        pod: pod.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    struct Recorder {
        requests: RefCell<Vec<Request>>,
        answer: fn() -> anyhow::Result<Value>,
    }

    impl Agent for Recorder {
        fn call(&self, _: &Path, request: &Request) -> anyhow::Result<Value> {
            self.requests.borrow_mut().push(request.clone());
            (self.answer)()
        }
    }

    const CONF: &str = r#"{
      "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "enforcer-cni",
      "socket": "/",
      "prevResult": {
        "cniVersion": "1.0.0",
        "interfaces": [
          {"name": "cali12ab", "mac": "ee:ee:ee:ee:ee:ee"},
          {"name": "eth0", "sandbox": "/var/run/netns/cni-1"}
        ],
        "ips": [{"address": "10.10.3.7/32", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }"#;

    fn env(command: &str) -> Invocation {
        Invocation::from_env(|k| {
            Some(
                match k {
                    "CNI_COMMAND" => command,
                    "CNI_CONTAINERID" => "c1",
                    "CNI_ARGS" => "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=batch-0",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .expect("env")
    }

    #[test]
    fn add_registers_the_host_interface_and_passes_the_result_through() {
        let agent = Recorder {
            requests: RefCell::default(),
            answer: || Ok(Value::Null),
        };
        let out = run(&env("ADD"), CONF, &agent).expect("add");
        assert_eq!(out["ips"][0]["address"], "10.10.3.7/32");
        let requests = agent.requests.borrow();
        let Request::EndpointAdd(r) = &requests[0] else {
            panic!("{requests:?}")
        };
        assert_eq!(r.interfaces, ["cali12ab"]);
        assert_eq!(r.addresses, [IpAddr::from([10, 10, 3, 7])]);
        assert_eq!((r.namespace.as_str(), r.pod.as_str()), ("shop", "batch-0"));
    }

    #[test]
    fn add_fails_when_the_agent_refuses_and_del_does_not() {
        let agent = Recorder {
            requests: RefCell::default(),
            answer: || Err(anyhow::anyhow!("no policy is installed yet")),
        };
        let e = run(&env("ADD"), CONF, &agent).expect_err("refused");
        assert_eq!(e.code(), 100);
        assert!(e.to_string().contains("no policy"), "{e}");
        assert!(run(&env("DEL"), CONF, &agent).is_ok());
    }

    #[test]
    fn add_without_a_socket_is_unreachable_and_without_prev_result_invalid() {
        let agent = Recorder {
            requests: RefCell::default(),
            answer: || Ok(Value::Null),
        };
        let conf = CONF.replace(
            r#""socket": "/""#,
            r#""socket": "/nonexistent/enforcer.sock""#,
        );
        let e = run(&env("ADD"), &conf, &agent).expect_err("down");
        assert_eq!(e.code(), 11);
        let e = run(&env("ADD"), r#"{"cniVersion": "1.0.0"}"#, &agent).expect_err("no prev");
        assert_eq!(e.code(), 7);
        let e = run(&env("ADD"), r#"{"cniVersion": "9.9.9"}"#, &agent).expect_err("version");
        assert_eq!(e.code(), 1);
    }

    #[test]
    fn version_lists_the_supported_versions() {
        let agent = Recorder {
            requests: RefCell::default(),
            answer: || Ok(Value::Null),
        };
        let out = run(&env("VERSION"), "", &agent).expect("version");
        assert_eq!(out["supportedVersions"][3], "1.0.0");
    }
}
