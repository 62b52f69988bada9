//! The `enforcer` command line (kubectl conventions). One module per verb; `main` only calls
//! `run`.

pub mod agent;
pub mod cni;
pub mod flows;
pub mod lint;
pub mod output;
pub mod policy;
pub mod status;
pub mod suggest;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use self::output::Format;
use crate::policy::graph;

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "eBPF traffic enforcer for microservices: agent and CLI"
)]
pub struct Cli {
    /// The agent's API socket [default: /run/enforcer/enforcer.sock].
    #[arg(long, global = true, env = "ENFORCER_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The labels whose value is a pod's service, tried in order (the agent, and the commands
    /// that read files) [default: app.kubernetes.io/name,app].
    #[arg(
        long,
        global = true,
        env = "ENFORCER_SERVICE_LABEL",
        value_name = "KEY[,KEY...]"
    )]
    pub service_label: Option<crate::policy::identity::ServiceLabels>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: attach the datapath, keep the policy in force, serve the API.
    Agent(Box<agent::AgentArgs>),
    /// Detach the datapath and remove its pins (stops enforcing).
    Uninstall {
        #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
        bpffs: PathBuf,
    },
    /// Manage flow policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Agent status: interfaces, generation, map usage, uptime, version.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Packet counters by verdict and reason, and per rule.
    Stats {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Observed flows and drops (like `hubble observe`).
    Flows {
        /// Keep streaming new events.
        #[arg(long)]
        follow: bool,
        /// Only events with this verdict.
        #[arg(long, value_parser = flows::verdict_arg())]
        verdict: Option<enforcer_common::Verdict>,
        /// Only events from or to this service.
        #[arg(long)]
        service: Option<String>,
        /// Only the last N events of the history.
        #[arg(long)]
        last: Option<usize>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Service inventory from the observed flows, and flow policies that allow exactly them.
    Suggest {
        /// Only flows seen in the last SECONDS.
        #[arg(long, value_name = "SECONDS")]
        since: Option<u64>,
        /// Mode of the suggested policies (audit: apply them to watch what they would deny).
        #[arg(long, value_parser = ["enforce", "audit"], default_value = "enforce")]
        mode: String,
        /// Read flow events from FILE (`enforcer flows -o json` output; `-` = stdin) instead of
        /// asking the agent; repeat to merge the flows of several nodes.
        #[arg(long, value_name = "FILE")]
        flows: Vec<PathBuf>,
        /// yaml: the policies (inventory as comments); table: the inventory; json: both.
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// Print the custom resource definitions of the enforcer policy objects as YAML.
    Crds {
        /// Write one file per CRD into DIR instead (deploy/kubernetes/base/crds).
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Install or remove the chained CNI plugin enforcer-cni on this node.
    #[command(subcommand)]
    Cni(cni::CniCommand),
    /// Shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Apply workloads and flow policies (an existing name is replaced).
    Apply {
        /// A file, a directory of *.yaml, or - for stdin.
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the documents in force.
    Get {
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Delete a document by name.
    Delete {
        name: String,
        /// The kind (`Workload`, `FlowPolicy`, `Namespace`, `Pod`, `NetworkPolicy`), when documents of
        /// several kinds share the name.
        #[arg(long)]
        kind: Option<String>,
        /// The namespace [default: the default namespace and cluster-wide documents].
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print the `FlowPolicy` equivalent of the `NetworkPolicies` in files.
    Convert {
        #[arg(short, long, required = true)]
        file: Vec<PathBuf>,
    },
    /// Show what applying a file would change (exit 1 if it would change something).
    Diff {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Validate files offline (CI gate): exit 0 if valid, 1 if not.
    Check {
        #[arg(short, long, required = true)]
        file: Vec<PathBuf>,
    },
    /// Explain the verdict of a flow: the deciding policy and rule.
    Explain {
        /// Source: an address, `host`, NAMESPACE/POD or a workload name.
        #[arg(long)]
        from: String,
        /// Destination: an address, `host`, NAMESPACE/POD or a workload name.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "TCP")]
        protocol: String,
        #[arg(long)]
        port: Option<u16>,
        /// Explain offline against these files instead of asking the agent.
        #[arg(short, long)]
        file: Vec<PathBuf>,
        #[arg(short, long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Least-privilege findings (shadowed, over-broad, unused rules, exposure), for CI:
    /// exit 1 when a finding reaches --fail-on.
    Lint(lint::LintArgs),
    /// The service graph with exposure (who reaches each service, blast radius), as a
    /// self-contained HTML page or Markdown.
    Report {
        /// Policy files (default: the agent's policy in force and its observed flows).
        #[arg(short, long)]
        file: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value = "html")]
        output: lint::ReportFormat,
    },
    /// Draw the service graph the policy allows.
    Graph {
        /// Policy files (default: the agent's policy in force).
        #[arg(short, long)]
        file: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value = "dot")]
        output: graph::GraphFormat,
    },
}

/// Run the command line; `Ok(false)` means "ran, but the answer is no" (exit 1).
pub fn run(cli: Cli) -> Result<bool> {
    let Cli {
        socket: given,
        service_label,
        command,
    } = cli;
    if let Some(keys) = &service_label {
        policy::set_service_labels(keys.clone());
    }
    // The agent takes its socket from its config file unless given; clients use the default.
    let socket = given
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET));
    match command {
        Command::Agent(args) => agent::run(&args, given, service_label)?,
        Command::Uninstall { bpffs } => uninstall(&bpffs)?,
        Command::Policy(p) => return policy_command(&socket, p),
        Command::Status { output } => status::status(&socket, output)?,
        Command::Stats { output } => status::stats(&socket, output)?,
        Command::Flows {
            follow,
            verdict,
            service,
            last,
            output,
        } => flows::flows(
            &socket,
            flows::FlowsArgs {
                follow,
                verdict,
                service,
                last,
                format: output,
            },
        )?,
        Command::Suggest {
            since,
            mode,
            flows,
            output,
        } => suggest::run(
            &socket,
            &suggest::SuggestArgs {
                since,
                mode: mode.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                flows,
                format: output,
            },
        )?,
        Command::Cni(c) => cni::run(&c, &socket)?,
        Command::Crds { write } => crate::kube::print_crds(write.as_deref())?,
        Command::Completions { shell } => completions(shell),
    }
    Ok(true)
}

/// `enforcer completions SHELL`: the shell completion script on stdout.
fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "enforcer",
        &mut std::io::stdout(),
    );
}

