//! Two layers around the cloud clients:
//! - [`Metered`] counts every call by operation and outcome (ok, throttled,
//!   transient, error) for `/metrics`, whatever the backend;
//! - [`Retrying`] retries a single call on a transient error a few times
//!   with a short exponential, jittered backoff (what the AWS SDK's standard
//!   retry mode does for one call); the per-workspace backoff of the
//!   controller runtime sits above it. It wraps the pacer, so every attempt
//!   waits for a pacing token.

use std::sync::Arc;

use async_trait::async_trait;
use berth_cloud::ecs::{
    CreateService, DeleteService, DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs,
    RegisterTaskDefinition, Service, TaskDefinition, UpdateService,
};
use berth_cloud::efs::{AccessPoint, CreateAccessPoint, Efs};
use berth_cloud::error::CloudResult;
use berth_cloud::secrets::{PutSecret, SecretRef, Secrets};
use berth_cloud::Cloud;

use crate::metrics::Metrics;

/// A wrapper that counts calls of the inner client.
pub struct Metered<T: ?Sized> {
    inner: Arc<T>,
    metrics: Arc<Metrics>,
}

fn outcome<T>(r: &CloudResult<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) if e.is_throttling() => "throttled",
        Err(e) if e.is_transient() => "transient",
        Err(_) => "error",
    }
}

impl<T: ?Sized> Metered<T> {
    fn count<R>(&self, op: &str, r: CloudResult<R>) -> CloudResult<R> {
        self.metrics.cloud_call(op, outcome(&r));
        r
    }
}

/// A wrapper that retries transient errors of single calls.
pub struct Retrying<T: ?Sized> {
    inner: Arc<T>,
    attempts: usize,
}

async fn retry<T, F, Fut>(attempts: usize, f: F) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CloudResult<T>>,
{
    use backon::Retryable;
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(50))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_max_times(attempts.saturating_sub(1))
        .with_jitter();
    f.retry(policy)
        .sleep(tokio::time::sleep)
        .when(|e: &berth_cloud::error::CloudError| e.is_transient())
        .await
}

/// Wraps every client of `cloud` in a retry of `attempts` tries per call.
pub fn retrying(cloud: Cloud, attempts: usize) -> Cloud {
    Cloud {
        ecs: Arc::new(Retrying {
            inner: cloud.ecs,
            attempts,
        }),
        efs: Arc::new(Retrying {
            inner: cloud.efs,
            attempts,
        }),
        secrets: Arc::new(Retrying {
            inner: cloud.secrets,
            attempts,
        }),
    }
}

#[async_trait]
impl Ecs for Retrying<dyn Ecs> {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        retry(self.attempts, || {
            self.inner.register_task_definition(input.clone())
        })
        .await
    }
    async fn describe_task_definition(
        &self,
        td: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        retry(self.attempts, || {
            self.inner.describe_task_definition(td, include_tags)
        })
        .await
    }
    async fn deregister_task_definition(&self, td: &str) -> CloudResult<TaskDefinition> {
        retry(self.attempts, || self.inner.deregister_task_definition(td)).await
    }
    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        retry(self.attempts, || self.inner.create_service(input.clone())).await
    }
    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        retry(self.attempts, || self.inner.update_service(input.clone())).await
    }
    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        retry(self.attempts, || self.inner.delete_service(input.clone())).await
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        retry(self.attempts, || {
            self.inner
                .describe_services(cluster, services, include_tags)
        })
        .await
    }
    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        retry(self.attempts, || self.inner.list_services(cluster)).await
    }
    async fn list_tasks(
        &self,
        cluster: &str,
        service: &str,
        desired: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        retry(self.attempts, || {
            self.inner.list_tasks(cluster, service, desired)
        })
        .await
    }
    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        retry(self.attempts, || self.inner.describe_tasks(cluster, tasks)).await
    }
}

