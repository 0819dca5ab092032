//! The `berth` command: kubectl habits for Berth resources, plus the
//! operator itself (`berth operator`), the laptop all-in-one (`berth up`)
//! and helpers (`berth pg`, `berth crd`, `berth completion`).
//!
//! Every command returns a [`CliError`] or an exit code; `main` prints errors
//! to stderr as `error: …` lines, one per cause, naming the object and the
//! field path, and exits non-zero.

pub mod apply;
pub mod client;
pub mod config;
pub mod connect;
pub mod crd;
pub mod describe;
pub mod get;
pub mod local;
pub mod logs;
pub mod power;
pub mod render;
pub mod sync;
pub mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};

pub use client::{ApiError, Client};
pub use config::Config;
pub use local::{AccessArgs, AwsArgs, CloudKind, SimArgs};
pub use power::PowerAction;
pub use wait::WaitFor;

/// Declarative developer workspaces on AWS ECS Fargate and EFS.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// Connection and namespace flags shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands that do not talk to a Berth API server: they run one (or are
/// helpers), so `--server` and `--token` mean nothing to them.
const SERVERLESS: [&str; 6] = ["operator", "up", "crd", "completion", "pg", "agent"];

/// The command line as parsed: [`Cli`], with `--server` and `--token` taken
/// off the commands that do not use them (out of their help, and refused
/// with a message saying why).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for name in SERVERLESS {
        cmd = cmd.mut_subcommand(name, |sc| {
            // An argument of the same id keeps the global one out (clap
            // propagates a global only where none exists).
            ["server", "token"].into_iter().fold(sc, |sc, id| {
                sc.arg(clap::Arg::new(id).long(id).hide(true).value_parser(
                    move |_: &str| -> Result<String, String> {
                        Err(format!(
                            "--{id} is for commands that talk to a Berth server; this one does not"
                        ))
                    },
                ))
            })
        });
    }
    cmd
}

