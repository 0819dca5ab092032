//! The HTTP API: Kubernetes-shaped paths, bearer-token auth, JSON and YAML
//! bodies, watch streams, health and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How to run the operator (API server and, later, controllers).
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// PostgreSQL connection URL.
    pub database_url: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where to write the CLI config (server + admin token) on first start.
    pub cli_config_path: Option<PathBuf>,
    /// The URL clients should use to reach this server (written into the CLI config).
    pub advertise_url: String,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Not built yet.
    #[error("the operator is not available in this build")]
    Unavailable,
}

/// Runs the operator until `shutdown` resolves.
pub async fn run_operator(
    opts: OperatorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let _ = (opts, shutdown);
    Err(ServeError::Unavailable)
}
