//! The web dashboard, served on the API's port: sign in, the workspaces
//! page, a workspace's page (power actions, settings, conditions, events,
//! scripts and their live logs, apps), a web terminal, the create-workspace
//! page (`/new`) and the templates page (`/templates`: each version, what it
//! changed, who runs it; admins publish a new version there through the API's
//! `POST …/apply`). The pages are plain HTML, CSS and JavaScript embedded in
//! the binary; they call the JSON API with the session cookie.
//!
//! # Sessions
//! Signing in trades an API token (`POST /login`, pasted once) or a one-time
//! ticket (`GET /login?ticket=…`, the link `berth up` prints) for a session
//! on scope `/`: an HttpOnly, SameSite=Strict cookie ([`COOKIE`], Secure
//! when the request came over https, as `X-Forwarded-Proto` says). The
//! token never appears in a URL or in the page's storage.
//!
//! # CSRF
//! The API accepts the cookie in place of a bearer token (see
//! [`super::auth::Caller`]) only on requests from this origin: a foreign
//! `Origin` or `Sec-Fetch-Site: cross-site` is refused. Every method but GET
//! and HEAD must also carry the session's CSRF token in [`CSRF_HEADER`]; it
//! is derived from the session id (a keyed hash the page learns from
//! `GET /dashboard/session`, which a foreign page cannot read).
//!
//! # Caveat
//! Apps proxied by path (`/@owner/ws/apps/…`) share this origin: Berth strips
//! its cookies before a request reaches an app, but a page an app serves
//! runs with the dashboard's origin. Expose apps of people you do not trust
//! only on another host name.

pub mod terminal;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::api::template::WorkspaceTemplateSpec;
use crate::api::Kind;
use crate::store::{Identity, Store};

/// The session cookie's name.
pub const COOKIE: &str = "berth_session";
/// The scope of dashboard sessions and sign-in tickets.
pub const SCOPE: &str = "/";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-berth-csrf";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long the sign-in link `berth up` prints is good for.
pub const SIGN_IN_TICKET_TTL: Duration = Duration::from_secs(3600);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const XTERM_JS: &str = include_str!("assets/xterm.js");
const XTERM_CSS: &str = include_str!("assets/xterm.css");
const XTERM_FIT_JS: &str = include_str!("assets/addon-fit.js");

/// The dashboard's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dashboard/session", get(session_info))
        .route("/dashboard/assets/{file}", get(asset))
        .route("/workspaces/{ns}/{name}", get(workspace_page))
        .route("/new", get(page))
        .route("/templates", get(page))
        .route(
            "/dashboard/template-manifest/{ns}/{name}",
            get(template_manifest),
        )
}

/// The CSRF token of session `id`.
pub fn csrf_token(id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("berth-dashboard-csrf\0{id}").as_bytes(),
    ))
}

/// Mints the one-time sign-in link for the bootstrap admin (`berth up`).
pub async fn sign_in_link(
    store: &Store,
    base_url: &str,
) -> Result<String, crate::store::StoreError> {
    let admin = Identity {
        user: "admin".into(),
        admin: true,
    };
    let ticket = store
        .web_ticket_create(&admin, SCOPE, SIGN_IN_TICKET_TTL)
        .await?;
    Ok(format!(
        "{}/login?ticket={ticket}",
        base_url.trim_end_matches('/')
    ))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The first value of a (possibly comma-separated, one entry per proxy)
/// forwarded header: the one the client-facing proxy saw.
fn forwarded(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_ascii_lowercase())
}

/// `authority` without the default port of `scheme`.
fn without_default_port(scheme: &str, authority: &str) -> String {
    let a = authority.to_ascii_lowercase();
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return a,
    };
    a.strip_suffix(default).map(str::to_string).unwrap_or(a)
}

