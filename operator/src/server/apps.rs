//! Workspace apps (`WorkspaceTemplate.spec.apps[]`): the operator serves
//! each under `/@<owner>/<workspace>/apps/<slug>/` (`<workspace>.<namespace>`
//! outside the `default` namespace), proxying HTTP and WebSocket requests to
//! the app's port inside the workspace over a relayed stream. The full path
//! is passed on, so an app is configured with that base path (VS Code Web:
//! `--server-base-path "/@$BERTH_OWNER/$BERTH_WORKSPACE/apps/vscode/"`).
//!
//! # Who gets in
//! A browser cannot send a bearer token, so `POST …/workspaces/{name}/open`
//! (with the user's token) mints a one-time ticket, good for a minute on
//! one app's path; the app URL with `?berth_ticket=…` trades it for an
//! HttpOnly, SameSite=Strict session cookie scoped to that path (Secure over
//! https) and redirects to the URL without it. A request may also carry the
//! bearer token itself. Cross-site requests (`Sec-Fetch-Site: cross-site`,
//! or a WebSocket whose `Origin` is not this host) are refused. Berth's
//! cookie and the `Authorization` header never reach the app. Each request
//! counts as activity `app:<slug>`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::agent::protocol::StreamTarget;
use crate::api::template::{AppShare, WorkspaceTemplateSpec};
use crate::api::{Kind, WorkspaceSpec};
use crate::store::Identity;

/// The session cookie's name.
pub const COOKIE: &str = "berth_app_session";
/// The query parameter that carries a one-time ticket.
pub const TICKET_PARAM: &str = "berth_ticket";
const TICKET_TTL: Duration = Duration::from_secs(60);
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The base path of an app.
pub fn app_path(owner: &str, ns: &str, name: &str, slug: &str) -> String {
    if ns == crate::api::DEFAULT_NAMESPACE {
        format!("/@{owner}/{name}/apps/{slug}/")
    } else {
        format!("/@{owner}/{name}.{ns}/apps/{slug}/")
    }
}

/// Body of `POST …/workspaces/{name}/open`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// The app's slug.
    app: String,
}

/// The app `slug` of a workspace as it runs (its template version, with
/// `when` applied), with the workspace's uid and owner.
async fn find_app(
    st: &AppState,
    ns: &str,
    name: &str,
    slug: &str,
) -> Result<(crate::api::DynObject, crate::api::template::App), ApiError> {
    let missing = || ApiError::NotFound(format!("workspaces/{name}: no app {slug:?}"));
    let obj = st
        .store
        .object_get(Kind::Workspace, ns, name)
        .await?
        .ok_or_else(missing)?;
    let spec: WorkspaceSpec =
        serde_json::from_value(obj.spec.clone()).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let version = obj
        .status
        .get("templateVersion")
        .and_then(|v| v.as_i64())
        .map(|v| v as i32)
        .or(spec.template.version);
    let tv = st
        .store
        .template_version_get(ns, &spec.template.name, version)
        .await?
        .ok_or_else(missing)?;
    let tspec: WorkspaceTemplateSpec =
        serde_json::from_value(tv.spec).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let params = crate::controllers::workspace::render::effective_parameters(&spec, &tspec);
    let app = tspec
        .apps
        .into_iter()
        .find(|a| {
            a.slug == slug
                && a.when
                    .as_ref()
                    .is_none_or(|w| params.get(w) == Some(&serde_json::Value::Bool(true)))
        })
        .ok_or_else(missing)?;
    Ok((obj, app))
}

