//! The resource routes under `/apis/berth.dev/v1alpha1`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::api::selector::Selector;
use crate::api::{yaml, DynObject, Kind};
use crate::apply;
use crate::store::{DeleteOutcome, NewIntent, PowerAction, StoreError, WatchFilter};

/// Query parameters of list and watch.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    label_selector: Option<String>,
    #[serde(default)]
    watch: bool,
    resource_version: Option<String>,
}

/// Query parameters of writes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteQuery {
    dry_run: Option<String>,
    /// `POST /apply` only: delete objects matching `labelSelector` that the
    /// request does not contain.
    prune: Option<String>,
    /// With `prune`: which objects prune may delete (required).
    label_selector: Option<String>,
    /// With `prune`: the namespace to prune in besides the documents' own.
    namespace: Option<String>,
}

impl WriteQuery {
    fn dry_run(&self) -> bool {
        matches!(
            self.dry_run.as_deref(),
            Some("true" | "All" | "all" | "1" | "")
        )
    }
}

fn kind_of(plural: &str) -> Result<Kind, ApiError> {
    Kind::ALL
        .into_iter()
        .find(|k| k.plural() == plural)
        .ok_or_else(|| ApiError::NotFound(format!("the server has no resource type {plural:?}")))
}

fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("yaml"))
}

/// Renders a value as JSON, or YAML when the client asked for it.
pub(super) fn respond(
    headers: &HeaderMap,
    code: StatusCode,
    v: &impl serde::Serialize,
) -> Response {
    if wants_yaml(headers) {
        (
            code,
            [(header::CONTENT_TYPE, "application/yaml")],
            yaml::to_yaml(v),
        )
            .into_response()
    } else {
        (code, Json(v)).into_response()
    }
}

fn parse_body(body: &Bytes) -> Result<Vec<Value>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
    yaml::parse_documents(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `POST /apply`: all-or-nothing apply of one or many documents.
pub async fn apply_many(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let docs = parse_body(&body)?;
    let prune = if matches!(q.prune.as_deref(), Some("true" | "1" | "")) {
        let selector = q.label_selector.as_deref().unwrap_or_default();
        if selector.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "prune needs a labelSelector: it deletes the objects matching it that the request does not contain".into(),
            ));
        }
        let selector = Selector::parse(selector).map_err(ApiError::BadRequest)?;
        let mut namespaces: std::collections::BTreeSet<String> = docs
            .iter()
            .map(|d| {
                d.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(crate::api::DEFAULT_NAMESPACE)
                    .to_string()
            })
            .collect();
        namespaces.extend(q.namespace.clone());
        Some(apply::Prune {
            selector,
            namespaces: Some(namespaces),
            keep: Default::default(),
        })
    } else {
        None
    };
    let opts = apply::ApplyOptions {
        dry_run: q.dry_run(),
        manager: None,
        prune: prune.as_ref(),
    };
    let out = apply::apply_with(&st.store, &caller.0, &docs, &opts).await?;
    Ok(respond(&headers, StatusCode::OK, &out))
}

/// `PUT /namespaces/{ns}/{plural}/{name}`: apply one object.
pub async fn put_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, plural, name)): Path<(String, String, String)>,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = kind_of(&plural)?;
    let docs = parse_body(&body)?;
    let [doc] = docs.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "expected exactly one document, got {}",
            docs.len()
        )));
    };
    let meta = doc.get("metadata");
    let doc_name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let doc_ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(crate::api::DEFAULT_NAMESPACE);
    let doc_kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if doc_name != name || doc_ns != ns || doc_kind != kind.as_str() {
        return Err(ApiError::BadRequest(format!(
            "the body is {doc_kind} {doc_ns}/{doc_name}, but the URL names {} {ns}/{name}",
            kind.as_str()
        )));
    }
    let results = apply::apply(&st.store, &caller.0, &docs, q.dry_run()).await?;
    let r = results
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::BadRequest("nothing applied".into()))?;
    let code = if r.action == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond(&headers, code, &r.object))
}

/// `GET /namespaces/{ns}/{plural}/{name}`.
pub async fn get_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = kind_of(&plural)?;
    let obj = visible(&st, &caller, kind, &ns, &name).await?;
    Ok(respond(&headers, StatusCode::OK, &obj))
}

