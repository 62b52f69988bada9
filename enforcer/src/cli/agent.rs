//! `enforcer agent` and `enforcer uninstall`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{
    agent::{self, Agent, AgentConfig},
    node::InterfaceGlobs,
    policy::identity::ServiceLabels,
};

#[derive(Debug, Clone, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each its own flag"
)]
pub struct AgentArgs {
    /// YAML config file (keys: policyDir, interfaces, uplink, metricsAddr, socket, bpffs, stateDir, xdpPods, tcAttach, resync, podCidrs, serviceLabel, capacities, flowLog, flowLogMaxSize, flowLogFiles, conntrack).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory whose YAML files (workloads and flow policies) are desired state, re-read on change.
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
    /// Comma-separated globs of the pods' host-side interfaces [default: ep*].
    #[arg(long)]
    pub interfaces: Option<InterfaceGlobs>,
    /// The node's uplink interface.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Address of /metrics, /healthz and /readyz [default: 127.0.0.1:9967].
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Pin maps and links under this bpffs directory [default: /sys/fs/bpf/enforcer].
    #[arg(long)]
    pub bpffs: Option<PathBuf>,
    /// Where applied documents and the installed generation are kept [default: /var/lib/enforcer].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also attach XDP to pod interfaces (earlier spoofing drops; disables GSO on the veth peer).
    #[arg(long)]
    pub xdp_pods: bool,
    /// How tc programs are attached [default: auto: tcx if the kernel has it, else legacy tc].
    #[arg(long, value_enum, env = "ENFORCER_TC_ATTACH")]
    pub tc_attach: Option<crate::datapath::TcAttach>,
    /// This node's pod address ranges (comma-separated CIDRs): an address inside them that the
    /// agent has not registered on an attached pod interface is dropped (`unknown_endpoint`).
    #[arg(long, value_delimiter = ',')]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Take this node's pod ranges (--pod-cidrs) from its Node object's spec.podCIDRs, read
    /// once at start, before the datapath loads (needs --kubernetes).
    #[arg(long, requires = "kubernetes", conflicts_with = "pod_cidrs")]
    pub pod_cidrs_from_node: bool,
    /// Take pods, namespaces, network policies and flow policies from the Kubernetes API
    /// (in-cluster config unless --kubeconfig), and write the flow policies' status.
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubeconfig file for --kubernetes (default: the in-cluster service account).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, for the policies' status (the daemon set passes the pod's node name).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// Write every flow and drop event as a JSON line (docs/flowlog.md) to this file, or to
    /// stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub flow_log: Option<crate::flowlog::Target>,
    /// Rotate the flow-log file before it grows past this size (`100MiB`, `512KiB`, bytes)
    /// [default: 100MiB].
    #[arg(long, value_name = "SIZE")]
    pub flow_log_max_size: Option<bytesize::ByteSize>,
    /// Rotated flow-log files kept besides the current one [default: 5].
    #[arg(long, value_name = "N")]
    pub flow_log_files: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Detach everything, remove the pins and exit (the datapath stops enforcing).
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn config(
    args: &AgentArgs,
    socket: Option<PathBuf>,
    service_label: Option<ServiceLabels>,
) -> Result<AgentConfig> {
    let mut c = match &args.config {
        Some(p) => {
            crate::agent::trust::check_config(p)?;
            AgentConfig::from_file(p)?
        }
        None => AgentConfig::default(),
    };
    if let Some(socket) = socket {
        c.socket = socket;
    }
    if let Some(v) = &args.policy_dir {
        c.policy_dir = Some(v.clone());
    }
    if let Some(v) = &args.interfaces {
        c.interfaces.clone_from(v);
    }
    if let Some(v) = &args.uplink {
        c.uplink = Some(v.clone());
    }
    if let Some(v) = args.metrics_addr {
        c.metrics_addr = v;
    }
    if let Some(v) = &args.bpffs {
        c.bpffs.clone_from(v);
    }
    if let Some(v) = &args.state_dir {
        c.state_dir.clone_from(v);
    }
    c.xdp_pods |= args.xdp_pods;
    if let Some(v) = args.tc_attach {
        c.tc_attach = v;
    }
    if !args.pod_cidrs.is_empty() {
        c.pod_cidrs.clone_from(&args.pod_cidrs);
    }
    if let Some(v) = &args.flow_log {
        c.flow_log = Some(v.clone());
    }
    if let Some(v) = args.flow_log_max_size {
        c.flow_log_max_size = v;
    }
    if let Some(v) = args.flow_log_files {
        c.flow_log_files = v;
    }
    if let Some(v) = service_label {
        c.service_label = v;
    }
    Ok(c)
}

