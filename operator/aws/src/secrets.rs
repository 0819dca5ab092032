//! [`Secrets`] on `aws-sdk-secretsmanager`.

use async_trait::async_trait;
use aws_sdk_secretsmanager::types as t;
use aws_sdk_secretsmanager::Client;
use berth_cloud::secrets::{PutSecret, SecretRef, Secrets};
use berth_cloud::{CloudError, CloudResult, ErrorCode};

use crate::error::map_sdk_error;

/// Secrets Manager through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsSecrets {
    sm: Client,
}

impl AwsSecrets {
    /// Wraps an SDK client.
    pub fn new(sm: Client) -> Self {
        AwsSecrets { sm }
    }

    async fn put_value(&self, input: &PutSecret) -> CloudResult<SecretRef> {
        const OP: &str = "PutSecretValue";
        let out = self
            .sm
            .put_secret_value()
            .secret_id(&input.name)
            .secret_string(input.value.expose())
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok(SecretRef {
            arn: out.arn.unwrap_or_default(),
            name: out.name.unwrap_or_else(|| input.name.clone()),
            version_id: out.version_id.unwrap_or_default(),
        })
    }

    async fn create(&self, input: &PutSecret) -> CloudResult<SecretRef> {
        const OP: &str = "CreateSecret";
        let tags: Vec<t::Tag> = input
            .tags
            .iter()
            .map(|(k, v)| t::Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .sm
            .create_secret()
            .name(&input.name)
            .secret_string(input.value.expose())
            .set_description(input.description.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok(SecretRef {
            arn: out.arn.unwrap_or_default(),
            name: out.name.unwrap_or_else(|| input.name.clone()),
            version_id: out.version_id.unwrap_or_default(),
        })
    }
}

fn is_exists(e: &CloudError) -> bool {
    matches!(&e.code, ErrorCode::Other(c) if c == "ResourceExistsException")
}

#[async_trait]
impl Secrets for AwsSecrets {
    /// `PutSecretValue` first (the common case: every start after the
    /// first); a missing secret is created with `CreateSecret`; a create
    /// that lost a race to another writer falls back to `PutSecretValue`.
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        match self.put_value(&input).await {
            Err(e) if e.code == ErrorCode::ResourceNotFound => match self.create(&input).await {
                Err(e) if is_exists(&e) => self.put_value(&input).await,
                other => other,
            },
            other => other,
        }
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        const OP: &str = "DeleteSecret";
        self.sm
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok(())
    }
}
