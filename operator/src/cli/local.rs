//! Commands that run things on this machine: `berth operator`, `berth up`
//! (private PostgreSQL + operator) and `berth pg start|stop`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_cloud::pacer::Pacer;
use berth_cloud::sim::{RateLimits, Sim, SimConfig};
use clap::{Args, ValueEnum};

use super::CliError;
use crate::controllers::ControllerOptions;
use crate::localpg::{self, LocalPg};
use crate::localrt::LocalRuntime;
use crate::server::{run_operator_with, CloudSetup, OperatorOptions};

/// The cloud the controllers drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    /// Serve the API only: no controllers run, workspaces are never started and get no status.
    None,
    /// The in-memory simulated ECS, EFS and Secrets Manager (state is lost on exit).
    Sim,
    /// Real AWS (ECS, EFS, Secrets Manager) through the standard credential chain.
    Aws,
}

/// Flags of the AWS backend (`--cloud aws`).
#[derive(Clone, Debug, Default, PartialEq, Args)]
#[command(next_help_heading = "AWS (with --cloud aws)")]
pub struct AwsArgs {
    /// AWS region [default: AWS_REGION, the profile, or the instance metadata].
    #[arg(long, value_name = "REGION")]
    pub aws_region: Option<String>,
    /// Endpoint of every AWS service, e.g. an emulator (`http://127.0.0.1:5000`).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub aws_endpoint_url: Option<String>,
}

/// How workspaces reach the operator and get their agent (`berth operator`, `berth up`).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Workspace agents")]
pub struct AccessArgs {
    /// The URL workspaces use to reach the API (like CODER_ACCESS_URL); the same for every replica [default: the advertise URL].
    #[arg(long, env = "BERTH_ACCESS_URL")]
    pub access_url: Option<String>,
    /// A directory with berth-linux-amd64 / berth-linux-arm64 agent binaries to serve at /bin/ (the operator serves its own binary for its own architecture).
    #[arg(long, value_name = "DIR")]
    pub agent_binary_dir: Option<PathBuf>,
    /// Serve /metrics only to requests with `Authorization: Bearer TOKEN` [default: open].
    #[arg(
        long,
        env = "BERTH_METRICS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub metrics_token: Option<String>,
    /// Serve each workspace app on an origin of its own, `<app>--<workspace>--<namespace>.DOMAIN`
    /// (a wildcard DNS name pointing at the operator, e.g. `apps.berth.example.com`; `apps.localhost` on a laptop).
    /// Without it, apps live under the operator's own origin and only their owner (and admins) may open them.
    #[arg(long, env = "BERTH_APPS_DOMAIN", value_name = "DOMAIN")]
    pub apps_domain: Option<String>,
}

/// Flags of the simulated cloud (`--cloud sim`).
#[derive(Clone, Debug, Default, PartialEq, Args)]
#[command(next_help_heading = "Simulated cloud (with --cloud sim)")]
pub struct SimArgs {
    /// Multiply the simulated task and access-point delays by F (defaults: 2s provisioning, 3s pending, 2s stopping, 5s relaunch after a failed start, 0.5s access point); 0 = instant.
    #[arg(long, value_name = "F", value_parser = parse_scale)]
    pub sim_delay_scale: Option<f64>,
    /// Probability (0 to 1) that a cloud call is answered with ThrottlingException.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub sim_throttle_rate: Option<f64>,
    /// Probability (0 to 1) that a cloud call fails with ServerException.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub sim_error_rate: Option<f64>,
    /// Latency added to every cloud call, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub sim_latency_ms: Option<u64>,
    /// Images whose reference contains MARKER fail to pull (repeatable; replaces the default marker `fail`).
    #[arg(long, value_name = "MARKER", value_parser = parse_marker)]
    pub sim_fail_image: Vec<String>,
    /// Turn off the simulated AWS request-rate limits (injected throttling still applies).
    #[arg(long)]
    pub sim_no_rate_limits: bool,
    /// The account's Fargate vCPU quota: a task that would exceed it is not placed (the workspace shows `Ready=False`, reason TaskFailedToStart, with ECS's message) [default: unlimited].
    #[arg(long, value_name = "VCPUS", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sim_vcpu_quota: Option<u32>,
    /// Run no local process for RUNNING tasks (by default each runs `berth agent` as a child of the operator, with the workspace's home as HOME); for benchmarks with thousands of workspaces.
    #[arg(long)]
    pub sim_no_agents: bool,
    /// Where the local agents' homes (DIR/efs/<file system>/<access point root>, kept across stop and start) and container logs (DIR/tasks/<task>.log) live [default: beside the PostgreSQL data directory: `sim` next to the default `postgres` one ($XDG_DATA_HOME/berth/sim, else ~/.local/share/berth/sim), or <--data-dir>-sim for `berth up --data-dir`].
    #[arg(long, value_name = "DIR")]
    pub sim_data_dir: Option<PathBuf>,
}

