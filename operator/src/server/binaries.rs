//! The agent binaries the operator serves at `GET /bin/berth-linux-<arch>`,
//! for images that do not contain `berth` (the task's start command fetches
//! it and checks it against the digest pinned in the task definition, as
//! Coder's init script does).
//!
//! The operator serves its own executable for its own architecture (when it
//! runs on Linux), and any `berth-linux-amd64` / `berth-linux-arm64` found
//! in `--agent-binary-dir`, which is how the other architecture is supplied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::error::ApiError;
use super::AppState;

/// The architectures Fargate runs (`runtimePlatform.cpuArchitecture`).
pub const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// Binaries by architecture, with their sha256.
#[derive(Clone, Debug, Default)]
pub struct AgentBinaries {
    files: BTreeMap<String, (PathBuf, String)>,
}

fn own_arch() -> Option<&'static str> {
    if std::env::consts::OS != "linux" {
        return None;
    }
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl AgentBinaries {
    /// Finds the binaries: `dir/berth-linux-<arch>` first, then this
    /// process's own executable for its architecture. Unreadable files are
    /// logged and left out.
    pub fn discover(dir: Option<&Path>) -> AgentBinaries {
        let mut files = BTreeMap::new();
        for arch in ARCHES {
            let candidate = dir
                .map(|d| d.join(format!("berth-linux-{arch}")))
                .filter(|p| p.is_file())
                .or_else(|| {
                    (own_arch() == Some(arch))
                        .then(|| std::env::current_exe().ok())
                        .flatten()
                });
            if let Some(path) = candidate {
                match sha256_file(&path) {
                    Ok(sum) => {
                        files.insert(arch.to_string(), (path, sum));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read an agent binary")
                    }
                }
            }
        }
        AgentBinaries { files }
    }

    /// The sha256 of each served binary, by architecture.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(a, (_, s))| (a.clone(), s.clone()))
            .collect()
    }
}

/// `GET /bin/{file}`: `berth-linux-amd64` or `berth-linux-arm64` (no auth:
/// the binary is no secret, and the digest in the task definition is what
/// the workspace trusts).
pub async fn serve(
    State(st): State<AppState>,
    UrlPath(file): UrlPath<String>,
) -> Result<Response, ApiError> {
    let arch = file.strip_prefix("berth-linux-").unwrap_or_default();
    let Some((path, sum)) = st.binaries.files.get(arch) else {
        let have: Vec<String> = st
            .binaries
            .files
            .keys()
            .map(|a| format!("berth-linux-{a}"))
            .collect();
        return Err(ApiError::NotFound(format!(
            "no agent binary {file:?} (this operator serves: {}; others go in --agent-binary-dir)",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )));
    };
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .len();
    let stream = async_stream::stream! {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match f.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => yield Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(&buf[..n])),
                Err(e) => { yield Err(e); break; }
            }
        }
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::HeaderName::from_static("x-berth-sha256"),
                sum.clone(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
