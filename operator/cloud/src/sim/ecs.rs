//! Simulated ECS: task definition families, services, deployments and the
//! service scheduler.
//!
//! A service's tasks are records with a launch time, an optional stop
//! request and an optional start failure (and, for process-backed tasks,
//! the reported exit of their process); a task's status at any instant is
//! a pure function of those and the [`Delays`]. The scheduler
//! ([`SvcRec::schedule`]) runs at every instant where some task changes
//! status (replayed lazily by [`EcsState::advance`]) and after every API
//! mutation: it launches tasks up to the primary deployment's desired count
//! (after [`Delays::restart`] when the last one failed), stops excess ones,
//! retires old deployments once the primary's tasks run, updates the
//! rollout state and writes service events as ECS words them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::{hex, is_valid_name, last_segment, Clock, Delays, SimConfig, SimTask, State};
use crate::ecs::{
    CreateService, DeleteService, DeploymentConfiguration, DeploymentStatus,
    DescribeServicesOutput, DescribeTasksOutput, DesiredStatus, Ecs, Failure, NetworkConfiguration,
    PropagateTags, RegisterTaskDefinition, RolloutState, Service, ServiceEvent, ServiceStatus,
    StopCode, Task, TaskDefinition, TaskDefinitionStatus, TaskStatus, UpdateService,
    FAILURE_MISSING, MAX_DESCRIBE_SERVICES, MAX_DESCRIBE_TASKS, MAX_STOP_TIMEOUT_SECONDS,
};
use crate::error::{CloudError, CloudResult, ErrorCode};
use crate::ops::Operation;
use crate::tags::{self, Tags};
use crate::{fargate, Sim};

/// ECS keeps the last 100 service events.
const MAX_EVENTS: usize = 100;
/// STOPPED tasks kept per service at most (besides the retention time).
const MAX_STOPPED_TASKS: usize = 20;
/// Relaunches of failed tasks are never faster than this, whatever the
/// configured delay (ECS backs off for seconds to minutes).
const MIN_RESTART: std::time::Duration = std::time::Duration::from_millis(100);
/// ECS limit on the idempotency token of CreateService.
const MAX_CLIENT_TOKEN_LEN: usize = 36;
/// A process-backed task whose exit is never reported stops this long
/// after its stop timeout (the runtime SIGKILLs at the stop timeout and
/// reports within a poll interval, so this only matters when no runtime
/// watches the task).
pub(super) const PROCESS_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Fargate's default `stopTimeout`.
const DEFAULT_STOP_TIMEOUT_SECONDS: u32 = 30;
/// `stoppedReason` of a task whose essential container exited by itself.
pub(super) const ESSENTIAL_EXITED: &str = "Essential container in task exited";

/// What the scheduler needs from the rest of the simulated account.
#[derive(Clone, Copy)]
pub(super) struct Env<'a> {
    pub cfg: &'a SimConfig,
    pub clock: Clock,
    pub efs: &'a super::efs::EfsState,
    pub secrets: &'a super::secrets::SecretsState,
    /// CPU units of the account's tasks in other services that count
    /// toward the vCPU quota ([`SimConfig::vcpu_quota`]).
    pub cpu_elsewhere: u32,
}

#[derive(Default)]
pub(super) struct EcsState {
    pub clusters: BTreeSet<String>,
    families: BTreeMap<String, Family>,
    /// (cluster, service name) → records, oldest first; the last one is
    /// current, earlier ones are INACTIVE incarnations of the same name.
    services: BTreeMap<(String, String), Vec<SvcRec>>,
}

#[derive(Default)]
struct Family {
    last_revision: u32,
    revisions: BTreeMap<u32, TaskDefinition>,
}

struct SvcRec {
    arn: String,
    name: String,
    cluster: String,
    /// The region it was created in (its ARNs and its tasks' say so).
    region: String,
    status: ServiceStatus,
    desired: u32,
    client_token: Option<String>,
    tags: Tags,
    network: NetworkConfiguration,
    enable_exec: bool,
    circuit_breaker: bool,
    deployment_configuration: DeploymentConfiguration,
    propagate_tags: PropagateTags,
    created: Instant,
    inactive_at: Option<Instant>,
    /// Primary first.
    deployments: Vec<DepRec>,
    tasks: Vec<TaskRec>,
    /// Newest first.
    events: VecDeque<ServiceEvent>,
    /// The instant the scheduler has replayed up to.
    clock: Instant,
    steady: bool,
    consecutive_failures: u32,
    /// When the scheduler last could not place a task (the account's vCPU
    /// quota): it tries again [`Delays::restart`] later.
    unplaced_at: Option<Instant>,
}

#[derive(PartialEq)]
struct Fingerprint {
    tasks: usize,
    stop_requests: usize,
    deployments: usize,
    status: ServiceStatus,
    rollout: Option<RolloutState>,
    steady: bool,
    last_event: Option<String>,
}

struct DepRec {
    id: String,
    task_definition: String,
    desired: u32,
    created: Instant,
    updated: Instant,
    rollout: RolloutState,
    reason: String,
    failed_tasks: u32,
    last_failure: Option<Instant>,
}

struct TaskRec {
    id: String,
    arn: String,
    deployment: String,
    task_definition: String,
    created: Instant,
    stop_requested: Option<Instant>,
    stop_code: Option<StopCode>,
    stop_reason: Option<String>,
    /// CPU units of its task definition (counted toward the vCPU quota).
    cpu: u32,
    /// Why the task will fail at the end of PENDING, decided at launch.
    fail: Option<String>,
    failure_counted: bool,
    running_seen: bool,
    /// [`SimConfig::process_backed`] at launch: a local process runs the
    /// container, and the task stops when that process exits.
    process_backed: bool,
    /// The containers' stop timeout (the largest), decided at launch.
    stop_timeout: std::time::Duration,
    /// When the container's process exited (reported by the local
    /// runtime), and its exit code (None: killed by a signal or never
    /// started).
    exited: Option<(Instant, Option<i32>)>,
}

impl TaskRec {
    fn started(&self, d: &Delays) -> Instant {
        self.created + d.provisioning + d.pending
    }

