//! The CLI config file: where the server is and which token to send.
//!
//! ```yaml
//! server: http://127.0.0.1:7070
//! token: berth_…
//! namespace: default   # optional
//! ```
//!
//! Lookup: `--config`, else `$BERTH_CONFIG`, else
//! `$XDG_CONFIG_HOME/berth/config.yaml`, else `~/.config/berth/config.yaml`.
//! `--server`/`BERTH_SERVER`, `--token`/`BERTH_TOKEN` and `-n` override it.
//! `berth up` has the operator write it (mode 0600) with an admin token.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The server used when neither flags, environment nor config name one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// Contents of the config file. Unknown keys are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Config {
    /// API server URL.
    #[serde(default)]
    pub server: Option<String>,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// Default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The config path: `explicit` (from `--config`/`BERTH_CONFIG`), else the XDG default.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".config")
        });
    base.join("berth").join("config.yaml")
}

/// Reads the config file; a missing default file is an empty config, a
/// missing file named explicitly is an error.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let path = resolve_path(explicit);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(Config::default())
        }
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parses config YAML (an empty file is an empty config).
pub fn parse(text: &str) -> anyhow::Result<Config> {
    let docs = crate::api::yaml::parse_documents(text)?;
    match docs.into_iter().next() {
        None => Ok(Config::default()),
        Some(v) => Ok(serde_json::from_value(v)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_server_and_token_and_ignores_other_keys() {
        let c = parse("server: http://x:1\ntoken: berth_abc\nuser: admin\n").unwrap();
        assert_eq!(c.server.as_deref(), Some("http://x:1"));
        assert_eq!(c.token.as_deref(), Some("berth_abc"));
        assert_eq!(c.namespace, None);
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn explicit_path_wins_over_xdg() {
        assert_eq!(
            resolve_path(Some(Path::new("/a/b.yaml"))),
            PathBuf::from("/a/b.yaml")
        );
    }
}
