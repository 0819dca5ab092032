//! The one error type of the cloud seam.
//!
//! AWS reports failures as an error *code* (`ThrottlingException`,
//! `ServiceNotFoundException`, …) plus a human message. The controller needs
//! exactly two decisions from an error: retry it with backoff (throttling,
//! 5xx, timeouts) or surface it as `Synced=False` and wait for a spec change
//! (bad image, invalid parameters, missing roles). So [`CloudError`] keeps the
//! code as a typed [`ErrorCode`] (with an escape hatch for codes we do not
//! model), the AWS message verbatim, and answers [`CloudError::is_transient`].
//! Both the simulator and the AWS implementation produce it, so controller
//! logic written against the simulator holds against AWS.

use std::fmt;

/// The AWS error code of a failed call.
///
/// `Display` renders the exact AWS spelling, so messages read like the AWS
/// console and CLI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `ThrottlingException`: the account's request rate for the action was
    /// exceeded. Transient.
    Throttling,
    /// `ServerException` (ECS), `InternalServerError` (EFS),
    /// `InternalServiceError` (Secrets Manager): a 5xx. Transient.
    Server,
    /// `ServiceUnavailableException` / 503. Transient.
    ServiceUnavailable,
    /// `RequestTimeout`: the call timed out on the client or the server; the
    /// change may or may not have been applied. Transient.
    Timeout,
    /// `ClientException`: ECS rejected the request (unknown or inactive task
    /// definition, invalid Fargate CPU/memory, missing role, …). Permanent.
    Client,
    /// `InvalidParameterException`: a parameter is invalid. Permanent.
    InvalidParameter,
    /// `ClusterNotFoundException`: the ECS cluster does not exist. Permanent.
    ClusterNotFound,
    /// `ServiceNotFoundException`: the ECS service was never created (or is
    /// long gone). Permanent; the controller creates it.
    ServiceNotFound,
    /// `ServiceNotActiveException`: the ECS service is `DRAINING` or
    /// `INACTIVE`. Permanent for this service; a new one must be created.
    ServiceNotActive,
    /// `FileSystemNotFound`: the EFS file system does not exist. Permanent.
    FileSystemNotFound,
    /// `AccessPointNotFound`: the EFS access point does not exist. Permanent.
    AccessPointNotFound,
    /// `AccessPointAlreadyExists`: the client token was used before with other
    /// parameters. Permanent.
    AccessPointAlreadyExists,
    /// `AccessPointLimitExceeded`: the file system holds the maximum number of
    /// access points. Permanent.
    AccessPointLimitExceeded,
    /// `BadRequest` (EFS) / `InvalidRequestException` (Secrets Manager).
    /// Permanent.
    BadRequest,
    /// `ResourceNotFoundException` (Secrets Manager): the secret does not
    /// exist. Permanent.
    ResourceNotFound,
    /// `AccessDeniedException`: IAM denied the call. Permanent.
    AccessDenied,
    /// Not an AWS error: the caller's lease on the object ended (see
    /// [`crate::fence`]), so the change was not sent; another replica may
    /// be acting on the object now. Transient: look again later.
    Fenced,
    /// Any other code, spelled as AWS returned it.
    Other(String),
}