    /// When the task begins stopping (stop request, start failure, or its
    /// process exiting by itself).
    fn stop_begin(&self, d: &Delays) -> Option<Instant> {
        let fail_at = self.fail.as_ref().map(|_| self.started(d));
        [self.stop_requested, fail_at, self.exited.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the task is STOPPED: [`Delays::stopping`] after the stop began,
    /// except for a process-backed task that reached RUNNING, which stops
    /// when its process exits (or, if that is never reported, a grace
    /// period after its stop timeout).
    fn stopped_at(&self, d: &Delays) -> Option<Instant> {
        let begin = self.stop_begin(d)?;
        if !self.process_backed || !self.may_have_run(d) {
            return Some(begin + d.stopping);
        }
        Some(match self.exited {
            Some((at, _)) => at.max(begin),
            None => begin + self.stop_timeout + PROCESS_EXIT_GRACE,
        })
    }

    /// True when the task failed to start (rather than being stopped first).
    fn failed(&self, d: &Delays) -> bool {
        self.fail.is_some() && self.stop_requested.is_none_or(|s| s >= self.started(d))
    }

    /// True when the task reaches RUNNING, or is stopped at the very instant
    /// it does (a local process may have been started then).
    fn may_have_run(&self, d: &Delays) -> bool {
        self.fail.is_none() && self.stop_requested.is_none_or(|s| s >= self.started(d))
    }

    /// True when the task reaches RUNNING at some point.
    fn runs(&self, d: &Delays) -> bool {
        self.fail.is_none() && self.stop_requested.is_none_or(|s| s > self.started(d))
    }

    /// Status at `t`; `None` before the task is launched.
    fn status(&self, t: Instant, d: &Delays) -> Option<TaskStatus> {
        if t < self.created {
            return None;
        }
        if let Some(begin) = self.stop_begin(d) {
            if t >= begin {
                return Some(if self.stopped_at(d).is_some_and(|s| t >= s) {
                    TaskStatus::Stopped
                } else {
                    TaskStatus::Deprovisioning
                });
            }
        }
        Some(if t < self.created + d.provisioning {
            TaskStatus::Provisioning
        } else if t < self.started(d) {
            TaskStatus::Pending
        } else {
            TaskStatus::Running
        })
    }

    /// Not launched yet, or launched and not stopping by `t`.
    fn live(&self, t: Instant, d: &Delays) -> bool {
        self.stop_begin(d).is_none_or(|s| s > t)
    }

    fn transitions(&self, d: &Delays) -> [Option<Instant>; 5] {
        let stop = self.stop_begin(d);
        let before_stop = |x: Instant| stop.is_none_or(|s| x < s).then_some(x);
        [
            Some(self.created),
            before_stop(self.created + d.provisioning),
            before_stop(self.started(d)),
            stop,
            self.stopped_at(d),
        ]
    }

    fn to_task(&self, svc: &SvcRec, cfg: &SimConfig, clock: Clock, now: Instant) -> Task {
        let d = &cfg.delays;
        let last_status = self.status(now, d).unwrap_or(TaskStatus::Provisioning);
        let stopping = self.stop_begin(d).filter(|s| *s <= now);
        let stopped = self.stopped_at(d).filter(|s| *s <= now);
        let (stop_code, stopped_reason) = if stopping.is_none() {
            (None, None)
        } else if self.failed(d) {
            (Some(StopCode::TaskFailedToStart), self.fail.clone())
        } else {
            (self.stop_code, self.stop_reason.clone())
        };
        Task {
            task_arn: self.arn.clone(),
            cluster_arn: cluster_arn(cfg, &svc.region, &svc.cluster),
            task_definition_arn: self.task_definition.clone(),
            group: format!("service:{}", svc.name),
            started_by: self.deployment.clone(),
            last_status,
            desired_status: if stopping.is_some() {
                TaskStatus::Stopped
            } else {
                TaskStatus::Running
            },
            created_at: clock.wall(self.created),
            started_at: (self.runs(d) && self.started(d) <= now)
                .then(|| clock.wall(self.started(d))),
            stopping_at: stopping.map(|s| clock.wall(s)),
            stopped_at: stopped.map(|s| clock.wall(s)),
            stop_code,
            stopped_reason,
        }
    }
}

/// Failed tasks that trip the circuit breaker: half the desired count,
/// at least 3 and at most 200 (ECS's rule).
fn circuit_breaker_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

impl SvcRec {
    fn event(&mut self, t: Instant, clock: Clock, rng: &mut StdRng, message: String) {
        self.events.push_front(ServiceEvent {
            id: uuid(rng),
            created_at: clock.wall(t),
            message,
        });
        self.events.truncate(MAX_EVENTS);
    }

    fn counts(&self, dep: Option<&str>, t: Instant, d: &Delays) -> (u32, u32) {
        let mut running = 0;
        let mut pending = 0;
        for task in &self.tasks {
            if dep.is_some_and(|id| id != task.deployment) {
                continue;
            }
            match task.status(t, d) {
                Some(TaskStatus::Running) => running += 1,
                Some(TaskStatus::Provisioning | TaskStatus::Pending) => pending += 1,
                _ => {}
            }
        }
        (running, pending)
    }

    fn launch(
        &mut self,
        n: usize,
        at: Instant,
        t: Instant,
        env: &Env<'_>,
        families: &BTreeMap<String, Family>,
        rng: &mut StdRng,
    ) {
        let Some(dep) = self.deployments.first() else {
            return;
        };
        let (dep_id, td_arn) = (dep.id.clone(), dep.task_definition.clone());
        let td = find_task_definition(families, &td_arn);
        let cpu = td.map_or(0, |td| td.cpu);
        let mut n = n;
        if let Some(quota) = env.cfg.vcpu_quota {
            // Fargate's account-wide vCPU quota: tasks not placed are not
            // tasks at all (no failedTasks), only a service event.
            let d = &env.cfg.delays;
            let own: u32 = self
                .tasks
                .iter()
                .filter(|x| x.live(t, d))
                .map(|x| x.cpu)
                .sum();
            let free =
                (quota.saturating_mul(1024)).saturating_sub(own.saturating_add(env.cpu_elsewhere));
            let fit = free.checked_div(cpu).map_or(n, |f| f as usize);
            if fit < n {
                n = fit;
                self.unplaced_at = Some(t);
                let message = format!(
                    "(service {}) was unable to place a task. Reason: You've reached the limit \
                     on the number of vCPUs you can run concurrently. Please retry later or \
                     request a quota increase.",
                    self.name
                );
                if self.events.front().is_none_or(|e| e.message != message) {
                    self.event(t, env.clock, rng, message);
                }
            } else {
                self.unplaced_at = None;
            }
            if n == 0 {
                return;
            }
        }
        let fail = td.and_then(|td| start_failure(td, env, at));
        let stop_timeout = td
            .and_then(|td| {
                td.container_definitions
                    .iter()
                    .map(|c| c.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT_SECONDS))
                    .max()
            })
            .unwrap_or(DEFAULT_STOP_TIMEOUT_SECONDS);
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let id = hex(rng, 32);
            started.push(format!("(task {id})"));
            self.tasks.push(TaskRec {
                arn: format!(
                    "arn:aws:ecs:{}:{}:task/{}/{id}",
                    self.region, env.cfg.account_id, self.cluster
                ),
                id,
                deployment: dep_id.clone(),
                task_definition: td_arn.clone(),
                created: at,
                cpu,
                stop_requested: None,
                stop_code: None,
                stop_reason: None,
                fail: fail.clone(),
                failure_counted: false,
                running_seen: false,
                process_backed: env.cfg.process_backed,
                stop_timeout: std::time::Duration::from_secs(u64::from(stop_timeout)),
                exited: None,
            });
        }
        let message = format!(
            "(service {}) has started {n} tasks: {}.",
            self.name,
            started.join(" ")
        );
        self.event(t, env.clock, rng, message);
    }

    /// Stops the tasks at `indices` at `t` (tasks not launched yet are
    /// dropped) and writes one event.
    fn stop(
        &mut self,
        indices: &[usize],
        t: Instant,
        reason: &str,
        env: &Env<'_>,
        rng: &mut StdRng,
    ) {
        if indices.is_empty() {
            return;
        }
        let mut stopped = Vec::new();
        for &i in indices {
            let task = &mut self.tasks[i];
            if task.created > t {
                continue;
            }
            task.stop_requested = Some(t);
            task.stop_code = Some(StopCode::ServiceSchedulerInitiated);
            task.stop_reason = Some(reason.to_owned());
            stopped.push(format!("(task {})", task.id));
        }
        let drop: BTreeSet<usize> = indices
            .iter()
            .copied()
            .filter(|&i| self.tasks[i].created > t)
            .collect();
        if !drop.is_empty() {
            let mut i = 0;
            self.tasks.retain(|_| {
                let keep = !drop.contains(&i);
                i += 1;
                keep
            });
        }
        if !stopped.is_empty() {
            let message = format!(
                "(service {}) has stopped {} running tasks: {}.",
                self.name,
                stopped.len(),
                stopped.join(" ")
            );
            self.event(t, env.clock, rng, message);
        }
    }

