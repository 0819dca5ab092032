//! Authentication (bearer tokens; the dashboard's session cookie with its
//! CSRF token) and the authorization rules.
//!
//! Rules: admins read and write everything. Users read templates and
//! policies, and read and write only the workspaces they own; another
//! user's workspace is invisible to reads (404) and refused to writes (403).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::error::ApiError;
use super::AppState;
use crate::api::{DynObject, Kind};
use crate::store::Identity;

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Caller::from_headers(state, &parts.method, &parts.headers).await
    }
}

impl Caller {
    /// Authenticates a request: a bearer token in `Authorization`, or else
    /// the dashboard's session cookie (see [`super::dashboard`]), which
    /// counts only from this origin and, for any method but GET and HEAD,
    /// only with the session's CSRF token in its header.
    pub async fn from_headers(
        state: &AppState,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            if let Some(who) = super::dashboard::session_caller(state, method, headers).await? {
                return Ok(Caller(who));
            }
            return Err(ApiError::Unauthorized(
                "missing bearer token (Authorization: Bearer …)".into(),
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        match state.store.token_lookup(token).await? {
            Some(id) => Ok(Caller(id)),
            None => Err(ApiError::Unauthorized("unknown or revoked token".into())),
        }
    }

    /// Fails unless the caller is an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                format!("user {:?} may not {what}; only admins can", self.0.user),
                Vec::new(),
            ))
        }
    }

    /// The owner filter for workspace reads (`None` for admins).
    pub fn owner_filter(&self) -> Option<&str> {
        (!self.0.admin).then_some(self.0.user.as_str())
    }

    /// Whether the caller may see `obj`.
    pub fn can_read(&self, obj: &DynObject) -> bool {
        self.0.admin
            || obj.kind() != Some(Kind::Workspace)
            || obj.spec.get("owner").and_then(|o| o.as_str()) == Some(self.0.user.as_str())
    }
}
