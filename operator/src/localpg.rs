//! A private PostgreSQL server run from the installed binaries, for `berth up`
//! on a laptop, for `berth pg start|stop` and for the test script.
//!
//! # Expected flow
//! 1. [`find_binaries`] locates `initdb`, `pg_ctl` and `psql`
//!    (`pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`,
//!    else `PATH`), or fails naming the package to install.
//! 2. [`LocalPg::start`] runs `initdb` once (trust auth, superuser
//!    `postgres`), starts the server with `pg_ctl -w` on a loopback port and
//!    creates the database `berth`. A server already running from the same
//!    data directory is reused.
//! 3. [`LocalPg::stop`] shuts it down with `pg_ctl -m fast stop`.
//!
//! # Caveats
//! PostgreSQL refuses to run as root. When the effective uid is 0, `initdb`
//! and `pg_ctl` run as the `postgres` system user (`runuser -u postgres --`,
//! else `su postgres`), the data directory is handed to that user, and every
//! directory above it must be traversable by it (a data directory under
//! `/root` is rejected with an explanation).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The database created in the private server.
pub const DATABASE: &str = "berth";
/// The superuser `initdb` creates (whoever runs it).
pub const SUPERUSER: &str = "postgres";
/// The system user PostgreSQL runs as when Berth runs as root.
pub const SYSTEM_USER: &str = "postgres";
/// File in the data directory remembering the port the server listens on.
const PORT_FILE: &str = "berth-port";
/// Server log file, inside the data directory.
const LOG_FILE: &str = "berth-postgres.log";

/// Why the private PostgreSQL could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them \
         (`apt-get install postgresql` on Debian/Ubuntu, `brew install postgresql` on macOS) \
         or pass --database-url to use an existing server"
    )]
    NotInstalled,
    /// A command could not be run at all.
    #[error("could not run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {output}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed (stderr, else stdout), trimmed.
        output: String,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Running as root and the data directory is not reachable by the `postgres` user.
    #[error(
        "PostgreSQL must run as the `{SYSTEM_USER}` user when Berth runs as root, and that user \
         cannot reach {0}: choose a data directory whose parents are world-traversable \
         (for example --data-dir /var/lib/berth/postgres or one under /tmp)"
    )]
    Unreachable(PathBuf),
    /// The system user does not exist.
    #[error(
        "running as root needs the `{SYSTEM_USER}` system user to run PostgreSQL; \
         install the `postgresql` package or run Berth as a normal user"
    )]
    NoSystemUser,
    /// No loopback port could be reserved.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    NoPort(std::io::Error),
    /// The data directory holds no Berth-managed server.
    #[error("no private PostgreSQL is initialised in {0}")]
    NotInitialised(PathBuf),
}

/// The PostgreSQL binaries Berth uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    /// Directory holding `initdb` and `pg_ctl` (None: found on `PATH`).
    pub bindir: Option<PathBuf>,
}

impl Binaries {
    /// The full path (or bare name, for `PATH`) of one binary.
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.bindir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// Finds `initdb` and `pg_ctl`: `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/<version>/bin`, else `PATH`.
pub fn find_binaries() -> Result<Binaries, LocalPgError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(Binaries { bindir: Some(dir) });
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e
                    .file_name()
                    .to_string_lossy()
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has_server(d))
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return Ok(Binaries { bindir: Some(dir) });
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server(&dir) {
                return Ok(Binaries { bindir: Some(dir) });
            }
        }
    }
    Err(LocalPgError::NotInstalled)
}

/// Whether this process runs as root (checked with `id -u`, no libc needed).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The default data directory: `$XDG_DATA_HOME/berth/postgres`, else
/// `~/.local/share/berth/postgres`; as root, `/var/lib/berth/postgres`
/// (root's home is usually not reachable by the `postgres` user).
pub fn default_data_dir() -> PathBuf {
    if running_as_root() {
        return PathBuf::from("/var/lib/berth/postgres");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth").join("postgres");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local")
        .join("share")
        .join("berth")
        .join("postgres")
}

/// A private PostgreSQL server living in one data directory.
#[derive(Clone, Debug)]
pub struct LocalPg {
    binaries: Binaries,
    data_dir: PathBuf,
    as_root: bool,
    port: u16,
}

impl LocalPg {
    /// Starts (initialising on first use) the server in `data_dir`, on `port`
    /// or a free loopback port, and makes sure the database `berth` exists.
    /// A server already running from `data_dir` is reused as it is.
    pub fn start(data_dir: &Path, port: Option<u16>) -> Result<LocalPg, LocalPgError> {
        let binaries = find_binaries()?;
        let as_root = running_as_root();
        let data_dir = absolute(data_dir)?;
        let mut pg = LocalPg {
            binaries,
            data_dir,
            as_root,
            port: 0,
        };
        pg.prepare_dir()?;
        if !pg.data_dir.join("PG_VERSION").is_file() {
            pg.initdb()?;
        }
        if pg.is_running() {
            pg.port = pg
                .saved_port()
                .ok_or_else(|| LocalPgError::NotInitialised(pg.data_dir.clone()))?;
        } else {
            pg.port = match port.or_else(|| pg.saved_port().filter(|p| port_is_free(*p))) {
                Some(p) => p,
                None => free_port()?,
            };
            let port_file = pg.data_dir.join(PORT_FILE);
            fs::write(&port_file, pg.port.to_string()).map_err(|source| LocalPgError::Io {
                path: port_file,
                source,
            })?;
            pg.pg_ctl_start()?;
        }
        pg.ensure_database()?;
        Ok(pg)
    }

