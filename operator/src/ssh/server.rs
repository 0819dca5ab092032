//! The workspace agent's embedded SSH server.
//!
//! [`serve`] runs one SSH connection over any byte stream. It supports
//! sessions with and without a pty (`shell`, `exec`, `env`, `window-change`,
//! `signal`, exit-status / exit-signal), the `sftp` subsystem, `direct-tcpip`
//! (`ssh -L`) and `tcpip-forward` (`ssh -R`).
//!
//! # Authentication
//!
//! Every user name and every method (`none`, password, public key) is
//! accepted. That is deliberate: the stream handed to [`serve`] only exists
//! after the operator authenticated the caller as the workspace's owner and
//! relayed the bytes to the agent, so whoever speaks SSH on it is already
//! authorized; a second check here would need a second set of credentials
//! for no gain. Never hand [`serve`] a stream from an unauthenticated source
//! (e.g. a listening socket reachable by others).
//!
//! Commands run as the agent's own user, with the configured environment
//! only (plus what the client sends with `env` requests, `TERM` when a pty is
//! requested, and `HOME`, `SHELL` and a standard `PATH` when absent).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::SshError;

/// Called with an activity kind when a session opens and then at most every [`ACTIVITY_INTERVAL`] while
/// data flows.
///
/// Kinds are names the agent's activity reports accept
/// (`agent::activity::parse_kind`): `vscode` for sessions whose command
/// mentions VS Code (its server install/start scripts; VS Code's plain
/// `bash` sessions cannot be told apart and count as `ssh`), `port-forward`
/// for `direct-tcpip` and `tcpip-forward` connections, `ssh` for everything
/// else (shells, commands, SFTP).
pub type ActivityFn = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Every kind [`ActivityFn`] is called with.
pub const ACTIVITY_KINDS: [&str; 3] = ["ssh", "vscode", "port-forward"];

/// How often, at most, the activity callback fires while data flows.
pub const ACTIVITY_INTERVAL: Duration = Duration::from_secs(30);

/// Everything [`serve`] needs; cheap to share between connections.
pub struct ServerConfig {
    /// The host key (see [`load_or_create_host_key`]).
    pub host_key: PrivateKey,
    /// The user's shell: run as a login shell for `shell` requests and as
    /// `SHELL -c CMD` for `exec` requests.
    pub shell: PathBuf,
    /// Working directory of sessions and base of relative SFTP paths.
    pub home: PathBuf,
    /// The environment sessions start with (the caller strips secrets).
    pub env: Vec<(OsString, OsString)>,
    /// Activity callback.
    pub activity: ActivityFn,
}

impl ServerConfig {
    /// A configuration with the shell from `$SHELL` (else `/bin/sh`), home
    /// from `$HOME` (else `/`), an empty environment and no activity callback.
    pub fn new(host_key: PrivateKey) -> Self {
        let shell = std::env::var_os("SHELL")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let home = std::env::var_os("HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        ServerConfig {
            host_key,
            shell,
            home,
            env: Vec::new(),
            activity: Arc::new(|_| {}),
        }
    }
}

/// Loads the OpenSSH-format private key at `path`, or creates a new Ed25519
/// key there (parent directories 0700, file 0600, written atomically) if the
/// file does not exist.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, SshError> {
    let io_err = |source| SshError::HostKey {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(PrivateKey::from_openssh(text.trim_start())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)),
        "berth workspace host key",
    )?;
    seed.fill(0);
    let pem = key.to_openssh(LineEnding::LF)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, pem.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        // Another process may have created the key meanwhile: keep theirs.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    };
    let res = write();
    let _ = std::fs::remove_file(&tmp);
    res.map_err(io_err)?;
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    Ok(PrivateKey::from_openssh(text.trim_start())?)
}