/// Whether a request came from a page of this origin (or from no page, as
/// a typed URL or a CLI): no `Sec-Fetch-Site` other than `same-origin` or
/// `none`, and an `Origin`, if any, naming this host.
///
/// "This host" is the one the browser addressed. Behind a reverse proxy
/// (TLS at a load balancer, another host name) that is what the proxy
/// reports in `X-Forwarded-Host` (and the scheme in `X-Forwarded-Proto`):
/// when `X-Forwarded-Host` is present, `Origin` must match it (and the
/// scheme, when `X-Forwarded-Proto` is present too); otherwise `Origin` must
/// match `Host`. Trusting these headers is safe for this check, which only
/// guards the session cookie against other pages in the user's browser: a
/// page of another origin cannot make the browser send them (custom headers
/// on a cross-origin fetch need a CORS preflight, which Berth never grants,
/// and a form or a WebSocket cannot carry them), and a client that sends
/// them itself, as any non-browser client can, needs no forged origin: it
/// has to hold the cookie or a token anyway. The `Secure` flag of the
/// cookie trusts `X-Forwarded-Proto` the same way.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => return true,
        Some(Ok(origin)) => origin,
        Some(Err(_)) => return false,
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('/') {
        return false;
    }
    let want = match forwarded(headers, "x-forwarded-host") {
        Some(host) => {
            if forwarded(headers, "x-forwarded-proto").is_some_and(|p| p != scheme) {
                return false;
            }
            host
        }
        None => match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
            Some(h) => h.to_string(),
            None => return false,
        },
    };
    without_default_port(&scheme, authority) == without_default_port(&scheme, &want)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session a request's cookie opens (with its id), if any; refuses
/// requests from other origins.
async fn session(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Identity, String)>, ApiError> {
    let Some(id) = cookie_value(headers, COOKIE) else {
        return Ok(None);
    };
    if !same_origin(headers) {
        return Err(ApiError::Forbidden(
            "cross-site request refused (the dashboard's session works only from its own pages)"
                .into(),
            Vec::new(),
        ));
    }
    Ok(st
        .store
        .web_session_lookup(&id, SCOPE)
        .await?
        .map(|who| (who, id)))
}

/// The API caller a dashboard session stands for (see [`super::auth::Caller`]):
/// `None` without the cookie; an error for a foreign origin, a state-changing
/// method without the session's CSRF token, or a closed session.
pub async fn session_caller(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Identity>, ApiError> {
    let Some(id) = cookie_value(headers, COOKIE) else {
        return Ok(None);
    };
    if *method != Method::GET && *method != Method::HEAD {
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(sent, csrf_token(&id).as_bytes()) {
            return Err(ApiError::Forbidden(
                format!("missing or wrong CSRF token ({CSRF_HEADER} header)"),
                Vec::new(),
            ));
        }
    }
    match session(st, headers).await? {
        Some((who, _)) => Ok(Some(who)),
        None => Err(ApiError::Unauthorized(
            "the dashboard session has expired or was signed out; sign in again".into(),
        )),
    }
}

fn session_cookie(id: &str, https: bool, max_age: u64) -> HeaderValue {
    let v = format!(
        "{COOKIE}={id}; Path={SCOPE}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn html(code: StatusCode, body: &'static str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                // xterm.js sets its theme with inline styles.
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// `GET /`: the page (the script shows the sign-in form without a session).
async fn page() -> Response {
    html(StatusCode::OK, INDEX_HTML)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    ticket: Option<String>,
}

/// `GET /login[?ticket=…]`: the sign-in page, or a one-time ticket traded
/// for a session.
async fn login_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let Some(ticket) = q.ticket.filter(|t| !t.is_empty()) else {
        return Ok(html(StatusCode::OK, INDEX_HTML));
    };
    // A foreign page must not sign a visitor in (to someone else's account).
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "a sign-in link works only when opened directly (paste it into the address bar)".into(),
            Vec::new(),
        ));
    }
    let Some(who) = st.store.web_ticket_redeem(&ticket, SCOPE).await? else {
        return Ok(see_other("/login#ticket-invalid"));
    };
    let id = st
        .store
        .web_session_create(&who, SCOPE, SESSION_TTL)
        .await?;
    tracing::info!(user = %who.user, "dashboard: signed in with a one-time link");
    let mut resp = see_other("/");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, is_https(&headers), SESSION_TTL.as_secs()),
    );
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

