//! Berth's AWS backend: the [`berth_cloud`] traits ([`Ecs`], [`Efs`],
//! [`Secrets`]) on the official AWS SDK for Rust.
//!
//! [`connect`] builds a [`Cloud`] from [`AwsOptions`] with the standard
//! credential and region chains (environment, shared config/credentials
//! files, ECS container credentials, IMDS), an optional endpoint override
//! for emulators (`--aws-endpoint-url`, or the SDK's own
//! `AWS_ENDPOINT_URL`), and one HTTP stack for the whole build: hyper 1 with
//! rustls on *ring* (the same rustls/ring the database driver and reqwest
//! use; neither aws-lc nor the legacy hyper 0.14 stack is linked).
//!
//! # One retry policy
//! The SDK's own retries are **off by default** (`max_attempts` 1, standard
//! mode). A single call is retried by Berth's `Retrying` layer (3 attempts,
//! jittered exponential backoff 50 ms – 2 s, transient errors only) which
//! sits *above* the metering and the client-side pacer, so every attempt
//! waits for a pacing token and every throttled attempt is counted in
//! `/metrics`; the controller's per-workspace backoff sits above that.
//! Stacking the SDK's retries under it would multiply attempts (3 × 3) and
//! hide throttling from the metrics. [`AwsOptions::max_attempts`] exists for
//! callers without that layer.
//!
//! # Mapping
//! * Errors become [`CloudError`] with the AWS error code
//!   ([`ErrorCode::from_aws`]); responses without a code are classified by
//!   HTTP status (429 → throttling, 503 → unavailable, other 5xx → server),
//!   timeouts and connection failures are transient.
//! * ECS service `status` ACTIVE / DRAINING / INACTIVE is kept as is: the
//!   controller treats INACTIVE as gone and DRAINING as "wait".
//! * `DescribeServices` is split into calls of at most 10 names here as
//!   well (real ECS rejects more; emulators do not).
//! * `ListServices`, `ListTasks` and `DescribeAccessPoints` follow every
//!   page.
//! * Describes ask for tags (`include: [TAGS]`), so the controller can find
//!   and adopt objects by their ownership tags instead of trusting client
//!   tokens (which emulators ignore).

#![warn(missing_docs)]

mod convert;
mod ecs;
mod efs;
mod error;
mod secrets;
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use berth_cloud::{Cloud, CloudError, ErrorCode};

pub use crate::ecs::AwsEcs;
pub use crate::efs::AwsEfs;
pub use crate::error::map_sdk_error;
pub use crate::secrets::AwsSecrets;

/// Static credentials, for emulators (moto, LocalStack) that route by the
/// SigV4 credential scope and accept any key.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .finish()
    }
}

/// How to reach AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsOptions {
    /// Region; `None` uses the standard chain (`AWS_REGION`, profile,
    /// IMDS).
    pub region: Option<String>,
    /// Endpoint for every service (an emulator such as
    /// `http://127.0.0.1:5000`); `None` uses AWS's endpoints, or
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` when set.
    pub endpoint_url: Option<String>,
    /// Attempts per call by the SDK itself (standard retry mode); 1 turns
    /// the SDK's retries off, which is right under Berth's own retry layer
    /// (see the crate docs).
    pub max_attempts: u32,
    /// Static credentials instead of the standard chain (emulators, tests).
    pub static_credentials: Option<StaticCredentials>,
    /// Timeout of connecting to an endpoint.
    pub connect_timeout: Duration,
    /// Timeout of one attempt of a call (response included).
    pub attempt_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            region: None,
            endpoint_url: None,
            max_attempts: 1,
            static_credentials: None,
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No region in the options nor in the standard chain.
    #[error("no AWS region: pass --aws-region or set AWS_REGION (or a profile with a region)")]
    NoRegion,
    /// `max_attempts` was 0.
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
}

/// The HTTP client every AWS client of Berth uses: hyper 1 + rustls with
/// the *ring* provider, trusting the platform's root certificates.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the SDK configuration for `opts` (credential and region chains,
/// endpoint, retries, timeouts, the rustls/ring HTTP client).
pub async fn load_config(opts: &AwsOptions) -> Result<SdkConfig, ConnectError> {
    if opts.max_attempts == 0 {
        return Err(ConnectError::ZeroAttempts);
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(opts.connect_timeout)
                .operation_attempt_timeout(opts.attempt_timeout)
                .build(),
        );
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(c) = &opts.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "berth-static",
        ));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ConnectError::NoRegion);
    }
    Ok(config)
}

/// The three AWS clients as a [`Cloud`] bundle.
pub fn cloud_from_config(config: &SdkConfig) -> Cloud {
    Cloud::new(
        Arc::new(AwsEcs::new(aws_sdk_ecs::Client::new(config))),
        Arc::new(AwsEfs::new(aws_sdk_efs::Client::new(config))),
        Arc::new(AwsSecrets::new(aws_sdk_secretsmanager::Client::new(config))),
    )
}

/// Connects to AWS (or an emulator) with `opts`: [`load_config`] then
/// [`cloud_from_config`]. No call is made until the controller makes one.
pub async fn connect(opts: AwsOptions) -> Result<Cloud, ConnectError> {
    let config = load_config(&opts).await?;
    Ok(cloud_from_config(&config))
}

/// Connects like [`connect`], with clients for the other regions a call is
/// [scoped](berth_cloud::region::scope) to made on first use from the same
/// configuration (credentials, endpoint, retries, timeouts) and kept.
pub async fn connect_routed(opts: AwsOptions) -> Result<Cloud, ConnectError> {
    let config = load_config(&opts).await?;
    let default_region = config
        .region()
        .map(|r| r.to_string())
        .ok_or(ConnectError::NoRegion)?;
    let default = cloud_from_config(&config);
    let connect: berth_cloud::region::Connect = Arc::new(move |region: String| {
        let regional = config.to_builder().region(Region::new(region)).build();
        Box::pin(async move { Ok(cloud_from_config(&regional)) })
    });
    Ok(Cloud::routed(default_region, default, connect))
}

/// A local validation error, rendered like AWS's.
pub(crate) fn invalid(operation: &'static str, message: impl Into<String>) -> CloudError {
    CloudError::new(operation, ErrorCode::InvalidParameter, message)
}
