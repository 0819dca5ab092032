//! The HTTP client for the Berth API (`/apis/berth.dev/v1alpha1`).
//!
//! Every request carries `Authorization: Bearer <token>`; the token is never
//! printed. Error responses are Kubernetes-shaped `Status` objects and come
//! back as [`ApiError::Status`] with their causes, so callers can print one
//! `error:` line per cause.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{DynObject, Kind};

/// Path prefix of every resource endpoint.
pub const BASE: &str = "/apis/berth.dev/v1alpha1";

/// One problem in a failed request, as the server reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `workspaces/alice`.
    #[serde(default)]
    pub object: String,
    /// `spec.resources.memory`; empty for the whole object.
    #[serde(default)]
    pub field: String,
    /// What is wrong.
    #[serde(default)]
    pub message: String,
    /// 0-based index of the document in the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.object.is_empty(), self.field.is_empty()) {
            (true, true) => f.write_str(&self.message),
            (true, false) => write!(f, "{}: {}", self.field, self.message),
            (false, true) => write!(f, "{}: {}", self.object, self.message),
            (false, false) => write!(f, "{}: {}: {}", self.object, self.field, self.message),
        }
    }
}

/// `details` of a `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The individual problems.
    #[serde(default)]
    pub causes: Vec<Cause>,
}

/// The body of an error response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
    /// `Invalid`, `NotFound`, `Conflict`, ….
    #[serde(default)]
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// Causes, when the server gave them.
    #[serde(default)]
    pub details: Option<StatusDetails>,
}

impl Status {
    /// The causes (empty when none).
    pub fn causes(&self) -> &[Cause] {
        self.details
            .as_ref()
            .map(|d| d.causes.as_slice())
            .unwrap_or(&[])
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("{}", .0.message)]
    Status(Status),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the Berth API at {server}: {source}")]
    Transport {
        /// The server URL.
        server: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server's answer was not what the API promises.
    #[error("unexpected response from {url}: {detail}")]
    Decode {
        /// The request URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The server URL given is not usable.
    #[error("invalid server URL {0:?} (expected e.g. http://127.0.0.1:7070)")]
    BadServer(String),
}

impl ApiError {
    /// The HTTP status code, when the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status(s) => Some(s.code),
            _ => None,
        }
    }

    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// The lines to print after `error: `: one per cause when there are
    /// causes, each prefixed by `locate(document)` when it names one.
    pub fn lines(&self, locate: Option<&dyn Fn(usize) -> Option<String>>) -> Vec<String> {
        match self {
            ApiError::Status(s) if !s.causes().is_empty() => s
                .causes()
                .iter()
                .map(|c| match (c.document, locate) {
                    (Some(d), Some(f)) => match f(d) {
                        Some(prefix) => format!("{prefix}: {c}"),
                        None => c.to_string(),
                    },
                    _ => c.to_string(),
                })
                .collect(),
            ApiError::Status(s) if s.code == 401 => vec![format!(
                "{} (pass --token, set BERTH_TOKEN, or put `token:` in the config file)",
                if s.message.is_empty() {
                    "Unauthorized"
                } else {
                    &s.message
                }
            )],
            ApiError::Status(s) if s.message.is_empty() => {
                vec![format!("server answered {} {}", s.code, s.reason)]
            }
            ApiError::Transport { server, source } => {
                let mut cause: &dyn std::error::Error = source;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                let hint = if source.is_connect() {
                    " (is the operator running? `berth up` starts one)"
                } else {
                    ""
                };
                vec![format!(
                    "cannot reach the Berth API at {server}: {cause}{hint}"
                )]
            }
            other => vec![other.to_string()],
        }
    }
}

/// One result of an apply.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ApplyResult {
    /// `Workspace`, ….
    pub kind: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub action: String,
    /// The object as stored (or as it would be, on a dry run).
    #[serde(default)]
    pub object: Option<DynObject>,
}

/// One object deleted (or kept) by `apply --prune`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PruneResult {
    /// `Workspace`, ….
    pub kind: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// `deleted`, `deleting` or `kept`.
    pub action: String,
    /// Why it was kept.
    #[serde(default)]
    pub message: String,
}

/// What an apply did.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApplyResponse {
    /// One per document.
    #[serde(default)]
    pub results: Vec<ApplyResult>,
    /// With prune: objects deleted or kept.
    #[serde(default)]
    pub pruned: Vec<PruneResult>,
}

/// What `apply --prune` may delete.
#[derive(Clone, Debug, Default)]
pub struct PruneArgs {
    /// Label selector (required).
    pub selector: String,
    /// Namespace to prune in besides the documents' own.
    pub namespace: String,
}

