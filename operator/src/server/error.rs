//! API errors, rendered as Kubernetes-style `Status` objects. Database
//! errors are logged with an id and shown to clients only as that id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::FieldError;
use crate::apply::ApplyError;
use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not do this.
    #[error("{0}")]
    Forbidden(String, Vec<FieldError>),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: stale resourceVersion or concurrent write.
    #[error("{0}")]
    Conflict(String, Vec<FieldError>),
    /// 410: watch revision compacted.
    #[error("{0}")]
    Gone(String),
    /// 422: validation failed; every cause listed.
    #[error("{0}")]
    Invalid(String, Vec<FieldError>),
    /// 503: what was asked for cannot be reached now (a workspace's agent
    /// is not connected).
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged with an id; the client sees only the id.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(..) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(..) => "Forbidden",
            ApiError::NotFound(_) => "NotFound",
            ApiError::Conflict(..) => "Conflict",
            ApiError::Gone(_) => "Gone",
            ApiError::Invalid(..) => "Invalid",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }
}

fn summary(causes: &[FieldError]) -> String {
    match causes {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::Conflict(m, Vec::new()),
            StoreError::Gone(rv) => ApiError::Gone(StoreError::Gone(rv).to_string()),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(c) => ApiError::Invalid(summary(&c), c),
            ApplyError::Forbidden(c) => ApiError::Forbidden(summary(&c), c),
            ApplyError::Conflict(c) => ApiError::Conflict(summary(&c), c),
            ApplyError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status_code();
        let (message, causes) = match &self {
            ApiError::Internal(source) => {
                let id = uuid::Uuid::new_v4();
                let chain = error_chain(source.as_ref());
                tracing::error!(error_id = %id, error = %chain, "internal error");
                (
                    format!("internal error (id {id}); see the operator's log"),
                    &[][..],
                )
            }
            ApiError::Forbidden(m, c) | ApiError::Conflict(m, c) | ApiError::Invalid(m, c) => {
                (m.clone(), c.as_slice())
            }
            other => (other.to_string(), &[][..]),
        };
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code.as_u16(),
            "reason": self.reason(),
            "message": message,
            "details": { "causes": causes },
        });
        (code, Json(body)).into_response()
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