pub fn run(
    args: &AgentArgs,
    socket: Option<PathBuf>,
    service_label: Option<ServiceLabels>,
) -> Result<()> {
    init_logging(args.log_format);
    let mut config = config(args, socket, service_label)?;
    if let Some((kubeconfig, node)) = kubernetes(args).filter(|_| args.pod_cidrs_from_node) {
        config.pod_cidrs = node_pod_cidrs(kubeconfig.as_deref(), &node)?;
        info!(node, pod_cidrs = ?config.pod_cidrs, "pod ranges from the node's spec.podCIDRs");
    }
    if args.uninstall {
        agent::uninstall(&config.bpffs)?;
        let _ = std::fs::remove_file(&config.socket);
        info!(bpffs = %config.bpffs.display(), "uninstalled: programs detached, pins removed");
        return Ok(());
    }
    // Everything that needs privileges happens here, on the only thread: load, attach, bind.
    let (socket, metrics_addr, resync) =
        (config.socket.clone(), config.metrics_addr, config.resync);
    let started = Agent::start(config)?;
    let api = crate::agent::server::bind(&socket)?;
    let http = std::net::TcpListener::bind(metrics_addr)
        .with_context(|| format!("binding metrics address {metrics_addr}"))?;
    http.set_nonblocking(true)?;
    match crate::agent::caps::raise_open_files_limit() {
        Ok(n) => info!(open_files = n, "open files limit"),
        Err(e) => warn!("could not raise the open files limit: {e:#}"),
    }
    match crate::agent::caps::drop_privileges() {
        Ok(kept) => info!(?kept, "dropped every other capability"),
        Err(e) => warn!("could not drop capabilities: {e:#}"),
    }
    // Threads start only now, and inherit the reduced capabilities.
    started.owner.spawn().context("starting the owner thread")?;
    started.agent.watch_node()?;
    if let Some(writer) = started.flow_log {
        writer
            .spawn(node_name(args))
            .context("starting the flow-log writer")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let kubernetes = kubernetes(args);
    let agent = started.agent;
    runtime.block_on(async move {
        agent::events::spawn(&agent, started.events);
        tokio::spawn(agent::aging::sweep_loop(agent.clone(), started.sweeper));
        serve(agent, api, http, resync, kubernetes).await
    })
}

/// This node's name: `--node-name`/`NODE_NAME`, else the host name.
fn node_name(args: &AgentArgs) -> String {
    if args.node_name.is_empty() {
        crate::kube::hostname()
    } else {
        args.node_name.clone()
    }
}

/// What `--kubernetes` needs: (kubeconfig, node name).
fn kubernetes(args: &AgentArgs) -> Option<(Option<PathBuf>, String)> {
    args.kubernetes
        .then(|| (args.kubeconfig.clone(), node_name(args)))
}

/// `--pod-cidrs-from-node`: one GET of the Node, on a runtime that is gone (with its threads)
/// before the datapath loads.
fn node_pod_cidrs(kubeconfig: Option<&std::path::Path>, node: &str) -> Result<Vec<ipnet::IpNet>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::kube::client(kubeconfig).await?;
        Ok(crate::kube::node::pod_cidrs(client, node).await?)
    })
}

/// Start the Kubernetes watches (`--kubernetes`); `/readyz` waits for their first sync.
async fn watch_kubernetes(
    agent: &Arc<Agent>,
    kubeconfig: Option<PathBuf>,
    node: String,
) -> Result<()> {
    let client = crate::kube::client(kubeconfig.as_deref()).await?;
    let a = agent.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::kube::watch::run(client, a, node).await {
            tracing::error!("Kubernetes watches stopped: {e:#}");
        }
    });
    Ok(())
}

async fn serve(
    agent: Arc<Agent>,
    api: std::os::unix::net::UnixListener,
    http: std::net::TcpListener,
    resync: std::time::Duration,
    kubernetes: Option<(Option<PathBuf>, String)>,
) -> Result<()> {
    let socket = agent.config.socket.clone();
    let api = tokio::net::UnixListener::from_std(api)?;
    let http = tokio::net::TcpListener::from_std(http)?;
    info!(socket = %socket.display(), metrics = %http.local_addr()?, "agent ready");
    tokio::spawn(agent::server::serve(agent.clone(), api));
    tokio::spawn(agent::http::serve(agent.clone(), http));
    let a = agent.clone();
    tokio::spawn(async move { resync_loop(a, resync).await });
    tokio::spawn(agent::usage::observe_loop(agent.clone()));
    if let Some((kubeconfig, node)) = kubernetes {
        watch_kubernetes(&agent, kubeconfig, node).await?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: exiting; the pinned datapath keeps enforcing"),
        _ = int.recv() => info!("SIGINT: exiting; the pinned datapath keeps enforcing"),
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn resync_loop(agent: Arc<Agent>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = agent.reconcile().await {
            warn!("reconcile: {e:#}");
        }
    }
}
