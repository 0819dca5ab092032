//! The agent's end of relayed streams: the operator asks for a stream to a
//! target inside the workspace (the SSH server, or a TCP port on loopback);
//! the agent connects it and pumps bytes until either side is done.

use std::sync::Arc;

use tokio::io::DuplexStream;

use crate::agent::protocol::StreamTarget;
use crate::relay::{self, Mux};

/// Serves one SSH connection over the given byte stream.
pub type SshServer = Arc<dyn Fn(DuplexStream) + Send + Sync>;

/// How the agent reaches stream targets.
#[derive(Clone, Default)]
pub struct Opener {
    /// The embedded SSH server (`None`: SSH streams are refused).
    pub ssh: Option<SshServer>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("ssh", &self.ssh.is_some())
            .finish()
    }
}

impl Opener {
    /// Connects stream `id` to `target` and pumps it in the background;
    /// refuses it (with why) when the target cannot be reached.
    pub fn open(&self, mux: &Arc<Mux>, id: u32, target: StreamTarget) {
        let mux = mux.clone();
        let ssh = self.ssh.clone();
        tokio::spawn(async move {
            match target {
                StreamTarget::Ssh => {
                    let Some(serve) = ssh else {
                        mux.refuse(id, "this agent serves no SSH");
                        return;
                    };
                    let (near, far) = tokio::io::duplex(4 * relay::MAX_CHUNK);
                    serve(far);
                    let end = mux.accept(id);
                    finish(id, "ssh", relay::pump(end, near).await);
                }
                StreamTarget::Tcp { port } => {
                    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        Ok(tcp) => {
                            let _ = tcp.set_nodelay(true);
                            let end = mux.accept(id);
                            finish(id, "tcp", relay::pump(end, tcp).await);
                        }
                        Err(e) => {
                            tracing::info!(port, error = %e, "cannot reach a forwarded port");
                            mux.refuse(
                                id,
                                &format!("nothing accepts connections on port {port} in the workspace ({e})"),
                            );
                        }
                    }
                }
            }
        });
    }
}

fn finish(id: u32, what: &str, r: Result<relay::Moved, relay::StreamError>) {
    match r {
        Ok(m) => tracing::debug!(
            stream = id,
            what,
            sent = m.sent,
            received = m.received,
            "stream closed"
        ),
        Err(e) => tracing::debug!(stream = id, what, error = %e, "stream ended"),
    }
}
