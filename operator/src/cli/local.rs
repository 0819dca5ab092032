//! Commands that run things on this machine: `berth operator`, `berth up`
//! (private PostgreSQL + operator) and `berth pg start|stop`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use super::CliError;
use crate::localpg::{self, LocalPg};
use crate::server::{run_operator, OperatorOptions};

/// Resolves when the process gets SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
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
) -> Result<(), CliError> {
    let opts = OperatorOptions {
        database_url,
        listen,
        cli_config_path,
        advertise_url: advertise.unwrap_or_else(|| advertise_url(listen)),
    };
    run_operator(opts, shutdown_signal())
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
) -> Result<(), CliError> {
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
    eprintln!("berth: press Ctrl-C to stop");
    let opts = OperatorOptions {
        database_url,
        listen,
        cli_config_path: Some(cli_config),
        advertise_url: advertise,
    };
    let result = run_operator(opts, shutdown_signal()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
