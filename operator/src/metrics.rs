//! Prometheus metrics (`/metrics`, text format): reconciles and errors by
//! controller, reconcile duration, queue depth, cloud calls by operation and
//! outcome, and workspaces by phase.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    controller: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    queue: Family<QueueLabels, Gauge>,
    calls: Family<CallLabels, Counter>,
    phases: Family<PhaseLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every Berth metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome",
            reconciles.clone(),
        );
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        let queue = Family::<QueueLabels, Gauge>::default();
        registry.register("queue_depth", "Work queue depth by state", queue.clone());
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "cloud_calls",
            "Cloud API calls by operation and outcome",
            calls.clone(),
        );
        let phases = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "workspaces",
            "Workspaces by phase (at the last resync)",
            phases.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            duration,
            queue,
            calls,
            phases,
        }
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, controller: &str, outcome: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the queue depth gauges.
    pub fn queue(&self, controller: &str, pending: usize, running: usize, backing_off: usize) {
        for (state, v) in [
            ("pending", pending),
            ("running", running),
            ("backing_off", backing_off),
        ] {
            self.queue
                .get_or_create(&QueueLabels {
                    controller: controller.into(),
                    state: state.into(),
                })
                .set(v as i64);
        }
    }

    /// Counts a cloud call.
    pub fn cloud_call(&self, operation: &str, outcome: &str) {
        self.calls
            .get_or_create(&CallLabels {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The number of cloud calls counted for `operation` and `outcome`.
    pub fn cloud_calls(&self, operation: &str, outcome: &str) -> u64 {
        self.calls
            .get_or_create(&CallLabels {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// Sets the workspaces-by-phase gauges.
    pub fn workspaces_by_phase(&self, phases: &BTreeMap<String, i64>) {
        for p in [
            "Pending", "Starting", "Running", "Stopping", "Stopped", "Failed", "Deleting",
        ] {
            self.phases
                .get_or_create(&PhaseLabels { phase: p.into() })
                .set(phases.get(p).copied().unwrap_or(0));
        }
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}
