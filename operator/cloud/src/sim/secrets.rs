//! Simulated Secrets Manager: named secrets with a stable ARN and a current
//! value. Deletion is immediate (`ForceDeleteWithoutRecovery`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{alnum, State};
use crate::error::{CloudError, CloudResult, ErrorCode};
use crate::ops::Operation;
use crate::secrets::{PutSecret, SecretRef, SecretString, Secrets};
use crate::tags;
use crate::Sim;

/// Secrets Manager limit on a secret value.
const MAX_SECRET_BYTES: usize = 65_536;

#[derive(Default)]
pub(super) struct SecretsState {
    secrets: BTreeMap<String, SecretRec>,
}

impl SecretsState {
    /// The names held, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }
}

struct SecretRec {
    arn: String,
    value: SecretString,
    version: String,
}

impl SecretsState {
    /// True when an ECS `valueFrom` (full ARN, ARN with a JSON key suffix,
    /// partial ARN without the random suffix, or name) names a secret.
    pub(super) fn resolves(&self, value_from: &str) -> bool {
        self.secrets.iter().any(|(name, rec)| {
            value_from == name
                || value_from == rec.arn
                || value_from.starts_with(&format!("{}:", rec.arn))
                || rec
                    .arn
                    .rsplit_once('-')
                    .is_some_and(|(partial, _)| value_from == partial)
        })
    }

    /// The value an ECS `valueFrom` resolves to (see [`Self::resolves`]);
    /// with a JSON key suffix, that key of the JSON object value (a string
    /// as it is, anything else as JSON text).
    pub(super) fn resolve(&self, value_from: &str) -> Option<SecretString> {
        if let Some(rec) = self.secrets.get(value_from) {
            return Some(rec.value.clone());
        }
        for rec in self.secrets.values() {
            if value_from == rec.arn
                || rec
                    .arn
                    .rsplit_once('-')
                    .is_some_and(|(partial, _)| value_from == partial)
            {
                return Some(rec.value.clone());
            }
            let Some(rest) = value_from.strip_prefix(&format!("{}:", rec.arn)) else {
                continue;
            };
            // `json-key:version-stage:version-id`; one version is held.
            let key = rest.split(':').next().unwrap_or_default();
            if key.is_empty() {
                return Some(rec.value.clone());
            }
            let json: serde_json::Value = serde_json::from_str(rec.value.expose()).ok()?;
            return match json.get(key)? {
                serde_json::Value::String(s) => Some(SecretString::new(s.clone())),
                other => Some(SecretString::new(other.to_string())),
            };
        }
        None
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
}

impl State {
    fn put_secret_value(&mut self, input: PutSecret) -> CloudResult<SecretRef> {
        let op = Operation::PutSecretValue;
        let invalid = |msg: String| CloudError::new(op.as_str(), ErrorCode::InvalidParameter, msg);
        if !valid_name(&input.name) {
            return Err(invalid(format!(
                "Invalid name '{}': up to 512 letters, digits and /_+=.@- are allowed.",
                input.name
            )));
        }
        if input.value.expose().len() > MAX_SECRET_BYTES {
            return Err(invalid(format!(
                "The secret value exceeds {MAX_SECRET_BYTES} bytes."
            )));
        }
        tags::validate(&input.tags).map_err(invalid)?;
        let version = super::hex(&mut self.ids, 32);
        let rec = match self.secrets.secrets.get_mut(&input.name) {
            Some(rec) => {
                rec.value = input.value;
                rec.version = version;
                rec
            }
            None => {
                let suffix = alnum(&mut self.ids, 6);
                let arn = format!(
                    "arn:aws:secretsmanager:{}:{}:secret:{}-{suffix}",
                    super::region_now(&self.cfg),
                    self.cfg.account_id,
                    input.name
                );
                self.secrets
                    .secrets
                    .entry(input.name.clone())
                    .or_insert(SecretRec {
                        arn,
                        value: input.value,
                        version,
                    })
            }
        };
        Ok(SecretRef {
            arn: rec.arn.clone(),
            name: input.name,
            version_id: rec.version.clone(),
        })
    }

    fn delete_secret(&mut self, name: &str) -> CloudResult<()> {
        let key = self
            .secrets
            .secrets
            .iter()
            .find(|(n, rec)| n.as_str() == name || rec.arn == name)
            .map(|(n, _)| n.clone());
        match key {
            Some(key) => {
                self.secrets.secrets.remove(&key);
                Ok(())
            }
            None => Err(CloudError::new(
                Operation::DeleteSecret.as_str(),
                ErrorCode::ResourceNotFound,
                "Secrets Manager can't find the specified secret.",
            )),
        }
    }
}

#[async_trait]
impl Secrets for Sim {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        self.call(Operation::PutSecretValue, |st, _| {
            st.put_secret_value(input)
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        self.call(Operation::DeleteSecret, |st, _| st.delete_secret(name))
            .await
    }
}
