//! Workspace apps (`WorkspaceTemplate.spec.apps[]`): the operator serves
//! each under `/@<owner>/<workspace>/apps/<slug>/` (`<workspace>.<namespace>`
//! outside the `default` namespace), proxying HTTP and WebSocket requests to
//! the app's port inside the workspace over a relayed stream. The full path
//! is passed on, so an app is configured with that base path (VS Code Web:
//! `--server-base-path "/@$BERTH_OWNER/$BERTH_WORKSPACE/apps/vscode/"`).
//!
//! With `--apps-domain`, each app also has an origin of its own,
//! `<slug>--<workspace>--<namespace>.<domain>` (see [`AppsDomain`]): links
//! from `berth open` and the dashboard go there, `share: authenticated` is
//! honoured (on the operator's origin an app is its owner's only), and the
//! app still sees its base path (`/x` on its host is `<base>x` to it).
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
/// visitor has open there: there an app is served to its owner (and
/// admins) only, whatever its `share` says. On an origin of its own
/// (`--apps-domain`), `share: authenticated` lets every signed-in user in.
fn may_open(who: &Identity, owner: &str, share: AppShare, own_origin: bool) -> bool {
    who.admin || who.user == owner || (own_origin && share == AppShare::Authenticated)
}

/// Per-app origins: each app at `<slug>--<workspace>--<namespace>.<domain>`,
/// a host of its own (a wildcard DNS name points at the operator), so that
/// an app's page can reach neither the API, nor the dashboard, nor another
/// app as the same origin.
#[derive(Clone, Debug)]
pub struct AppsDomain {
    /// The domain (`apps.berth.example.com`).
    pub domain: String,
    scheme: String,
    port: Option<u16>,
}

impl AppsDomain {
    /// The domain, with the scheme and port of the operator's advertised URL.
    pub fn new(domain: &str, advertise_url: &str) -> Result<AppsDomain, String> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let labels_ok = !domain.is_empty()
            && domain.len() <= 200
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(format!(
                "{domain:?} is not a DNS name (labels of a-z, 0-9 and inner '-', e.g. apps.berth.example.com)"
            ));
        }
        let url = reqwest::Url::parse(advertise_url)
            .map_err(|e| format!("the advertise URL {advertise_url:?}: {e}"))?;
        Ok(AppsDomain {
            domain,
            scheme: url.scheme().to_string(),
            port: url.port(),
        })
    }

    /// The host of an app; `None` when its label would be longer than DNS allows.
    pub fn host(&self, ns: &str, name: &str, slug: &str) -> Option<String> {
        let label = format!("{slug}--{name}--{ns}");
        (label.len() <= 63).then(|| format!("{label}.{}", self.domain))
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{}://{host}:{p}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        }
    }

    /// The app label of a `Host` header on this domain.
    fn label_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let label = name
            .len()
            .checked_sub(self.domain.len() + 1)
            .filter(|&i| {
                name.is_char_boundary(i)
                    && name[i..].starts_with('.')
                    && name[i + 1..].eq_ignore_ascii_case(&self.domain)
            })
            .map(|i| &name[..i])?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }
}

/// The ways a label `a--b--c` splits into (slug, workspace, namespace):
/// names may hold `--` themselves, so every split into three is a candidate.
fn label_candidates(label: &str) -> Vec<(String, String, String)> {
    let cuts: Vec<usize> = label.match_indices("--").map(|(i, _)| i).collect();
    let mut out = Vec::new();
    for (n, &i) in cuts.iter().enumerate() {
        for &j in &cuts[n + 1..] {
            if j >= i + 3 {
                let (slug, name, ns) = (&label[..i], &label[i + 2..j], &label[j + 2..]);
                if !slug.is_empty() && !name.is_empty() && !ns.is_empty() {
                    out.push((slug.to_string(), name.to_string(), ns.to_string()));
                }
            }
        }
    }
    out
}