    /// Attaches to the server of `data_dir` (running or not) so it can be stopped.
    pub fn open(data_dir: &Path) -> Result<LocalPg, LocalPgError> {
        let binaries = find_binaries()?;
        let data_dir = absolute(data_dir)?;
        if !data_dir.join("PG_VERSION").is_file() {
            return Err(LocalPgError::NotInitialised(data_dir));
        }
        let mut pg = LocalPg {
            binaries,
            data_dir,
            as_root: running_as_root(),
            port: 0,
        };
        pg.port = pg.saved_port().unwrap_or(0);
        Ok(pg)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/berth`.
    pub fn database_url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// Whether a server is running from this data directory.
    pub fn is_running(&self) -> bool {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).arg("status");
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Stops the server (`pg_ctl -m fast stop`); a stopped server is left alone.
    pub fn stop(&self) -> Result<(), LocalPgError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]);
        run(cmd).map(|_| ())
    }

    fn saved_port(&self) -> Option<u16> {
        fs::read_to_string(self.data_dir.join(PORT_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates the data directory (mode 0700), owned by `postgres` when root.
    fn prepare_dir(&self) -> Result<(), LocalPgError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalPgError::Io { path, source }
        };
        if self.as_root {
            let ids = Command::new("id")
                .args(["-u", SYSTEM_USER])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .ok_or(LocalPgError::NoSystemUser)?;
            let uid: u32 = String::from_utf8_lossy(&ids.stdout)
                .trim()
                .parse()
                .map_err(|_| LocalPgError::NoSystemUser)?;
            let gid: u32 = Command::new("id")
                .args(["-g", SYSTEM_USER])
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .ok_or(LocalPgError::NoSystemUser)?;
            if let Some(parent) = self.data_dir.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            if !self.data_dir.exists() {
                fs::create_dir(&self.data_dir).map_err(io(&self.data_dir))?;
            }
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))
                .map_err(io(&self.data_dir))?;
            let ok = self
                .as_postgres(
                    "test",
                    &[std::ffi::OsStr::new("-w"), self.data_dir.as_os_str()],
                )
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                return Err(LocalPgError::Unreachable(self.data_dir.clone()));
            }
        } else {
            fs::create_dir_all(&self.data_dir).map_err(io(&self.data_dir))?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io(&self.data_dir))?;
        Ok(())
    }

    fn initdb(&self) -> Result<(), LocalPgError> {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "--auth=trust",
            "--username",
            SUPERUSER,
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]);
        run(cmd).map(|_| ())
    }

    fn pg_ctl_start(&self) -> Result<(), LocalPgError> {
        // Unix socket paths are limited to ~107 bytes; fall back to TCP only.
        let socket_dir = if self.data_dir.as_os_str().len() < 80 {
            self.data_dir.display().to_string()
        } else {
            String::new()
        };
        let opts = format!("-p {} -k '{}' -h 127.0.0.1", self.port, socket_dir);
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &opts, "start"]);
        run(cmd).map(|_| ()).map_err(|e| match e {
            LocalPgError::Failed {
                command,
                status,
                output,
            } => {
                let tail = fs::read_to_string(self.log_file())
                    .map(|l| {
                        l.lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                LocalPgError::Failed {
                    command,
                    status,
                    output: format!("{output}\n{tail}").trim().to_string(),
                }
            }
            other => other,
        })
    }

    fn ensure_database(&self) -> Result<(), LocalPgError> {
        let psql = |sql: &str| {
            let mut cmd = Command::new(self.binaries.path("psql"));
            cmd.args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql]);
            run(cmd)
        };
        let exists = psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        ))?;
        if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
            psql(&format!("CREATE DATABASE {DATABASE}"))?;
        }
        Ok(())
    }

    /// A command running a PostgreSQL binary, as the `postgres` user when root.
    fn pg_command(&self, name: &str) -> Command {
        let bin = self.binaries.path(name);
        if self.as_root {
            self.as_postgres(bin.as_os_str(), &[])
        } else {
            Command::new(bin)
        }
    }

    fn as_postgres(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&std::ffi::OsStr],
    ) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SYSTEM_USER, "--"]).arg(program).args(args);
        cmd.current_dir("/");
        cmd
    }
}

fn absolute(p: &Path) -> Result<PathBuf, LocalPgError> {
    std::path::absolute(p).map_err(|source| LocalPgError::Io {
        path: p.to_path_buf(),
        source,
    })
}

fn run(mut cmd: Command) -> Result<Output, LocalPgError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| LocalPgError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let output = if stderr.is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        stderr
    };
    Err(LocalPgError::Failed {
        command,
        status: out.status.to_string(),
        output,
    })
}

fn free_port() -> Result<u16, LocalPgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(LocalPgError::NoPort)?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(LocalPgError::NoPort)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Writes `DATABASE_URL=…` for scripts (`eval`-able).
pub fn print_env(pg: &LocalPg, mut out: impl std::io::Write) -> std::io::Result<()> {
    writeln!(out, "DATABASE_URL={}", pg.database_url())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_paths_join_the_bindir_or_stay_bare() {
        let b = Binaries {
            bindir: Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
        };
        assert_eq!(
            b.path("pg_ctl"),
            PathBuf::from("/usr/lib/postgresql/15/bin/pg_ctl")
        );
        assert_eq!(
            Binaries { bindir: None }.path("initdb"),
            PathBuf::from("initdb")
        );
    }

    #[test]
    fn a_free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