/// Serves one SSH connection over `stream` until the client disconnects.
///
/// See the module documentation for why no authentication happens here.
pub async fn serve<S>(stream: S, cfg: Arc<ServerConfig>) -> Result<(), SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-berth_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        keys: vec![cfg.host_key.clone()],
        auth_rejection_time: Duration::from_millis(0),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        // The relay has its own liveness checks; an idle shell is legitimate.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    let handler = Conn {
        activity: Arc::new(Activity::new(cfg.activity.clone())),
        cfg,
        forwards: HashMap::new(),
    };
    let session = russh::server::run_stream(Arc::new(config), stream, handler).await?;
    match session.await {
        Ok(()) => tracing::debug!("ssh connection closed"),
        // Clients (and relays) often just drop the stream instead of sending
        // a disconnect message: that is an ordinary end, not an error.
        Err(e) if peer_went_away(&e) => tracing::debug!(error = %e, "ssh connection dropped"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn peer_went_away(e: &SshError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        SshError::Protocol(russh::Error::Disconnect) => true,
        SshError::Protocol(russh::Error::IO(io)) | SshError::Io(io) => matches!(
            io.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        ),
        _ => false,
    }
}

/// Rate-limited activity reporting, shared by a connection's channels.
struct Activity {
    cb: ActivityFn,
    last: Mutex<Option<Instant>>,
}

impl Activity {
    fn new(cb: ActivityFn) -> Self {
        Activity {
            cb,
            last: Mutex::new(None),
        }
    }

    /// A session opened: always reported.
    fn open(&self, kind: &'static str) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
        (self.cb)(kind);
    }

    /// Data flowed: reported at most every [`ACTIVITY_INTERVAL`].
    fn touch(&self, kind: &'static str) {
        let due = match self.last.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= ACTIVITY_INTERVAL);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            (self.cb)(kind);
        }
    }
}

/// Aborts a task when dropped (remote forward listeners die with the connection).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One SSH connection.
struct Conn {
    cfg: Arc<ServerConfig>,
    activity: Arc<Activity>,
    forwards: HashMap<(String, u32), AbortOnDrop>,
}

impl russh::server::Handler for Conn {
    type Error = SshError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "ssh auth accepted (authenticated by the relay)");
        Ok(Auth::Accept)
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "ssh auth accepted (authenticated by the relay)");
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "ssh auth accepted (authenticated by the relay)");
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(session_channel(
            channel,
            session.handle(),
            self.cfg.clone(),
            self.activity.clone(),
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let host = host_to_connect.to_string();
        let activity = self.activity.clone();
        tokio::spawn(async move {
            let Ok(port) = u16::try_from(port_to_connect) else {
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            };
            match TcpStream::connect((host.as_str(), port)).await {
                Ok(tcp) => {
                    reply.accept().await;
                    activity.open("port-forward");
                    tracing::debug!(port, "ssh direct-tcpip connected");
                    let _ = tcp.set_nodelay(true);
                    forward(channel, tcp, activity).await;
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "ssh direct-tcpip connect failed");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(want) = u16::try_from(*port) else {
            return Ok(false);
        };
        // Like sshd without GatewayPorts: "" and "localhost" mean loopback.
        let bind = match address {
            "" | "localhost" => "127.0.0.1",
            "*" => "0.0.0.0",
            other => other,
        };
        let listener = match TcpListener::bind((bind, want)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(port = want, error = %e, "ssh tcpip-forward bind failed");
                return Ok(false);
            }
        };
        let bound = match listener.local_addr() {
            Ok(a) => u32::from(a.port()),
            Err(_) => return Ok(false),
        };
        *port = bound;
        let handle = session.handle();
        let activity = self.activity.clone();
        let address_owned = address.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let handle = handle.clone();
                let activity = activity.clone();
                let address = address_owned.clone();
                tokio::spawn(async move {
                    match handle
                        .channel_open_forwarded_tcpip(
                            address,
                            bound,
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await
                    {
                        Ok(channel) => {
                            activity.open("port-forward");
                            let _ = tcp.set_nodelay(true);
                            forward(channel, tcp, activity).await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "ssh forwarded-tcpip open failed")
                        }
                    }
                });
            }
        });
        self.forwards
            .insert((address.to_string(), bound), AbortOnDrop(task));
        tracing::debug!(port = bound, "ssh tcpip-forward listening");
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.forwards.remove(&(address.to_string(), port)).is_some())
    }

    // Channel requests are answered here, in the order they arrive, and
    // carried out by the channel's task (which sees the same requests as
    // `ChannelMsg`s). Answering from the task instead could answer a
    // pipelined request with another one's reply.

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_success(channel)?)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            Ok(session.channel_success(channel)?)
        } else {
            Ok(session.channel_failure(channel)?)
        }
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(session.channel_failure(channel)?)
    }
}

