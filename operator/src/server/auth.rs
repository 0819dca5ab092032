//! Bearer-token authentication and the authorization rules.
//!
//! Rules: admins read and write everything. Users read templates and
//! policies, and read and write only the workspaces they own; another
//! user's workspace is invisible to reads (404) and refused to writes (403).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

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
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized("missing bearer token (Authorization: Bearer …)".into())
            })?;
        let token = header
            .strip_prefix("Bearer ")
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
}

impl Caller {
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