/// The local runtime's directory beside a PostgreSQL data directory: `sim`
/// next to one named `postgres` (the default), else `<dir>-sim`; never
/// inside it (`initdb` wants an empty directory).
pub fn sim_data_dir_beside(pg_data_dir: &Path) -> PathBuf {
    let name = pg_data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "berth".into());
    let sibling = if name == "postgres" {
        "sim".to_string()
    } else {
        format!("{name}-sim")
    };
    pg_data_dir.with_file_name(sibling)
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn parse_marker(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("an empty marker would fail every image".to_string())
    } else {
        Ok(s.to_string())
    }
}

fn scaled(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

impl SimArgs {
    /// Whether any `--sim-*` flag was given.
    pub fn any(&self) -> bool {
        *self != SimArgs::default()
    }

    /// The simulator configuration: [`SimConfig::permissive`] (any cluster
    /// and file system exists) changed by the flags.
    pub fn config(&self) -> SimConfig {
        let mut cfg = SimConfig::permissive();
        if let Some(f) = self.sim_delay_scale {
            let d = &mut cfg.delays;
            for x in [
                &mut d.provisioning,
                &mut d.pending,
                &mut d.stopping,
                &mut d.restart,
                &mut d.access_point_creating,
                &mut d.access_point_deleting,
            ] {
                *x = scaled(*x, f);
            }
        }
        if let Some(p) = self.sim_throttle_rate {
            cfg.faults.throttle_rate = p;
        }
        if let Some(p) = self.sim_error_rate {
            cfg.faults.error_rate = p;
        }
        if let Some(ms) = self.sim_latency_ms {
            cfg.faults.latency = Duration::from_millis(ms);
        }
        if !self.sim_fail_image.is_empty() {
            cfg.fail_images = self.sim_fail_image.clone();
        }
        if self.sim_no_rate_limits {
            cfg.rate_limits = RateLimits::disabled();
        }
        cfg.vcpu_quota = self.sim_vcpu_quota;
        cfg
    }
}

/// One line describing a simulator configuration, for the log.
fn describe_sim(cfg: &SimConfig) -> String {
    let d = &cfg.delays;
    format!(
        "task start {:?} + {:?}, stop {:?}; {}; faults: {:.0}% throttled, {:.0}% server errors, {:?} latency; images containing {:?} fail to pull",
        d.provisioning,
        d.pending,
        d.stopping,
        if cfg.rate_limits.enabled {
            "AWS rate limits"
        } else {
            "no rate limits"
        },
        cfg.faults.throttle_rate * 100.0,
        cfg.faults.error_rate * 100.0,
        cfg.faults.latency,
        cfg.fail_images,
    )
}

/// The cloud and pacing for `kind`, or None to run the API only.
pub async fn cloud_setup(
    kind: CloudKind,
    sim: &SimArgs,
    aws: &AwsArgs,
) -> Result<Option<CloudSetup>, CliError> {
    if kind != CloudKind::Aws && (aws.aws_region.is_some()) {
        return Err(CliError::Other(anyhow::anyhow!(
            "--aws-region needs --cloud aws"
        )));
    }
    match kind {
        CloudKind::None if sim.any() => Err(CliError::Other(anyhow::anyhow!(
            "the --sim-* flags need --cloud sim"
        ))),
        CloudKind::None => Ok(None),
        CloudKind::Aws if sim.any() => Err(CliError::Other(anyhow::anyhow!(
            "the --sim-* flags need --cloud sim"
        ))),
        CloudKind::Aws => {
            let cloud = berth_aws::connect_routed(berth_aws::AwsOptions {
                region: aws.aws_region.clone(),
                endpoint_url: aws.aws_endpoint_url.clone(),
                ..Default::default()
            })
            .await
            .context("connecting to AWS")?;
            tracing::info!(
                endpoint = aws.aws_endpoint_url.as_deref().unwrap_or("AWS"),
                "AWS backend (ECS, EFS, Secrets Manager)"
            );
            Ok(Some(CloudSetup {
                cloud,
                pacer: Some(Arc::new(Pacer::default())),
                controllers: ControllerOptions::default(),
                lifecycle: Default::default(),
                local_runtime: None,
                require_agent: true,
            }))
        }
        CloudKind::Sim => {
            let cfg = sim.config();
            tracing::info!("simulated cloud: {}", describe_sim(&cfg));
            let args = sim;
            let sim = Sim::new(cfg);
            let local_runtime = if args.sim_no_agents {
                tracing::info!("--sim-no-agents: RUNNING tasks run no local process");
                None
            } else {
                let program = std::env::current_exe()
                    .context("locating the berth binary that runs the workspace agents")?;
                let dir = args
                    .sim_data_dir
                    .clone()
                    .unwrap_or_else(|| sim_data_dir_beside(&localpg::default_data_dir()));
                Some(LocalRuntime::new(
                    sim.clone(),
                    dir,
                    program,
                    vec!["agent".into()],
                ))
            };
            Ok(Some(CloudSetup {
                cloud: berth_cloud::Cloud::from_sim(&sim),
                pacer: Some(Arc::new(Pacer::default())),
                controllers: ControllerOptions::default(),
                lifecycle: Default::default(),
                require_agent: local_runtime.is_some(),
                local_runtime,
            }))
        }
    }
}

/// Resolves when the process gets SIGINT (Ctrl-C), SIGTERM or SIGHUP (its
/// terminal closed: the local agents, in their own process groups, would
/// not get it and would outlive the operator).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let unix = |kind: tokio::signal::unix::SignalKind| async move {
        match tokio::signal::unix::signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = unix(tokio::signal::unix::SignalKind::terminate()) => {}
        _ = unix(tokio::signal::unix::SignalKind::hangup()) => {}
    }
    tracing::info!("shutting down");
}