fn owner_of(obj: &crate::api::DynObject) -> String {
    obj.spec
        .get("owner")
        .and_then(|o| o.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Who may open an app. Path-based apps share the operator's origin, so an
/// app's page could act, in a visitor's browser, on whatever else that
/// visitor has open there: until apps get origins of their own, an app is
/// served to its owner (and admins) only, whatever its `share` says.
fn may_open(who: &Identity, owner: &str, _share: AppShare) -> bool {
    who.admin || who.user == owner
}

/// `POST …/workspaces/{name}/open` `{"app": "vscode"}`: the app's URL with
/// a one-time ticket, for the signed-in user to open in a browser.
pub async fn open(
    st: AppState,
    caller: Caller,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: OpenBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("open body: {e}")))?;
    // Missing and foreign answer alike.
    let alike = || ApiError::NotFound(format!("workspaces/{name}: no app {:?}", req.app));
    let (obj, app) = find_app(&st, ns, name, &req.app)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => alike(),
            other => other,
        })?;
    let owner = owner_of(&obj);
    if !may_open(&caller.0, &owner, app.share) {
        return Err(alike());
    }
    let path = app_path(&owner, ns, name, &app.slug);
    let ticket = st
        .store
        .web_ticket_create(&caller.0, &path, TICKET_TTL)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "app": app.slug,
            "path": path,
            "url": format!("{path}?{TICKET_PARAM}={ticket}"),
            "expiresInSeconds": TICKET_TTL.as_secs(),
        })),
    )
        .into_response())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Cookie` header without Berth's own cookies (the app's and the dashboard's).
fn strip_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| {
            !kv.is_empty()
                && !kv.starts_with(&format!("{COOKIE}="))
                && !kv.starts_with(&format!("{}=", super::dashboard::COOKIE))
        })
        .map(String::from)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn without_param(uri: &Uri, key: &str) -> String {
    let path = uri.path();
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(key))
        .collect();
    if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return true;
    }
    // A WebSocket from a page of another origin.
    if headers.contains_key(header::UPGRADE) {
        if let (Some(origin), Some(host)) = (
            headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        ) {
            let origin_host = origin.split("://").nth(1).unwrap_or(origin);
            return origin_host != host;
        }
    }
    false
}

fn plain(code: StatusCode, text: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `/@{owner}/{workspace}/apps/{slug}/…`: every method.
pub async fn serve(
    State(st): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let get = |k: &str| {
        parts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (owner, wsref, slug) = (get("owner"), get("workspace"), get("slug"));
    match serve_inner(st, owner, wsref, slug, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    st: AppState,
    at_owner: String,
    wsref: String,
    slug: String,
    mut req: Request,
) -> Result<Response, ApiError> {
    let Some(owner) = at_owner.strip_prefix('@') else {
        return Err(ApiError::NotFound(format!(
            "no route for {}",
            req.uri().path()
        )));
    };
    let (name, ns) = match wsref.split_once('.') {
        Some((n, ns)) => (n.to_string(), ns.to_string()),
        None => (wsref.clone(), crate::api::DEFAULT_NAMESPACE.to_string()),
    };
    let base = app_path(owner, &ns, &name, &slug);
    // `/@o/w/apps/slug` → the base path with its slash.
    if req.uri().path() == base.trim_end_matches('/') {
        return Ok((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, base)]).into_response());
    }
    let headers = req.headers().clone();
    let https = is_https(&headers);
    // A ticket becomes a session cookie.
    if let Some(ticket) = query_param(req.uri(), TICKET_PARAM) {
        // Only a link opened by the user (typed, pasted, from Berth's own
        // pages) signs a browser in, never one another site sends it to.
        let fetch_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        if !matches!(fetch_site, "none" | "same-origin") {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "sign-in links work only when opened directly\n".into(),
            ));
        }
        let Some(who) = st.store.web_ticket_redeem(&ticket, &base).await? else {
            return Ok(plain(
                StatusCode::UNAUTHORIZED,
                format!("this link was used already or has expired; open the app again (berth open {name} {slug})\n"),
            ));
        };
        let session = st
            .store
            .web_session_create(&who, &base, SESSION_TTL)
            .await?;
        let cookie = format!(
            "{COOKIE}={session}; Path={base}; Max-Age={}; HttpOnly; SameSite=Strict{}",
            SESSION_TTL.as_secs(),
            if https { "; Secure" } else { "" }
        );
        return Ok((
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, without_param(req.uri(), TICKET_PARAM)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response());
    }
    if cross_site(&headers) {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "cross-site requests to workspace apps are refused\n".into(),
        ));
    }
    let who = match cookie_value(&headers, COOKIE) {
        Some(id) => st.store.web_session_lookup(&id, &base).await?,
        None => match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            Some(t) => st.store.token_lookup(t.trim()).await?,
            None => None,
        },
    };
    let Some(who) = who else {
        return Ok(plain(
            StatusCode::UNAUTHORIZED,
            format!("sign in first: `berth open {name} {slug}` prints a link that does\n"),
        ));
    };
    let (obj, app) = match find_app(&st, &ns, &name, &slug).await {
        Ok(x) => x,
        Err(ApiError::NotFound(m)) => return Ok(plain(StatusCode::NOT_FOUND, format!("{m}\n"))),
        Err(e) => return Err(e),
    };
    let real_owner = owner_of(&obj);
    if real_owner != owner || !may_open(&who, &real_owner, app.share) {
        // Alike for "not yours" and "not there": no existence oracle.
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!("workspaces/{name}: no app {slug:?}\n"),
        ));
    }
    let uid = obj.metadata.uid.unwrap_or_default();
    // Over this replica's agent connection, or the replica that holds it.
    let target = StreamTarget::Tcp { port: app.port };
    let near = match super::connect::open_duplex(&st, &ns, &name, uid, target, &who).await {
        Ok(near) => near,
        Err(super::connect::OpenError::NotConnected) => {
            return Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("workspaces/{name}: its agent is not connected; is it running? (berth start {name})\n"),
            ))
        }
        Err(super::connect::OpenError::Failed(e)) => {
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                format!("app {slug:?} (port {}): {e}\n", app.port),
            ))
        }
        Err(super::connect::OpenError::Api(e)) => return Err(e),
    };
    if let Err(e) = super::activity::record(&st, uid, &ns, &name, &format!("app:{slug}")).await {
        tracing::warn!(error = %e, "cannot record app activity");
    }
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(near))
            .await
            .map_err(|e| ApiError::Unavailable(format!("app {slug:?}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // The app sees its request without Berth's credentials.
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_cookie(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    let forwarded = axum::http::Request::from_parts(parts, body);
    let mut resp = sender
        .send_request(forwarded)
        .await
        .map_err(|e| ApiError::Unavailable(format!("app {slug:?}: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let app_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(a)) = (client_upgrade.await, app_upgrade.await) {
                    let mut c = hyper_util::rt::TokioIo::new(c);
                    let mut a = hyper_util::rt::TokioIo::new(a);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
                }
            });
        }
    }
    let (mut parts, body) = resp.into_parts();
    // An app may not set (or clear) Berth's own cookies.
    let kept: Vec<HeaderValue> = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str().map_or(true, |c| {
                let name = c.split('=').next().unwrap_or("").trim();
                !name.starts_with("berth_")
            })
        })
        .cloned()
        .collect();
    parts.headers.remove(header::SET_COOKIE);
    for v in kept {
        parts.headers.append(header::SET_COOKIE, v);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}
