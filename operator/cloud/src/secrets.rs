//! The Secrets Manager seam: the per-start agent token.
//!
//! Every start hands the workspace container a fresh agent token. Putting the
//! token into the task definition would register a new revision per start,
//! and AWS allows about one `RegisterTaskDefinition` a second per account; so
//! the task definition references a secret by ARN (`secrets[].valueFrom`)
//! and each start only replaces the secret's value, which ECS reads when the
//! task starts.
//!
//! Secret values must never reach logs: [`SecretString`] redacts itself in
//! `Debug` and `Display`, has no `Serialize`, and is read only through
//! [`SecretString::expose`].

use std::fmt;

use async_trait::async_trait;

use crate::error::CloudResult;
use crate::tags::Tags;

/// A secret value. `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The value itself. Call only where the value is sent or compared,
    /// never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([REDACTED])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Input of [`Secrets::put_secret_value`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutSecret {
    /// Secret name (letters, digits, `/_+=.@-`; ≤ 512).
    pub name: String,
    /// The value (redacted in `Debug`).
    pub value: SecretString,
    /// Description, set on creation.
    pub description: Option<String>,
    /// Tags, set on creation.
    pub tags: Tags,
}

/// A secret's identity after a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// `arn:aws:secretsmanager:…:secret:{name}-{6 chars}`; stable for the
    /// secret's life, so a task definition can reference it.
    pub arn: String,
    /// Name.
    pub name: String,
    /// Version id of the value just written.
    pub version_id: String,
}

/// The Secrets Manager calls a Berth controller makes.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// Creates the secret (`CreateSecret`) or, when it exists, stores a new
    /// current value (`PutSecretValue`). Returns the stable ARN.
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef>;

    /// Deletes the secret immediately (`ForceDeleteWithoutRecovery`);
    /// unknown → `ResourceNotFoundException`.
    async fn delete_secret(&self, name: &str) -> CloudResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_redacted_in_debug_and_display() {
        let put = PutSecret {
            name: "berth/acme/alice/agent-token".into(),
            value: SecretString::new("hunter2-token"),
            description: None,
            tags: Tags::new(),
        };
        let debug = format!("{put:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("REDACTED"));
        assert_eq!(put.value.to_string(), "[REDACTED]");
        assert_eq!(put.value.expose(), "hunter2-token");
    }
}