    /// The ECS service scheduler at instant `t`. Idempotent.
    fn schedule(
        &mut self,
        t: Instant,
        env: &Env<'_>,
        families: &BTreeMap<String, Family>,
        rng: &mut StdRng,
    ) {
        let d = &env.cfg.delays;

        // Account start failures and first successful starts.
        let mut failures = Vec::new();
        for task in &mut self.tasks {
            if !task.failure_counted && task.failed(d) && task.stop_begin(d).is_some_and(|s| s <= t)
            {
                task.failure_counted = true;
                failures.push((task.deployment.clone(), task.started(d)));
            }
            if !task.running_seen && task.status(t, d) == Some(TaskStatus::Running) {
                task.running_seen = true;
                self.consecutive_failures = 0;
            }
        }
        for (dep_id, at) in failures {
            if let Some(dep) = self.deployments.iter_mut().find(|x| x.id == dep_id) {
                dep.failed_tasks += 1;
                dep.updated = t;
                dep.last_failure = Some(dep.last_failure.map_or(at, |l| l.max(at)));
            }
            self.consecutive_failures += 1;
            if self.consecutive_failures == 3 || self.consecutive_failures.is_multiple_of(10) {
                let message = format!(
                    "(service {}) is unable to consistently start tasks successfully. For more \
                     information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
                    self.name
                );
                self.event(t, env.clock, rng, message);
            }
        }

        match self.status {
            ServiceStatus::Active => self.schedule_active(t, env, families, rng),
            ServiceStatus::Draining => {
                let live: Vec<usize> = (0..self.tasks.len())
                    .filter(|&i| self.tasks[i].live(t, d))
                    .collect();
                let reason = match self.deployments.first() {
                    Some(dep) => format!("Scaling activity initiated by (deployment {})", dep.id),
                    None => "Service deleted".to_owned(),
                };
                self.stop(&live, t, &reason, env, rng);
                let all_stopped = self
                    .tasks
                    .iter()
                    .all(|x| x.status(t, d) == Some(TaskStatus::Stopped));
                if all_stopped {
                    self.status = ServiceStatus::Inactive;
                    self.inactive_at = Some(t);
                    self.deployments.truncate(1);
                }
            }
            ServiceStatus::Inactive => {}
        }

        // Forget old stopped tasks.
        let retention = d.stopped_task_retention;
        self.tasks
            .retain(|x| x.stopped_at(d).is_none_or(|s| s + retention > t));
        let stopped = self
            .tasks
            .iter()
            .filter(|x| x.stopped_at(d).is_some_and(|s| s <= t))
            .count();
        if stopped > MAX_STOPPED_TASKS {
            let mut excess = stopped - MAX_STOPPED_TASKS;
            self.tasks.retain(|x| {
                if excess > 0 && x.stopped_at(d).is_some_and(|s| s <= t) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn schedule_active(
        &mut self,
        t: Instant,
        env: &Env<'_>,
        families: &BTreeMap<String, Family>,
        rng: &mut StdRng,
    ) {
        let d = &env.cfg.delays;
        let Some(primary) = self.deployments.first() else {
            return;
        };
        let primary_id = primary.id.clone();
        let want = primary.desired as usize;
        let last_failure = primary.last_failure;

        let live: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].deployment == primary_id && self.tasks[i].live(t, d))
            .collect();
        if live.len() >= want {
            self.unplaced_at = None;
        }
        if live.len() < want {
            // maximumPercent bounds the tasks not yet STOPPED (launched or
            // to be) across deployments; minimumHealthyPercent the running
            // ones an old deployment must keep while making room.
            let dc = self.deployment_configuration;
            let max_total = (want * dc.maximum_percent as usize / 100).max(want);
            let min_healthy = (want * dc.minimum_healthy_percent as usize).div_ceil(100);
            let old: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| {
                    self.tasks[i].deployment != primary_id
                        && self.tasks[i]
                            .status(t, d)
                            .is_none_or(|s| s != TaskStatus::Stopped)
                })
                .collect();
            let need = want - live.len();
            let room = max_total.saturating_sub(live.len() + old.len());
            if room < need {
                // Old tasks still stopping take room until they are STOPPED.
                let mut old_live: Vec<usize> = old
                    .into_iter()
                    .filter(|&i| self.tasks[i].live(t, d))
                    .collect();
                let running = (0..self.tasks.len())
                    .filter(|&i| {
                        self.tasks[i].live(t, d)
                            && self.tasks[i].status(t, d) == Some(TaskStatus::Running)
                    })
                    .count();
                // Tasks not running yet first: stopping them costs no health.
                old_live.sort_by_key(|&i| self.tasks[i].status(t, d) == Some(TaskStatus::Running));
                let spare_running = running.saturating_sub(min_healthy);
                let mut stop = Vec::new();
                let mut spent = 0;
                for i in old_live {
                    if stop.len() >= need - room {
                        break;
                    }
                    if self.tasks[i].status(t, d) == Some(TaskStatus::Running) {
                        if spent >= spare_running {
                            continue;
                        }
                        spent += 1;
                    }
                    stop.push(i);
                }
                if !stop.is_empty() {
                    let reason = format!("Scaling activity initiated by (deployment {primary_id})");
                    self.stop(&stop, t, &reason, env, rng);
                }
            }
            if room > 0 {
                // ECS waits before relaunching tasks that failed to start.
                let restart = d.restart.max(MIN_RESTART);
                let at = last_failure.map_or(t, |f| (f + restart).max(t));
                self.launch(need.min(room), at, t, env, families, rng);
            }
        } else if live.len() > want {
            // Stop tasks that are not running yet first, then the newest.
            let mut ordered = live;
            ordered.sort_by_key(|&i| {
                let task = &self.tasks[i];
                let rank = match task.status(t, d) {
                    None => 0,
                    Some(TaskStatus::Provisioning) => 1,
                    Some(TaskStatus::Pending) => 2,
                    _ => 3,
                };
                (rank, std::cmp::Reverse(task.created))
            });
            ordered.truncate(ordered.len() - want);
            let reason = format!("Scaling activity initiated by (deployment {primary_id})");
            self.stop(&ordered, t, &reason, env, rng);
        }

        // Retire old deployments once the primary runs its desired count.
        let (primary_running, _) = self.counts(Some(&primary_id), t, d);
        if self.deployments.len() > 1 && primary_running as usize >= want {
            let old: Vec<String> = self.deployments[1..].iter().map(|x| x.id.clone()).collect();
            for dep_id in old {
                let live: Vec<usize> = (0..self.tasks.len())
                    .filter(|&i| self.tasks[i].deployment == dep_id && self.tasks[i].live(t, d))
                    .collect();
                let reason = format!("Scaling activity initiated by (deployment {dep_id})");
                self.stop(&live, t, &reason, env, rng);
                if let Some(dep) = self.deployments.iter_mut().find(|x| x.id == dep_id) {
                    dep.desired = 0;
                    dep.updated = t;
                }
            }
        }
        let tasks = &self.tasks;
        let mut first = true;
        self.deployments.retain(|dep| {
            let keep = std::mem::take(&mut first)
                || tasks.iter().any(|x| {
                    x.deployment == dep.id
                        && x.status(t, d).is_none_or(|s| s != TaskStatus::Stopped)
                });
            keep
        });

        // Rollout state and steady state.
        let future = self.tasks.iter().any(|x| x.created > t);
        let (running, pending) = self.counts(None, t, d);
        let single = self.deployments.len() == 1;
        let circuit_breaker = self.circuit_breaker;
        let name = self.name.clone();
        let mut messages = Vec::new();
        if let Some(dep) = self.deployments.first_mut() {
            if dep.rollout == RolloutState::InProgress {
                if single && running == dep.desired && pending == 0 && !future {
                    dep.rollout = RolloutState::Completed;
                    dep.reason = format!("ECS deployment {} completed.", dep.id);
                    dep.updated = t;
                    messages.push(format!(
                        "(service {name}) (deployment {}) deployment completed.",
                        dep.id
                    ));
                } else if circuit_breaker
                    && dep.failed_tasks >= circuit_breaker_threshold(dep.desired)
                {
                    dep.rollout = RolloutState::Failed;
                    dep.reason = "ECS deployment circuit breaker: tasks failed to start.".into();
                    dep.updated = t;
                    messages.push(format!(
                        "(service {name}) (deployment {}) deployment failed: tasks failed to start.",
                        dep.id
                    ));
                }
            }
        }
        let steady = single && running == self.desired && pending == 0 && !future;
        if steady && !self.steady {
            messages.push(format!("(service {name}) has reached a steady state."));
        }
        self.steady = steady;
        for message in messages {
            self.event(t, env.clock, rng, message);
        }
    }

    /// A cheap summary that changes whenever the scheduler acts.
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            tasks: self.tasks.len(),
            stop_requests: self
                .tasks
                .iter()
                .filter(|x| x.stop_requested.is_some())
                .count(),
            deployments: self.deployments.len(),
            status: self.status,
            rollout: self.deployments.first().map(|d| d.rollout),
            steady: self.steady,
            last_event: self.events.front().map(|e| e.id.clone()),
        }
    }

    /// CPU units of its tasks not yet stopping at `t`.
    fn cpu_live(&self, t: Instant, d: &Delays) -> u32 {
        self.tasks
            .iter()
            .filter(|x| x.created <= t && x.live(t, d))
            .map(|x| x.cpu)
            .sum()
    }

    /// Runs the scheduler at `t` until it stops acting (bounded): zero
    /// delays chain several transitions at one instant.
    fn settle(
        &mut self,
        t: Instant,
        env: &Env<'_>,
        families: &BTreeMap<String, Family>,
        rng: &mut StdRng,
    ) {
        for _ in 0..4 {
            let before = self.fingerprint();
            self.schedule(t, env, families, rng);
            if self.fingerprint() == before {
                break;
            }
        }
    }

    /// Replays every task transition in `(clock, now]`, running the
    /// scheduler at each.
    fn advance(
        &mut self,
        now: Instant,
        env: &Env<'_>,
        families: &BTreeMap<String, Family>,
        rng: &mut StdRng,
    ) {
        let d = &env.cfg.delays;
        // ECS tries again to place what the vCPU quota refused.
        let retry = d.restart.max(MIN_RESTART);
        while self.status != ServiceStatus::Inactive {
            let clock = self.clock;
            let replace = self
                .unplaced_at
                .filter(|_| self.status == ServiceStatus::Active)
                .map(|at| (at + retry).max(clock + std::time::Duration::from_millis(1)));
            let next = self
                .tasks
                .iter()
                .filter(|x| x.stopped_at(d).is_none_or(|s| s > clock))
                .flat_map(|x| x.transitions(d))
                .flatten()
                .filter(|&x| x > clock)
                .chain(replace)
                .min();
            match next {
                Some(t) if t <= now => {
                    self.clock = t;
                    self.settle(t, env, families, rng);
                    if replace == Some(t) && self.unplaced_at.is_some_and(|at| at < t) {
                        // Nothing left to place.
                        self.unplaced_at = None;
                    }
                }
                _ => break,
            }
        }
        self.clock = self.clock.max(now);
    }

    fn to_service(
        &self,
        cfg: &SimConfig,
        clock: Clock,
        now: Instant,
        include_tags: bool,
    ) -> Service {
        let d = &cfg.delays;
        let (running, pending) = self.counts(None, now, d);
        let deployments = self
            .deployments
            .iter()
            .enumerate()
            .map(|(i, dep)| {
                let (running, pending) = self.counts(Some(&dep.id), now, d);
                crate::ecs::Deployment {
                    id: dep.id.clone(),
                    status: if i == 0 {
                        DeploymentStatus::Primary
                    } else {
                        DeploymentStatus::Active
                    },
                    task_definition: dep.task_definition.clone(),
                    desired_count: dep.desired,
                    pending_count: pending,
                    running_count: running,
                    failed_tasks: dep.failed_tasks,
                    rollout_state: dep.rollout,
                    rollout_state_reason: dep.reason.clone(),
                    created_at: clock.wall(dep.created),
                    updated_at: clock.wall(dep.updated),
                }
            })
            .collect();
        Service {
            service_arn: self.arn.clone(),
            service_name: self.name.clone(),
            cluster_arn: cluster_arn(cfg, &self.region, &self.cluster),
            status: self.status,
            desired_count: self.desired,
            running_count: running,
            pending_count: pending,
            task_definition: self
                .deployments
                .first()
                .map(|x| x.task_definition.clone())
                .unwrap_or_default(),
            deployments,
            events: self.events.iter().cloned().collect(),
            network_configuration: self.network.clone(),
            enable_execute_command: self.enable_exec,
            deployment_configuration: Some(self.deployment_configuration),
            propagate_tags: Some(self.propagate_tags),
            created_at: clock.wall(self.created),
            tags: if include_tags {
                self.tags.clone()
            } else {
                Tags::new()
            },
        }
    }
}

