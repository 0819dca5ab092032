//! SSH at both ends of a byte stream.
//!
//! [`server`] is the SSH server the workspace agent embeds: it speaks SSH over
//! any `AsyncRead + AsyncWrite` stream (in production a stream relayed by the
//! operator over the agent's WebSocket; in tests a TCP connection) and runs
//! shells, commands, SFTP and TCP forwards inside the workspace. [`client`] is
//! the matching client behind `berth ssh WS [-- CMD]`.
//!
//! Neither side authenticates the other in the SSH sense: the relay does that
//! before the first byte reaches either end (see [`server`]).

pub mod client;
pub mod server;
mod sftp;

pub use client::{
    run as run_client, run_sized as run_client_sized, ClientIo, ClientOptions, WindowSizes,
};
pub use server::{load_or_create_host_key, serve, ActivityFn, ServerConfig};

/// Errors of the SSH server and client.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("ssh protocol: {0}")]
    Protocol(#[from] russh::Error),
    #[error("ssh key: {0}")]
    Key(#[from] russh::keys::ssh_key::Error),
    #[error("host key {path}: {source}")]
    HostKey {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("authentication refused by the server")]
    AuthRefused,
    #[error("{0}")]
    Other(String),
}
