//! SDK errors → [`CloudError`].

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use berth_cloud::{CloudError, ErrorCode};

/// Maps a failed SDK call of `operation` to a [`CloudError`].
///
/// * A modeled or unmodeled service error keeps AWS's code and message
///   ([`ErrorCode::from_aws`]); one without a code (an emulator's HTML error
///   page, a proxy) is classified by HTTP status: 429 → throttling,
///   503 → unavailable, other 5xx → server error, else `Unknown`.
/// * Timeouts → [`ErrorCode::Timeout`]; connection failures →
///   [`ErrorCode::ServiceUnavailable`]; an unparsable response with a 5xx
///   status → server error. All of these are transient.
/// * A request the SDK could not build → `InvalidParameterException`.
pub fn map_sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let message = ctx
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status}"));
            let code = match ctx.err().code() {
                Some(code) if !code.is_empty() => ErrorCode::from_aws(code),
                _ => code_from_status(status),
            };
            CloudError::new(operation, code, message)
        }
        SdkError::TimeoutError(_) => CloudError::new(
            operation,
            ErrorCode::Timeout,
            "the call timed out; it may or may not have been applied",
        ),
        SdkError::DispatchFailure(f) => {
            let code = if f.is_timeout() {
                ErrorCode::Timeout
            } else if f.is_user() {
                ErrorCode::InvalidParameter
            } else {
                ErrorCode::ServiceUnavailable
            };
            CloudError::new(operation, code, error_chain(&err))
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            let code = if status >= 500 || status == 429 {
                code_from_status(status)
            } else {
                ErrorCode::Other("UnparsableResponse".into())
            };
            CloudError::new(operation, code, error_chain(&err))
        }
        SdkError::ConstructionFailure(_) => {
            CloudError::new(operation, ErrorCode::InvalidParameter, error_chain(&err))
        }
        _ => CloudError::new(
            operation,
            ErrorCode::Other("Unknown".into()),
            error_chain(&err),
        ),
    }
}

fn code_from_status(status: u16) -> ErrorCode {
    match status {
        429 => ErrorCode::Throttling,
        503 => ErrorCode::ServiceUnavailable,
        504 => ErrorCode::Timeout,
        500..=599 => ErrorCode::Server,
        _ => ErrorCode::Other(format!("HTTP{status}")),
    }
}

/// The error and its sources, joined (`a: b: c`).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_without_a_code_are_classified() {
        assert_eq!(code_from_status(429), ErrorCode::Throttling);
        assert_eq!(code_from_status(500), ErrorCode::Server);
        assert_eq!(code_from_status(502), ErrorCode::Server);
        assert_eq!(code_from_status(503), ErrorCode::ServiceUnavailable);
        assert_eq!(code_from_status(504), ErrorCode::Timeout);
        assert!(!CloudError::new("X", code_from_status(400), "m").is_transient());
    }
}
