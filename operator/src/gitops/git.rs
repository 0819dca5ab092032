//! The git CLI, as GitOps uses it: a bare mirror per source, fetched with
//! `+refs/heads/*:refs/heads/*` (so force-pushed branches move) and read at
//! one commit with `ls-tree` and `cat-file --batch` (one process for all
//! files). Nothing parses `.git` by hand.
//!
//! Every command runs with a timeout, no terminal prompts, and only the
//! `file`, `git`, `http`, `https` and `ssh` transports (no `ext::`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// A failed git command.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git exited non-zero; the message is its stderr, trimmed.
    #[error("{0}")]
    Failed(String),
    /// git took longer than the timeout and was killed.
    #[error("git {0} timed out after {1:?}")]
    Timeout(String, Duration),
    /// The branch does not exist in the repository.
    #[error("branch {0:?} not found in the repository")]
    NoBranch(String),
    /// The folder does not exist at the commit.
    #[error("path {0:?} does not exist at commit {1}")]
    NoPath(String, String),
    /// git's output was not what was expected.
    #[error("unexpected output from git {0}")]
    Output(String),
}

/// One file read at a commit.
#[derive(Clone, Debug)]
pub struct File {
    /// Path relative to the repository root.
    pub path: String,
    /// Its content.
    pub content: Vec<u8>,
}

/// A bare mirror of one repository.
#[derive(Clone, Debug)]
pub struct Mirror {
    dir: PathBuf,
    timeout: Duration,
}

impl Mirror {
    /// The mirror in `dir` (created by the first fetch).
    pub fn new(dir: PathBuf, timeout: Duration) -> Mirror {
        Mirror { dir, timeout }
    }

    async fn git(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Result<Vec<u8>, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.dir)
            .args(["-c", "safe.directory=*", "-c", "protocol.file.allow=always"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Written concurrently with reading stdout, so large inputs cannot deadlock.
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
            });
        }
        let what = args.first().copied().unwrap_or("").to_string();
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| GitError::Timeout(what, self.timeout))?
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            // git's own verdicts first; otherwise the last lines it printed.
            let verdicts: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
                .take(3)
                .collect();
            let tail = if verdicts.is_empty() {
                lines[lines.len().saturating_sub(3)..].join("; ")
            } else {
                verdicts.join("; ")
            };
            return Err(GitError::Failed(if tail.is_empty() {
                format!("git {} failed ({})", args.join(" "), out.status)
            } else {
                tail
            }));
        }
        Ok(out.stdout)
    }

    /// Fetches every branch of `repository` into the mirror (creating it),
    /// moving branches that were force-pushed and dropping deleted ones.
    pub async fn fetch(&self, repository: &str) -> Result<(), GitError> {
        if !self.dir.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir).map_err(GitError::Spawn)?;
            self.git(&["init", "--bare", "--quiet"], None).await?;
        }
        let location = local_path(repository);
        self.git(
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--force",
                "--",
                &location,
                "+refs/heads/*:refs/heads/*",
            ],
            None,
        )
        .await?;
        Ok(())
    }

    /// The commit `branch` points at in the mirror.
    pub async fn resolve(&self, branch: &str) -> Result<String, GitError> {
        let r = format!("refs/heads/{branch}^{{commit}}");
        match self
            .git(&["rev-parse", "--verify", "--quiet", &r], None)
            .await
        {
            Ok(out) => {
                let c = String::from_utf8_lossy(&out).trim().to_string();
                if c.len() >= 40 && c.chars().all(|c| c.is_ascii_hexdigit()) {
                    Ok(c)
                } else {
                    Err(GitError::Output("rev-parse".into()))
                }
            }
            Err(GitError::Failed(_)) => Err(GitError::NoBranch(branch.to_string())),
            Err(e) => Err(e),
        }
    }

    /// The `.yaml`, `.yml` and `.json` files under `folder` (recursively;
    /// empty = the root) at `commit`, sorted by path.
    pub async fn read_manifests(&self, commit: &str, folder: &str) -> Result<Vec<File>, GitError> {
        let mut args = vec!["ls-tree", "-r", "-z", "--full-tree", commit];
        if !folder.is_empty() {
            args.push("--");
            args.push(folder);
        }
        let listing = self.git(&args, None).await?;
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut any = false;
        for rec in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let (meta, path) = rec
                .split_once('\t')
                .ok_or_else(|| GitError::Output("ls-tree".into()))?;
            let mut parts = meta.split_whitespace();
            let (_mode, typ, oid) = (parts.next(), parts.next(), parts.next());
            any = true;
            // ls-tree with a pathspec also matches a file of that exact name
            // or `folder-other/…`; keep only what is inside the folder.
            if !folder.is_empty() && !path.starts_with(&format!("{folder}/")) {
                continue;
            }
            if typ != Some("blob") {
                continue;
            }
            let is_manifest = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if is_manifest {
                if let Some(oid) = oid {
                    entries.push((path.to_string(), oid.to_string()));
                }
            }
        }
        if !folder.is_empty() && !any {
            return Err(GitError::NoPath(folder.to_string(), short(commit)));
        }
        entries.sort();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let input: Vec<u8> = entries
            .iter()
            .flat_map(|(_, oid)| format!("{oid}\n").into_bytes())
            .collect();
        let out = self.git(&["cat-file", "--batch"], Some(input)).await?;
        let mut files = Vec::with_capacity(entries.len());
        let mut rest: &[u8] = &out;
        for (path, _) in entries {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| GitError::Output("cat-file".into()))?;
            let header = String::from_utf8_lossy(&rest[..nl]).to_string();
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| GitError::Output(format!("cat-file ({header})")))?;
            let start = nl + 1;
            if rest.len() < start + size {
                return Err(GitError::Output("cat-file (short read)".into()));
            }
            files.push(File {
                path,
                content: rest[start..start + size].to_vec(),
            });
            // Content is followed by one newline.
            rest = &rest[(start + size + 1).min(rest.len())..];
        }
        Ok(files)
    }
}

/// A local repository given as a relative path is made absolute (git runs
/// with `--git-dir` elsewhere); URLs and `user@host:path` pass unchanged.
fn local_path(repository: &str) -> String {
    let is_url = repository.contains("://")
        || (repository.contains(':')
            && !repository.starts_with('/')
            && !repository.starts_with('.'));
    if is_url || Path::new(repository).is_absolute() {
        return repository.to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(repository).display().to_string(),
        Err(_) => repository.to_string(),
    }
}

/// The first 7 characters of a commit id.
pub fn short(commit: &str) -> String {
    commit.chars().take(7).collect()
}
