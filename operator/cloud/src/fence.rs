//! Fencing: a change is sent only while its sender still holds the lease
//! on the object.
//!
//! A replica reconciles a workspace under a lease that expires unless it is
//! renewed; another replica takes over once it has expired. A replica that
//! stalls (a long pause, a database that stops answering its renewals)
//! must not send a change after that point, or two replicas would act on
//! one object at once. The controller runs each reconcile inside [`scope`]
//! with a check of its lease; [`Fenced`] clients (the innermost layer, so
//! the check comes after any wait for the pacer or a retry's backoff) ask
//! it before every mutating call and refuse with [`ErrorCode::Fenced`] when
//! it fails. Reads go through: they change nothing. Outside any scope
//! every call goes through.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ecs::{
    CreateService, DeleteService, DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs,
    RegisterTaskDefinition, Service, TaskDefinition, UpdateService,
};
use crate::efs::{AccessPoint, CreateAccessPoint, Efs};
use crate::error::{CloudError, CloudResult, ErrorCode};
use crate::ops::Operation;
use crate::secrets::{PutSecret, SecretRef, Secrets};

/// Answers whether the current task may still change the object it works on.
pub type Check = Arc<dyn Fn() -> bool + Send + Sync>;

tokio::task_local! {
    static FENCE: Check;
}

/// Runs `fut` with every mutating call it makes through [`Fenced`] clients
/// first asking `check`.
pub async fn scope<F: Future>(check: Check, fut: F) -> F::Output {
    FENCE.scope(check, fut).await
}

/// Refuses `op` when the current scope's check fails.
pub fn check(op: Operation) -> CloudResult<()> {
    match FENCE.try_with(|c| c()) {
        Ok(false) => Err(CloudError::new(
            op.as_str(),
            ErrorCode::Fenced,
            "this replica's lease on the object ended before the call; not sent",
        )),
        _ => Ok(()),
    }
}

/// Clients whose mutating calls are fenced (see the module docs).
#[derive(Debug)]
pub struct Fenced<T>(pub T);

#[async_trait]
impl<T: Ecs> Ecs for Fenced<T> {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        check(Operation::RegisterTaskDefinition)?;
        self.0.register_task_definition(input).await
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        self.0
            .describe_task_definition(task_definition, include_tags)
            .await
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        check(Operation::DeregisterTaskDefinition)?;
        self.0.deregister_task_definition(task_definition).await
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        check(Operation::CreateService)?;
        self.0.create_service(input).await
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        check(Operation::UpdateService)?;
        self.0.update_service(input).await
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        check(Operation::DeleteService)?;
        self.0.delete_service(input).await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        self.0
            .describe_services(cluster, services, include_tags)
            .await
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        self.0.list_services(cluster).await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        self.0
            .list_tasks(cluster, service_name, desired_status)
            .await
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        self.0.describe_tasks(cluster, tasks).await
    }
}

#[async_trait]
impl<T: Efs> Efs for Fenced<T> {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        check(Operation::CreateAccessPoint)?;
        self.0.create_access_point(input).await
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        self.0.describe_access_points(file_system_id).await
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        self.0.describe_access_point(access_point_id).await
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        check(Operation::DeleteAccessPoint)?;
        self.0.delete_access_point(access_point_id).await
    }
}

#[async_trait]
impl<T: Secrets> Secrets for Fenced<T> {
    async fn put_secret_value(&self, input: PutSecret) -> CloudResult<SecretRef> {
        check(Operation::PutSecretValue)?;
        self.0.put_secret_value(input).await
    }

    async fn delete_secret(&self, name: &str) -> CloudResult<()> {
        check(Operation::DeleteSecret)?;
        self.0.delete_secret(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Sim, SimConfig};

    #[tokio::test]
    async fn a_failed_check_stops_mutations_and_lets_reads_through() {
        let sim = Sim::new(SimConfig::permissive());
        let ecs = Fenced(sim.clone());
        let expired: Check = Arc::new(|| false);
        let err = scope(
            expired.clone(),
            ecs.register_task_definition(RegisterTaskDefinition {
                family: "f".into(),
                cpu: 256,
                memory: 512,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Fenced);
        assert!(err.is_transient());
        assert!(sim.revisions("f").is_empty(), "nothing was sent");
        // Reads still answer; outside a scope everything goes.
        assert!(scope(expired, ecs.list_services("c")).await.is_ok());
        let held: Check = Arc::new(|| true);
        let f = || RegisterTaskDefinition {
            family: "f".into(),
            cpu: 256,
            memory: 512,
            container_definitions: vec![crate::ecs::ContainerDefinition {
                name: "c".into(),
                image: "i".into(),
                essential: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        scope(held, ecs.register_task_definition(f()))
            .await
            .unwrap();
        ecs.register_task_definition(f()).await.unwrap();
        assert_eq!(sim.revisions("f"), vec![1, 2]);
    }
}