/// Why a task of `td` launched at `at` fails to start, if it does.
fn start_failure(td: &TaskDefinition, env: &Env<'_>, at: Instant) -> Option<String> {
    for container in &td.container_definitions {
        if env
            .cfg
            .fail_images
            .iter()
            .any(|marker| !marker.is_empty() && container.image.contains(marker.as_str()))
        {
            return Some(format!(
                "CannotPullContainerError: pull image manifest has been retried 7 time(s): \
                 failed to resolve ref {}: not found",
                container.image
            ));
        }
        for secret in &container.secrets {
            // Permissive mode (the `berth up` demo) takes secrets it does not
            // hold, like the template's own, as existing in the account.
            if !env.cfg.permissive && !env.secrets.resolves(&secret.value_from) {
                return Some(format!(
                    "ResourceInitializationError: unable to pull secrets or registry auth: \
                     execution resource retrieval failed: unable to retrieve secret from asm: \
                     service call has been retried 1 time(s): failed to fetch secret {} from \
                     secrets manager: ResourceNotFoundException: Secrets Manager can't find the \
                     specified secret.",
                    secret.value_from
                ));
            }
        }
    }
    for volume in &td.volumes {
        let Some(efs) = &volume.efs_volume_configuration else {
            continue;
        };
        let fs_ok = env.cfg.permissive || env.efs.file_systems.contains(&efs.file_system_id);
        let ap_ok = efs
            .access_point_id
            .as_deref()
            .is_none_or(|ap| env.efs.usable(ap, &efs.file_system_id, at, &env.cfg.delays));
        if !fs_ok || !ap_ok {
            return Some(format!(
                "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS \
                 volumes: stderr: b'mount.nfs4: access denied by server while mounting \
                 127.0.0.1:/' : unsuccessful EFS utils command execution; code: 32 (volume {}, \
                 file system {}, access point {})",
                volume.name,
                efs.file_system_id,
                efs.access_point_id.as_deref().unwrap_or("none")
            ));
        }
    }
    None
}

