//! Regions: every call goes to the region of the workspace it is for.
//!
//! A template names its region (`spec.infrastructure.region`); the
//! controller runs each workspace's work inside [`scope`] with that region,
//! and a [`Cloud::routed`](crate::Cloud::routed) bundle sends each call to
//! the clients of [`current`] — made on first use with the connect function
//! and shared afterwards — or to the default region's outside any scope.
//! The region travels in a tokio task-local like the pacer's priority, so
//! the cloud traits keep their signatures; it does not cross
//! `tokio::spawn`.
//!
//! The simulator reads [`current`] too: its ARNs name the region a call was
//! made in.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ecs::{
    CreateService, DeleteService, DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs,
    RegisterTaskDefinition, Service, TaskDefinition, UpdateService,
};
use crate::efs::{AccessPoint, CreateAccessPoint, Efs};
use crate::error::CloudResult;
use crate::secrets::{PutSecret, SecretRef, Secrets};
use crate::Cloud;

tokio::task_local! {
    static REGION: String;
}

/// The region of the current task's [`scope`], if any.
pub fn current() -> Option<String> {
    REGION
        .try_with(|r| r.clone())
        .ok()
        .filter(|r| !r.is_empty())
}

/// Runs `fut` with every cloud call it makes going to `region` (an empty
/// region: the default one).
pub async fn scope<F: Future>(region: impl Into<String>, fut: F) -> F::Output {
    REGION.scope(region.into(), fut).await
}

/// Makes the clients of a region.
pub type Connect =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = CloudResult<Cloud>> + Send>> + Send + Sync>;

/// Clients per region, made on demand and shared.
pub struct Router {
    default_region: String,
    default: Cloud,
    connect: Connect,
    regions: tokio::sync::Mutex<BTreeMap<String, Cloud>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("default_region", &self.default_region)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router whose calls outside any scope (and in `default_region`) go
    /// to `default`, and whose other regions' clients `connect` makes.
    pub fn new(default_region: impl Into<String>, default: Cloud, connect: Connect) -> Self {
        Router {
            default_region: default_region.into(),
            default,
            connect,
            regions: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The clients for the current task's region.
    pub async fn cloud(&self) -> CloudResult<Cloud> {
        let Some(region) = current().filter(|r| *r != self.default_region) else {
            return Ok(self.default.clone());
        };
        let mut regions = self.regions.lock().await;
        if let Some(c) = regions.get(&region) {
            return Ok(c.clone());
        }
        let c = (self.connect)(region.clone()).await?;
        tracing::info!(%region, "cloud clients for a new region");
        regions.insert(region, c.clone());
        Ok(c)
    }

    /// Regions with clients of their own so far (besides the default).
    pub async fn regions(&self) -> Vec<String> {
        self.regions.lock().await.keys().cloned().collect()
    }
}

/// The ECS face of a [`Router`].
#[derive(Debug)]
pub struct RoutedEcs(pub Arc<Router>);
/// The EFS face of a [`Router`].
#[derive(Debug)]
pub struct RoutedEfs(pub Arc<Router>);
/// The Secrets Manager face of a [`Router`].
#[derive(Debug)]
pub struct RoutedSecrets(pub Arc<Router>);

#[async_trait]
impl Ecs for RoutedEcs {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        self.0
            .cloud()
            .await?
            .ecs
            .register_task_definition(input)
            .await
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        self.0
            .cloud()
            .await?
            .ecs
            .describe_task_definition(task_definition, include_tags)
            .await
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        self.0
            .cloud()
            .await?
            .ecs
            .deregister_task_definition(task_definition)
            .await
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        self.0.cloud().await?.ecs.create_service(input).await
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        self.0.cloud().await?.ecs.update_service(input).await
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        self.0.cloud().await?.ecs.delete_service(input).await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        self.0
            .cloud()
            .await?
            .ecs
            .describe_services(cluster, services, include_tags)
            .await
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        self.0.cloud().await?.ecs.list_services(cluster).await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        self.0
            .cloud()
            .await?
            .ecs
            .list_tasks(cluster, service_name, desired_status)
            .await
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        self.0
            .cloud()
            .await?
            .ecs
            .describe_tasks(cluster, tasks)
            .await
    }
}

#[async_trait]
impl Efs for RoutedEfs {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        self.0.cloud().await?.efs.create_access_point(input).await
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        self.0
            .cloud()
            .await?
            .efs
            .describe_access_points(file_system_id)
            .await
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        self.0
            .cloud()
            .await?
            .efs
            .describe_access_point(access_point_id)
            .await
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        self.0
            .cloud()
            .await?
            .efs
            .delete_access_point(access_point_id)
            .await
    }
}

#[async_trait]
impl Secrets for RoutedSecrets {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        self.0.cloud().await?.secrets.put_secret_value(input).await
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        self.0.cloud().await?.secrets.delete_secret(name).await
    }
}
