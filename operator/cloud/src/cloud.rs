//! The bundle of cloud clients a controller holds.
//!
//! Controllers take one [`Cloud`] in their context (kube-rs `Context`
//! style): three trait objects, cheap to clone, built either from the
//! simulator or from real AWS clients, optionally wrapped in a [`Paced`]
//! layer that shares one [`Pacer`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::ecs::{
    CreateService, DeleteService, DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs,
    RegisterTaskDefinition, Service, TaskDefinition, UpdateService,
};
use crate::efs::{AccessPoint, CreateAccessPoint, Efs};
use crate::error::CloudResult;
use crate::pacer::{Paced, Pacer};
use crate::secrets::{PutSecret, SecretRef, Secrets};
use crate::sim::Sim;

/// ECS, EFS and Secrets Manager clients, as trait objects.
#[derive(Clone)]
pub struct Cloud {
    /// ECS.
    pub ecs: Arc<dyn Ecs>,
    /// EFS.
    pub efs: Arc<dyn Efs>,
    /// Secrets Manager.
    pub secrets: Arc<dyn Secrets>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}

impl Cloud {
    /// A bundle of three clients.
    pub fn new(ecs: Arc<dyn Ecs>, efs: Arc<dyn Efs>, secrets: Arc<dyn Secrets>) -> Self {
        Cloud { ecs, efs, secrets }
    }

    /// All three services backed by one simulator (clones share state).
    pub fn from_sim(sim: &Sim) -> Self {
        Cloud {
            ecs: Arc::new(sim.clone()),
            efs: Arc::new(sim.clone()),
            secrets: Arc::new(sim.clone()),
        }
    }

    /// Clients that send each call to the region of the current
    /// [`crate::region::scope`]: `default` for `default_region` (and
    /// outside any scope), clients made by `connect` for the others.
    pub fn routed(
        default_region: impl Into<String>,
        default: Cloud,
        connect: crate::region::Connect,
    ) -> Self {
        let router = Arc::new(crate::region::Router::new(default_region, default, connect));
        Cloud {
            ecs: Arc::new(crate::region::RoutedEcs(router.clone())),
            efs: Arc::new(crate::region::RoutedEfs(router.clone())),
            secrets: Arc::new(crate::region::RoutedSecrets(router)),
        }
    }

    /// The same clients with their mutating calls fenced (see
    /// [`crate::fence`]).
    pub fn fenced(self) -> Self {
        use crate::fence::Fenced;
        Cloud {
            ecs: Arc::new(Fenced(self.ecs)),
            efs: Arc::new(Fenced(self.efs)),
            secrets: Arc::new(Fenced(self.secrets)),
        }
    }

    /// The same clients, each call first waiting for `pacer`.
    pub fn paced(self, pacer: Arc<Pacer>) -> Self {
        Cloud {
            ecs: Arc::new(Paced::new(self.ecs, pacer.clone())),
            efs: Arc::new(Paced::new(self.efs, pacer.clone())),
            secrets: Arc::new(Paced::new(self.secrets, pacer)),
        }
    }
}

#[async_trait]
impl<T: Ecs + ?Sized> Ecs for Arc<T> {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        (**self).register_task_definition(input).await
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        (**self)
            .describe_task_definition(task_definition, include_tags)
            .await
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        (**self).deregister_task_definition(task_definition).await
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        (**self).create_service(input).await
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        (**self).update_service(input).await
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        (**self).delete_service(input).await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        (**self)
            .describe_services(cluster, services, include_tags)
            .await
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        (**self).list_services(cluster).await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        (**self)
            .list_tasks(cluster, service_name, desired_status)
            .await
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        (**self).describe_tasks(cluster, tasks).await
    }
}

#[async_trait]
impl<T: Efs + ?Sized> Efs for Arc<T> {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        (**self).create_access_point(input).await
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        (**self).describe_access_points(file_system_id).await
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        (**self).describe_access_point(access_point_id).await
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        (**self).delete_access_point(access_point_id).await
    }
}

#[async_trait]
impl<T: Secrets + ?Sized> Secrets for Arc<T> {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        (**self).put_secret_value(input).await
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        (**self).delete_secret(name).await
    }
}