/// Copies between a channel and a TCP connection until both directions end.
async fn forward(channel: Channel<Msg>, tcp: TcpStream, activity: Arc<Activity>) {
    let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
    let (mut ch_rd, ch_wr) = channel.split();
    let mut ch_writer = ch_wr.make_writer();
    let up = async {
        let mut reader = ch_rd.make_reader();
        let _ = pump(&mut reader, &mut tcp_wr, &activity, "port-forward").await;
        let _ = tcp_wr.shutdown().await;
    };
    let down = async {
        let _ = pump(&mut tcp_rd, &mut ch_writer, &activity, "port-forward").await;
        let _ = ch_wr.eof().await;
    };
    tokio::join!(up, down);
    let _ = ch_wr.close().await;
}

/// Copies `r` to `w`, reporting activity; a read error (such as EIO from a
/// pty master whose slave side is gone) counts as end of input.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    activity: &Activity,
    kind: &'static str,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(total),
            Ok(n) => n,
        };
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
        activity.touch(kind);
    }
}

struct PtyReq {
    term: String,
    cols: u16,
    rows: u16,
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A session channel: collects pty/env requests, then runs the shell, the
/// command or the SFTP server.
async fn session_channel(
    mut channel: Channel<Msg>,
    handle: Handle,
    cfg: Arc<ServerConfig>,
    activity: Arc<Activity>,
) {
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    loop {
        let Some(msg) = channel.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => {
                pty = Some(PtyReq {
                    term,
                    cols: clamp_u16(col_width),
                    rows: clamp_u16(row_height),
                })
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => {
                if let Some(p) = pty.as_mut() {
                    p.cols = clamp_u16(col_width);
                    p.rows = clamp_u16(row_height);
                }
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => env.push((variable_name, variable_value)),
            ChannelMsg::Exec { command, .. } => {
                run_process(channel, handle, cfg, activity, Some(command), pty, env).await;
                return;
            }
            ChannelMsg::RequestShell { .. } => {
                run_process(channel, handle, cfg, activity, None, pty, env).await;
                return;
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => {
                activity.open("ssh");
                tracing::debug!("ssh sftp session");
                run_sftp(channel, &cfg, activity).await;
                return;
            }
            ChannelMsg::Close => return,
            _ => {}
        }
    }
}

/// Runs the SFTP server on a session channel. russh-sftp runs in its own
/// task and does not say when it is done, so it gets one end of a pipe and
/// this end is copied to and from the channel; when its end closes, the
/// channel gets exit-status 0 (as from sshd's sftp-server; scp and sftp
/// treat a missing status as failure) and is closed.
async fn run_sftp(channel: Channel<Msg>, cfg: &ServerConfig, activity: Arc<Activity>) {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    russh_sftp::server::run(theirs, super::sftp::Sftp::new(cfg.home.clone())).await;
    let (mut ours_rd, mut ours_wr) = tokio::io::split(ours);
    let (mut ch_rd, ch_wr) = channel.split();
    let act = activity.clone();
    let up = tokio::spawn(async move {
        let mut reader = ch_rd.make_reader();
        let _ = pump(&mut reader, &mut ours_wr, &act, "ssh").await;
        let _ = ours_wr.shutdown().await;
    });
    let mut writer = ch_wr.make_writer();
    let _ = pump(&mut ours_rd, &mut writer, &activity, "ssh").await;
    up.abort();
    let _ = ch_wr.exit_status(0).await;
    let _ = ch_wr.eof().await;
    let _ = ch_wr.close().await;
    tracing::debug!("ssh sftp session ended");
}

/// Input for the child, handed to a writer task so that the channel's
/// messages keep being read while the child is not reading its stdin (else
/// russh's session loop, which is also needed to send the child's output,
/// could block on this channel's queue).
enum Input {
    Data(bytes::Bytes),
    Resize(u16, u16),
    Eof,
}

fn signal_from_sig(sig: &Sig) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    Some(match sig {
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
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

fn sig_from_signal(signo: i32) -> Sig {
    use nix::sys::signal::Signal;
    match Signal::try_from(signo) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(other) => Sig::Custom(other.as_str().trim_start_matches("SIG").to_string()),
        Err(_) => Sig::Custom(format!("{signo}")),
    }
}

fn send_signal(pid: Option<u32>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

fn build_command(
    cfg: &ServerConfig,
    command: Option<&[u8]>,
    term: Option<&str>,
    client_env: &[(String, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&cfg.shell);
    match command {
        Some(c) => {
            cmd.arg("-c").arg(OsStr::from_bytes(c));
        }
        None => {
            // A login shell, as sshd starts it: argv[0] is "-" + its name.
            let name = cfg
                .shell
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| OsString::from("sh"));
            let mut arg0 = OsString::from("-");
            arg0.push(name);
            cmd.arg0(arg0);
        }
    }
    cmd.env_clear();
    cmd.envs(cfg.env.iter().map(|(k, v)| (k, v)));
    let has = |name: &str| cfg.env.iter().any(|(k, _)| k == name);
    if !has("HOME") {
        cmd.env("HOME", &cfg.home);
    }
    if !has("SHELL") {
        cmd.env("SHELL", &cfg.shell);
    }
    if !has("PATH") {
        cmd.env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        );
    }
    if let Some(term) = term {
        cmd.env("TERM", term);
    }
    // The client is the workspace owner, who can run anything anyway.
    for (k, v) in client_env {
        if !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0') {
            cmd.env(k, v);
        }
    }
    cmd.current_dir(&cfg.home);
    cmd.kill_on_drop(true);
    cmd
}

async fn run_process(
    channel: Channel<Msg>,
    handle: Handle,
    cfg: Arc<ServerConfig>,
    activity: Arc<Activity>,
    command: Option<Vec<u8>>,
    pty: Option<PtyReq>,
    env: Vec<(String, String)>,
) {
    let id = channel.id();
    let kind: &'static str = match &command {
        Some(c) if c.windows(6).any(|w| w.eq_ignore_ascii_case(b"vscode")) => "vscode",
        _ => "ssh",
    };
    activity.open(kind);
    tracing::debug!(
        exec = command.is_some(),
        pty = pty.is_some(),
        kind,
        "ssh session starts"
    );
    let (mut rx, tx) = channel.split();
    let mut cmd = build_command(
        &cfg,
        command.as_deref(),
        pty.as_ref().map(|p| p.term.as_str()),
        &env,
    );

    let (input_tx, mut input_rx) = mpsc::channel::<Input>(1024);
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    let is_pty = pty.is_some();

    let spawned: std::io::Result<(tokio::process::Child, JoinHandle<()>)> = (|| {
        if let Some(p) = &pty {
            let (pty_master, pts) = pty_process::open().map_err(std::io::Error::other)?;
            pty_master
                .resize(pty_process::Size::new(p.rows, p.cols))
                .map_err(std::io::Error::other)?;
            let child = pty_process::Command::from(cmd)
                .spawn(pts)
                .map_err(std::io::Error::other)?;
            let (mut rd, mut wr) = pty_master.into_split();
            let mut out = tx.make_writer();
            let act = activity.clone();
            pumps.push(tokio::spawn(async move {
                let _ = pump(&mut rd, &mut out, &act, kind).await;
            }));
            let writer = tokio::spawn(async move {
                while let Some(inp) = input_rx.recv().await {
                    match inp {
                        Input::Data(d) => {
                            if wr.write_all(&d).await.is_err() {
                                break;
                            }
                        }
                        Input::Resize(rows, cols) => {
                            let _ = wr.resize(pty_process::Size::new(rows, cols));
                        }
                        // A pty has no half-close; sshd ignores it too.
                        Input::Eof => {}
                    }
                }
            });
            Ok((child, writer))
        } else {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            let mut stdin = child.stdin.take();
            if let Some(mut stdout) = child.stdout.take() {
                let mut out = tx.make_writer();
                let act = activity.clone();
                pumps.push(tokio::spawn(async move {
                    let _ = pump(&mut stdout, &mut out, &act, kind).await;
                }));
            }
            if let Some(mut stderr) = child.stderr.take() {
                let mut out = tx.make_writer_ext(Some(1));
                let act = activity.clone();
                pumps.push(tokio::spawn(async move {
                    let _ = pump(&mut stderr, &mut out, &act, kind).await;
                }));
            }
            let writer = tokio::spawn(async move {
                while let Some(inp) = input_rx.recv().await {
                    match inp {
                        Input::Data(d) => {
                            if let Some(w) = stdin.as_mut() {
                                if w.write_all(&d).await.is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        Input::Resize(..) => {}
                        Input::Eof => stdin = None,
                    }
                }
            });
            Ok((child, writer))
        }
    })();

    let (mut child, writer) = match spawned {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, shell = %cfg.shell.display(), "ssh: cannot start the shell");
            let msg = format!("berth: cannot start {}: {e}\r\n", cfg.shell.display());
            let _ = tx.extended_data_bytes(1, msg.into_bytes()).await;
            let _ = tx.exit_status(127).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
            return;
        }
    };
    let pid = child.id();

    // Feed the child until it exits; keep reading the channel throughout.
    let mut hung_up = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = rx.wait(), if !hung_up => match msg {
                Some(ChannelMsg::Data { data }) => {
                    activity.touch(kind);
                    let _ = input_tx.send(Input::Data(data)).await;
                }
                Some(ChannelMsg::Eof) => {
                    let _ = input_tx.send(Input::Eof).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = input_tx
                        .send(Input::Resize(clamp_u16(row_height), clamp_u16(col_width)))
                        .await;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(s) = signal_from_sig(&signal) {
                        send_signal(pid, s);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    // The client went away: hang up like a closing terminal.
                    hung_up = true;
                    let _ = input_tx.send(Input::Eof).await;
                    send_signal(pid, nix::sys::signal::Signal::SIGHUP);
                    let pid_for_kill = pid;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        send_signal(pid_for_kill, nix::sys::signal::Signal::SIGKILL);
                    });
                }
                Some(_) => {}
            },
        }
    };
    drop(input_tx);
    writer.abort();

    // Send the rest of the output. Pipes end when every process holding them
    // has exited (as with sshd); a pty's leftovers are drained briefly.
    let drain = async {
        for p in pumps.iter_mut() {
            let _ = p.await;
        }
    };
    if is_pty {
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    } else {
        tokio::pin!(drain);
        loop {
            tokio::select! {
                _ = &mut drain => break,
                msg = rx.wait(), if !hung_up => if matches!(msg, None | Some(ChannelMsg::Close)) {
                    hung_up = true;
                },
            }
        }
    }
    for p in &pumps {
        p.abort();
    }

    match status {
        Ok(st) => {
            if let Some(code) = st.code() {
                tracing::debug!(code, "ssh session exited");
                let _ = tx.exit_status(u32::try_from(code).unwrap_or(255)).await;
            } else if let Some(signo) = st.signal() {
                tracing::debug!(signo, "ssh session killed by a signal");
                let _ = handle
                    .exit_signal_request(
                        id,
                        sig_from_signal(signo),
                        st.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "ssh: waiting for the session's process failed");
            let _ = tx.exit_status(255).await;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn activity_kinds_are_kinds_the_agent_reports() {
        for k in super::ACTIVITY_KINDS {
            assert!(crate::agent::activity::parse_kind(k).is_some(), "{k}");
        }
    }
}
