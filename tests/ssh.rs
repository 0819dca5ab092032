//! The embedded SSH server (`berth::ssh::serve`) on a real TCP listener,
//! driven by the stock OpenSSH tools (ssh, scp, sftp, ssh-keyscan) and by
//! Berth's own russh client (`berth::ssh::run_client`).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use berth::ssh::{
    load_or_create_host_key, run_client, serve, ClientIo, ClientOptions, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Server {
    port: u16,
    home: PathBuf,
    activity: Arc<Mutex<Vec<&'static str>>>,
    _dir: tempfile::TempDir,
}

/// Serves every connection to 127.0.0.1:PORT with `serve`; the key lives at
/// `key_path` (created on first use) and home is a fresh directory.
async fn start_with_key(key_path: &Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let activity = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = ServerConfig::new(load_or_create_host_key(key_path).unwrap());
    cfg.shell = PathBuf::from("/bin/sh");
    cfg.home = home.clone();
    cfg.env = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("BERTH_TEST_VAR".into(), "from-config".into()),
    ];
    let seen = activity.clone();
    cfg.activity = Arc::new(move |kind| seen.lock().unwrap().push(kind));
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let cfg = cfg.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(tcp, cfg).await {
                    eprintln!("serve: {e}");
                }
            });
        }
    });
    Server {
        port,
        home,
        activity,
        _dir: dir,
    }
}

async fn start() -> (Server, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let s = start_with_key(&keys.path().join(".berth/ssh_host_ed25519_key")).await;
    (s, keys)
}

const SSH_OPTS: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
];

