//! The `GitSource` resource: a git repository, branch and folder whose YAML
//! documents Berth keeps applied (GitOps). The controller lives in
//! [`crate::gitops`]; this module holds the shape and the checks of the
//! resource on its own.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Resource};
use super::validate::{self, Errors};

/// A git repository synced into the store.
pub type GitSource = Resource<GitSourceSpec, GitSourceStatus>;

fn default_branch() -> String {
    "main".to_string()
}

fn default_interval() -> String {
    "1m".to_string()
}

/// Where to sync from and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// The repository: a local path, `file://`, `https://`, `http://`,
    /// `ssh://`, `git://` URL, or `user@host:path`.
    pub repository: String,
    /// The branch to follow. Defaults to `main`.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The folder (relative to the repository root) whose `.yaml`, `.yml`
    /// and `.json` files, recursively, are synced; empty = the whole repository.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// How often to fetch and sync (`30s`, `1m`, `5m`). Defaults to `1m`.
    /// Whole seconds, from `10s` to 10 years (`87600h`).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Delete objects this source applied that are gone from the commit.
    #[serde(default)]
    pub prune: bool,
    /// Stop syncing (fetching, applying, reverting drift) until unset.
    #[serde(default)]
    pub suspend: bool,
}

/// One problem that kept a commit from being applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncError {
    /// The file, relative to the repository root (empty when not about one file).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// 1-based position of the document in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// `workspaces/alice` (or `document 3` when the name is unreadable).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// Dotted field path; empty for the whole object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if let Some(d) = self.document {
                write!(f, " (document {d})")?;
            }
            write!(f, ": ")?;
        }
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// An owned object whose stored form differs from the applied commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    /// `workspaces/default/alice`.
    pub object: String,
    /// The fields that differ (`spec.resources.cpu`, `metadata.labels.team`),
    /// or `<deleted>` when the object is gone.
    pub fields: Vec<String>,
}

/// What the controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSourceStatus {
    /// The generation of the spec last acted on.
    #[serde(default)]
    pub observed_generation: i64,
    /// The commit whose documents are in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    /// When that commit was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<DateTime<Utc>>,
    /// The newest commit the controller tried (rejected when `errors` is not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_commit: Option<String>,
    /// The value of the `berth.dev/sync-requested-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_request: Option<String>,
    /// `Ready`, `Synced`, `Drifted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Why `lastAttemptedCommit` was rejected: every error of every document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SyncError>,
    /// Owned objects that differ from the applied commit (reverted at the next sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftedObject>,
    /// The objects the applied commit declares (`workspaces/default/alice`), in apply order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<String>,
}

/// The shortest interval accepted: a shorter one would only hammer the
/// git server (a sync can be requested any time with `berth sync`).
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks a `GitSource` spec on its own.
pub fn check_spec(errs: &mut Errors, s: &GitSourceSpec) {
    if let Err(e) = repository(&s.repository) {
        errs.add("spec.repository", e);
    }
    if let Err(e) = branch(&s.branch) {
        errs.add("spec.branch", e);
    }
    if let Err(e) = folder(&s.path) {
        errs.add("spec.path", e);
    }
    match validate::duration(&s.interval) {
        Ok(d) if d < MIN_INTERVAL => errs.add(
            "spec.interval",
            format!("{:?} is too short; the minimum is 10s", s.interval),
        ),
        Ok(_) => {}
        Err(e) => errs.add("spec.interval", e),
    }
}

/// Checks a repository location.
pub fn repository(r: &str) -> Result<(), String> {
    if r.trim().is_empty() {
        return Err("required: a local path or a URL (https://, ssh://, file://, git://)".into());
    }
    if r.starts_with('-') || r.starts_with(char::is_whitespace) || r.ends_with(char::is_whitespace)
    {
        return Err(format!(
            "{r:?} must not start with '-' or start or end with a space"
        ));
    }
    // `ssh://-oProxyCommand=…`: a host that git would pass to ssh as an option.
    let host = match r.split_once("://") {
        Some((_, rest)) => rest.rsplit_once('@').map_or(rest, |(_, h)| h),
        None => r
            .split_once(':')
            .filter(|(h, _)| !h.contains('/'))
            .map_or("", |(h, _)| h.rsplit_once('@').map_or(h, |(_, h)| h)),
    };
    if host.starts_with('-') {
        return Err(format!("{r:?}: a host must not start with '-'"));
    }
    if r.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if let Some((scheme, _)) = r.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err(format!(
                "{scheme}:// is not supported; use a local path or https://, http://, ssh://, git://, file://"
            ));
        }
    } else if r.contains("::") {
        return Err(format!(
            "{r:?}: git remote helpers (transport::address) are not supported"
        ));
    }
    Ok(())
}

/// Checks a branch name (a subset of `git check-ref-format --branch`).
pub fn branch(b: &str) -> Result<(), String> {
    let bad = b.is_empty()
        || b.starts_with('-')
        || b.starts_with('/')
        || b.ends_with('/')
        || b.ends_with('.')
        || b.ends_with(".lock")
        || b.contains("..")
        || b.contains("//")
        || b.contains("@{")
        || b.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("{b:?} is not a valid branch name"))
    } else {
        Ok(())
    }
}

/// Checks a folder inside the repository: relative, without `..`.
pub fn folder(p: &str) -> Result<(), String> {
    if p.starts_with('/') {
        return Err(format!(
            "{p:?} must be relative to the repository root (e.g. deploy/workspaces)"
        ));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(format!("{p:?} must not contain '..'"));
    }
    if p.chars().any(char::is_control) || p.starts_with('-') {
        return Err(format!("{p:?} is not a valid folder"));
    }
    Ok(())
}

/// The folder in the form git's pathspecs want: no `./`, no trailing `/`;
/// empty for the repository root.
pub fn normalise_folder(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_accept_paths_and_common_urls_and_refuse_helpers() {
        for ok in [
            "/srv/git/ws.git",
            "./repo",
            "https://github.com/acme/ws.git",
            "git@github.com:acme/ws.git",
            "file:///tmp/x",
        ] {
            assert!(repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-uupload-pack=x",
            "ext::sh -c x",
            "ftp://x/y",
            " https://github.com/acme/ws.git",
            "ssh://-oProxyCommand=touch%20x/repo",
            "ssh://git@-oProxyCommand=x/repo",
            "-oProxyCommand=x:repo",
        ] {
            assert!(repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches_follow_git_ref_rules() {
        assert!(branch("main").is_ok());
        assert!(branch("release/1.2").is_ok());
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a:b", "/a"] {
            assert!(branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn folders_are_normalised_and_may_not_escape() {
        assert_eq!(normalise_folder("./deploy//ws/"), "deploy/ws");
        assert_eq!(normalise_folder("."), "");
        assert!(folder("../x").is_err());
        assert!(folder("/abs").is_err());
        assert!(folder("deploy/ws").is_ok());
    }
}
