//! Batched observation of ECS services through a shared cache.
//!
//! Reconciles never describe their own service one by one: the cache is
//! refreshed with DescribeServices in groups of 10 on every resync (all
//! services) and every couple of seconds for "hot" services (those in a
//! transition), and it is updated from the answers of our own writes
//! (CreateService/UpdateService return the service). A workspace whose
//! observed state changes during a hot refresh is enqueued.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use berth_cloud::ecs::{describe_services_chunked, Ecs, Service, ServiceStatus};
use berth_cloud::error::CloudResult;

use super::WsKey;

/// What the cache knows of one service.
#[derive(Clone, Debug)]
pub enum Observed {
    /// The service as last described.
    Found(Box<Service>),
    /// DescribeServices answered MISSING.
    Missing,
}

impl Observed {
    /// The service if it exists and is ACTIVE.
    pub fn active(&self) -> Option<&Service> {
        match self {
            Observed::Found(s) if s.status == ServiceStatus::Active => Some(s),
            _ => None,
        }
    }

    /// A short fingerprint of the state that matters for status.
    fn fingerprint(&self) -> String {
        match self {
            Observed::Found(s) => format!(
                "{:?}/{}/{}/{}/{}/{:?}/{:?}",
                s.status,
                s.desired_count,
                s.running_count,
                s.pending_count,
                s.task_definition,
                s.primary_deployment()
                    .map(|d| (d.rollout_state, d.failed_tasks)),
                // Drift the controller corrects.
                s.deployment_configuration
            ),
            Observed::Missing => "missing".into(),
        }
    }
}

type SvcId = (String, String);

#[derive(Default)]
struct Inner {
    services: HashMap<SvcId, Observed>,
    /// Services in a transition, with the workspace to wake and the
    /// service's region.
    hot: HashMap<SvcId, (WsKey, String)>,
}

/// The shared service cache.
#[derive(Clone)]
pub struct ServiceCache {
    ecs: Arc<dyn Ecs>,
    inner: Arc<Mutex<Inner>>,
}

impl ServiceCache {
    /// An empty cache over `ecs`.
    pub fn new(ecs: Arc<dyn Ecs>) -> Self {
        ServiceCache {
            ecs,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of a service, if any.
    pub fn get(&self, cluster: &str, name: &str) -> Option<Observed> {
        self.lock()
            .services
            .get(&(cluster.to_string(), name.to_string()))
            .cloned()
    }

    /// Records a service as returned by one of our own writes.
    pub fn put(&self, cluster: &str, svc: Service) {
        self.lock().services.insert(
            (cluster.to_string(), svc.service_name.clone()),
            Observed::Found(Box::new(svc)),
        );
    }

    /// Forgets a service (after deletion).
    pub fn forget(&self, cluster: &str, name: &str) {
        let mut g = self.lock();
        let id = (cluster.to_string(), name.to_string());
        g.services.remove(&id);
        g.hot.remove(&id);
    }

    /// Marks a service (in `region`; empty: the default one) hot
    /// (refreshed every hot interval) or not.
    pub fn set_hot(&self, region: &str, cluster: &str, name: &str, key: &WsKey, hot: bool) {
        let mut g = self.lock();
        let id = (cluster.to_string(), name.to_string());
        if hot {
            g.hot.insert(id, (key.clone(), region.to_string()));
        } else {
            g.hot.remove(&id);
        }
    }

    /// Number of hot services.
    pub fn hot_count(&self) -> usize {
        self.lock().hot.len()
    }

    /// Describes one service now (bypassing the cache) and caches it.
    pub async fn refresh_one(&self, cluster: &str, name: &str) -> CloudResult<Observed> {
        let out = self
            .ecs
            .describe_services(cluster, &[name.to_string()], true)
            .await?;
        let obs = out
            .services
            .into_iter()
            .next()
            .map(|s| Observed::Found(Box::new(s)))
            .unwrap_or(Observed::Missing);
        self.lock()
            .services
            .insert((cluster.to_string(), name.to_string()), obs.clone());
        Ok(obs)
    }

    /// Describes `services` ((region, cluster) → names; an empty region is
    /// the default one) in groups of 10 and caches the answers. Returns
    /// the ids whose fingerprint changed.
    pub async fn refresh(
        &self,
        services: &BTreeMap<(String, String), Vec<String>>,
    ) -> CloudResult<Vec<(String, String)>> {
        let mut changed = Vec::new();
        for ((region, cluster), names) in services {
            if names.is_empty() {
                continue;
            }
            let out = berth_cloud::region::scope(
                region.clone(),
                describe_services_chunked(self.ecs.as_ref(), cluster, names, true),
            )
            .await?;
            let mut seen = HashSet::new();
            let mut g = self.lock();
            for s in out.services {
                seen.insert(s.service_name.clone());
                let id = (cluster.clone(), s.service_name.clone());
                let new = Observed::Found(Box::new(s));
                if g.services.get(&id).map(Observed::fingerprint) != Some(new.fingerprint()) {
                    changed.push(id.clone());
                }
                g.services.insert(id, new);
            }
            for n in names.iter().filter(|n| !seen.contains(*n)) {
                let id = (cluster.clone(), n.clone());
                if !matches!(g.services.get(&id), Some(Observed::Missing)) {
                    changed.push(id.clone());
                }
                g.services.insert(id, Observed::Missing);
            }
        }
        Ok(changed)
    }

    /// Refreshes the hot services; returns the workspaces whose service changed.
    pub async fn refresh_hot(&self) -> CloudResult<Vec<WsKey>> {
        let hot: Vec<(SvcId, (WsKey, String))> = self
            .lock()
            .hot
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut by_cluster: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for ((c, n), (_, region)) in &hot {
            by_cluster
                .entry((region.clone(), c.clone()))
                .or_default()
                .push(n.clone());
        }
        let changed: HashSet<SvcId> = self.refresh(&by_cluster).await?.into_iter().collect();
        Ok(hot
            .into_iter()
            .filter(|(id, _)| changed.contains(id))
            .map(|(_, (k, _))| k)
            .collect())
    }
}