/// `enforcer uninstall`: detach the programs and remove the pins.
fn uninstall(bpffs: &Path) -> Result<()> {
    crate::agent::uninstall(bpffs)?;
    println!(
        "uninstalled: programs detached and pins removed under {}",
        bpffs.display()
    );
    Ok(())
}

fn policy_command(socket: &std::path::Path, p: PolicyCommand) -> Result<bool> {
    match p {
        PolicyCommand::Apply { file, dry_run } => policy::apply(socket, &file, dry_run)?,
        PolicyCommand::Get { name, output } => policy::get(socket, name, output)?,
        PolicyCommand::Delete {
            name,
            kind,
            namespace,
        } => policy::delete(socket, &name, kind, namespace)?,
        PolicyCommand::Convert { file } => policy::convert(&file)?,
        PolicyCommand::Diff { file } => return Ok(!policy::diff(socket, &file)?),
        PolicyCommand::Check { file } => policy::check(&file)?,
        PolicyCommand::Lint(args) => return lint::run(socket, &args),
        PolicyCommand::Report { file, output } => lint::report(socket, &file, output)?,
        PolicyCommand::Explain {
            from,
            to,
            protocol,
            port,
            file,
            output,
        } => policy::explain_cmd(
            socket,
            policy::ExplainArgs {
                from,
                to,
                protocol,
                port,
                files: file,
                json: output == "json",
            },
        )?,
        PolicyCommand::Graph { file, output } => {
            let set = if file.is_empty() {
                let docs: Vec<crate::policy::Document> =
                    crate::client::call(socket, &crate::api::Request::Get { name: None })?;
                crate::policy::PolicySet::from_documents(docs)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            } else {
                policy::load_set(&file)?
            };
            print!("{}", graph::render(&set, output));
        }
    }
    Ok(true)
}