impl ErrorCode {
    /// The AWS spelling of the code.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Throttling => "ThrottlingException",
            ErrorCode::Server => "ServerException",
            ErrorCode::ServiceUnavailable => "ServiceUnavailableException",
            ErrorCode::Timeout => "RequestTimeout",
            ErrorCode::Client => "ClientException",
            ErrorCode::InvalidParameter => "InvalidParameterException",
            ErrorCode::ClusterNotFound => "ClusterNotFoundException",
            ErrorCode::ServiceNotFound => "ServiceNotFoundException",
            ErrorCode::ServiceNotActive => "ServiceNotActiveException",
            ErrorCode::FileSystemNotFound => "FileSystemNotFound",
            ErrorCode::AccessPointNotFound => "AccessPointNotFound",
            ErrorCode::AccessPointAlreadyExists => "AccessPointAlreadyExists",
            ErrorCode::AccessPointLimitExceeded => "AccessPointLimitExceeded",
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::ResourceNotFound => "ResourceNotFoundException",
            ErrorCode::AccessDenied => "AccessDeniedException",
            ErrorCode::Fenced => "BerthLeaseLost",
            ErrorCode::Other(code) => code,
        }
    }

    /// Maps an AWS error code string (from any of ECS, EFS, Secrets Manager)
    /// to an [`ErrorCode`]; unknown codes become [`ErrorCode::Other`].
    pub fn from_aws(code: &str) -> ErrorCode {
        match code {
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "ThrottledException"
            | "RequestLimitExceeded" => ErrorCode::Throttling,
            "ServerException"
            | "InternalServerError"
            | "InternalServiceError"
            | "InternalFailure" => ErrorCode::Server,
            "ServiceUnavailableException" | "ServiceUnavailable" => ErrorCode::ServiceUnavailable,
            "RequestTimeout" | "RequestTimeoutException" => ErrorCode::Timeout,
            "ClientException" => ErrorCode::Client,
            "InvalidParameterException" | "InvalidParameter" => ErrorCode::InvalidParameter,
            "ClusterNotFoundException" => ErrorCode::ClusterNotFound,
            "ServiceNotFoundException" => ErrorCode::ServiceNotFound,
            "ServiceNotActiveException" => ErrorCode::ServiceNotActive,
            "FileSystemNotFound" => ErrorCode::FileSystemNotFound,
            "AccessPointNotFound" => ErrorCode::AccessPointNotFound,
            "AccessPointAlreadyExists" => ErrorCode::AccessPointAlreadyExists,
            "AccessPointLimitExceeded" => ErrorCode::AccessPointLimitExceeded,
            "BadRequest" | "InvalidRequestException" => ErrorCode::BadRequest,
            "ResourceNotFoundException" => ErrorCode::ResourceNotFound,
            "AccessDeniedException" => ErrorCode::AccessDenied,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed cloud call: the AWS error code, the AWS message, and the
/// operation that failed.
///
/// Renders as `CreateService: InvalidParameterException: Creation of service
/// was not idempotent.`, ready to be put in a condition message or an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct CloudError {
    /// What AWS answered.
    pub code: ErrorCode,
    /// AWS's message, verbatim.
    pub message: String,
    /// The AWS action name (`UpdateService`, `CreateAccessPoint`, …).
    pub operation: &'static str,
}

impl CloudError {
    /// A new error for `operation` with `code` and `message`.
    pub fn new(operation: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        CloudError {
            code,
            message: message.into(),
            operation,
        }
    }

    /// True for errors worth retrying with backoff: throttling, 5xx,
    /// unavailability and timeouts. Everything else is permanent until the
    /// request changes.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Throttling
                | ErrorCode::Server
                | ErrorCode::ServiceUnavailable
                | ErrorCode::Timeout
                | ErrorCode::Fenced
        )
    }

    /// True when AWS throttled the call; the caller should slow down, not
    /// only retry.
    pub fn is_throttling(&self) -> bool {
        self.code == ErrorCode::Throttling
    }

    /// True when the addressed object does not exist (or, for an ECS service,
    /// is no longer `ACTIVE`): a missing service, access point or secret.
    /// Deletion code treats this as success; apply code recreates the object.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::ServiceNotFound
                | ErrorCode::ServiceNotActive
                | ErrorCode::AccessPointNotFound
                | ErrorCode::ResourceNotFound
        )
    }
}

/// Shorthand for results of cloud calls.
pub type CloudResult<T> = Result<T, CloudError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient_and_client_errors_are_not() {
        let throttled = CloudError::new("UpdateService", ErrorCode::Throttling, "Rate exceeded");
        assert!(throttled.is_transient());
        assert!(throttled.is_throttling());
        assert!(CloudError::new("X", ErrorCode::Server, "boom").is_transient());
        assert!(CloudError::new("X", ErrorCode::Timeout, "slow").is_transient());
        let client = CloudError::new("RegisterTaskDefinition", ErrorCode::Client, "bad");
        assert!(!client.is_transient());
        assert!(!client.is_throttling());
    }

    #[test]
    fn error_renders_operation_code_and_message() {
        let err = CloudError::new(
            "CreateService",
            ErrorCode::InvalidParameter,
            "Creation of service was not idempotent.",
        );
        assert_eq!(
            err.to_string(),
            "CreateService: InvalidParameterException: Creation of service was not idempotent."
        );
    }

    #[test]
    fn aws_codes_round_trip_and_unknown_codes_are_kept() {
        for code in [
            ErrorCode::Throttling,
            ErrorCode::ServiceNotFound,
            ErrorCode::InvalidParameter,
            ErrorCode::Client,
            ErrorCode::AccessPointNotFound,
            ErrorCode::Server,
        ] {
            assert_eq!(ErrorCode::from_aws(code.as_str()), code);
        }
        assert_eq!(
            ErrorCode::from_aws("InternalServerError"),
            ErrorCode::Server
        );
        let other = ErrorCode::from_aws("PlatformUnknownException");
        assert_eq!(other.as_str(), "PlatformUnknownException");
        assert!(!CloudError::new("X", other, "m").is_transient());
    }
}
