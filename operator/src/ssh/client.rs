//! The SSH client behind `berth ssh WS [-- CMD]`, over any byte stream.
//!
//! The host key is not checked against a known-hosts file: the relay that
//! produced the stream already authenticated the workspace (and the caller),
//! so the key is only logged (its SHA-256 fingerprint, at debug level).
//! Authentication is `none` for the same reason.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SshError;

/// Where the remote session's input comes from and its output goes.
pub struct ClientIo {
    pub stdin: Box<dyn AsyncRead + Unpin + Send>,
    pub stdout: Box<dyn AsyncWrite + Unpin + Send>,
    pub stderr: Box<dyn AsyncWrite + Unpin + Send>,
}

impl ClientIo {
    /// This process's stdin, stdout and stderr.
    ///
    /// tokio reads stdin on a blocking thread that cannot be interrupted:
    /// after [`run`] returns, exit the process (rather than waiting for the
    /// runtime to shut down, which would wait for one more line of input).
    pub fn process() -> Self {
        ClientIo {
            stdin: Box::new(tokio::io::stdin()),
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
        }
    }
}

/// What [`run`] does.
pub struct ClientOptions {
    /// The remote user name (informational: the server accepts any).
    pub user: String,
    /// `None` for an interactive login shell, else a command line run with
    /// the remote user's shell (`$SHELL -c CMD`).
    pub command: Option<String>,
    /// Request a pty for the session.
    pub pty: bool,
    /// `TERM` for the pty.
    pub term: String,
    /// The local stdin is a terminal: with `pty`, put it in raw mode for the
    /// session (restored on every exit from [`run`]), send its size with the
    /// pty request and forward SIGWINCH as window-change.
    pub local_tty: bool,
    /// Environment variables sent with `env` requests (e.g. `LANG`).
    pub env: Vec<(String, String)>,
    pub io: ClientIo,
}

impl ClientOptions {
    /// Options for the `berth ssh` command: this process's stdio; a pty for
    /// an interactive shell when stdin is a terminal, or when `force_pty`
    /// (`-t`); `TERM` and `LANG`/`LC_*` from the environment.
    pub fn for_terminal(user: impl Into<String>, command: Option<String>, force_pty: bool) -> Self {
        let local_tty = rustix::termios::isatty(std::io::stdin().as_fd());
        let pty = force_pty || (command.is_none() && local_tty);
        let term = std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm-256color".to_string());
        let env = std::env::vars()
            .filter(|(k, _)| k == "LANG" || k.starts_with("LC_"))
            .collect();
        ClientOptions {
            user: user.into(),
            command,
            pty,
            term,
            local_tty,
            env,
            io: ClientIo::process(),
        }
    }
}

struct Client;

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                tracing::debug!(fingerprint = %key.fingerprint(HashAlg::Sha256), "ssh host key");
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                tracing::debug!(
                    fingerprint = %cert.public_key().fingerprint(HashAlg::Sha256),
                    "ssh host certificate"
                );
            }
        }
        Ok(true)
    }
}