pub(super) fn cluster_arn(cfg: &SimConfig, region: &str, cluster: &str) -> String {
    format!("arn:aws:ecs:{region}:{}:cluster/{cluster}", cfg.account_id)
}

fn service_arn(cfg: &SimConfig, region: &str, cluster: &str, name: &str) -> String {
    format!(
        "arn:aws:ecs:{region}:{}:service/{cluster}/{name}",
        cfg.account_id
    )
}

/// `family`, `family:rev` or an ARN → (family, revision).
fn parse_task_definition(input: &str) -> (String, Option<u32>) {
    let rest = match input.find("task-definition/") {
        Some(i) if input.starts_with("arn:") => &input[i + "task-definition/".len()..],
        _ => input,
    };
    match rest.rsplit_once(':') {
        Some((family, rev)) => (family.to_owned(), Some(rev.parse().unwrap_or(0))),
        None => (rest.to_owned(), None),
    }
}

fn find_task_definition<'a>(
    families: &'a BTreeMap<String, Family>,
    input: &str,
) -> Option<&'a TaskDefinition> {
    let (family, revision) = parse_task_definition(input);
    let family = families.get(&family)?;
    match revision {
        Some(rev) => family.revisions.get(&rev),
        None => family
            .revisions
            .values()
            .rev()
            .find(|td| td.status == TaskDefinitionStatus::Active),
    }
}

fn uuid(rng: &mut StdRng) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12)
    )
}

fn deployment_id(rng: &mut StdRng) -> String {
    format!(
        "ecs-svc/{}",
        rng.random_range(1_000_000_000_000_000_000u64..10_000_000_000_000_000_000)
    )
}

impl EcsState {
    pub(super) fn advance(&mut self, now: Instant, env: &Env<'_>, rng: &mut StdRng) {
        let EcsState {
            families, services, ..
        } = self;
        let retention = env.cfg.delays.inactive_service_retention;
        let d = &env.cfg.delays;
        let in_use: BTreeMap<(String, String), u32> = services
            .iter()
            .map(|(k, records)| (k.clone(), records.iter().map(|r| r.cpu_live(now, d)).sum()))
            .collect();
        let total: u32 = in_use.values().sum();
        services.retain(|key, records| {
            let env = Env {
                cpu_elsewhere: total - in_use.get(key).copied().unwrap_or(0),
                ..*env
            };
            for svc in records.iter_mut() {
                svc.advance(now, &env, families, rng);
            }
            records.retain(|svc| svc.inactive_at.is_none_or(|at| at + retention > now));
            !records.is_empty()
        });
    }

    /// CPU units of live tasks in every service but `except`'s.
    pub(super) fn cpu_elsewhere(&self, except: &(String, String), t: Instant, d: &Delays) -> u32 {
        self.services
            .iter()
            .filter(|(k, _)| *k != except)
            .flat_map(|(_, records)| records.iter())
            .map(|r| r.cpu_live(t, d))
            .sum()
    }

    pub(super) fn live_service_count(&self) -> usize {
        self.services
            .values()
            .flatten()
            .filter(|svc| svc.status != ServiceStatus::Inactive)
            .count()
    }

    pub(super) fn peek_service(
        &self,
        cfg: &SimConfig,
        clock: Clock,
        cluster: &str,
        name: &str,
        now: Instant,
    ) -> Option<Service> {
        let key = (
            last_segment(cluster).to_owned(),
            last_segment(name).to_owned(),
        );
        let svc = self.services.get(&key)?.last()?;
        Some(svc.to_service(cfg, clock, now, true))
    }

    pub(super) fn revisions(&self, family: &str) -> Vec<u32> {
        self.families
            .get(family)
            .map(|f| f.revisions.keys().copied().collect())
            .unwrap_or_default()
    }

    pub(super) fn peek_task_definition(&self, input: &str) -> Option<TaskDefinition> {
        find_task_definition(&self.families, input).cloned()
    }

    /// Every launched task that is not STOPPED at `now`.
    pub(super) fn snapshot(&self, cfg: &SimConfig, now: Instant) -> Vec<SimTask> {
        let d = &cfg.delays;
        let mut out = Vec::new();
        for svc in self.services.values().flatten() {
            for task in &svc.tasks {
                let Some(status) = task.status(now, d) else {
                    continue;
                };
                if status == TaskStatus::Stopped {
                    continue;
                }
                let Some(td) = find_task_definition(&self.families, &task.task_definition) else {
                    continue;
                };
                out.push(SimTask {
                    task_arn: task.arn.clone(),
                    task_id: task.id.clone(),
                    cluster: svc.cluster.clone(),
                    service: svc.name.clone(),
                    last_status: status,
                    stopping_since: task.stop_begin(d).filter(|s| *s <= now),
                    stop_requested: task.stop_requested.is_some_and(|s| s <= now),
                    stop_reason: task.stop_reason.clone(),
                    stop_timeout: task.stop_timeout,
                    process_backed: task.process_backed,
                    exit_reported: task.exited.is_some(),
                    task_definition: td.clone(),
                });
            }
        }
        out
    }

    fn current(&mut self, cluster: &str, name: &str) -> Option<&mut SvcRec> {
        self.services
            .get_mut(&(cluster.to_owned(), last_segment(name).to_owned()))?
            .last_mut()
    }
}

impl State {
    /// The local runtime reports that the process of `task_arn` exited at
    /// `now`: a stopping task becomes STOPPED, a running one stops with
    /// "Essential container in task exited" (and its service relaunches it
    /// after [`Delays::restart`]). False when the task is unknown, not
    /// process-backed, not started, already stopped or already reported.
    pub(super) fn task_exited(
        &mut self,
        task_arn: &str,
        exit_code: Option<i32>,
        now: Instant,
    ) -> bool {
        // The exited task's service relaunches within what the others leave.
        let id = last_segment(task_arn);
        let cpu_elsewhere = self
            .ecs
            .services
            .iter()
            .find(|(_, records)| records.iter().any(|r| r.tasks.iter().any(|x| x.id == id)))
            .map(|(k, _)| k.clone())
            .map_or(0, |k| self.ecs.cpu_elsewhere(&k, now, &self.cfg.delays));
        let State {
            cfg,
            clock,
            ids,
            ecs,
            efs,
            secrets,
            ..
        } = self;
        let env = Env {
            cfg,
            clock: *clock,
            efs,
            secrets,
            cpu_elsewhere,
        };
        let d = &cfg.delays;
        let EcsState {
            families, services, ..
        } = ecs;
        for svc in services.values_mut().flatten() {
            let Some(task) = svc
                .tasks
                .iter_mut()
                .find(|x| x.id == id && x.created <= now)
            else {
                continue;
            };
            let status = task.status(now, d);
            if !task.process_backed
                || task.exited.is_some()
                || !task.may_have_run(d)
                || !matches!(
                    status,
                    Some(TaskStatus::Running | TaskStatus::Deprovisioning)
                )
            {
                return false;
            }
            task.exited = Some((now, exit_code));
            if status == Some(TaskStatus::Running) {
                task.stop_code = Some(StopCode::EssentialContainerExited);
                task.stop_reason = Some(ESSENTIAL_EXITED.to_owned());
                let deployment = task.deployment.clone();
                if let Some(dep) = svc.deployments.iter_mut().find(|x| x.id == deployment) {
                    // The relaunch waits, as after a failed start.
                    dep.last_failure = Some(dep.last_failure.map_or(now, |l| l.max(now)));
                }
            }
            svc.settle(now, &env, families, ids);
            return true;
        }
        false
    }