/// `metadata` of a list.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// Resume a watch from here.
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// A list of objects.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct List {
    /// List metadata.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects.
    #[serde(default)]
    pub items: Vec<DynObject>,
}

/// An event about an object.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// One CamelCase word.
    #[serde(default)]
    pub reason: String,
    /// A sentence.
    #[serde(default)]
    pub message: String,
    /// How many times it happened.
    #[serde(default)]
    pub count: Option<i64>,
    /// First occurrence.
    #[serde(default)]
    pub first_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// Last occurrence.
    #[serde(default)]
    pub last_timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
struct Items<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

/// A template version.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateVersion {
    /// 1, 2, ….
    pub version: i64,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A created token.
#[derive(Clone, Debug, Deserialize)]
pub struct Token {
    /// The user it authenticates.
    pub user: String,
    /// Whether it has administrator rights.
    #[serde(default)]
    pub admin: bool,
    /// The secret.
    pub token: String,
}

/// Who a token belongs to.
#[derive(Clone, Debug, Deserialize)]
pub struct WhoAmI {
    /// The user.
    pub user: String,
    /// Whether the token has administrator rights.
    #[serde(default)]
    pub admin: bool,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED` (others are ignored).
    #[serde(rename = "type")]
    pub type_: String,
    /// The object after the change (before, for `DELETED`).
    pub object: Value,
}

/// The answer to a start, stop or restart request.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PowerResult {
    /// The workspace.
    #[serde(default)]
    pub workspace: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// `start`, `stop` or `restart`.
    #[serde(default)]
    pub action: String,
    /// Id of the recorded intent (the controller reports the newest it acted
    /// on in `status.observedIntent`).
    #[serde(default)]
    pub intent: i64,
}

/// A client for one server and token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{BASE}/namespaces/{ns}/{}", kind.plural()),
        None => format!("{BASE}/{}", kind.plural()),
    }
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:7070`).
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ApiError> {
        let server = server.trim_end_matches('/').to_string();
        if reqwest::Url::parse(&server)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(ApiError::BadServer(server));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|source| ApiError::Transport {
                server: server.clone(),
                source,
            })?;
        Ok(Client {
            http,
            server,
            token,
        })
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The bearer token, if any (for a child `berth` this one starts).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.server));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let resp = req.send().await.map_err(|source| ApiError::Transport {
            server: self.server.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let reason = resp
            .status()
            .canonical_reason()
            .unwrap_or("")
            .replace(' ', "");
        let body = resp.text().await.unwrap_or_default();
        let mut status = serde_json::from_str::<Status>(&body).unwrap_or_else(|_| Status {
            code,
            reason: reason.clone(),
            message: body.trim().to_string(),
            details: None,
        });
        if status.code == 0 {
            status.code = code;
        }
        if status.reason.is_empty() {
            status.reason = reason;
        }
        Err(ApiError::Status(status))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let resp = self.send(req).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|source| ApiError::Transport {
            server: self.server.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// Applies `documents` in one all-or-nothing request.
    pub async fn apply(
        &self,
        documents: &[Value],
        dry_run: bool,
    ) -> Result<Vec<ApplyResult>, ApiError> {
        let path = if dry_run {
            format!("{BASE}/apply?dryRun=true")
        } else {
            format!("{BASE}/apply")
        };
        let req = self.request(reqwest::Method::POST, &path).json(&documents);
        let r: ApplyResponse = self.json(req).await?;
        Ok(r.results)
    }

    /// Applies `documents` in one all-or-nothing request, deleting in the
    /// same transaction the objects matching `prune` that they do not contain.
    pub async fn apply_prune(
        &self,
        documents: &[Value],
        dry_run: bool,
        prune: &PruneArgs,
    ) -> Result<ApplyResponse, ApiError> {
        let mut query = vec![
            ("prune", "true"),
            ("labelSelector", prune.selector.as_str()),
            ("namespace", prune.namespace.as_str()),
        ];
        if dry_run {
            query.push(("dryRun", "true"));
        }
        let req = self
            .request(reqwest::Method::POST, &format!("{BASE}/apply"))
            .query(&query)
            .json(&documents);
        self.json(req).await
    }

    /// Asks the GitSource controller to sync `name` now; returns the
    /// GitSource with the request annotation set.
    pub async fn sync_gitsource(&self, namespace: &str, name: &str) -> Result<DynObject, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/gitsources/{name}/sync");
        self.json(self.request(reqwest::Method::POST, &path)).await
    }

    /// Lists objects of `kind` in `namespace` (None: all namespaces).
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<List, ApiError> {
        let mut req = self.request(reqwest::Method::GET, &collection_path(kind, namespace));
        if let Some(s) = selector {
            req = req.query(&[("labelSelector", s)]);
        }
        self.json(req).await
    }

    /// Reads one object.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<DynObject, ApiError> {
        let path = format!("{}/{name}", collection_path(kind, Some(namespace)));
        self.json(self.request(reqwest::Method::GET, &path)).await
    }

    /// Reads one object, `None` when it does not exist.
    pub async fn get_opt(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynObject>, ApiError> {
        match self.get(kind, namespace, name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object; returns it as the server last saw it.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynObject>, ApiError> {
        let path = format!("{}/{name}", collection_path(kind, Some(namespace)));
        let resp = self
            .send(self.request(reqwest::Method::DELETE, &path))
            .await?;
        let bytes = resp.bytes().await.unwrap_or_default();
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Events about one object, newest last.
    pub async fn events(
        &self,
        namespace: &str,
        kind: Kind,
        name: &str,
    ) -> Result<Vec<Event>, ApiError> {
        let req = self
            .request(
                reqwest::Method::GET,
                &format!("{BASE}/namespaces/{namespace}/events"),
            )
            .query(&[("kind", kind.as_str()), ("name", name)]);
        let r: Items<Event> = self.json(req).await?;
        Ok(r.items)
    }

    /// Versions of a template, oldest first.
    pub async fn template_versions(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<TemplateVersion>, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspacetemplates/{name}/versions");
        let r: Items<TemplateVersion> =
            self.json(self.request(reqwest::Method::GET, &path)).await?;
        Ok(r.items)
    }

    /// Records a power intent (`start`, `stop`, `restart`) for a workspace.
    pub async fn power(
        &self,
        namespace: &str,
        name: &str,
        action: &str,
    ) -> Result<PowerResult, ApiError> {
        self.power_waking(namespace, name, action, false).await
    }

    /// [`Client::power`]; with `wake`, a Dormant workspace is woken first
    /// (`berth start --wake`).
    pub async fn power_waking(
        &self,
        namespace: &str,
        name: &str,
        action: &str,
        wake: bool,
    ) -> Result<PowerResult, ApiError> {
        let mut path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/{action}");
        if wake {
            path.push_str("?wake=true");
        }
        self.json(self.request(reqwest::Method::POST, &path)).await
    }

    /// Wakes a Dormant workspace; `{"woken": false}` when it was not Dormant.
    pub async fn wake(&self, namespace: &str, name: &str) -> Result<serde_json::Value, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/wake");
        self.json(self.request(reqwest::Method::POST, &path)).await
    }

    /// A one-time link to a workspace app (`{"url": "/@…?berth_ticket=…"}`).
    pub async fn open_app(
        &self,
        namespace: &str,
        name: &str,
        app: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/open");
        self.json(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({ "app": app })),
        )
        .await
    }

    /// Records a start asked for by connecting to a stopped workspace
    /// (reason `Connect`).
    pub async fn start_for_connect(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PowerResult, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/start");
        self.json(
            self.request(reqwest::Method::POST, &path)
                .query(&[("reason", "connect")]),
        )
        .await
    }

    /// Opens a byte stream to `target` (`ssh`, or `tcp` with `port`) inside
    /// a workspace, relayed by the operator over the workspace's agent.
    pub async fn connect_stream(
        &self,
        namespace: &str,
        name: &str,
        target: &str,
        port: Option<u16>,
    ) -> Result<tokio::io::DuplexStream, ApiError> {
        let mut url = format!(
            "{}{BASE}/namespaces/{namespace}/workspaces/{name}/connect?target={target}",
            self.server
        );
        if let Some(p) = port {
            url.push_str(&format!("&port={p}"));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let v =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    ApiError::Status(Status {
                        code: 0,
                        reason: "BadToken".into(),
                        message: "the token is not a valid header value".into(),
                        details: None,
                    })
                })?;
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        // An upgrade needs HTTP/1.1 (TLS could negotiate HTTP/2).
        let http = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|source| ApiError::Transport {
                server: self.server.clone(),
                source,
            })?;
        match crate::relay::ws::dial(&http, &url, headers).await {
            Ok(ws) => Ok(crate::relay::ws::tungstenite_io(ws)),
            Err(crate::relay::ws::DialError::Http(source)) => Err(ApiError::Transport {
                server: self.server.clone(),
                source,
            }),
            Err(crate::relay::ws::DialError::Refused { status, message }) => {
                Err(ApiError::Status(Status {
                    code: status,
                    reason: String::new(),
                    message,
                    details: None,
                }))
            }
        }
    }

    /// Reports activity on a workspace (`ssh`, `vscode`, `app`, `manual`).
    pub async fn activity(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/activity");
        self.json(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({ "kind": kind })),
        )
        .await
    }

    /// Pushes a workspace's autostop out by `duration` (within the policy's limit).
    pub async fn extend(
        &self,
        namespace: &str,
        name: &str,
        duration: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/extend");
        self.json(
            self.request(reqwest::Method::POST, &path)
                .json(&serde_json::json!({ "duration": duration })),
        )
        .await
    }

    /// Creates a token (admin only).
    pub async fn create_token(&self, user: &str, admin: bool) -> Result<Token, ApiError> {
        let req = self
            .request(reqwest::Method::POST, &format!("{BASE}/tokens"))
            .json(&serde_json::json!({ "user": user, "admin": admin }));
        self.json(req).await
    }

    /// Who the configured token belongs to.
    pub async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.json(self.request(reqwest::Method::GET, &format!("{BASE}/whoami")))
            .await
    }

    /// Opens a watch from `resource_version`.
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        resource_version: &str,
        selector: Option<&str>,
    ) -> Result<Watch, ApiError> {
        let mut query = vec![("watch", "true"), ("resourceVersion", resource_version)];
        if let Some(s) = selector {
            query.push(("labelSelector", s));
        }
        let req = self
            .request(reqwest::Method::GET, &collection_path(kind, namespace))
            .query(&query);
        let resp = self.send(req).await?;
        Ok(Watch {
            lines: NdJson::new(resp, &self.server),
        })
    }

    /// Opens a workspace's script output (`GET …/workspaces/{name}/logs`):
    /// newline-delimited JSON, one line of output per item.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        script: Option<&str>,
        follow: bool,
        previous: bool,
    ) -> Result<NdJson, ApiError> {
        let path = format!("{BASE}/namespaces/{namespace}/workspaces/{name}/logs");
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = script {
            query.push(("script", s));
        }
        if follow {
            query.push(("follow", "true"));
        }
        if previous {
            query.push(("previous", "true"));
        }
        let resp = self
            .send(self.request(reqwest::Method::GET, &path).query(&query))
            .await?;
        Ok(NdJson::new(resp, &self.server))
    }
}