#[async_trait]
impl Efs for Retrying<dyn Efs> {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        retry(self.attempts, || {
            self.inner.create_access_point(input.clone())
        })
        .await
    }
    async fn describe_access_points(&self, fs: &str) -> CloudResult<Vec<AccessPoint>> {
        retry(self.attempts, || self.inner.describe_access_points(fs)).await
    }
    async fn describe_access_point(&self, id: &str) -> CloudResult<AccessPoint> {
        retry(self.attempts, || self.inner.describe_access_point(id)).await
    }
    async fn delete_access_point(&self, id: &str) -> CloudResult<()> {
        retry(self.attempts, || self.inner.delete_access_point(id)).await
    }
}

#[async_trait]
impl Secrets for Retrying<dyn Secrets> {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        retry(self.attempts, || self.inner.put_secret_value(input.clone())).await
    }
    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        retry(self.attempts, || self.inner.delete_secret(name)).await
    }
}

/// Wraps every client of `cloud`.
pub fn meter(cloud: Cloud, metrics: Arc<Metrics>) -> Cloud {
    Cloud {
        ecs: Arc::new(Metered {
            inner: cloud.ecs,
            metrics: metrics.clone(),
        }),
        efs: Arc::new(Metered {
            inner: cloud.efs,
            metrics: metrics.clone(),
        }),
        secrets: Arc::new(Metered {
            inner: cloud.secrets,
            metrics,
        }),
    }
}

#[async_trait]
impl Ecs for Metered<dyn Ecs> {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        let r = self.inner.register_task_definition(input).await;
        self.count("RegisterTaskDefinition", r)
    }
    async fn describe_task_definition(
        &self,
        td: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        let r = self.inner.describe_task_definition(td, include_tags).await;
        self.count("DescribeTaskDefinition", r)
    }
    async fn deregister_task_definition(&self, td: &str) -> CloudResult<TaskDefinition> {
        let r = self.inner.deregister_task_definition(td).await;
        self.count("DeregisterTaskDefinition", r)
    }
    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        let r = self.inner.create_service(input).await;
        self.count("CreateService", r)
    }
    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        let r = self.inner.update_service(input).await;
        self.count("UpdateService", r)
    }
    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        let r = self.inner.delete_service(input).await;
        self.count("DeleteService", r)
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        let r = self
            .inner
            .describe_services(cluster, services, include_tags)
            .await;
        self.count("DescribeServices", r)
    }
    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        let r = self.inner.list_services(cluster).await;
        self.count("ListServices", r)
    }
    async fn list_tasks(
        &self,
        cluster: &str,
        service: &str,
        desired: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        let r = self.inner.list_tasks(cluster, service, desired).await;
        self.count("ListTasks", r)
    }
    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        let r = self.inner.describe_tasks(cluster, tasks).await;
        self.count("DescribeTasks", r)
    }
}

#[async_trait]
impl Efs for Metered<dyn Efs> {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        let r = self.inner.create_access_point(input).await;
        self.count("CreateAccessPoint", r)
    }
    async fn describe_access_points(&self, fs: &str) -> CloudResult<Vec<AccessPoint>> {
        let r = self.inner.describe_access_points(fs).await;
        self.count("DescribeAccessPoints", r)
    }
    async fn describe_access_point(&self, id: &str) -> CloudResult<AccessPoint> {
        let r = self.inner.describe_access_point(id).await;
        self.count("DescribeAccessPoint", r)
    }
    async fn delete_access_point(&self, id: &str) -> CloudResult<()> {
        let r = self.inner.delete_access_point(id).await;
        self.count("DeleteAccessPoint", r)
    }
}

#[async_trait]
impl Secrets for Metered<dyn Secrets> {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        let r = self.inner.put_secret_value(input).await;
        self.count("PutSecretValue", r)
    }
    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        let r = self.inner.delete_secret(name).await;
        self.count("DeleteSecret", r)
    }
}