pub(super) async fn visible(
    st: &AppState,
    caller: &Caller,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<DynObject, ApiError> {
    match st.store.object_get(kind, ns, name).await? {
        Some(o) if caller.can_read(&o) => Ok(o),
        _ => Err(ApiError::NotFound(format!(
            "{}/{name} not found in namespace {ns:?}",
            kind.plural()
        ))),
    }
}

/// `DELETE /namespaces/{ns}/{plural}/{name}`.
pub async fn delete_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = kind_of(&plural)?;
    visible(&st, &caller, kind, &ns, &name).await?;
    if kind != Kind::Workspace {
        caller.require_admin(&format!("delete {}", kind.plural()))?;
    }
    let out = st.store.object_delete(kind, &ns, &name, None).await;
    let (DeleteOutcome::Deleted(obj) | DeleteOutcome::Terminating(obj)) = out?;
    Ok(respond(&headers, StatusCode::OK, &obj))
}

/// `PUT /namespaces/{ns}/{plural}/{name}/status`: controllers only.
pub async fn put_status(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin("write status (the status path is for controllers)")?;
    let kind = kind_of(&plural)?;
    let docs = parse_body(&body)?;
    let [doc] = docs.as_slice() else {
        return Err(ApiError::BadRequest(
            "expected one document with a status".into(),
        ));
    };
    let status = doc.get("status").cloned().unwrap_or(Value::Null);
    if !status.is_object() {
        return Err(ApiError::BadRequest(
            "the body must carry a `status` mapping".into(),
        ));
    }
    let expected = doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("metadata.resourceVersion {s:?} is not a revision"))
            })
        })
        .transpose()?;
    let obj = st
        .store
        .object_update_status(kind, &ns, &name, &status, expected)
        .await?;
    Ok(respond(&headers, StatusCode::OK, &obj))
}

/// `PUT /namespaces/{ns}/{kind}/{name}/status` where a static route for
/// `{kind}` (workspaces, gitsources: they have actions of their own) takes
/// precedence over the generic `{plural}` route in the router.
async fn put_status_of(
    plural: &str,
    st: State<AppState>,
    caller: Caller,
    Path((ns, name, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if sub != "status" {
        return Err(ApiError::NotFound(format!(
            "no subresource {sub:?} for PUT (status)"
        )));
    }
    put_status(
        st,
        caller,
        Path((ns, plural.to_string(), name)),
        headers,
        body,
    )
    .await
}

/// `PUT /namespaces/{ns}/workspaces/{name}/status`.
pub async fn put_workspace_status(
    st: State<AppState>,
    caller: Caller,
    path: Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_status_of("workspaces", st, caller, path, headers, body).await
}

/// `GET /namespaces/{ns}/{plural}` (list or watch).
pub async fn list_namespaced(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, plural)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list(st, caller, Some(ns), &plural, q, headers).await
}

/// `GET /{plural}` (all namespaces; list or watch).
pub async fn list_all(
    State(st): State<AppState>,
    caller: Caller,
    Path(plural): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list(st, caller, None, &plural, q, headers).await
}

async fn list(
    st: AppState,
    caller: Caller,
    ns: Option<String>,
    plural: &str,
    q: ListQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = kind_of(plural)?;
    let selector = Selector::parse(q.label_selector.as_deref().unwrap_or_default())
        .map_err(ApiError::BadRequest)?;
    let owner = if kind == Kind::Workspace {
        caller.owner_filter().map(str::to_string)
    } else {
        None
    };
    if q.watch {
        let since = match q.resource_version.as_deref() {
            None | Some("") | Some("0") => st.store.revision_current().await?,
            Some(s) => s.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("resourceVersion {s:?} is not a revision"))
            })?,
        };
        let filter = WatchFilter {
            kinds: vec![kind],
            namespace: ns,
            owner,
            selector,
            skip_status_writes: false,
        };
        // Answer 410 before streaming when the revision is compacted.
        st.store.changes_since(&filter, since, 1).await?;
        let stream = st.store.watch(filter, since, st.watch_poll).map(|item| match item {
            Ok(change) => {
                let mut line = serde_json::to_vec(&change).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::io::Error>(Bytes::from(line))
            }
            Err(StoreError::Gone(rv)) => {
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Gone", "message": StoreError::Gone(rv).to_string()}})).unwrap_or_default();
                line.push(b'\n');
                Ok(Bytes::from(line))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(stream),
        )
            .into_response());
    }
    let (items, rv) = st
        .store
        .object_list(kind, ns.as_deref(), &selector, owner.as_deref())
        .await?;
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "List",
        "metadata": { "resourceVersion": rv.to_string() },
        "items": items,
    });
    Ok(respond(&headers, StatusCode::OK, &body))
}

/// Query of the events route.
#[derive(Debug, Deserialize)]
pub struct EventQuery {
    kind: String,
    name: String,
}