    /// Resolves a cluster name or ARN, creating it when permissive.
    fn cluster(&mut self, op: Operation, cluster: &str) -> CloudResult<String> {
        let name = last_segment(cluster);
        let name = if name.is_empty() { "default" } else { name };
        if !self.ecs.clusters.contains(name) {
            if !self.cfg.permissive {
                return Err(CloudError::new(
                    op.as_str(),
                    ErrorCode::ClusterNotFound,
                    "Cluster not found.",
                ));
            }
            self.ecs.clusters.insert(name.to_owned());
        }
        Ok(name.to_owned())
    }

    /// Resolves a task definition for use by a service.
    fn usable_task_definition(&self, op: Operation, input: &str) -> CloudResult<String> {
        let client = |msg: &str| CloudError::new(op.as_str(), ErrorCode::Client, msg);
        let td = find_task_definition(&self.ecs.families, input)
            .ok_or_else(|| client("TaskDefinition not found."))?;
        if td.status != TaskDefinitionStatus::Active {
            return Err(client("TaskDefinition is inactive"));
        }
        Ok(td.task_definition_arn.clone())
    }

    fn register_task_definition(
        &mut self,
        input: RegisterTaskDefinition,
        now: Instant,
    ) -> CloudResult<TaskDefinition> {
        let op = Operation::RegisterTaskDefinition;
        let client = |msg: String| CloudError::new(op.as_str(), ErrorCode::Client, msg);
        if !is_valid_name(&input.family) {
            return Err(client(
                "Family contains invalid characters or is too long: up to 255 letters \
                 (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
                    .into(),
            ));
        }
        tags::validate(&input.tags)
            .map_err(|msg| CloudError::new(op.as_str(), ErrorCode::InvalidParameter, msg))?;
        if !fargate::is_valid(input.cpu, input.memory) {
            return Err(client(format!(
                "No Fargate configuration exists for given values: {} CPU, {} memory. See the \
                 Amazon ECS documentation for the valid values.",
                input.cpu, input.memory
            )));
        }
        if input.container_definitions.is_empty() {
            return Err(client("Container list cannot be empty.".into()));
        }
        let mut names = BTreeSet::new();
        let volumes: BTreeSet<&str> = input.volumes.iter().map(|v| v.name.as_str()).collect();
        for c in &input.container_definitions {
            if !is_valid_name(&c.name) || !names.insert(c.name.as_str()) {
                return Err(client(format!(
                    "Container name '{}' is invalid or not unique.",
                    c.name
                )));
            }
            if c.image.trim().is_empty() {
                return Err(client(
                    "Container.image should not be null or empty.".into(),
                ));
            }
            if c.stop_timeout.is_some_and(|s| s > MAX_STOP_TIMEOUT_SECONDS) {
                return Err(client(format!(
                    "Invalid 'stopTimeout' setting for container '{}'. Fargate supports up to \
                     {MAX_STOP_TIMEOUT_SECONDS} seconds.",
                    c.name
                )));
            }
            if !c.secrets.is_empty() && input.execution_role_arn.is_none() {
                return Err(client(
                    "When you are specifying container secrets, you must also specify a value \
                     for 'executionRoleArn'."
                        .into(),
                ));
            }
            if c.log_configuration
                .as_ref()
                .is_some_and(|l| l.log_driver == "awslogs")
                && input.execution_role_arn.is_none()
            {
                return Err(client(
                    "Fargate requires task definition to have execution role ARN to support log \
                     driver awslogs."
                        .into(),
                ));
            }
            if let Some(m) = c
                .mount_points
                .iter()
                .find(|m| !volumes.contains(m.source_volume.as_str()))
            {
                return Err(client(format!(
                    "Invalid 'mountPoints' setting for container '{}': sourceVolume '{}' is not \
                     a volume of the task definition.",
                    c.name, m.source_volume
                )));
            }
        }
        for v in &input.volumes {
            if let Some(efs) = &v.efs_volume_configuration {
                if efs.access_point_id.is_some() {
                    if !efs.transit_encryption {
                        return Err(client(format!(
                            "Invalid 'efsVolumeConfiguration' for volume '{}': transit encryption \
                             must be enabled when an access point is specified.",
                            v.name
                        )));
                    }
                    if efs.root_directory.as_deref().is_some_and(|r| r != "/") {
                        return Err(client(format!(
                            "Invalid 'efsVolumeConfiguration' for volume '{}': the root directory \
                             must be omitted or '/' when an access point is specified.",
                            v.name
                        )));
                    }
                }
                if efs.iam_authorization && !efs.transit_encryption {
                    return Err(client(format!(
                        "Invalid 'efsVolumeConfiguration' for volume '{}': IAM authorization \
                         requires transit encryption.",
                        v.name
                    )));
                }
            }
        }

        let family = self.ecs.families.entry(input.family.clone()).or_default();
        family.last_revision += 1;
        let revision = family.last_revision;
        let td = TaskDefinition {
            task_definition_arn: format!(
                "arn:aws:ecs:{}:{}:task-definition/{}:{revision}",
                super::region_now(&self.cfg),
                self.cfg.account_id,
                input.family
            ),
            family: input.family,
            revision,
            status: TaskDefinitionStatus::Active,
            cpu: input.cpu,
            memory: input.memory,
            execution_role_arn: input.execution_role_arn,
            task_role_arn: input.task_role_arn,
            container_definitions: input.container_definitions,
            volumes: input.volumes,
            registered_at: self.clock.wall(now),
            tags: input.tags,
        };
        family.revisions.insert(revision, td.clone());
        Ok(td)
    }

    fn describe_task_definition(
        &self,
        input: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        let mut td = find_task_definition(&self.ecs.families, input)
            .cloned()
            .ok_or_else(|| {
                CloudError::new(
                    Operation::DescribeTaskDefinition.as_str(),
                    ErrorCode::Client,
                    "Unable to describe task definition.",
                )
            })?;
        if !include_tags {
            td.tags.clear();
        }
        Ok(td)
    }