/// `POST /login {"token": …}`: checks an API token and opens a session.
async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "cross-site sign-in refused".into(),
            Vec::new(),
        ));
    }
    let req: LoginBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("sign-in body: {e}")))?;
    let Some(who) = st.store.token_lookup(req.token.trim()).await? else {
        return Err(ApiError::Unauthorized("unknown or revoked token".into()));
    };
    let id = st
        .store
        .web_session_create(&who, SCOPE, SESSION_TTL)
        .await?;
    tracing::info!(user = %who.user, "dashboard: signed in with a token");
    let mut resp = (
        StatusCode::OK,
        Json(json!({"user": who.user, "admin": who.admin})),
    )
        .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, is_https(&headers), SESSION_TTL.as_secs()),
    );
    Ok(resp)
}

/// `POST /logout` (with the CSRF token): closes the session.
async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if session_caller(&st, &Method::POST, &headers)
        .await?
        .is_some()
    {
        if let Some(id) = cookie_value(&headers, COOKIE) {
            st.store.web_session_delete(&id).await?;
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", is_https(&headers), 0),
    );
    Ok(resp)
}

/// `GET /dashboard/session`: who is signed in, and the CSRF token.
async fn session_info(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some((who, id)) = session(&st, &headers).await? else {
        return Err(ApiError::Unauthorized("not signed in".into()));
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"user": who.user, "admin": who.admin, "csrf": csrf_token(&id)})),
    )
        .into_response())
}

/// `GET /workspaces/{ns}/{name}`: a workspace's page, for its owner and admins.
async fn workspace_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some((who, _)) = session(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let caller = super::auth::Caller(who);
    let visible = st
        .store
        .object_get(Kind::Workspace, &ns, &name)
        .await?
        .is_some_and(|o| caller.can_read(&o));
    if !visible {
        return Err(ApiError::NotFound(format!(
            "workspaces/{name} not found in namespace {ns:?}"
        )));
    }
    Ok(html(StatusCode::OK, INDEX_HTML))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: ManifestMeta<'a>,
    spec: ManifestSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(skip_serializing_if = "no_entries")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "no_entries")]
    annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
}

fn no_entries(m: &&BTreeMap<String, String>) -> bool {
    m.is_empty()
}

#[derive(Serialize)]
#[serde(untagged)]
enum ManifestSpec<'a> {
    Typed(Box<WorkspaceTemplateSpec>),
    Raw(&'a serde_json::Value),
}

/// `GET /dashboard/template-manifest/{ns}/{name}`: a template as YAML to
/// edit and apply again (`POST …/apply`): its spec and the metadata a user
/// writes, with the `resourceVersion` it was read at, so that applying an
/// edit of a template changed meanwhile is refused (409) instead of
/// overwriting that change. Read-only; for any signed-in user (templates are
/// readable by all).
async fn template_manifest(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if session(&st, &headers).await?.is_none() {
        return Err(ApiError::Unauthorized("not signed in".into()));
    }
    let Some(obj) = st
        .store
        .object_get(Kind::WorkspaceTemplate, &ns, &name)
        .await?
    else {
        return Err(ApiError::NotFound(format!(
            "workspacetemplates/{name} not found in namespace {ns:?}"
        )));
    };
    let m = &obj.metadata;
    let doc = Manifest {
        api_version: &obj.api_version,
        kind: &obj.kind,
        metadata: ManifestMeta {
            name: &m.name,
            namespace: &m.namespace,
            labels: &m.labels,
            annotations: &m.annotations,
            resource_version: m.resource_version.as_deref(),
        },
        // Typed, so that fields come in the order people write them (`name`
        // first); the stored spec is that type's serialization already.
        spec: match serde_json::from_value::<WorkspaceTemplateSpec>(obj.spec.clone()) {
            Ok(t) => ManifestSpec::Typed(Box::new(t)),
            Err(_) => ManifestSpec::Raw(&obj.spec),
        },
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::api::yaml::to_yaml(&doc),
    )
        .into_response())
}