/// `GET /namespaces/{ns}/events?kind=&name=`.
pub async fn list_events(
    State(st): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<EventQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = Kind::from_user(&q.kind)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown kind {:?}", q.kind)))?;
    if kind == Kind::Workspace && !caller.0.admin {
        // Events of a workspace are as private as the workspace.
        visible(&st, &caller, kind, &ns, &q.name).await?;
    }
    let events = st.store.event_list(kind, &ns, &q.name, 100).await?;
    Ok(respond(
        &headers,
        StatusCode::OK,
        &json!({ "items": events }),
    ))
}

/// `GET /namespaces/{ns}/workspacetemplates/{name}/versions`.
pub async fn template_versions(
    State(st): State<AppState>,
    _caller: Caller,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let versions = st.store.template_version_list(&ns, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!(
            "workspacetemplates/{name} not found in namespace {ns:?}"
        )));
    }
    Ok(respond(
        &headers,
        StatusCode::OK,
        &json!({ "items": versions }),
    ))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    user: String,
    #[serde(default)]
    admin: bool,
}

/// `POST /tokens` (admins only).
pub async fn create_token(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin("create tokens")?;
    crate::api::validate::dns_label(&req.user)
        .map_err(|e| ApiError::Invalid(format!("user: {e}"), Vec::new()))?;
    let token = st.store.token_create(&req.user, req.admin, "api").await?;
    tracing::info!(user = %req.user, admin = req.admin, by = %caller.0.user, "token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": req.user, "admin": req.admin, "token": token })),
    )
        .into_response())
}

/// `POST /namespaces/{ns}/workspaces/{name}/{start|stop|restart}`: records a
/// person's power intent; the newest intent decides.
pub async fn power(
    st: AppState,
    caller: Caller,
    ns: String,
    name: String,
    action: &str,
    connect: bool,
    wake: bool,
) -> Result<Response, ApiError> {
    let action = match action {
        "start" => PowerAction::Start,
        "stop" => PowerAction::Stop,
        _ => PowerAction::Restart,
    };
    let obj = visible(&st, &caller, Kind::Workspace, &ns, &name).await?;
    if action.runs() {
        if wake {
            super::activity::wake(&st, &caller, &obj).await?;
        } else if let Some(d) = crate::lifecycle::dormancy_of(&st.store, &obj)
            .await?
            .filter(|d| d.is_dormant(chrono::Utc::now()))
        {
            return Err(ApiError::Conflict(
                format!(
                    "workspaces/{name} is Dormant (stopped and unused since {}); wake it first: berth wake {name}, or berth start --wake {name}",
                    d.last_used.format("%Y-%m-%d %H:%M UTC")
                ),
                Vec::new(),
            ));
        }
    }
    let message = if connect {
        format!("{} connected to the stopped workspace", caller.0.user)
    } else {
        format!("berth {} by {}", action.as_str(), caller.0.user)
    };
    let intent = NewIntent {
        message: &message,
        reason: if connect { "Connect" } else { "Manual" },
        ..NewIntent::manual(action, &caller.0.user)
    };
    let id = st.store.intent_record(&ns, &name, &intent).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "workspace": name, "namespace": ns, "action": action.as_str(), "intent": id }),
        ),
    )
        .into_response())
}

/// `POST /namespaces/{ns}/gitsources/{name}/sync` (admins): asks the
/// GitSource controller to sync now, by setting the
/// `berth.dev/sync-requested-at` annotation (as Flux's `requestedAt`); the
/// controller syncs when the value differs from
/// `status.lastHandledSyncRequest`. `PUT …/status` is the status path.
pub async fn gitsource_action(
    State(st): State<AppState>,
    caller: Caller,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if action != "sync" {
        return Err(ApiError::NotFound(format!(
            "gitsources have no action {action:?}; POST .../gitsources/{name}/sync"
        )));
    }
    caller.require_admin("sync gitsources")?;
    visible(&st, &caller, Kind::GitSource, &ns, &name).await?;
    let requested = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let obj = st
        .store
        .object_annotate(
            Kind::GitSource,
            &ns,
            &name,
            crate::gitops::SYNC_REQUEST_ANNOTATION,
            &requested,
        )
        .await?;
    Ok(respond(&headers, StatusCode::ACCEPTED, &obj))
}

/// `PUT /namespaces/{ns}/gitsources/{name}/status`.
pub async fn put_gitsource_status(
    st: State<AppState>,
    caller: Caller,
    path: Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_status_of("gitsources", st, caller, path, headers, body).await
}

/// `GET /whoami`.
pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "user": caller.0.user, "admin": caller.0.admin }))
}

/// Default poll interval of watches (the LISTEN/NOTIFY backstop).
pub const DEFAULT_WATCH_POLL: Duration = Duration::from_secs(2);