/// Restores the terminal's settings when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The local terminal's size as (columns, rows).
fn local_size() -> Option<(u32, u32)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin().as_fd()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then(|| (u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// Runs one session over `stream` and returns the remote exit status: the
/// command's exit code, 128 + the signal number if it was killed by a signal
/// (as a shell reports it), or 255 if the session ended without a status.
pub async fn run<S>(stream: S, opts: ClientOptions) -> Result<i32, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    run_sized(stream, opts, None).await
}

/// Window sizes as (columns, rows) for a session whose terminal is not this
/// process's (the dashboard's web terminal): the first is the pty's size,
/// each later one a window change.
pub struct WindowSizes {
    /// The size the pty starts with.
    pub initial: (u32, u32),
    /// Later sizes.
    pub changes: tokio::sync::mpsc::Receiver<(u32, u32)>,
}

/// [`run`], with window sizes from `sizes` rather than the local terminal.
pub async fn run_sized<S>(
    stream: S,
    opts: ClientOptions,
    sizes: Option<WindowSizes>,
) -> Result<i32, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (initial, mut changes) = match sizes {
        Some(w) => (Some(w.initial), Some(w.changes)),
        None => (None, None),
    };
    let config = client::Config {
        client_id: russh::SshId::Standard(
            format!("SSH-2.0-berth_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    let mut session = client::connect_stream(Arc::new(config), stream, Client).await?;
    if !session
        .authenticate_none(opts.user.clone())
        .await?
        .success()
    {
        return Err(SshError::AuthRefused);
    }
    let channel = session.channel_open_session().await?;
    for (k, v) in &opts.env {
        channel.set_env(false, k.as_str(), v.as_str()).await?;
    }
    let tty = opts.pty && opts.local_tty;
    if opts.pty {
        let (cols, rows) = initial
            .or(if tty { local_size() } else { None })
            .unwrap_or((80, 24));
        channel
            .request_pty(true, &opts.term, cols, rows, 0, 0, &[])
            .await?;
    }
    match &opts.command {
        Some(cmd) => channel.exec(true, cmd.as_bytes()).await?,
        None => channel.request_shell(true).await?,
    }
    tracing::debug!(
        exec = opts.command.is_some(),
        pty = opts.pty,
        "ssh session requested"
    );

    let _raw = if tty { RawMode::enable() } else { None };
    let ClientIo {
        mut stdin,
        mut stdout,
        mut stderr,
    } = opts.io;
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);

    // Input and window changes run in their own tasks, so that output keeps
    // being read while input waits for the server's window (and vice versa).
    let input = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut writer = tx.make_writer();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        let _ = writer.flush().await;
                    }
                }
            }
            let _ = tx.eof().await;
        })
    };
    let winch = if tty {
        let tx = tx.clone();
        let mut sig =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        Some(tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if let Some((cols, rows)) = local_size() {
                    if tx.window_change(cols, rows, 0, 0).await.is_err() {
                        return;
                    }
                }
            }
        }))
    } else if let Some(mut changes) = changes.take() {
        let tx = tx.clone();
        Some(tokio::spawn(async move {
            while let Some((cols, rows)) = changes.recv().await {
                if tx.window_change(cols, rows, 0, 0).await.is_err() {
                    return;
                }
            }
        }))
    } else {
        None
    };

    // In raw mode, SIGTERM and SIGHUP end the session here (rather than the
    // process) so that the terminal is restored.
    let mut term_signals = if tty {
        use tokio::signal::unix::{signal, SignalKind};
        Some((
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    } else {
        None
    };

    let mut status: Option<i32> = None;
    let result = loop {
        let msg = tokio::select! {
            msg = rx.wait() => msg,
            signo = termination(&mut term_signals) => {
                tracing::debug!(signo, "ssh session ended by a local signal");
                status = Some(128 + signo);
                break Ok(());
            }
        };
        let Some(msg) = msg else {
            break Ok(());
        };
        match msg {
            ChannelMsg::Data { data } => {
                if let Err(e) = write_out(&mut stdout, &data).await {
                    break Err(e);
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                if let Err(e) = write_out(&mut stderr, &data).await {
                    break Err(e);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(i32::try_from(exit_status).unwrap_or(255));
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                tracing::debug!(signal = ?signal_name, core_dumped, "remote process killed");
                status = Some(128 + signal_number(&signal_name));
            }
            ChannelMsg::Failure => {
                break Err(SshError::Other(
                    "the workspace refused the session request".to_string(),
                ));
            }
            ChannelMsg::Close => break Ok(()),
            _ => {}
        }
    };
    input.abort();
    if let Some(w) = winch {
        w.abort();
    }
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    result?;
    Ok(status.unwrap_or(255))
}

/// The number of the first of SIGTERM and SIGHUP to arrive; never, if not
/// listening.
async fn termination(
    signals: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) -> i32 {
    match signals {
        Some((term, hup)) => tokio::select! {
            _ = term.recv() => nix::sys::signal::Signal::SIGTERM as i32,
            _ = hup.recv() => nix::sys::signal::Signal::SIGHUP as i32,
        },
        None => std::future::pending().await,
    }
}

async fn write_out(w: &mut (dyn AsyncWrite + Unpin + Send), data: &[u8]) -> Result<(), SshError> {
    w.write_all(data).await?;
    w.flush().await?;
    Ok(())
}

fn signal_number(sig: &russh::Sig) -> i32 {
    use nix::sys::signal::Signal;
    use russh::Sig;
    let s = match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => match format!("SIG{name}").parse::<Signal>() {
            Ok(s) => s,
            Err(_) => return 127,
        },
    };
    s as i32
}
