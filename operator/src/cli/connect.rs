//! Getting into a workspace: `berth ssh`, `berth ssh --stdio` (an OpenSSH
//! `ProxyCommand`), `berth config-ssh` and `berth port-forward`. Every
//! byte goes through the operator's relay and the workspace's agent; a
//! stopped workspace is started first (a start intent with reason
//! `Connect`), unless `--no-start`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;
use super::CliError;

/// Markers around the block `config-ssh` manages in `~/.ssh/config`.
pub const BEGIN_MARKER: &str = "# ------------START-BERTH-----------";
/// End marker.
pub const END_MARKER: &str = "# ------------END-BERTH-------------";
/// Host names `config-ssh` configures: `berth.<workspace>`.
pub const HOST_PREFIX: &str = "berth.";
/// How long a connect waits for a workspace to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

fn other(msg: impl Into<String>) -> CliError {
    CliError::Other(anyhow::anyhow!(msg.into()))
}

/// The workspace a `berth.<name>` host (or a plain name) stands for.
pub fn workspace_of_host(host: &str) -> &str {
    host.strip_prefix(HOST_PREFIX).unwrap_or(host)
}

fn ready_reason(ws: &Value) -> (bool, String, String) {
    let c = ws
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let s = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("status") == "True", s("reason"), s("message"))
}