/// Middleware: a request to an app's own host goes to the app.
pub async fn by_host(
    State(st): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(apps) = st.apps_domain.clone() else {
        return next.run(req).await;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string));
    let Some(label) = host.as_deref().and_then(|h| apps.label_of(h)) else {
        return next.run(req).await;
    };
    let label = label.to_ascii_lowercase();
    let candidates = label_candidates(&label);
    // The split that names an app; else the first, so that a missing app
    // is answered as a present one is (sign in first, then 404): no
    // existence oracle for callers who are not signed in.
    let mut chosen = None;
    for (slug, name, ns) in &candidates {
        match find_app(&st, ns, name, slug).await {
            Ok(_) => {
                chosen = Some((slug.clone(), name.clone(), ns.clone()));
                break;
            }
            Err(ApiError::NotFound(_)) => continue,
            Err(e) => return e.into_response(),
        }
    }
    let Some((slug, name, ns)) = chosen.or_else(|| candidates.into_iter().next()) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no workspace app at {label}\n"),
        );
    };
    let host = format!("{label}.{}", apps.domain);
    let mount = Mount {
        scope: format!("//{host}"),
        cookie_path: "/".into(),
        url_owner: None,
        ns,
        name,
        slug,
    };
    match serve_mounted(st, mount, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
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
    if !may_open(&caller.0, &owner, app.share, st.apps_domain.is_some()) {
        return Err(alike());
    }
    // On its own origin, or under the operator's.
    let (scope, path, url_base) = match &st.apps_domain {
        Some(apps) => {
            let host = apps.host(ns, name, &app.slug).ok_or_else(|| {
                ApiError::Invalid(
                    format!("workspaces/{name}: app {:?}: its host name {}--{name}--{ns} would be longer than the 63 characters DNS allows; use shorter names", app.slug, app.slug),
                    Vec::new(),
                )
            })?;
            let origin = apps.origin(&host);
            (
                format!("//{host}"),
                format!("{origin}/"),
                format!("{origin}/"),
            )
        }
        None => {
            let path = app_path(&owner, ns, name, &app.slug);
            (path.clone(), path.clone(), path)
        }
    };
    let ticket = st
        .store
        .web_ticket_create(&caller.0, &scope, TICKET_TTL)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "app": app.slug,
            "path": path,
            "url": format!("{url_base}?{TICKET_PARAM}={ticket}"),
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

fn cross_site(headers: &HeaderMap, own_origin: bool, method: &axum::http::Method) -> bool {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    match h("sec-fetch-site") {
        Some("cross-site") => return true,
        // Another app (a sibling host) is same-site: only a link followed
        // to this app's page (a GET navigation) comes in from there, as
        // the redirect after the dashboard's sign-in link does.
        Some("same-site")
            if !(own_origin
                && method == axum::http::Method::GET
                && h("sec-fetch-mode") == Some("navigate")) =>
        {
            return true
        }
        _ => {}
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
    req: Request,
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
    let mount = Mount {
        scope: base.clone(),
        cookie_path: base,
        url_owner: Some(owner.to_string()),
        ns,
        name,
        slug,
    };
    serve_mounted(st, mount, req).await
}

/// Where an app is served: under the operator's origin at a path, or on a
/// host of its own.
struct Mount {
    /// What tickets and sessions are good for: the base path, or `//host`.
    scope: String,
    /// The session cookie's `Path`.
    cookie_path: String,
    /// The owner the URL names (path-based apps), checked against the real one.
    url_owner: Option<String>,
    ns: String,
    name: String,
    slug: String,
}

async fn serve_mounted(st: AppState, mount: Mount, mut req: Request) -> Result<Response, ApiError> {
    let Mount {
        scope,
        cookie_path,
        url_owner,
        ns,
        name,
        slug,
    } = mount;
    let own_origin = url_owner.is_none();
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
        // On an app's own origin the link comes from the dashboard's site.
        let from_berth = matches!(fetch_site, "none" | "same-origin")
            || (own_origin && fetch_site == "same-site");
        if !from_berth {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                "sign-in links work only when opened directly\n".into(),
            ));
        }
        let Some(who) = st.store.web_ticket_redeem(&ticket, &scope).await? else {
            return Ok(plain(
                StatusCode::UNAUTHORIZED,
                format!("this link was used already or has expired; open the app again (berth open {name} {slug})\n"),
            ));
        };
        let session = st
            .store
            .web_session_create(&who, &scope, SESSION_TTL)
            .await?;
        let cookie = format!(
            "{COOKIE}={session}; Path={cookie_path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
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
    if cross_site(&headers, own_origin, req.method()) {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "cross-site requests to workspace apps are refused\n".into(),
        ));
    }
    let who = match cookie_value(&headers, COOKIE) {
        Some(id) => st.store.web_session_lookup(&id, &scope).await?,
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
    if url_owner.is_some_and(|o| o != real_owner)
        || !may_open(&who, &real_owner, app.share, own_origin)
    {
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
    let mut path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    // On its own origin the app still sees its base path (as it is
    // configured for, e.g. VS Code Web's --server-base-path): `/x` there is
    // `<base>x` to the app, and the app's own links under `<base>` pass as they are.
    let base = app_path(&real_owner, &ns, &name, &slug);
    if own_origin && !path.starts_with(&base) {
        path = format!("{base}{}", path.trim_start_matches('/'));
    }
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