fn ssh(port: u16) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("ssh");
    c.args(SSH_OPTS)
        .arg("-p")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn output(mut c: tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("command timed out")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_exec_prints_and_exits_with_the_status() {
    let (s, _k) = start().await;
    let mut c = ssh(s.port);
    c.arg("dev@127.0.0.1").arg(r#"sh -c "echo hi; exit 3""#);
    let out = output(c).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.activity.lock().unwrap().contains(&"ssh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_exec_gets_the_configured_environment_in_home() {
    let (s, _k) = start().await;
    let mut c = ssh(s.port);
    c.arg("-o")
        .arg("SetEnv=LANG=C.UTF-8")
        .arg("dev@127.0.0.1")
        .arg("echo $BERTH_TEST_VAR; echo $LANG; pwd; env | grep -c '^CARGO_' || true");
    let out = output(c).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "from-config");
    assert_eq!(lines[1], "C.UTF-8");
    assert_eq!(
        Path::new(lines[2]).canonicalize().unwrap(),
        s.home.canonicalize().unwrap()
    );
    // The agent's own environment (here: cargo's) does not leak into sessions.
    assert_eq!(lines[3], "0");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_stdin_eof_reaches_the_command() {
    let (s, _k) = start().await;
    let mut c = ssh(s.port);
    c.arg("dev@127.0.0.1").arg("wc -c").stdin(Stdio::piped());
    c.stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0u8; 1000]).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_tty_session_has_a_pty() {
    let (s, _k) = start().await;
    let mut c = ssh(s.port);
    c.arg("-tt")
        .arg("dev@127.0.0.1")
        .arg("tty; echo TERM=$TERM; stty size; exit 5");
    c.env("TERM", "xterm-test");
    let out = output(c).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    assert!(text.contains("TERM=xterm-test"), "{text:?}");
    assert_eq!(out.status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_shell_without_pty_reads_commands_from_stdin() {
    let (s, _k) = start().await;
    let mut c = ssh(s.port);
    c.arg("-T")
        .arg("dev@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo from-shell\nexit 4\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-shell"));
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_and_sftp_copy_files_both_ways() {
    let (s, _k) = start().await;
    let local = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = local.path().join("up.bin");
    std::fs::write(&src, &payload).unwrap();

    // scp in SFTP mode, relative path = home.
    let mut c = tokio::process::Command::new("scp");
    c.args(SSH_OPTS)
        .arg("-s")
        .arg("-P")
        .arg(s.port.to_string())
        .arg(&src)
        .arg("dev@127.0.0.1:up.bin")
        .kill_on_drop(true);
    let out = output(c).await;
    assert!(
        out.status.success(),
        "scp up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(s.home.join("up.bin")).unwrap(), payload);

    let back = local.path().join("down.bin");
    let mut c = tokio::process::Command::new("scp");
    c.args(SSH_OPTS)
        .arg("-s")
        .arg("-P")
        .arg(s.port.to_string())
        .arg("dev@127.0.0.1:up.bin")
        .arg(&back)
        .kill_on_drop(true);
    let out = output(c).await;
    assert!(
        out.status.success(),
        "scp down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), payload);

    // sftp batch: mkdir, put, ls, rename, get, rm.
    let batch = local.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir d\nput {} d/a.bin\nls -l d\nrename d/a.bin d/b.bin\nget d/b.bin {}\nrm d/b.bin\nrmdir d\n",
            src.display(),
            local.path().join("via-sftp.bin").display()
        ),
    )
    .unwrap();
    let mut c = tokio::process::Command::new("sftp");
    c.args(SSH_OPTS)
        .arg("-P")
        .arg(s.port.to_string())
        .arg("-b")
        .arg(&batch)
        .arg("dev@127.0.0.1")
        .kill_on_drop(true);
    let out = output(c).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sftp: {} {}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("a.bin"), "{text}");
    assert_eq!(
        std::fs::read(local.path().join("via-sftp.bin")).unwrap(),
        payload
    );
    assert!(!s.home.join("d").exists());
    assert!(s.activity.lock().unwrap().iter().all(|k| *k == "ssh"));
}

async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects (retrying while ssh sets the forward up) and checks the echo.
async fn check_echo(port: u16) {
    for _ in 0..100 {
        if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
            if tcp.write_all(b"ping through ssh").await.is_ok() {
                let mut buf = [0u8; 16];
                if tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut buf))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    assert_eq!(&buf, b"ping through ssh");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no echo through port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_local_forward_reaches_a_port_inside_the_workspace() {
    let (s, _k) = start().await;
    let echo = echo_server().await;
    let local = free_port();
    let mut c = ssh(s.port);
    c.arg("-N")
        .arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-L")
        .arg(format!("{local}:127.0.0.1:{echo}"))
        .arg("dev@127.0.0.1");
    let _child = c.spawn().unwrap();
    check_echo(local).await;
    assert!(s.activity.lock().unwrap().contains(&"port-forward"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_remote_forward_exposes_a_client_port_in_the_workspace() {
    let (s, _k) = start().await;
    let echo = echo_server().await;
    let remote = free_port();
    let mut c = ssh(s.port);
    c.arg("-N")
        .arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-R")
        .arg(format!("{remote}:127.0.0.1:{echo}"))
        .arg("dev@127.0.0.1");
    let _child = c.spawn().unwrap();
    check_echo(remote).await;
}

/// An AsyncWrite into shared memory.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn russh_run(port: u16, command: &str, stdin: Vec<u8>) -> (i32, Vec<u8>, Vec<u8>) {
    let out = Sink::default();
    let err = Sink::default();
    let opts = ClientOptions {
        user: "dev".into(),
        command: Some(command.into()),
        pty: false,
        term: "xterm".into(),
        local_tty: false,
        env: vec![],
        io: ClientIo {
            stdin: Box::new(std::io::Cursor::new(stdin)),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
        },
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(120), run_client(tcp, opts))
        .await
        .expect("client timed out")
        .unwrap();
    let o = out.0.lock().unwrap().clone();
    let e = err.0.lock().unwrap().clone();
    (code, o, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_client_gets_exit_code_and_separate_stderr() {
    let (s, _k) = start().await;
    let (code, out, err) = russh_run(s.port, "echo out; echo err >&2; exit 7", vec![]).await;
    assert_eq!(code, 7);
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_client_pipes_10_mib_through_cat_byte_identical() {
    let (s, _k) = start().await;
    let mut data = vec![0u8; 10 * 1024 * 1024];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let (code, out, err) = russh_run(s.port, "cat", data.clone()).await;
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), data.len());
    assert!(out == data, "output differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_client_reports_a_signal_as_128_plus_n() {
    let (s, _k) = start().await;
    let (code, _, _) = russh_run(s.port, "kill -TERM $$", vec![]).await;
    assert_eq!(code, 128 + 15);
}

async fn keyscan(port: u16) -> String {
    let mut c = tokio::process::Command::new("ssh-keyscan");
    c.arg("-t")
        .arg("ed25519")
        .arg("-p")
        .arg(port.to_string())
        .arg("127.0.0.1")
        .kill_on_drop(true);
    let out = output(c).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let key = text
        .lines()
        .find(|l| l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("no key from keyscan: {text:?}"));
    key.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_persists_across_servers() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join(".berth/ssh_host_ed25519_key");
    let a = start_with_key(&path).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = start_with_key(&path).await;
    let ka = keyscan(a.port).await;
    let kb = keyscan(b.port).await;
    assert_eq!(ka, kb);
    let other = tempfile::tempdir().unwrap();
    let c = start_with_key(&other.path().join("key")).await;
    assert_ne!(keyscan(c.port).await, ka);
}

struct AcceptAnyKey;

impl russh::client::Handler for AcceptAnyKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Reads channel data until `needle` shows up; returns everything read.
async fn read_until(ch: &mut russh::Channel<russh::client::Msg>, buf: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(buf).contains(needle) {
        match tokio::time::timeout_at(deadline, ch.wait()).await {
            Ok(Some(russh::ChannelMsg::Data { data })) => buf.extend_from_slice(&data),
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "channel closed before {needle:?}: {:?}",
                String::from_utf8_lossy(buf)
            ),
            Err(_) => panic!(
                "timed out waiting for {needle:?}: {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_change_resizes_the_pty_and_a_signal_reaches_the_process() {
    let (s, _k) = start().await;
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect_stream(config, tcp, AcceptAnyKey)
        .await
        .unwrap();
    assert!(session.authenticate_none("dev").await.unwrap().success());
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    ch.exec(
        true,
        "stty size; echo READY; read x; stty size; echo READY2; sleep 30",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    read_until(&mut ch, &mut buf, "READY\r\n").await;
    assert!(
        String::from_utf8_lossy(&buf).contains("24 80"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    ch.window_change(132, 50, 0, 0).await.unwrap();
    ch.data(&b"\n"[..]).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut ch, &mut buf, "READY2").await;
    assert!(
        String::from_utf8_lossy(&buf).contains("50 132"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // `sleep 30` is killed with a signal request; the shell (the session's
    // process) then reports it as an exit signal or as 128 + 15.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ch.signal(russh::Sig::TERM).await.unwrap();
    let mut ended = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ended.is_none() {
        match tokio::time::timeout_at(deadline, ch.wait())
            .await
            .expect("no exit after signal")
        {
            Some(russh::ChannelMsg::ExitSignal { signal_name, .. }) => {
                ended = Some(format!("signal {signal_name:?}"))
            }
            Some(russh::ChannelMsg::ExitStatus { exit_status }) => {
                ended = Some(format!("status {exit_status}"))
            }
            Some(_) => {}
            None => panic!("closed without exit status"),
        }
    }
    let ended = ended.unwrap();
    assert!(ended == "signal TERM" || ended == "status 143", "{ended}");
}

/// Not a test by itself: `interactive_client_in_a_terminal` runs this test
/// binary again on a pty with the variable set, making it `berth ssh WS` in a
/// terminal (ClientOptions::for_terminal, the process's own stdio).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_client_helper() {
    let Ok(port) = std::env::var("BERTH_SSH_TEST_HELPER_PORT") else {
        return;
    };
    let tcp = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
        .await
        .unwrap();
    let opts = ClientOptions::for_terminal("dev", None, false);
    assert!(opts.pty && opts.local_tty);
    let code = run_client(tcp, opts).await.unwrap();
    let t = rustix::termios::tcgetattr(std::io::stdin()).unwrap();
    if t.local_modes
        .contains(rustix::termios::LocalModes::ICANON | rustix::termios::LocalModes::ECHO)
    {
        println!("TERMINAL-RESTORED");
    }
    std::process::exit(code);
}

async fn read_pty_until(pty: &mut pty_process::Pty, buf: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(buf).contains(needle) {
        match tokio::time::timeout_at(deadline, pty.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => panic!(
                "pty closed before {needle:?}: {:?}",
                String::from_utf8_lossy(buf)
            ),
            Err(_) => panic!(
                "timed out waiting for {needle:?}: {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_client_in_a_terminal() {
    let (s, _k) = start().await;
    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 90)).unwrap();
    let mut child = pty_process::Command::new(std::env::current_exe().unwrap())
        .args([
            "interactive_client_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_SSH_TEST_HELPER_PORT", s.port.to_string())
        .env("TERM", "xterm-256color")
        .kill_on_drop(true)
        .spawn(pts)
        .unwrap();
    let mut buf = Vec::new();
    // A login shell on a remote pty, sized like the local terminal.
    pty.write_all(b"tty; stty size; echo MARK$((1+1))\r")
        .await
        .unwrap();
    read_pty_until(&mut pty, &mut buf, "MARK2").await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 90"), "{text:?}");
    // Local raw mode while the session runs.
    let t = rustix::termios::tcgetattr(&pty).unwrap();
    assert!(!t.local_modes.contains(rustix::termios::LocalModes::ICANON));

    // Resizing the local terminal (SIGWINCH) resizes the remote pty.
    pty.resize(pty_process::Size::new(40, 100)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut buf = Vec::new();
    pty.write_all(b"stty size; echo MARK$((2+2))\r")
        .await
        .unwrap();
    read_pty_until(&mut pty, &mut buf, "MARK4").await;
    assert!(
        String::from_utf8_lossy(&buf).contains("40 100"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    let mut buf = Vec::new();
    pty.write_all(b"exit 9\r").await.unwrap();
    read_pty_until(&mut pty, &mut buf, "TERMINAL-RESTORED").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(9));
}

#[test]
fn an_unreadable_host_key_is_an_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ssh_host_ed25519_key");
    std::fs::write(&path, "not a key").unwrap();
    assert!(load_or_create_host_key(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    // A new key is created once and then loaded.
    let fresh = dir.path().join("new/key");
    let a = load_or_create_host_key(&fresh).unwrap();
    let b = load_or_create_host_key(&fresh).unwrap();
    assert_eq!(a.public_key(), b.public_key());
    assert!(std::fs::read_to_string(&fresh)
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_connection_ends_the_sessions_processes() {
    let (s, _k) = start().await;
    for tty in [false, true] {
        let pid_file = s.home.join(format!("pid-{tty}"));
        let mut c = ssh(s.port);
        if tty {
            c.arg("-tt");
        }
        c.arg("dev@127.0.0.1")
            .arg(format!("echo $$ > {}; exec sleep 100", pid_file.display()));
        let mut child = c.spawn().unwrap();
        let mut pid = None;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pid = pid.expect("the session did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        // SIGKILL: the client cannot say goodbye, the stream just ends.
        child.kill().await.unwrap();
        let mut gone = false;
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "process {pid} (tty: {tty}) outlived the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_client_restores_the_terminal_on_sigterm() {
    let (s, _k) = start().await;
    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let mut child = pty_process::Command::new(std::env::current_exe().unwrap())
        .args([
            "interactive_client_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_SSH_TEST_HELPER_PORT", s.port.to_string())
        .kill_on_drop(true)
        .spawn(pts)
        .unwrap();
    let mut buf = Vec::new();
    pty.write_all(b"echo MARK$((3+3))\r").await.unwrap();
    read_pty_until(&mut pty, &mut buf, "MARK6").await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut buf = Vec::new();
    read_pty_until(&mut pty, &mut buf, "TERMINAL-RESTORED").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
}

/// The relay's case: no socket at all, client and server on the two ends of
/// an in-memory pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_over_an_in_memory_stream() {
    let keys = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(load_or_create_host_key(&keys.path().join("k")).unwrap());
    cfg.shell = PathBuf::from("/bin/sh");
    cfg.home = home.path().to_path_buf();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(serve(a, Arc::new(cfg)));
    let out = Sink::default();
    let err = Sink::default();
    let opts = ClientOptions {
        user: "dev".into(),
        command: Some("read line; echo got:$line; echo oops >&2; exit 42".into()),
        pty: false,
        term: "xterm".into(),
        local_tty: false,
        env: vec![],
        io: ClientIo {
            stdin: Box::new(std::io::Cursor::new(b"hello\n".to_vec())),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
        },
    };
    let code = tokio::time::timeout(Duration::from_secs(60), run_client(b, opts))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 42);
    assert_eq!(out.0.lock().unwrap().as_slice(), b"got:hello\n");
    assert_eq!(err.0.lock().unwrap().as_slice(), b"oops\n");
    // The client disconnects; the server's end returns cleanly.
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_pipes_10_mib_through_cat_byte_identical() {
    let (s, _k) = start().await;
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut c = ssh(s.port);
    c.arg("dev@127.0.0.1")
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
    });
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "output differs");
}