/// `Starting… scripts 2/5` from a workspace's status.
fn progress(ws: &Value) -> String {
    let phase = ws
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let scripts = ws
        .pointer("/status/agent/scripts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let blocking: Vec<&Value> = scripts
        .iter()
        .filter(|s| s["blocksLogin"] == true)
        .collect();
    let (_, reason, _) = ready_reason(ws);
    if blocking.is_empty() {
        return format!("{phase}… ({reason})");
    }
    let done = blocking
        .iter()
        .filter(|s| {
            matches!(
                s["state"].as_str(),
                Some("Succeeded" | "Failed" | "Skipped")
            )
        })
        .count();
    format!("{phase}… scripts {done}/{}", blocking.len())
}

/// Makes sure the workspace is ready to connect to: starts a stopped one
/// (unless `no_start`) and waits for `Ready`, printing progress to stderr.
/// A workspace whose startup script failed is connected to anyway (with a
/// warning), so its owner can look into it.
pub async fn ensure_ready(
    client: &Client,
    ns: &str,
    name: &str,
    no_start: bool,
) -> Result<(), CliError> {
    let ws: Value = serde_json::to_value(client.get(super::parse_kind("ws")?, ns, name).await?)
        .map_err(|e| other(e.to_string()))?;
    let (ready, reason, _) = ready_reason(&ws);
    if ready {
        return Ok(());
    }
    let phase = ws
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase.is_empty() {
        // No controller has looked at it (an operator with `--cloud none`):
        // nothing would start it; the relay says whether its agent is there.
        return Ok(());
    }
    if matches!(phase, "Stopped" | "Stopping" | "Failed") || reason == "Stopped" {
        if no_start {
            return Err(other(format!(
                "workspaces/{name} is {}; start it with `berth start {name}` (or connect without --no-start)",
                if phase.is_empty() { "not running" } else { phase }
            )));
        }
        client.start_for_connect(ns, name).await?;
        eprintln!("Starting workspace {name}…");
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    loop {
        let ws: Value = serde_json::to_value(client.get(super::parse_kind("ws")?, ns, name).await?)
            .map_err(|e| other(e.to_string()))?;
        let (ready, reason, message) = ready_reason(&ws);
        if ready {
            return Ok(());
        }
        if reason == "StartupScriptFailed" {
            eprintln!("warning: {message}; connecting anyway");
            return Ok(());
        }
        let line = progress(&ws);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if Instant::now() > deadline {
            return Err(other(format!(
                "workspaces/{name} did not become ready within {}s: {reason}: {message}",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `berth ssh --stdio WS`: the raw SSH stream on stdin/stdout.
pub async fn stdio(client: &Client, ns: &str, name: &str) -> Result<u8, CliError> {
    let stream = client.connect_stream(ns, name, "ssh", None).await?;
    let (mut r, mut w) = tokio::io::split(stream);
    let up = async {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let r = tokio::io::copy(&mut r, &mut stdout).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
        r
    };
    // The session is over when the workspace's side ends.
    tokio::select! {
        r = down => { r.map_err(|e| other(format!("relay: {e}")))?; }
        () = async { up.await; std::future::pending::<()>().await } => {}
    }
    Ok(0)
}

/// The `ssh` client options every Berth host gets: the relay has already
/// authenticated both ends (the user by token, the workspace by its
/// agent's token), so OpenSSH's own host-key and user checks add nothing.
fn ssh_options() -> Vec<(&'static str, &'static str)> {
    vec![
        ("StrictHostKeyChecking", "no"),
        ("UserKnownHostsFile", "/dev/null"),
        ("LogLevel", "ERROR"),
        ("ServerAliveInterval", "30"),
    ]
}

/// The ProxyCommand that reaches `%h` through this berth binary.
fn proxy_command(berth: &Path, config: Option<&Path>, ns: Option<&str>) -> String {
    let mut cmd = shell_word(&berth.to_string_lossy());
    if let Some(c) = config {
        cmd.push_str(&format!(" --config {}", shell_word(&c.to_string_lossy())));
    }
    if let Some(ns) = ns {
        cmd.push_str(&format!(" -n {}", shell_word(ns)));
    }
    // OpenSSH expands %-tokens in the whole command: ours is the only one.
    let mut cmd = cmd.replace('%', "%%");
    cmd.push_str(" ssh --stdio '%h'");
    cmd
}

/// Quotes a word for the shell OpenSSH runs a ProxyCommand with.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `berth ssh WS [-- CMD…]`: Berth's own SSH client over the relay (no
/// OpenSSH needed): a shell with a terminal, or the command (its words
/// quoted, so they reach the remote shell as given) with stdin, stdout and
/// stderr kept apart and binary-safe; exits with the remote status.
pub async fn ssh(
    client: &Client,
    ns: &str,
    name: &str,
    command: &[String],
    tty: bool,
) -> Result<u8, CliError> {
    let stream = client.connect_stream(ns, name, "ssh", None).await?;
    let cmd = (!command.is_empty()).then(|| {
        command
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let user = std::env::var("USER").unwrap_or_else(|_| "berth".into());
    let opts = crate::ssh::ClientOptions::for_terminal(user, cmd, tty);
    let code = crate::ssh::run_client(stream, opts)
        .await
        .map_err(|e| other(format!("ssh: {e}")))?;
    // stdin is read on a blocking thread that would hold the process up.
    let _ = std::io::stdout().flush();
    std::process::exit(code.clamp(0, 255));
}

/// The `Host berth.*` block `config-ssh` writes.
pub fn ssh_config_block(berth: &Path, config: Option<&Path>, ns: Option<&str>) -> String {
    let mut b = String::new();
    b.push_str(BEGIN_MARKER);
    b.push('\n');
    b.push_str(
        "# Managed by `berth config-ssh`; edits here are overwritten. `ssh berth.<workspace>`.\n",
    );
    b.push_str("Host berth.*\n");
    b.push_str(&format!(
        "  ProxyCommand {}\n",
        proxy_command(berth, config, ns)
    ));
    for (k, v) in ssh_options() {
        b.push_str(&format!("  {k} {v}\n"));
    }
    b.push_str(END_MARKER);
    b.push('\n');
    b
}

/// `current` with Berth's block replaced by `block` (or appended), and
/// nothing else touched. Errors when the markers are unbalanced.
pub fn with_block(current: &str, block: &str) -> Result<String, String> {
    let begins = current.matches(BEGIN_MARKER).count();
    let ends = current.matches(END_MARKER).count();
    match (begins, ends) {
        (0, 0) => {
            let mut out = current.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(block);
            Ok(out)
        }
        (1, 1) => {
            let a = current.find(BEGIN_MARKER).unwrap_or(0);
            let e = current.find(END_MARKER).unwrap_or(0);
            if e < a {
                return Err("the end marker comes before the start marker".into());
            }
            let mut rest = &current[e + END_MARKER.len()..];
            rest = rest.strip_prefix('\n').unwrap_or(rest);
            Ok(format!("{}{block}{rest}", &current[..a]))
        }
        _ => Err(format!(
            "expected one Berth block, found {begins} start and {ends} end markers; fix the file by hand"
        )),
    }
}

/// `berth config-ssh [--ssh-config FILE] [--dry-run]`.
pub fn config_ssh(
    file: Option<PathBuf>,
    dry_run: bool,
    config: Option<&Path>,
    ns: Option<&str>,
) -> Result<u8, CliError> {
    let file = match file {
        Some(f) => f,
        None => dirs_home()?.join(".ssh").join("config"),
    };
    let berth = std::env::current_exe().map_err(|e| other(format!("locating berth: {e}")))?;
    let current = match std::fs::read_to_string(&file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(other(format!("reading {}: {e}", file.display()))),
    };
    let block = ssh_config_block(&berth, config, ns);
    let next =
        with_block(&current, &block).map_err(|e| other(format!("{}: {e}", file.display())))?;
    if next == current {
        println!("{}: up to date", file.display());
        return Ok(0);
    }
    if dry_run {
        let diff = similar::TextDiff::from_lines(&current, &next);
        let text = diff
            .unified_diff()
            .header(
                &file.display().to_string(),
                &format!("{} (berth config-ssh)", file.display()),
            )
            .to_string();
        super::write_stdout(text.as_bytes())?;
        return Ok(0);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| other(format!("creating {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    // Write beside, then rename: a crash never leaves half a config.
    let tmp = file.with_extension("berth-tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| other(format!("writing {}: {e}", tmp.display())))?;
        f.write_all(next.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| other(format!("writing {}: {e}", tmp.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
    }
    std::fs::rename(&tmp, &file)
        .map_err(|e| other(format!("replacing {}: {e}", file.display())))?;
    println!(
        "{}: wrote the Host berth.* block; `ssh berth.<workspace>` and VS Code Remote-SSH now reach your workspaces",
        file.display()
    );
    Ok(0)
}

fn dirs_home() -> Result<PathBuf, CliError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| other("HOME is not set; pass --ssh-config FILE"))
}

/// One `LOCAL[:REMOTE]` mapping of `port-forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// Port on 127.0.0.1 here.
    pub local: u16,
    /// Port inside the workspace.
    pub remote: u16,
}

/// Parses `8080` or `8080:3000` (`:3000` = any free local port).
pub fn parse_port_map(s: &str) -> Result<PortMap, String> {
    let port = |p: &str, what: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {what} port {p:?} is not a number from 0 to 65535"))
    };
    let (local, remote) = match s.split_once(':') {
        Some((l, r)) => (
            if l.is_empty() { 0 } else { port(l, "local")? },
            port(r, "remote")?,
        ),
        None => {
            let p = port(s, "the")?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(format!("{s:?}: the remote port must be from 1 to 65535"));
    }
    Ok(PortMap { local, remote })
}

/// A line on stdout; a closed stdout (`| head`) is not worth dying for.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `berth port-forward WS 8080[:3000] …`: listens on 127.0.0.1 and forwards
/// each connection to that port inside the workspace, until interrupted.
pub async fn port_forward(
    client: &Client,
    ns: &str,
    name: &str,
    maps: &[PortMap],
) -> Result<u8, CliError> {
    let mut tasks = tokio::task::JoinSet::new();
    for m in maps {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", m.local))
            .await
            .map_err(|e| other(format!("listening on 127.0.0.1:{}: {e}", m.local)))?;
        let local = listener
            .local_addr()
            .map_err(|e| other(e.to_string()))?
            .port();
        say(&format!(
            "Forwarding from 127.0.0.1:{local} -> {}",
            m.remote
        ));
        let (client, ns, name, remote) =
            (client.clone(), ns.to_string(), name.to_string(), m.remote);
        tasks.spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                say(&format!("Handling connection for {local}"));
                let (client, ns, name) = (client.clone(), ns.clone(), name.clone());
                tokio::spawn(async move {
                    match client.connect_stream(&ns, &name, "tcp", Some(remote)).await {
                        Ok(mut stream) => {
                            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                        }
                        Err(e) => {
                            for l in e.lines(None) {
                                eprintln!("error: port {remote}: {l}");
                            }
                        }
                    }
                });
            }
        });
    }
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = tasks.join_next() => {}
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_appended_once_and_rewritten_in_place_leaving_the_rest() {
        let block = ssh_config_block(Path::new("/usr/bin/berth"), None, None);
        assert!(
            block.contains("ProxyCommand /usr/bin/berth ssh --stdio '%h'"),
            "{block}"
        );
        let mine = "Host github.com\n  User git\n";
        let once = with_block(mine, &block).unwrap();
        assert!(once.starts_with(mine));
        assert_eq!(
            with_block(&once, &block).unwrap(),
            once,
            "a re-run changes nothing"
        );
        let other = ssh_config_block(
            Path::new("/opt/berth bin/berth"),
            Some(Path::new("/c.yaml")),
            Some("team"),
        );
        assert!(
            other.contains(
                "ProxyCommand '/opt/berth bin/berth' --config /c.yaml -n team ssh --stdio '%h'"
            ),
            "{other}"
        );
        let twice = with_block(&format!("{once}Host after\n"), &other).unwrap();
        assert!(
            twice.starts_with(mine) && twice.ends_with("Host after\n"),
            "{twice}"
        );
        assert_eq!(twice.matches(BEGIN_MARKER).count(), 1);
        assert!(!twice.contains("/usr/bin/berth"));
        assert!(
            with_block(&format!("{BEGIN_MARKER}\n"), &block).is_err(),
            "unbalanced markers are refused"
        );
    }

    #[test]
    fn port_maps_parse_like_kubectl() {
        assert_eq!(
            parse_port_map("8080"),
            Ok(PortMap {
                local: 8080,
                remote: 8080
            })
        );
        assert_eq!(
            parse_port_map("9000:3000"),
            Ok(PortMap {
                local: 9000,
                remote: 3000
            })
        );
        assert_eq!(
            parse_port_map(":3000"),
            Ok(PortMap {
                local: 0,
                remote: 3000
            })
        );
        assert!(parse_port_map("80:0").is_err());
        assert!(parse_port_map("http").unwrap_err().contains("not a number"));
    }

    #[test]
    fn hosts_name_their_workspace() {
        assert_eq!(workspace_of_host("berth.alice"), "alice");
        assert_eq!(workspace_of_host("alice"), "alice");
    }
}