/// Parses the process's arguments with [`command`]; exits on an error, as
/// `Parser::parse` does.
pub fn parse() -> Cli {
    use clap::FromArgMatches as _;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

/// Flags shared by every command.
#[derive(Clone, Debug, Default, Args)]
pub struct GlobalArgs {
    /// URL of the Berth API server (default: from the config file, else http://127.0.0.1:7070).
    #[arg(long, global = true, env = "BERTH_SERVER")]
    pub server: Option<String>,
    /// Bearer token (default: from the config file).
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Namespace (organization) to work in [default: default].
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// CLI config file [default: $XDG_CONFIG_HOME/berth/config.yaml, else ~/.config/berth/config.yaml].
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The full objects as YAML.
    Yaml,
    /// The full objects as JSON.
    Json,
    /// A table with more columns.
    Wide,
    /// `kind/name` only.
    Name,
}

/// Shells `completion` can write scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Files named with `-f`.
#[derive(Clone, Debug, Default, Args)]
pub struct FileArgs {
    /// A file, a directory (its .yaml, .yml and .json files, sorted) or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Descend into sub-directories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from files, all or nothing.
    #[command(after_help = "GitOps from CI:\n  \
        berth apply -f deploy/ --prune -l team=payments\n  \
        (applies deploy/ and, in the same transaction, deletes the objects labelled team=payments that deploy/ no longer contains)")]
    Apply {
        /// What to apply.
        #[command(flatten)]
        files: FileArgs,
        /// Validate and show what would happen without writing anything.
        #[arg(long)]
        dry_run: bool,
        /// Delete the objects matching -l that the files no longer contain (needs -l).
        #[arg(long)]
        prune: bool,
        /// With --prune: the label selector of the objects these files manage (`k=v,k2=v2`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Show what `apply` would change, as a unified diff (exit 0: none, 1: changes, 2: error).
    Diff {
        /// What to compare.
        #[command(flatten)]
        files: FileArgs,
        /// Also show the objects `apply --prune -l …` would delete.
        #[arg(long)]
        prune: bool,
        /// With --prune: the label selector of the objects these files manage.
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Sync a GitSource now (admins) and wait for the result.
    Sync {
        /// The GitSource (`team` or `gs/team`).
        #[arg(value_name = "GITSOURCE")]
        name: String,
        /// Give up waiting after this long (`0` = request the sync and return).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List objects or show one.
    Get {
        /// Kind: workspaces (ws), workspacetemplates (wst), lifecyclepolicies (lp), gitsources (gs).
        kind: String,
        /// Object name; omitted = all.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
        /// Label selector (`k=v,k2!=v2`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// After listing, print changes as they happen.
        #[arg(short = 'w', long)]
        watch: bool,
        /// List across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one object in detail, with its conditions and events.
    Describe {
        /// Kind: workspaces (ws), workspacetemplates (wst), lifecyclepolicies (lp), gitsources (gs).
        kind: String,
        /// Object name.
        name: String,
    },
    /// Delete objects by name or from files.
    Delete {
        /// Kind (with NAME…); omitted with -f.
        kind: Option<String>,
        /// Object names.
        names: Vec<String>,
        /// Delete the objects the files describe.
        #[command(flatten)]
        files: FileArgs,
        /// Treat "not found" as success.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Start workspaces (records a start intent; the newest intent wins).
    Start {
        /// Workspace names (`alice` or `ws/alice`).
        #[arg(required = true, value_name = "WORKSPACE")]
        workspaces: Vec<String>,
        /// Wake a Dormant workspace first (else its start is refused).
        #[arg(long)]
        wake: bool,
    },
    /// Wake Dormant workspaces (stopped and unused for the lifecycle
    /// policy's dormancyThreshold), so that they can start again; they stay stopped.
    Wake {
        /// Workspace names (`alice` or `ws/alice`).
        #[arg(required = true, value_name = "WORKSPACE")]
        workspaces: Vec<String>,
    },
    /// Stop workspaces (records a stop intent; the newest intent wins).
    Stop {
        /// Workspace names (`alice` or `ws/alice`).
        #[arg(required = true, value_name = "WORKSPACE")]
        workspaces: Vec<String>,
    },
    /// Restart workspaces, applying a newer template version if there is one.
    Restart {
        /// Workspace names (`alice` or `ws/alice`).
        #[arg(required = true, value_name = "WORKSPACE")]
        workspaces: Vec<String>,
    },
    /// Report activity on a workspace (as its owner), postponing autostop.
    Activity {
        /// Workspace name (`alice` or `ws/alice`).
        workspace: String,
        /// What the activity was.
        #[arg(long, default_value = "manual", value_parser = ["ssh", "vscode", "app", "manual"])]
        kind: String,
    },
    /// Open a shell in a workspace, or run a command (`berth ssh alice -- make test`).
    #[command(after_help = "Examples:\n  \
        berth ssh alice                      # an interactive shell\n  \
        berth ssh alice -- sh -c 'exit 3'    # runs the command, exits with its status\n  \
        ssh -o ProxyCommand='berth ssh --stdio %h' berth.alice   # what config-ssh sets up\n\n\
        A stopped workspace is started first (reason Connect) and the command waits for Ready.")]
    Ssh {
        /// Workspace name (`alice`, `ws/alice` or `berth.alice`).
        workspace: String,
        /// Speak raw SSH on stdin/stdout (for OpenSSH's ProxyCommand).
        #[arg(long)]
        stdio: bool,
        /// Refuse instead of starting a stopped workspace.
        #[arg(long)]
        no_start: bool,
        /// Allocate a terminal even with a command.
        #[arg(short = 't', long)]
        tty: bool,
        /// The command to run (after `--`); omitted = a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Write the `Host berth.*` block into ~/.ssh/config, so `ssh berth.alice`,
    /// scp, rsync and VS Code Remote-SSH reach workspaces through Berth.
    ConfigSsh {
        /// The OpenSSH config file to edit.
        #[arg(long, value_name = "FILE")]
        ssh_config: Option<PathBuf>,
        /// Show the change as a diff; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a one-time link that opens a workspace app (VS Code Web, …) in a browser.
    Open {
        /// Workspace name.
        workspace: String,
        /// The app's slug (the template's `spec.apps[].slug`).
        app: String,
        /// Refuse instead of starting a stopped workspace.
        #[arg(long)]
        no_start: bool,
    },
    /// Forward local ports to ports inside a workspace (`8080`, `9000:3000`).
    PortForward {
        /// Workspace name.
        workspace: String,
        /// `LOCAL[:REMOTE]` (`:REMOTE` picks a free local port).
        #[arg(required = true, value_name = "LOCAL[:REMOTE]", value_parser = connect::parse_port_map)]
        ports: Vec<connect::PortMap>,
        /// Refuse instead of starting a stopped workspace.
        #[arg(long)]
        no_start: bool,
    },
    /// Print the output of a workspace's scripts (current start, or --previous).
    #[command(after_help = "Examples:\n  \
        berth logs alice                      # every script, each line prefixed with [script]\n  \
        berth logs alice --script persist -f  # one script, following new lines\n  \
        berth logs alice --previous           # the start before the current one")]
    Logs {
        /// Workspace name (`alice` or `ws/alice`).
        workspace: String,
        /// Only this script's output.
        #[arg(long, value_name = "NAME")]
        script: Option<String>,
        /// Keep printing new lines until the workspace's agent is off.
        #[arg(short = 'f', long)]
        follow: bool,
        /// The start before the current one.
        #[arg(short = 'p', long)]
        previous: bool,
        /// Prefix each line with when the agent read it.
        #[arg(long)]
        timestamps: bool,
    },
    /// Push a workspace's autostop out (`berth extend alice 2h`), within the lifecycle policy's limit.
    Extend {
        /// Workspace name (`alice` or `ws/alice`).
        workspace: String,
        /// How long from now (`90m`, `2h`).
        duration: String,
    },
    /// Wait until objects reach a condition (or are deleted), like `kubectl wait`.
    #[command(after_help = "Examples:\n  \
        berth wait ws/alice --for=condition=Ready --timeout=2m\n  \
        berth wait ws/alice --for=condition=Ready=False\n  \
        berth wait ws alice bob --for=delete")]
    Wait {
        /// `KIND/NAME …`, or `KIND NAME …`.
        #[arg(required = true, value_name = "KIND/NAME")]
        targets: Vec<String>,
        /// `condition=TYPE[=STATUS]` (STATUS defaults to True) or `delete`.
        #[arg(long = "for", value_name = "CONDITION", value_parser = wait::parse_for)]
        for_: WaitFor,
        /// Give up after this long (`30s`, `2m`, `1h`; 0 = check once).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Show who the configured token belongs to.
    Whoami,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write JSON Schemas and CRD-style YAML for every kind.
    Crd {
        /// Directory to write into.
        #[arg(long, default_value = "crds")]
        out_dir: PathBuf,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Run the operator: HTTP API and controllers.
    Operator {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: SocketAddr,
        /// URL clients use to reach this server [default: http://<listen>, with 127.0.0.1 for 0.0.0.0].
        #[arg(long)]
        advertise_url: Option<String>,
        /// Write a CLI config (server and admin token, mode 0600) to this path on first start.
        #[arg(long, value_name = "PATH")]
        write_cli_config: Option<PathBuf>,
        /// The cloud the controllers drive; `none` serves the API only (no controllers).
        #[arg(long, value_enum, default_value_t = CloudKind::None)]
        cloud: CloudKind,
        /// Behaviour of the simulated cloud.
        #[command(flatten)]
        sim: SimArgs,
        /// Where the AWS backend connects.
        #[command(flatten)]
        aws: AwsArgs,
        /// How workspaces reach the operator.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Run Berth on a laptop: a private PostgreSQL (unless a database URL is given) and the operator.
    Up {
        /// Data directory of the private PostgreSQL [default: $XDG_DATA_HOME/berth/postgres].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Use this PostgreSQL instead of a private one.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The cloud the controllers drive; `none` serves the API only (no controllers).
        #[arg(long, value_enum, default_value_t = CloudKind::Sim)]
        cloud: CloudKind,
        /// Behaviour of the simulated cloud.
        #[command(flatten)]
        sim: SimArgs,
        /// Where the AWS backend connects.
        #[command(flatten)]
        aws: AwsArgs,
        /// How workspaces reach the operator.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Start or stop a private PostgreSQL (prints DATABASE_URL=… for scripts).
    #[command(subcommand)]
    Pg(PgCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the workspace agent (inside a workspace container), or report use to it.
    Agent(crate::agent::cli::AgentArgs),
}

/// `berth token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for USER and print it (admin only).
    Create {
        /// The user the token authenticates.
        user: String,
        /// Give the token administrator rights.
        #[arg(long)]
        admin: bool,
    },
}

/// `berth bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fuzz the manifest parser and validation: parse and decode N mutated manifests (as
    /// `berth apply` does) and print inputs/second; any panic or input slower than the hang
    /// limit is printed, saved under --failures, and makes the command fail. No database needed.
    Fuzz {
        /// Inputs to try.
        #[arg(long, default_value_t = 1_000_000)]
        inputs: u64,
        /// Seed of the mutations (a failure reproduces with the same seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// An input taking longer than this (milliseconds) counts as a hang.
        #[arg(long, default_value_t = 2_000)]
        hang_ms: u64,
        /// Where failing inputs are written.
        #[arg(long, default_value = "fuzz-failures")]
        failures: std::path::PathBuf,
    },
    /// Apply N generated workspaces through the HTTP API (one request each) and print
    /// objects/second and p50/p99 latency, next to the same PostgreSQL's raw single-row upsert rate.
    Apply {
        /// Workspaces to apply.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// PostgreSQL to use [default: a private one, as `berth up` starts].
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Create, stop and start N workspaces on the simulated cloud with AWS-like rate limits;
    /// print time to converge next to the bound the limits allow, calls vs the minimum, throttling, peak RSS.
    Reconcile {
        /// Workspaces.
        #[arg(long, default_value_t = 1_000)]
        n: usize,
        /// Multiply AWS's API rate limits by this (the sim's and Berth's pacing alike).
        #[arg(long, default_value_t = 10.0)]
        rate_scale: f64,
        /// Multiply the sim's task and access point delays by this.
        #[arg(long, default_value_t = 0.05)]
        delay_scale: f64,
        /// Concurrent reconciles.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// PostgreSQL server to use (a fresh database is created on it) [default: a private one].
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Sync a local git repository of N workspace documents with a GitSource; print the first
    /// sync's time, a no-change sync's time and its database writes (0), and a one-change sync's.
    Gitops {
        /// Workspace documents in the repository.
        #[arg(long, default_value_t = 5_000)]
        n: usize,
        /// PostgreSQL server to use (a fresh database is created on it) [default: a private one].
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Keep N workspace agents connected to an in-process API server; print the heartbeats counted,
    /// the database writes PostgreSQL counted meanwhile (goal ≤ 1% of heartbeats) and RSS per agent.
    Agents {
        /// Agents (one workspace each).
        #[arg(long, default_value_t = 1_000)]
        agents: usize,
        /// How long all of them stay connected while heartbeats are counted.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The server's ping period for the run (production: 15s).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// PostgreSQL server to use (a fresh database is created on it) [default: a private one].
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Relay a workspace's streams through an in-process API server to a child `berth agent`;
    /// print MB/s through `berth ssh -- cat` and a relayed TCP echo next to a local pipe, and the
    /// latency a round trip gains through the relay.
    Relay {
        /// MiB per transfer.
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// 1-byte round trips measured per connection.
        #[arg(long, default_value_t = 2_000)]
        round_trips: usize,
        /// Leave TCP_NODELAY off on the API server's connections, to see what
        /// Nagle's algorithm costs the relay (`berth operator` sets it).
        #[arg(long)]
        server_nagle: bool,
        /// PostgreSQL server to use (a fresh database is created on it) [default: a private one].
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

/// `berth pg …`.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Initialise (once) and start the server, create database `berth`, print DATABASE_URL=….
    Start {
        /// Data directory [default: $XDG_DATA_HOME/berth/postgres].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Port on 127.0.0.1 [default: the last one used, else a free one].
        #[arg(long)]
        port: Option<u16>,
    },
    /// Stop the server of a data directory.
    Stop {
        /// Data directory [default: $XDG_DATA_HOME/berth/postgres].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Several problems, each printed on its own `error:` line.
    #[error("{}", .0.join("\n"))]
    Many(Vec<String>),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else, printed with its cause chain.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl CliError {
    /// The `error: …` lines to print.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CliError::Api(e) => e.lines(None),
            CliError::Many(v) => v.clone(),
            CliError::Io(e) => vec![format!("writing output: {e}")],
            CliError::Other(e) => vec![format!("{e:#}")],
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let is_diff = matches!(cli.command, Command::Diff { .. });
    match dispatch(cli).await {
        Ok(code) => code,
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 141,
        Err(e) => {
            for line in e.lines() {
                eprintln!("error: {line}");
            }
            if is_diff {
                2
            } else {
                1
            }
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let g = cli.global;
    match cli.command {
        Command::Apply {
            files,
            dry_run,
            prune,
            selector,
        } => {
            let (client, ns) = connect(&g)?;
            let prune = prune
                .then(|| apply::prune_args(&ns, selector.as_deref()))
                .transpose()?;
            if prune.is_none() && selector.is_some() {
                return Err(CliError::Other(anyhow::anyhow!(
                    "-l only selects what --prune may delete; add --prune (or drop -l)"
                )));
            }
            apply::apply(
                &client,
                &ns,
                g.namespace.is_some(),
                &files,
                dry_run,
                prune.as_ref(),
            )
            .await?;
            Ok(0)
        }
        Command::Diff {
            files,
            prune,
            selector,
        } => {
            let (client, ns) = connect(&g)?;
            let prune = prune
                .then(|| apply::prune_args(&ns, selector.as_deref()))
                .transpose()?;
            let changed =
                apply::diff(&client, &ns, g.namespace.is_some(), &files, prune.as_ref()).await?;
            Ok(u8::from(changed))
        }
        Command::Sync { name, timeout } => {
            let (client, ns) = connect(&g)?;
            let name = name
                .split_once('/')
                .map(|(_, n)| n.to_string())
                .unwrap_or(name);
            sync::sync(&client, &ns, &name, timeout).await
        }
        Command::Get {
            kind,
            name,
            output,
            selector,
            watch,
            all_namespaces,
        } => {
            let (client, ns) = connect(&g)?;
            let kind = parse_kind(&kind)?;
            let req = get::GetRequest {
                kind,
                name,
                namespace: if all_namespaces { None } else { Some(ns) },
                output,
                selector,
                watch,
            };
            get::get(&client, &req).await?;
            Ok(0)
        }
        Command::Describe { kind, name } => {
            let (client, ns) = connect(&g)?;
            let kind = parse_kind(&kind)?;
            let text = describe::describe(&client, kind, &ns, &name).await?;
            print!("{text}");
            Ok(0)
        }
        Command::Delete {
            kind,
            names,
            files,
            ignore_not_found,
        } => {
            let (client, ns) = connect(&g)?;
            apply::delete(
                &client,
                &ns,
                g.namespace.is_some(),
                kind.as_deref(),
                &names,
                &files,
                ignore_not_found,
            )
            .await?;
            Ok(0)
        }
        Command::Start { workspaces, wake } => {
            let (client, ns) = connect(&g)?;
            power::request_waking(&client, &ns, PowerAction::Start, &workspaces, wake).await?;
            Ok(0)
        }
        Command::Wake { workspaces } => {
            let (client, ns) = connect(&g)?;
            power::wake(&client, &ns, &workspaces).await?;
            Ok(0)
        }
        Command::Stop { workspaces } => power(&g, PowerAction::Stop, &workspaces).await,
        Command::Restart { workspaces } => power(&g, PowerAction::Restart, &workspaces).await,
        Command::Ssh {
            workspace,
            stdio,
            no_start,
            tty,
            command,
        } => {
            let name = power::workspace_name(connect::workspace_of_host(&workspace), "ssh")
                .map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            connect::ensure_ready(&client, &ns, &name, no_start).await?;
            if stdio {
                connect::stdio(&client, &ns, &name).await
            } else {
                connect::ssh(&client, &ns, &name, &command, tty).await
            }
        }
        Command::ConfigSsh {
            ssh_config,
            dry_run,
        } => connect::config_ssh(
            ssh_config,
            dry_run,
            g.config.as_deref(),
            g.namespace.as_deref(),
        ),
        Command::Open {
            workspace,
            app,
            no_start,
        } => {
            let name =
                power::workspace_name(&workspace, "open").map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            connect::ensure_ready(&client, &ns, &name, no_start).await?;
            let r = client.open_app(&ns, &name, &app).await?;
            println!(
                "{}{}",
                client.server(),
                r["url"].as_str().unwrap_or_default()
            );
            eprintln!(
                "(the link works once, within a minute; the app stays signed in for 12 hours)"
            );
            Ok(0)
        }
        Command::PortForward {
            workspace,
            ports,
            no_start,
        } => {
            let name = power::workspace_name(&workspace, "port-forward")
                .map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            connect::ensure_ready(&client, &ns, &name, no_start).await?;
            connect::port_forward(&client, &ns, &name, &ports).await
        }
        Command::Logs {
            workspace,
            script,
            follow,
            previous,
            timestamps,
        } => {
            let name =
                power::workspace_name(&workspace, "logs").map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            let args = logs::LogsArgs {
                script,
                follow,
                previous,
                timestamps,
            };
            logs::run(&client, &ns, &name, &args).await
        }
        Command::Activity { workspace, kind } => {
            let name = power::workspace_name(&workspace, "activity")
                .map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            let r = client.activity(&ns, &name, &kind).await?;
            let how = if r["batched"] == true {
                "recorded (written with the next batch, within seconds)"
            } else {
                "recorded"
            };
            println!("workspace/{name} activity {how}");
            Ok(0)
        }
        Command::Extend {
            workspace,
            duration,
        } => {
            let name =
                power::workspace_name(&workspace, "extend").map_err(|e| CliError::Many(vec![e]))?;
            let (client, ns) = connect(&g)?;
            let r = client.extend(&ns, &name, &duration).await?;
            let time = |k: &str| {
                r[k].as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
            };
            let (at, floor) = (time("autostopAt"), time("autostopNotBefore"));
            let shown = |t: Option<chrono::DateTime<chrono::Utc>>| match t {
                Some(t) => format!(
                    "{} ({})",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    render::relative(Some(t))
                ),
                None => "never".into(),
            };
            let why = if at > floor {
                format!(
                    "; the inactivity threshold ({}) ends later than +{duration}",
                    r["afterInactivity"].as_str().unwrap_or("?")
                )
            } else {
                String::new()
            };
            println!("workspace/{name} autostops at {}{why}", shown(at.or(floor)));
            Ok(0)
        }
        Command::Wait {
            targets,
            for_,
            timeout,
        } => {
            let (client, ns) = connect(&g)?;
            wait::wait(&client, &ns, &targets, &for_, timeout).await?;
            Ok(0)
        }
        Command::Whoami => {
            let (client, _) = connect(&g)?;
            let who = client.whoami().await?;
            println!("{}{}", who.user, if who.admin { " (admin)" } else { "" });
            Ok(0)
        }
        Command::Token(TokenCommand::Create { user, admin }) => {
            let (client, _) = connect(&g)?;
            let t = client.create_token(&user, admin).await?;
            println!("{}", t.token);
            Ok(0)
        }
        Command::Crd { out_dir } => {
            for path in crd::write_all(&out_dir)? {
                println!("wrote {}", path.display());
            }
            Ok(0)
        }
        Command::Completion { shell } => {
            let mut cmd = command();
            let mut buf = Vec::new();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "berth", &mut buf);
            write_stdout(&buf)?;
            Ok(0)
        }
        Command::Operator {
            database_url,
            listen,
            advertise_url,
            write_cli_config,
            cloud,
            sim,
            aws,
            access,
        } => {
            let cloud = local::cloud_setup(cloud, &sim, &aws).await?;
            local::operator(
                database_url,
                listen,
                advertise_url,
                write_cli_config,
                cloud,
                access,
            )
            .await?;
            Ok(0)
        }
        Command::Up {
            data_dir,
            listen,
            database_url,
            cloud,
            sim,
            aws,
            access,
        } => {
            let cloud = local::cloud_setup(cloud, &sim, &aws).await?;
            let cli_config = config::resolve_path(g.config.as_deref());
            local::up(data_dir, listen, database_url, cli_config, cloud, access).await?;
            Ok(0)
        }
        Command::Pg(PgCommand::Start { data_dir, port }) => {
            local::pg_start(data_dir, port).await?;
            Ok(0)
        }
        Command::Pg(PgCommand::Stop { data_dir }) => {
            local::pg_stop(data_dir).await?;
            Ok(0)
        }
        Command::Bench(cmd) => {
            local::bench(cmd).await?;
            Ok(0)
        }
        Command::Agent(args) => Ok(crate::agent::cli::main(args, g.namespace.clone()).await?),
    }
}

async fn power(g: &GlobalArgs, action: PowerAction, names: &[String]) -> Result<u8, CliError> {
    let (client, ns) = connect(g)?;
    power::request(&client, &ns, action, names).await?;
    Ok(0)
}

/// Writes to stdout; a closed pipe (`berth … | head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Parses a kind as typed by a person, with a helpful error.
pub fn parse_kind(s: &str) -> Result<crate::api::Kind, CliError> {
    crate::api::Kind::from_user(s).ok_or_else(|| {
        let known: Vec<String> = crate::api::Kind::ALL
            .iter()
            .map(|k| format!("{} ({})", k.plural(), k.short()))
            .collect();
        CliError::Other(anyhow::anyhow!(
            "the server doesn't have a resource type \"{s}\"; known kinds: {}",
            known.join(", ")
        ))
    })
}

/// Builds the API client and the effective namespace from flags, env and the config file.
fn connect(g: &GlobalArgs) -> Result<(Client, String), CliError> {
    let file = config::load(g.config.as_deref())?;
    let server = g
        .server
        .clone()
        .or(file.server)
        .unwrap_or_else(|| config::DEFAULT_SERVER.to_string());
    let token = g.token.clone().or(file.token);
    let ns = g
        .namespace
        .clone()
        .or(file.namespace)
        .unwrap_or_else(|| crate::api::DEFAULT_NAMESPACE.to_string());
    Ok((Client::new(&server, token)?, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_without_a_server_neither_show_nor_take_server_and_token() {
        let mut cmd = command();
        cmd.build();
        for name in SERVERLESS {
            let help = cmd
                .find_subcommand_mut(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"))
                .render_long_help()
                .to_string();
            assert!(
                !help.contains("--server") && !help.contains("--token"),
                "berth {name} --help:\n{help}"
            );
        }
        let help = cmd
            .find_subcommand_mut("get")
            .expect("get")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--server") && help.contains("--token"),
            "{help}"
        );

        let err = command()
            .try_get_matches_from(["berth", "up", "--token", "x"])
            .expect_err("up takes no --token");
        assert!(
            err.to_string()
                .contains("--token is for commands that talk to a Berth server"),
            "{err}"
        );
        let m = command()
            .try_get_matches_from(["berth", "get", "ws", "--server", "http://h:1"])
            .expect("get takes --server");
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).expect("a Cli");
        assert_eq!(cli.global.server.as_deref(), Some("http://h:1"));
    }
}