/// A stream of newline-delimited JSON values.
#[derive(Debug)]
pub struct NdJson {
    resp: reqwest::Response,
    buf: Vec<u8>,
    server: String,
}

impl NdJson {
    fn new(resp: reqwest::Response, server: &str) -> NdJson {
        NdJson {
            resp,
            buf: Vec::new(),
            server: server.to_string(),
        }
    }

    /// The next value; `None` when the server closed the stream.
    pub async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ApiError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                return serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| ApiError::Decode {
                        url: self.resp.url().to_string(),
                        detail: e.to_string(),
                    });
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(source) => {
                    return Err(ApiError::Transport {
                        server: self.server.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// An open watch stream (newline-delimited JSON).
#[derive(Debug)]
pub struct Watch {
    lines: NdJson,
}

impl Watch {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ApiError> {
        let Some(ev) = self.lines.next::<WatchEvent>().await? else {
            return Ok(None);
        };
        if ev.type_ == "ERROR" {
            let status: Status = serde_json::from_value(ev.object.clone()).unwrap_or_default();
            return Err(ApiError::Status(status));
        }
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid() -> ApiError {
        ApiError::Status(Status {
            code: 422,
            reason: "Invalid".into(),
            message: "2 errors".into(),
            details: Some(StatusDetails {
                causes: vec![
                    Cause {
                        object: "workspaces/alice".into(),
                        field: "spec.resources.memory".into(),
                        message: "bad".into(),
                        document: Some(1),
                    },
                    Cause {
                        object: "workspaces/bob".into(),
                        field: String::new(),
                        message: "worse".into(),
                        document: None,
                    },
                ],
            }),
        })
    }

    #[test]
    fn causes_become_one_line_each_with_their_document_located() {
        let locate = |d: usize| Some(format!("x.yaml (document {})", d + 1));
        assert_eq!(
            invalid().lines(Some(&locate)),
            vec![
                "x.yaml (document 2): workspaces/alice: spec.resources.memory: bad".to_string(),
                "workspaces/bob: worse".to_string()
            ]
        );
    }

    #[test]
    fn a_status_body_is_parsed_with_its_causes() {
        let s: Status = serde_json::from_str(
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":422,"reason":"Invalid","message":"m",
                "details":{"causes":[{"object":"workspaces/a","field":"spec","message":"x","document":0}]}}"#,
        )
        .unwrap();
        assert_eq!(s.causes()[0].document, Some(0));
    }

    #[test]
    fn server_urls_must_be_http() {
        assert!(Client::new("127.0.0.1:7070", None).is_err());
        assert_eq!(
            Client::new("http://127.0.0.1:7070/", None)
                .unwrap()
                .server(),
            "http://127.0.0.1:7070"
        );
    }
}