    fn deregister_task_definition(&mut self, input: &str) -> CloudResult<TaskDefinition> {
        let op = Operation::DeregisterTaskDefinition;
        let (family, revision) = parse_task_definition(input);
        let Some(revision) = revision else {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::Client,
                "Invalid revision number. Number: ",
            ));
        };
        let td = self
            .ecs
            .families
            .get_mut(&family)
            .and_then(|f| f.revisions.get_mut(&revision))
            .ok_or_else(|| {
                CloudError::new(
                    op.as_str(),
                    ErrorCode::Client,
                    "The specified task definition does not exist.",
                )
            })?;
        td.status = TaskDefinitionStatus::Inactive;
        Ok(td.clone())
    }

    fn create_service(&mut self, input: CreateService, now: Instant) -> CloudResult<Service> {
        let op = Operation::CreateService;
        let invalid = |msg: &str| CloudError::new(op.as_str(), ErrorCode::InvalidParameter, msg);
        let cluster = self.cluster(op, &input.cluster)?;
        if !is_valid_name(&input.service_name) {
            return Err(invalid(
                "Service name can have up to 255 letters (uppercase and lowercase), numbers, \
                 underscores, and hyphens.",
            ));
        }
        if input
            .client_token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.len() > MAX_CLIENT_TOKEN_LEN || !t.is_ascii())
        {
            return Err(invalid("clientToken must be 1 to 36 ASCII characters."));
        }
        tags::validate(&input.tags).map_err(|msg| invalid(&msg))?;
        let net = &input.network_configuration;
        if net.subnets.is_empty() {
            return Err(invalid(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ));
        }
        if net.subnets.len() > 16 {
            return Err(invalid("subnets can have at most 16 items."));
        }
        if net.security_groups.len() > 5 {
            return Err(invalid("securityGroups can have at most 5 items."));
        }
        if let Some(dc) = input.deployment_configuration {
            check_deployment_configuration(dc).map_err(|m| invalid(&m))?;
        }
        let td_arn = self.usable_task_definition(op, &input.task_definition)?;

        let clock = self.clock;
        // A token ECS answered for an earlier incarnation of the name (now
        // INACTIVE) is spent: a new service needs a new one.
        if input.client_token.is_some()
            && self
                .ecs
                .services
                .get(&(cluster.clone(), input.service_name.clone()))
                .is_some_and(|records| {
                    records.iter().any(|r| {
                        r.status == ServiceStatus::Inactive && r.client_token == input.client_token
                    })
                })
        {
            return Err(invalid("Creation of service was not idempotent."));
        }
        if let Some(existing) = self.ecs.current(&cluster, &input.service_name) {
            match existing.status {
                ServiceStatus::Active => {
                    if input.client_token.is_some() && existing.client_token == input.client_token {
                        return Ok(existing.to_service(&self.cfg, clock, now, true));
                    }
                    return Err(invalid("Creation of service was not idempotent."));
                }
                ServiceStatus::Draining => {
                    return Err(invalid("Unable to Start a service that is still Draining."));
                }
                ServiceStatus::Inactive => {}
            }
        }

        let dep_id = deployment_id(&mut self.ids);
        let region = super::region_now(&self.cfg);
        let mut svc = SvcRec {
            arn: service_arn(&self.cfg, &region, &cluster, &input.service_name),
            region: region.clone(),
            name: input.service_name.clone(),
            cluster: cluster.clone(),
            status: ServiceStatus::Active,
            desired: input.desired_count,
            client_token: input.client_token,
            tags: input.tags,
            network: input.network_configuration,
            enable_exec: input.enable_execute_command,
            circuit_breaker: input.deployment_circuit_breaker,
            deployment_configuration: input.deployment_configuration.unwrap_or_default(),
            propagate_tags: input.propagate_tags.unwrap_or(PropagateTags::None),
            created: now,
            inactive_at: None,
            deployments: vec![DepRec {
                reason: format!("ECS deployment {dep_id} in progress."),
                id: dep_id,
                task_definition: td_arn,
                desired: input.desired_count,
                created: now,
                updated: now,
                rollout: RolloutState::InProgress,
                failed_tasks: 0,
                last_failure: None,
            }],
            tasks: Vec::new(),
            events: VecDeque::new(),
            clock: now,
            steady: false,
            consecutive_failures: 0,
            unplaced_at: None,
        };
        {
            let key = (svc.cluster.clone(), svc.name.clone());
            let env = Env {
                cfg: &self.cfg,
                clock,
                efs: &self.efs,
                secrets: &self.secrets,
                cpu_elsewhere: self.ecs.cpu_elsewhere(&key, now, &self.cfg.delays),
            };
            svc.settle(now, &env, &self.ecs.families, &mut self.ids);
        }
        let out = svc.to_service(&self.cfg, clock, now, true);
        self.ecs
            .services
            .entry((cluster, input.service_name))
            .or_default()
            .push(svc);
        Ok(out)
    }

    fn update_service(&mut self, input: UpdateService, now: Instant) -> CloudResult<Service> {
        let op = Operation::UpdateService;
        if let Some(dc) = input.deployment_configuration {
            check_deployment_configuration(dc)
                .map_err(|m| CloudError::new(op.as_str(), ErrorCode::InvalidParameter, m))?;
        }
        let cluster = self.cluster(op, &input.cluster)?;
        let td_arn = match &input.task_definition {
            Some(td) => Some(self.usable_task_definition(op, td)?),
            None => None,
        };
        let dep_id = deployment_id(&mut self.ids);
        let key = (cluster.clone(), last_segment(&input.service).to_owned());
        let cpu_elsewhere = self.ecs.cpu_elsewhere(&key, now, &self.cfg.delays);
        let State {
            cfg,
            clock,
            ids,
            ecs,
            efs,
            secrets,
            ..
        } = self;
        let env = Env {
            cfg,
            clock: *clock,
            efs,
            secrets,
            cpu_elsewhere,
        };
        let EcsState {
            families, services, ..
        } = ecs;
        let svc = services
            .get_mut(&(cluster, last_segment(&input.service).to_owned()))
            .and_then(|records| records.last_mut())
            .ok_or_else(|| {
                CloudError::new(
                    op.as_str(),
                    ErrorCode::ServiceNotFound,
                    "Service not found.",
                )
            })?;
        if svc.status != ServiceStatus::Active {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::ServiceNotActive,
                "Service was not ACTIVE.",
            ));
        }
        if let Some(desired) = input.desired_count {
            svc.desired = desired;
            if let Some(primary) = svc.deployments.first_mut() {
                primary.desired = desired;
                primary.updated = now;
            }
        }
        if let Some(exec) = input.enable_execute_command {
            svc.enable_exec = exec;
        }
        if let Some(dc) = input.deployment_configuration {
            svc.deployment_configuration = dc;
        }
        let current_td = svc.deployments.first().map(|d| d.task_definition.clone());
        let new_td = td_arn.or(current_td.clone()).unwrap_or_default();
        if input.force_new_deployment || Some(&new_td) != current_td.as_ref() {
            svc.deployments.insert(
                0,
                DepRec {
                    reason: format!("ECS deployment {dep_id} in progress."),
                    id: dep_id,
                    task_definition: new_td,
                    desired: svc.desired,
                    created: now,
                    updated: now,
                    rollout: RolloutState::InProgress,
                    failed_tasks: 0,
                    last_failure: None,
                },
            );
            svc.consecutive_failures = 0;
        }
        svc.settle(now, &env, families, ids);
        Ok(svc.to_service(cfg, *clock, now, true))
    }

    fn delete_service(&mut self, input: DeleteService, now: Instant) -> CloudResult<Service> {
        let op = Operation::DeleteService;
        let cluster = self.cluster(op, &input.cluster)?;
        let key = (cluster.clone(), last_segment(&input.service).to_owned());
        let cpu_elsewhere = self.ecs.cpu_elsewhere(&key, now, &self.cfg.delays);
        let State {
            cfg,
            clock,
            ids,
            ecs,
            efs,
            secrets,
            ..
        } = self;
        let env = Env {
            cfg,
            clock: *clock,
            efs,
            secrets,
            cpu_elsewhere,
        };
        let EcsState {
            families, services, ..
        } = ecs;
        let svc = services
            .get_mut(&(cluster, last_segment(&input.service).to_owned()))
            .and_then(|records| records.last_mut())
            .ok_or_else(|| {
                CloudError::new(
                    op.as_str(),
                    ErrorCode::ServiceNotFound,
                    "Service not found.",
                )
            })?;
        if svc.status != ServiceStatus::Active {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::ServiceNotActive,
                "Service was not ACTIVE.",
            ));
        }
        if svc.desired > 0 && !input.force {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::InvalidParameter,
                "The service cannot be stopped while it is scaled above 0.",
            ));
        }
        svc.status = ServiceStatus::Draining;
        svc.desired = 0;
        for dep in &mut svc.deployments {
            dep.desired = 0;
            dep.updated = now;
        }
        svc.settle(now, &env, families, ids);
        Ok(svc.to_service(cfg, *clock, now, true))
    }

    fn describe_services(
        &mut self,
        cluster: &str,
        names: &[String],
        include_tags: bool,
        now: Instant,
    ) -> CloudResult<DescribeServicesOutput> {
        let op = Operation::DescribeServices;
        if names.len() > MAX_DESCRIBE_SERVICES {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::InvalidParameter,
                format!("services can have at most {MAX_DESCRIBE_SERVICES} items."),
            ));
        }
        let cluster = self.cluster(op, cluster)?;
        let mut out = DescribeServicesOutput::default();
        for name in names {
            let key = (cluster.clone(), last_segment(name).to_owned());
            match self.ecs.services.get(&key).and_then(|r| r.last()) {
                Some(svc) => {
                    out.services
                        .push(svc.to_service(&self.cfg, self.clock, now, include_tags))
                }
                None => out.failures.push(Failure {
                    arn: service_arn(
                        &self.cfg,
                        &super::region_now(&self.cfg),
                        &cluster,
                        last_segment(name),
                    ),
                    reason: FAILURE_MISSING.into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }

    fn list_services(&mut self, cluster: &str) -> CloudResult<Vec<String>> {
        let cluster = self.cluster(Operation::ListServices, cluster)?;
        Ok(self
            .ecs
            .services
            .iter()
            .filter(|((c, _), _)| *c == cluster)
            .filter_map(|(_, records)| records.last())
            .filter(|svc| svc.status != ServiceStatus::Inactive)
            .map(|svc| svc.arn.clone())
            .collect())
    }

    fn list_tasks(
        &mut self,
        cluster: &str,
        service: &str,
        desired: DesiredStatus,
        now: Instant,
    ) -> CloudResult<Vec<String>> {
        let cluster = self.cluster(Operation::ListTasks, cluster)?;
        let d = &self.cfg.delays;
        let key = (cluster, last_segment(service).to_owned());
        let Some(records) = self.ecs.services.get(&key) else {
            return Err(CloudError::new(
                Operation::ListTasks.as_str(),
                ErrorCode::ServiceNotFound,
                "Service not found.",
            ));
        };
        Ok(records
            .iter()
            .flat_map(|svc| svc.tasks.iter())
            .filter(|task| task.created <= now)
            .filter(|task| {
                let stopping = task.stop_begin(d).is_some_and(|s| s <= now);
                match desired {
                    DesiredStatus::Running => !stopping,
                    DesiredStatus::Stopped => stopping,
                }
            })
            .map(|task| task.arn.clone())
            .collect())
    }

    fn describe_tasks(
        &mut self,
        cluster: &str,
        tasks: &[String],
        now: Instant,
    ) -> CloudResult<DescribeTasksOutput> {
        let op = Operation::DescribeTasks;
        if tasks.len() > MAX_DESCRIBE_TASKS {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::InvalidParameter,
                format!("tasks can have at most {MAX_DESCRIBE_TASKS} items."),
            ));
        }
        let cluster = self.cluster(op, cluster)?;
        let mut out = DescribeTasksOutput::default();
        for wanted in tasks {
            let id = last_segment(wanted);
            let found = self
                .ecs
                .services
                .iter()
                .filter(|((c, _), _)| *c == cluster)
                .flat_map(|(_, records)| records.iter())
                .find_map(|svc| {
                    svc.tasks
                        .iter()
                        .find(|x| x.id == id && x.created <= now)
                        .map(|x| x.to_task(svc, &self.cfg, self.clock, now))
                });
            match found {
                Some(task) => out.tasks.push(task),
                None => out.failures.push(Failure {
                    arn: wanted.clone(),
                    reason: FAILURE_MISSING.into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Ecs for Sim {
    async fn register_task_definition(
        &self,
        input: RegisterTaskDefinition,
    ) -> CloudResult<TaskDefinition> {
        self.call(Operation::RegisterTaskDefinition, |st, now| {
            st.register_task_definition(input, now)
        })
        .await
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
        include_tags: bool,
    ) -> CloudResult<TaskDefinition> {
        self.call(Operation::DescribeTaskDefinition, |st, _| {
            st.describe_task_definition(task_definition, include_tags)
        })
        .await
    }

    async fn deregister_task_definition(
        &self,
        task_definition: &str,
    ) -> CloudResult<TaskDefinition> {
        self.call(Operation::DeregisterTaskDefinition, |st, _| {
            st.deregister_task_definition(task_definition)
        })
        .await
    }

    async fn create_service(&self, input: CreateService) -> CloudResult<Service> {
        self.call(Operation::CreateService, |st, now| {
            st.create_service(input, now)
        })
        .await
    }

    async fn update_service(&self, input: UpdateService) -> CloudResult<Service> {
        self.call(Operation::UpdateService, |st, now| {
            st.update_service(input, now)
        })
        .await
    }

    async fn delete_service(&self, input: DeleteService) -> CloudResult<Service> {
        self.call(Operation::DeleteService, |st, now| {
            st.delete_service(input, now)
        })
        .await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
        include_tags: bool,
    ) -> CloudResult<DescribeServicesOutput> {
        self.call(Operation::DescribeServices, |st, now| {
            st.describe_services(cluster, services, include_tags, now)
        })
        .await
    }

    async fn list_services(&self, cluster: &str) -> CloudResult<Vec<String>> {
        self.call(Operation::ListServices, |st, _| st.list_services(cluster))
            .await
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        service_name: &str,
        desired_status: DesiredStatus,
    ) -> CloudResult<Vec<String>> {
        self.call(Operation::ListTasks, |st, now| {
            st.list_tasks(cluster, service_name, desired_status, now)
        })
        .await
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> CloudResult<DescribeTasksOutput> {
        self.call(Operation::DescribeTasks, |st, now| {
            st.describe_tasks(cluster, tasks, now)
        })
        .await
    }
}

/// ECS's bounds for a REPLICA service: minimumHealthyPercent 0–100,
/// maximumPercent at least 100.
fn check_deployment_configuration(dc: DeploymentConfiguration) -> Result<(), String> {
    if dc.minimum_healthy_percent > 100 {
        return Err("minimumHealthyPercent must be between 0 and 100.".into());
    }
    if dc.maximum_percent < 100 {
        return Err("maximumPercent must be at least 100.".into());
    }
    Ok(())
}