/// `http://<listen>`, with 127.0.0.1 standing in for an unspecified address.
pub fn advertise_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        listen.ip()
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// `berth operator`.
pub async fn operator(
    database_url: String,
    listen: SocketAddr,
    advertise: Option<String>,
    cli_config_path: Option<PathBuf>,
    cloud: Option<CloudSetup>,
    access: AccessArgs,
) -> Result<(), CliError> {
    let opts = OperatorOptions {
        database_url,
        listen,
        cli_config_path,
        advertise_url: advertise.unwrap_or_else(|| advertise_url(listen)),
        gitops: crate::gitops::GitOpsOptions::default(),
        access_url: access.access_url,
        agent_binary_dir: access.agent_binary_dir,
        sign_in_link: false,
        metrics_token: access.metrics_token,
        apps_domain: access.apps_domain,
        ensure_cli_token: false,
    };
    if cloud.is_none() {
        tracing::warn!(
            "no cloud (--cloud none): serving the API and the GitSource controller only; no workspace controllers run, so workspaces are never started or stopped and get no status (--cloud sim runs them against the simulated cloud)"
        );
    }
    run_operator_with(opts, cloud, shutdown_signal())
        .await
        .context("operator")?;
    Ok(())
}

/// `berth up`: a private PostgreSQL unless a database URL is given, then the
/// operator, writing the CLI config; PostgreSQL is stopped on the way out.
pub async fn up(
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    database_url: Option<String>,
    cli_config: PathBuf,
    cloud: Option<CloudSetup>,
    access: AccessArgs,
) -> Result<(), CliError> {
    let mut cloud = cloud;
    if let Some(runtime) = cloud.as_mut().and_then(|c| c.local_runtime.as_mut()) {
        // Beside this PostgreSQL's data directory, unless --sim-data-dir
        // chose a directory other than the default.
        let default = sim_data_dir_beside(&localpg::default_data_dir());
        if let Some(dir) = data_dir.as_deref() {
            if runtime.data_dir() == crate::localrt::absolute(&default) {
                runtime.set_data_dir(sim_data_dir_beside(dir));
            }
        }
        eprintln!(
            "berth: RUNNING workspaces run `berth agent` locally; homes in {}, container logs in {}",
            runtime.data_dir().join("efs").display(),
            runtime.data_dir().join("tasks").display()
        );
    }
    let (database_url, pg) = match database_url {
        Some(url) => (url, None),
        None => {
            let dir = data_dir.unwrap_or_else(localpg::default_data_dir);
            eprintln!("berth: starting a private PostgreSQL in {}", dir.display());
            let pg = tokio::task::spawn_blocking(move || LocalPg::start(&dir, None))
                .await
                .context("starting PostgreSQL")?
                .context("starting PostgreSQL")?;
            eprintln!(
                "berth: PostgreSQL listens on 127.0.0.1:{} (log: {})",
                pg.port(),
                pg.log_file().display()
            );
            (pg.database_url(), Some(pg))
        }
    };
    let advertise = advertise_url(listen);
    eprintln!(
        "berth: API on {advertise}; CLI config (server and admin token) in {}",
        cli_config.display()
    );
    if cloud.is_some() {
        eprintln!(
            "berth: controllers drive the simulated cloud (in memory: its ECS services, task definitions and access points are lost on exit)"
        );
    } else {
        eprintln!("berth: no cloud (--cloud none): the API only, no controllers");
    }
    eprintln!("berth: press Ctrl-C to stop");
    let opts = OperatorOptions {
        database_url,
        listen,
        cli_config_path: Some(cli_config),
        advertise_url: advertise,
        gitops: crate::gitops::GitOpsOptions::default(),
        access_url: access.access_url,
        agent_binary_dir: access.agent_binary_dir,
        sign_in_link: true,
        metrics_token: access.metrics_token,
        apps_domain: access.apps_domain,
        ensure_cli_token: true,
    };
    let result = run_operator_with(opts, cloud, shutdown_signal()).await;
    if let Some(pg) = pg {
        eprintln!("berth: stopping PostgreSQL");
        let stopped = tokio::task::spawn_blocking(move || pg.stop())
            .await
            .context("stopping PostgreSQL")?;
        if let Err(e) = stopped {
            eprintln!("error: stopping PostgreSQL: {e}");
        }
    }
    result.context("operator")?;
    Ok(())
}