/// `GET /dashboard/assets/{file}`: the embedded scripts and styles.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "xterm.js" => (XTERM_JS, "text/javascript; charset=utf-8"),
        "xterm.css" => (XTERM_CSS, "text/css; charset=utf-8"),
        "addon-fit.js" => (XTERM_FIT_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_request_without_origin_or_fetch_metadata_counts_as_same_origin() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn a_foreign_origin_or_a_cross_site_fetch_is_refused() {
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin")
        ])));
    }

    #[test]
    fn behind_a_proxy_the_origin_must_match_the_forwarded_host_and_scheme() {
        // The proxy presents https://berth.example.com and reaches the
        // operator at 10.0.0.5:7070.
        let proxied = |origin: &'static str| {
            same_origin(&headers(&[
                ("host", "10.0.0.5:7070"),
                ("x-forwarded-host", "berth.example.com"),
                ("x-forwarded-proto", "https"),
                ("origin", origin),
                ("sec-fetch-site", "same-origin"),
            ]))
        };
        assert!(proxied("https://berth.example.com"));
        assert!(proxied("https://BERTH.example.com:443"));
        // Not the host the browser was on, nor the scheme.
        assert!(!proxied("https://evil.example"));
        assert!(!proxied("http://berth.example.com"));
        assert!(!proxied("https://berth.example.com.evil.example"));
        assert!(!proxied("https://berth.example.com:8443"));
        // With forwarded headers the internal Host no longer counts.
        assert!(!proxied("http://10.0.0.5:7070"));
        // Several proxies: the first entry is the client-facing one.
        assert!(same_origin(&headers(&[
            ("host", "10.0.0.5:7070"),
            ("x-forwarded-host", "berth.example.com, internal-lb:80"),
            ("x-forwarded-proto", "https, http"),
            ("origin", "https://berth.example.com"),
        ])));
        // A forwarded host without a scheme: the host alone decides.
        assert!(same_origin(&headers(&[
            ("host", "10.0.0.5:7070"),
            ("x-forwarded-host", "berth.example.com:8443"),
            ("origin", "https://berth.example.com:8443"),
        ])));
        // A cross-site fetch is refused whatever the proxy says.
        assert!(!same_origin(&headers(&[
            ("host", "10.0.0.5:7070"),
            ("x-forwarded-host", "berth.example.com"),
            ("origin", "https://berth.example.com"),
            ("sec-fetch-site", "cross-site"),
        ])));
    }

    #[test]
    fn without_forwarded_headers_the_origin_must_match_the_host() {
        assert!(same_origin(&headers(&[
            ("host", "berth.example.com"),
            ("x-forwarded-proto", "https"),
            ("origin", "https://berth.example.com"),
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7071"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://evil.example"),
        ])));
        // No Host to compare with: refused.
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:7070"
        )])));
    }

    #[test]
    fn the_csrf_token_depends_on_the_session_and_does_not_reveal_it() {
        let a = csrf_token("one");
        assert_ne!(a, csrf_token("two"));
        assert!(!a.contains("one"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_session_cookie_is_http_only_and_strict_and_secure_over_https() {
        let c = session_cookie("abc", false, 60);
        let s = c.to_str().unwrap();
        assert!(s.contains("HttpOnly") && s.contains("SameSite=Strict") && !s.contains("Secure"));
        assert!(session_cookie("abc", true, 60)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }
}
