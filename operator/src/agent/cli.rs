//! `berth agent`: the command line of the agent. Flags override the
//! environment ECS (or the local runtime) sets; prefer the environment for
//! the token, since flags show in `ps`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::activity;
use super::supervisor::{
    AgentOptions, AGENT_DIR_ENV, API_URL_ENV, NAMESPACE_ENV, STOP_TIMEOUT_ENV, TOKEN_ENV,
    WORKSPACE_ENV,
};

/// `berth agent [FLAGS]` runs the agent; `berth agent activity` reports use to it.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    /// Report use to the running agent instead of running one.
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// The operator's base URL [env: BERTH_API_URL].
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// The per-start agent token [env: BERTH_AGENT_TOKEN; prefer it: flags show in `ps`].
    #[arg(long, value_name = "TOKEN")]
    pub agent_token: Option<String>,
    /// The workspace's name [env: BERTH_WORKSPACE] (its namespace: -n, else BERTH_NAMESPACE).
    #[arg(long, value_name = "NAME")]
    pub workspace: Option<String>,
    /// Seconds between the container's SIGTERM and SIGKILL [env: BERTH_STOP_TIMEOUT; default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// Private directory for script files [env: BERTH_AGENT_DIR; default: a fresh one under $TMPDIR].
    #[arg(long, value_name = "DIR")]
    pub agent_dir: Option<PathBuf>,
}

/// `berth agent …` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Tell the agent of this workspace that someone is using it.
    Activity {
        /// What kind of use: ssh, vscode, app, terminal, port-forward or manual.
        #[arg(long, default_value = "manual", value_parser = activity::kind_names())]
        kind: String,
        /// The agent's socket [default: $BERTH_AGENT_SOCKET].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

/// Runs `berth agent`; `namespace` is the global `-n`. Returns the exit code.
pub async fn main(args: AgentArgs, namespace: Option<String>) -> anyhow::Result<u8> {
    if let Some(AgentCommand::Activity { kind, socket }) = args.command {
        let kind = activity::parse_kind(&kind)
            .ok_or_else(|| activity::ActivityError::UnknownKind(kind.clone()))?;
        let socket = socket
            .or_else(|| std::env::var_os(activity::SOCKET_ENV).map(PathBuf::from))
            .with_context(|| {
                format!(
                    "{} is not set: run this inside a workspace, or pass --socket",
                    activity::SOCKET_ENV
                )
            })?;
        activity::report(&socket, kind).await?;
        return Ok(0);
    }
    let flag = |name: &str| -> Option<String> {
        match name {
            API_URL_ENV => args.api_url.clone(),
            TOKEN_ENV => args.agent_token.clone(),
            NAMESPACE_ENV => namespace.clone(),
            WORKSPACE_ENV => args.workspace.clone(),
            STOP_TIMEOUT_ENV => args.stop_timeout.map(|s| s.to_string()),
            AGENT_DIR_ENV => args.agent_dir.as_ref().map(|d| d.display().to_string()),
            _ => None,
        }
    };
    let opts = AgentOptions::from_lookup(|name| flag(name).or_else(|| std::env::var(name).ok()))
        .context("configuring the agent")?;
    // Handlers are installed before anything starts, so a SIGTERM is never
    // lost to the default action.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stop requested");
    };
    let exit = super::run(opts, shutdown).await?;
    for s in &exit.scripts {
        tracing::info!(
            script = %s.name,
            state = s.state.as_str(),
            exit_code = ?s.exit_code,
            "final script state"
        );
    }
    Ok(0)
}