/// `berth pg start`: prints `DATABASE_URL=…`.
pub async fn pg_start(data_dir: Option<PathBuf>, port: Option<u16>) -> Result<(), CliError> {
    let dir = data_dir.unwrap_or_else(localpg::default_data_dir);
    let pg = tokio::task::spawn_blocking(move || LocalPg::start(&dir, port))
        .await
        .context("starting PostgreSQL")?
        .context("starting PostgreSQL")?;
    localpg::print_env(&pg, std::io::stdout())?;
    Ok(())
}

/// `berth pg stop`.
pub async fn pg_stop(data_dir: Option<PathBuf>) -> Result<(), CliError> {
    let dir = data_dir.unwrap_or_else(localpg::default_data_dir);
    tokio::task::spawn_blocking(move || LocalPg::open(&dir).and_then(|pg| pg.stop()))
        .await
        .context("stopping PostgreSQL")?
        .context("stopping PostgreSQL")?;
    Ok(())
}

/// `berth bench …`: on the given PostgreSQL, or a private one started (and
/// stopped) for the run.
pub async fn bench(cmd: super::BenchCommand) -> Result<(), CliError> {
    use super::BenchCommand;
    if let BenchCommand::Fuzz {
        inputs,
        seed,
        hang_ms,
        failures,
    } = &cmd
    {
        let hang = Duration::from_millis(*hang_ms);
        let (inputs, seed) = (*inputs, *seed);
        let r = tokio::task::spawn_blocking(move || crate::fuzz::run(inputs, seed, hang, true))
            .await
            .context("fuzzing")?;
        println!(
            "fuzz: {} inputs in {:.1} s ({:.0} inputs/s, seed {seed}); {} parsed as YAML, {} valid documents; slowest input {:?}; {} failures",
            r.inputs,
            r.elapsed.as_secs_f64(),
            r.rate(),
            r.parsed,
            r.valid,
            r.slowest,
            r.failures.len()
        );
        if r.failures.is_empty() {
            return Ok(());
        }
        for (what, input) in r.failures.iter().take(5) {
            println!(
                "--- {what}\n{}",
                input.chars().take(2_000).collect::<String>()
            );
        }
        let saved = crate::fuzz::save_failures(&r, failures).context("saving failing inputs")?;
        return Err(CliError::Other(anyhow::anyhow!(
            "{} failing inputs, saved in {}",
            saved.len(),
            failures.display()
        )));
    }
    let url = match &cmd {
        BenchCommand::Apply { database_url, .. }
        | BenchCommand::Reconcile { database_url, .. }
        | BenchCommand::Gitops { database_url, .. }
        | BenchCommand::Agents { database_url, .. }
        | BenchCommand::Relay { database_url, .. } => database_url.clone(),
        BenchCommand::Fuzz { .. } => None,
    };
    let (url, pg) = match url {
        Some(u) => (u, None),
        None => {
            let dir = localpg::default_data_dir();
            eprintln!("berth: starting a private PostgreSQL in {}", dir.display());
            let pg = tokio::task::spawn_blocking(move || LocalPg::start(&dir, None))
                .await
                .context("starting PostgreSQL")?
                .context("starting PostgreSQL")?;
            (pg.database_url(), Some(pg))
        }
    };
    let result = async {
        match cmd {
            BenchCommand::Apply { n, concurrency, .. } => {
                println!("berth bench apply: N={n}, {concurrency} requests in flight");
                for s in crate::bench::bench_apply(&url, n, concurrency)
                    .await
                    .context("bench apply")?
                {
                    println!("  {}", s.line());
                }
            }
            BenchCommand::Reconcile {
                n,
                rate_scale,
                delay_scale,
                concurrency,
                ..
            } => {
                let cfg = crate::bench::ReconcileBench {
                    n,
                    rate_scale,
                    delay_scale,
                    concurrency,
                };
                let (phases, extra) = crate::bench::bench_reconcile(&url, &cfg)
                    .await
                    .context("bench reconcile")?;
                print!("{}", crate::bench::render_reconcile(&cfg, &phases, &extra));
            }
            BenchCommand::Gitops { n, .. } => {
                let figures = crate::bench_gitops::bench_gitops(&url, n)
                    .await
                    .context("bench gitops")?;
                print!("{}", figures.render());
            }
            BenchCommand::Agents {
                agents,
                duration,
                heartbeat,
                ..
            } => {
                let cfg = crate::bench_agents::AgentsBench::new(agents, duration, heartbeat);
                let figures = crate::bench_agents::bench_agents(&url, &cfg)
                    .await
                    .context("bench agents")?;
                print!("{}", figures.render());
            }
            BenchCommand::Relay {
                mib,
                round_trips,
                server_nagle,
                ..
            } => {
                let cfg = crate::bench_relay::RelayBench {
                    mib,
                    round_trips,
                    server_nagle,
                    agent_binary: std::env::current_exe().context("the berth executable")?,
                };
                let figures = crate::bench_relay::bench_relay(&url, &cfg)
                    .await
                    .context("bench relay")?;
                print!("{}", figures.render());
            }
            // Run above, without a database.
            BenchCommand::Fuzz { .. } => {}
        }
        Ok::<_, CliError>(())
    }
    .await;
    if let Some(pg) = pg {
        let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_flags_scale_delays_and_set_faults_on_a_permissive_sim() {
        let cfg = SimArgs::default().config();
        assert_eq!(cfg, SimConfig::permissive());
        let args = SimArgs {
            sim_delay_scale: Some(0.5),
            sim_throttle_rate: Some(0.1),
            sim_error_rate: Some(0.2),
            sim_latency_ms: Some(30),
            sim_fail_image: vec!["broken".into()],
            sim_no_rate_limits: true,
            sim_vcpu_quota: Some(6),
            sim_no_agents: true,
            sim_data_dir: Some("/tmp/x".into()),
        };
        assert!(args.any());
        let cfg = args.config();
        let d = berth_cloud::sim::Delays::default();
        assert!(cfg.permissive);
        assert_eq!(cfg.delays.pending, d.pending / 2);
        assert_eq!(
            cfg.delays.access_point_creating,
            d.access_point_creating / 2
        );
        assert_eq!(
            cfg.delays.stopped_task_retention, d.stopped_task_retention,
            "retention is not a delay"
        );
        assert_eq!(cfg.faults.throttle_rate, 0.1);
        assert_eq!(cfg.faults.error_rate, 0.2);
        assert_eq!(cfg.faults.latency, Duration::from_millis(30));
        assert_eq!(cfg.fail_images, vec!["broken".to_string()]);
        assert!(!cfg.rate_limits.enabled);
        assert_eq!(cfg.vcpu_quota, Some(6));
    }

    #[tokio::test]
    async fn cloud_choices_none_needs_no_sim_flags() {
        let no_aws = AwsArgs::default();
        assert!(cloud_setup(CloudKind::None, &SimArgs::default(), &no_aws)
            .await
            .unwrap()
            .is_none());
        let flags = SimArgs {
            sim_no_rate_limits: true,
            ..SimArgs::default()
        };
        let e = cloud_setup(CloudKind::None, &flags, &no_aws)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--cloud sim"), "{e}");
        let e = cloud_setup(CloudKind::Aws, &flags, &no_aws)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--cloud sim"), "{e}");
        let region = AwsArgs {
            aws_region: Some("us-west-2".into()),
            ..AwsArgs::default()
        };
        let e = cloud_setup(CloudKind::Sim, &SimArgs::default(), &region)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--cloud aws"), "{e}");
        assert!(parse_probability("1.5").is_err());
        assert!(parse_scale("-1").is_err());
        assert!(parse_marker("").is_err());
    }

    #[test]
    fn the_local_runtime_lives_beside_the_postgresql_data_directory() {
        assert_eq!(
            sim_data_dir_beside(Path::new("/home/a/.local/share/berth/postgres")),
            PathBuf::from("/home/a/.local/share/berth/sim")
        );
        assert_eq!(
            sim_data_dir_beside(Path::new("/tmp/t1")),
            PathBuf::from("/tmp/t1-sim")
        );
    }

    #[test]
    fn unspecified_listen_addresses_advertise_loopback() {
        assert_eq!(
            advertise_url("0.0.0.0:7070".parse().unwrap()),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            advertise_url("10.0.0.5:80".parse().unwrap()),
            "http://10.0.0.5:80"
        );
    }
}
