//! GitOps: the `GitSource` controller keeps the YAML documents of a git
//! branch applied.
//!
//! # Expected flow (one sync of one source)
//! 1. Fetch the branch into a bare mirror under the cache directory
//!    ([`git::Mirror`]); resolve the branch to a commit.
//! 2. Read every `.yaml`/`.yml`/`.json` file under `spec.path` at that commit,
//!    decode and normalise every document ([`plan::desired`]); a document
//!    without a namespace gets the GitSource's.
//! 3. Compare with the store ([`plan::plan`]). When nothing differs, stop:
//!    a no-change sync makes no database writes at all (not even status,
//!    which is written only when it changes).
//! 4. Otherwise apply every document as one unit through the apply engine
//!    ([`crate::apply::apply_with`]), as an admin, with the owner label
//!    `berth.dev/gitsource: <namespace>.<name>` and, with `spec.prune`,
//!    prune of this label's objects that the commit no longer declares.
//! 5. Record the outcome in status and as events.
//!
//! # Guarantees
//! - **All or nothing per commit.** One bad document (or a conflict) and
//!   nothing from the commit is written; the last good commit stays in
//!   force; `status.errors` names file, document, object and field of every
//!   error, and a Warning event says the same.
//! - **Ownership.** Objects applied carry the owner label. An existing
//!   object without it (made by hand) or with another source's is a
//!   conflict, never taken over. The one exception: an object in this
//!   source's inventory whose label someone removed (by re-applying it by
//!   hand) is drift, and the label is put back.
//! - **Prune** deletes only objects with this source's label, through the
//!   normal delete path (finalizers run), and only after a fully valid commit.
//!   A folder with no documents at all is refused (as Argo CD's `allowEmpty:
//!   false`): pointing at the wrong folder must not delete everything.
//! - **Drift.** Between syncs, when owned objects change (seen in the change
//!   log), they are compared with the applied commit; `status.drift` and the
//!   `Drifted` condition name the objects and fields. The next sync reverts
//!   them with a `DriftReverted` event naming the fields. Power intents
//!   (`berth start/stop`, autostop, autostart) are not in spec and so never
//!   drift.
//! - **No phantom diffs.** Both sides are compared in normalised form
//!   (decoded with defaults filled in, maps compared by key), so a freshly
//!   synced source is in sync.
//! - **Unreachable repositories** leave the last good state in force:
//!   `Ready=False` with git's error, nothing deleted.
//!
//! # Caveats
//! - Workspaces in git must name `spec.owner` (nobody applies them to
//!   default it to).
//! - A `GitSource` cannot be synced from git itself.
//! - Deleting a `GitSource` leaves the objects it applied (their label
//!   stays; a new source with the same namespace and name adopts them).
//! - Several operator replicas each run the loop; applies are transactional
//!   and idempotent, so the cost is duplicate git fetches, not damage.

pub mod git;
pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use self::git::{GitError, Mirror};
use self::plan::{Desired, Key};
use crate::api::gitsource::{normalise_folder, DriftedObject, SyncError};
use crate::api::meta::ConditionStatus;
use crate::api::selector::Selector;
use crate::api::{Condition, DynObject, GitSourceSpec, GitSourceStatus, Kind};
use crate::apply::{self, ApplyError, ApplyOptions, Manager, Prune};
use crate::store::{EventType, Identity, InvolvedObject, Store, StoreError, WatchFilter};

/// The label on every object a GitSource applied: `<namespace>.<name>`.
pub const OWNER_LABEL: &str = "berth.dev/gitsource";
/// Annotation `berth sync` sets (a timestamp); a new value syncs at once.
pub const SYNC_REQUEST_ANNOTATION: &str = "berth.dev/sync-requested-at";
/// The event source of this controller.
const SOURCE: &str = "gitsource-controller";
/// Most errors kept in status (every one is in the event log's message too, up to this).
const MAX_STATUS_ERRORS: usize = 500;
/// Most drifted objects listed in status.
const MAX_STATUS_DRIFT: usize = 200;

/// Why a sync could not run at all (git and document problems are not
/// errors: they are recorded in the source's status).
#[derive(Debug, thiserror::Error)]
pub enum GitOpsError {
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// The GitSource does not exist.
    #[error("gitsources/{0} not found")]
    NotFound(String),
    /// The stored GitSource could not be decoded.
    #[error("stored gitsource {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct GitOpsOptions {
    /// Where bare mirrors are kept (one per source, by uid).
    pub cache_dir: PathBuf,
    /// How often the loop looks for due sources, sync requests and drift.
    pub tick: Duration,
    /// Longest a git command may run.
    pub git_timeout: Duration,
}

impl Default for GitOpsOptions {
    fn default() -> Self {
        GitOpsOptions {
            cache_dir: std::env::temp_dir().join("berth-gitops"),
            tick: Duration::from_secs(1),
            git_timeout: Duration::from_secs(120),
        }
    }
}

/// What one sync did.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncOutcome {
    /// `spec.suspend` is set; nothing was fetched or applied.
    Suspended,
    /// The repository could not be fetched or the branch resolved.
    FetchFailed(String),
    /// The commit was rejected; nothing was written.
    Rejected(Vec<SyncError>),
    /// The store already matched the commit; nothing was written.
    Unchanged,
    /// The commit was applied.
    Applied {
        /// Objects created.
        created: usize,
        /// Objects changed.
        configured: usize,
        /// Objects pruned (deleted or deleting).
        pruned: usize,
    },
}

/// The result of [`Controller::sync`].
#[derive(Clone, Debug)]
pub struct SyncReport {
    /// What happened.
    pub outcome: SyncOutcome,
    /// The commit of the branch, when it was resolved.
    pub commit: Option<String>,
    /// Drift that this sync reverted.
    pub reverted: Vec<DriftedObject>,
    /// Whether the source's status was written.
    pub status_written: bool,
}

#[derive(Default)]
struct SourceState {
    next_due: Option<Instant>,
    /// The newest commit read, with its documents (avoids re-reading git
    /// when the branch has not moved).
    desired: Option<std::sync::Arc<Desired>>,
}

/// The GitSource controller: call [`Controller::sync`] for one source, or
/// [`Controller::run`] for the loop.
pub struct Controller {
    store: Store,
    opts: GitOpsOptions,
    sources: HashMap<Uuid, SourceState>,
    drift_seen: i64,
}

fn owner_value(ns: &str, name: &str) -> String {
    format!("{ns}.{name}")
}

fn identity(ns: &str, name: &str) -> Identity {
    Identity {
        user: format!("gitsource:{ns}/{name}"),
        admin: true,
    }
}

fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let now = Utc::now();
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

fn summary_of(errors: &[SyncError]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

fn drift_message(drift: &[DriftedObject]) -> String {
    let mut parts: Vec<String> = drift
        .iter()
        .take(10)
        .map(|d| format!("{} ({})", d.object, d.fields.join(", ")))
        .collect();
    if drift.len() > 10 {
        parts.push(format!("and {} more", drift.len() - 10));
    }
    parts.join("; ")
}

impl Controller {
    /// A controller on `store`.
    pub fn new(store: Store, opts: GitOpsOptions) -> Controller {
        Controller {
            store,
            opts,
            sources: HashMap::new(),
            drift_seen: 0,
        }
    }

    async fn load(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<(DynObject, GitSourceSpec, GitSourceStatus), GitOpsError> {
        let obj = self
            .store
            .object_get(Kind::GitSource, ns, name)
            .await?
            .ok_or_else(|| GitOpsError::NotFound(format!("{ns}/{name}")))?;
        let spec: GitSourceSpec = serde_json::from_value(obj.spec.clone())
            .map_err(|e| GitOpsError::Corrupt(format!("{ns}/{name}"), e.to_string()))?;
        let status: GitSourceStatus =
            if obj.status.is_null() || obj.status.as_object().is_some_and(|m| m.is_empty()) {
                GitSourceStatus::default()
            } else {
                serde_json::from_value(obj.status.clone()).unwrap_or_default()
            };
        Ok((obj, spec, status))
    }

    async fn write_status(
        &self,
        obj: &DynObject,
        status: &GitSourceStatus,
    ) -> Result<bool, GitOpsError> {
        let v = serde_json::to_value(status).unwrap_or(Value::Null);
        if v == obj.status {
            return Ok(false);
        }
        match self
            .store
            .object_update_status(
                Kind::GitSource,
                &obj.metadata.namespace,
                &obj.metadata.name,
                &v,
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn event(&self, obj: &DynObject, type_: EventType, reason: &str, message: &str) {
        let Some(uid) = obj.metadata.uid else { return };
        let involved = InvolvedObject {
            kind: Kind::GitSource.as_str().into(),
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone(),
            uid,
        };
        if let Err(e) = self
            .store
            .event_record(&involved, type_, reason, message, SOURCE)
            .await
        {
            tracing::warn!(error = %e, "cannot record gitsource event");
        }
    }

    fn mirror(&self, obj: &DynObject) -> Mirror {
        let dir = self.opts.cache_dir.join(
            obj.metadata
                .uid
                .map(|u| u.simple().to_string())
                .unwrap_or_default(),
        );
        Mirror::new(dir, self.opts.git_timeout)
    }

    /// Stored objects of the kinds a commit may declare, by key.
    async fn stored(&self) -> Result<HashMap<Key, DynObject>, GitOpsError> {
        let mut out = HashMap::new();
        for kind in [
            Kind::LifecyclePolicy,
            Kind::WorkspaceTemplate,
            Kind::Workspace,
        ] {
            let (items, _) = self
                .store
                .object_list(kind, None, &Selector::default(), None)
                .await?;
            for o in items {
                out.insert(
                    (kind, o.metadata.namespace.clone(), o.metadata.name.clone()),
                    o,
                );
            }
        }
        Ok(out)
    }

    /// The documents of `commit`, from memory when the commit was read before.
    async fn read_commit(
        &mut self,
        obj: &DynObject,
        spec: &GitSourceSpec,
        commit: &str,
    ) -> Result<std::sync::Arc<Desired>, GitError> {
        let uid = obj.metadata.uid.unwrap_or_default();
        if let Some(d) = self.sources.get(&uid).and_then(|s| s.desired.clone()) {
            if d.commit == commit {
                return Ok(d);
            }
        }
        let folder = normalise_folder(&spec.path);
        let files = self.mirror(obj).read_manifests(commit, &folder).await?;
        let (ns, name) = (&obj.metadata.namespace, &obj.metadata.name);
        let mut d = plan::desired(commit, &files, ns, OWNER_LABEL, &owner_value(ns, name));
        if d.docs.is_empty() && d.errors.is_empty() {
            d.errors.push(SyncError {
                file: if folder.is_empty() { ".".into() } else { folder.clone() },
                message: "has no YAML documents; refusing to apply an empty commit (it would prune everything this source applied). Check spec.path".into(),
                ..Default::default()
            });
        }
        let d = std::sync::Arc::new(d);
        self.sources.entry(uid).or_default().desired = Some(d.clone());
        Ok(d)
    }

    /// Syncs one source now, whatever its schedule. See the module docs.
    pub async fn sync(&mut self, ns: &str, name: &str) -> Result<SyncReport, GitOpsError> {
        let (obj, spec, old) = self.load(ns, name).await?;
        let generation = obj.metadata.generation.unwrap_or(0);
        let mut st = old.clone();
        st.observed_generation = generation;
        st.last_handled_sync_request = obj
            .metadata
            .annotations
            .get(SYNC_REQUEST_ANNOTATION)
            .cloned();
        let mut report = SyncReport {
            outcome: SyncOutcome::Unchanged,
            commit: None,
            reverted: Vec::new(),
            status_written: false,
        };
        if spec.suspend {
            set_condition(
                &mut st.conditions,
                "Synced",
                ConditionStatus::Unknown,
                "Suspended",
                "syncing is suspended (spec.suspend); the last applied commit stays in force",
                generation,
            );
            report.outcome = SyncOutcome::Suspended;
            report.status_written = self.write_status(&obj, &st).await?;
            return Ok(report);
        }

        // 1. Fetch and resolve.
        let mirror = self.mirror(&obj);
        let fetched = match mirror.fetch(&spec.repository).await {
            Ok(()) => mirror.resolve(&spec.branch).await,
            Err(e) => Err(e),
        };
        let commit = match fetched {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "cannot fetch {} branch {}: {e}",
                    spec.repository, spec.branch
                );
                set_condition(
                    &mut st.conditions,
                    "Ready",
                    ConditionStatus::False,
                    "FetchFailed",
                    &msg,
                    generation,
                );
                set_condition(
                    &mut st.conditions,
                    "Synced",
                    ConditionStatus::Unknown,
                    "FetchFailed",
                    "the repository cannot be read; the last applied commit stays in force",
                    generation,
                );
                report.status_written = self.write_status(&obj, &st).await?;
                if report.status_written {
                    self.event(&obj, EventType::Warning, "FetchFailed", &msg)
                        .await;
                }
                report.outcome = SyncOutcome::FetchFailed(msg);
                return Ok(report);
            }
        };
        report.commit = Some(commit.clone());
        let short = git::short(&commit);

        // 2. Read the commit.
        let desired = match self.read_commit(&obj, &spec, &commit).await {
            Ok(d) => d,
            Err(e) => {
                let errors = vec![SyncError {
                    message: e.to_string(),
                    ..Default::default()
                }];
                return self.reject(&obj, st, &commit, errors, report).await;
            }
        };
        if !desired.errors.is_empty() {
            let errors = desired.errors.clone();
            return self.reject(&obj, st, &commit, errors, report).await;
        }

        // 3. Compare.
        let value = owner_value(ns, name);
        let inventory: BTreeSet<String> = old.inventory.iter().cloned().collect();
        let stored = self.stored().await?;
        let p = plan::plan(
            &desired,
            &stored,
            OWNER_LABEL,
            &value,
            &inventory,
            spec.prune,
        );
        let inventory_now: Vec<String> = desired.keys().iter().map(plan::reference).collect();
        let prior_drift: BTreeSet<&str> = old.drift.iter().map(|d| d.object.as_str()).collect();
        let same_commit = old.last_applied_commit.as_deref() == Some(commit.as_str());
        let reverted: Vec<DriftedObject> = p
            .drift()
            .into_iter()
            .filter(|d| same_commit || prior_drift.contains(d.object.as_str()))
            .filter(|d| inventory.contains(&d.object))
            .collect();

        if !p.is_noop() {
            // 4. Apply the commit as one unit (objects still being deleted
            // wait). When only workspaces differ, only their documents are
            // sent: the others are stored exactly as declared and nothing
            // else is checked against a workspace. A changed template or
            // policy sends the whole commit, so every workspace is checked
            // against it.
            let touched: BTreeSet<&Key> = p
                .create
                .iter()
                .chain(p.change.iter().map(|(k, _)| k))
                .chain(&p.conflict)
                .collect();
            let only_workspaces = touched.iter().all(|k| k.0 == Kind::Workspace);
            let waiting: BTreeSet<&Key> = p.waiting.iter().collect();
            let mut docs = Vec::with_capacity(desired.docs.len());
            let mut index = Vec::with_capacity(desired.docs.len());
            for (i, (doc, o)) in desired.docs.iter().zip(&desired.objects).enumerate() {
                let key = o
                    .as_ref()
                    .map(|(k, o)| (*k, o.metadata.namespace.clone(), o.metadata.name.clone()));
                let skip = key.as_ref().is_some_and(|k| {
                    waiting.contains(k) || (only_workspaces && !touched.contains(k))
                });
                if !skip {
                    docs.push(doc.clone());
                    index.push(i);
                }
            }
            let manager = Manager {
                label: OWNER_LABEL.into(),
                value: value.clone(),
                adoptable: old
                    .inventory
                    .iter()
                    .filter_map(|r| parse_reference(r))
                    .collect(),
            };
            let prune = Prune {
                selector: Selector(vec![crate::api::selector::Requirement::Equals(
                    OWNER_LABEL.into(),
                    value.clone(),
                )]),
                namespaces: None,
                keep: desired.keys(),
            };
            let opts = ApplyOptions {
                dry_run: false,
                manager: Some(&manager),
                prune: spec.prune.then_some(&prune),
            };
            match apply::apply_with(&self.store, &identity(ns, name), &docs, &opts).await {
                Ok(out) => {
                    let count = |a: &str| out.results.iter().filter(|r| r.action == a).count();
                    let (created, configured) = (count("created"), count("configured"));
                    let pruned = out.pruned.iter().filter(|r| r.action != "kept").count();
                    report.outcome = SyncOutcome::Applied {
                        created,
                        configured,
                        pruned,
                    };
                    let mut msg = format!(
                        "applied commit {short}: {created} created, {configured} configured, {pruned} pruned"
                    );
                    let kept: Vec<String> = out
                        .pruned
                        .iter()
                        .filter(|r| r.action == "kept")
                        .map(|r| format!("{}/{}: {}", r.kind, r.name, r.message))
                        .collect();
                    if !kept.is_empty() {
                        msg.push_str(&format!("; not pruned yet: {}", kept.join("; ")));
                    }
                    if !p.waiting.is_empty() {
                        msg.push_str(&format!(
                            "; waiting for {} object(s) being deleted before re-creating them",
                            p.waiting.len()
                        ));
                    }
                    if !same_commit {
                        self.event(&obj, EventType::Normal, "Applied", &msg).await;
                    }
                    if !reverted.is_empty() {
                        let m = format!("reverted drift: {}", drift_message(&reverted));
                        self.event(&obj, EventType::Normal, "DriftReverted", &m)
                            .await;
                    }
                    st.last_applied_at = Some(Utc::now());
                    self.succeed(&mut st, &commit, &msg, inventory_now, generation);
                    report.reverted = reverted;
                }
                Err(ApplyError::Store(e)) => return Err(e.into()),
                Err(
                    ApplyError::Invalid(errs)
                    | ApplyError::Conflict(errs)
                    | ApplyError::Forbidden(errs),
                ) => {
                    let errors = errs
                        .iter()
                        .map(|e| {
                            let mut fe = e.clone();
                            fe.document = e.document.and_then(|d| index.get(d).copied());
                            desired.locate(&fe)
                        })
                        .collect();
                    return self.reject(&obj, st, &commit, errors, report).await;
                }
            }
        } else {
            let msg = match &old.last_applied_commit {
                Some(c) if c == &commit => old
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| format!("applied commit {short}")),
                _ => format!("applied commit {short}: the store already matched it"),
            };
            if old.last_applied_commit.as_deref() != Some(commit.as_str()) {
                st.last_applied_at = Some(Utc::now());
            }
            self.succeed(&mut st, &commit, &msg, inventory_now, generation);
        }
        report.status_written = self.write_status(&obj, &st).await?;
        Ok(report)
    }

    fn succeed(
        &self,
        st: &mut GitSourceStatus,
        commit: &str,
        msg: &str,
        inventory: Vec<String>,
        generation: i64,
    ) {
        st.last_applied_commit = Some(commit.to_string());
        st.last_attempted_commit = Some(commit.to_string());
        st.errors.clear();
        st.drift.clear();
        st.inventory = inventory;
        set_condition(
            &mut st.conditions,
            "Ready",
            ConditionStatus::True,
            "Applied",
            msg,
            generation,
        );
        set_condition(
            &mut st.conditions,
            "Synced",
            ConditionStatus::True,
            "InSync",
            &format!("the store matches commit {}", git::short(commit)),
            generation,
        );
        set_condition(
            &mut st.conditions,
            "Drifted",
            ConditionStatus::False,
            "InSync",
            "owned objects match the applied commit",
            generation,
        );
    }

    async fn reject(
        &self,
        obj: &DynObject,
        mut st: GitSourceStatus,
        commit: &str,
        mut errors: Vec<SyncError>,
        mut report: SyncReport,
    ) -> Result<SyncReport, GitOpsError> {
        let generation = obj.metadata.generation.unwrap_or(0);
        let total = errors.len();
        let short = git::short(commit);
        let msg = format!(
            "commit {short} rejected, nothing applied ({total} error(s)): {}",
            summary_of(&errors)
        );
        if errors.len() > MAX_STATUS_ERRORS {
            errors.truncate(MAX_STATUS_ERRORS);
            errors.push(SyncError {
                message: format!("and {} more errors", total - MAX_STATUS_ERRORS),
                ..Default::default()
            });
        }
        st.last_attempted_commit = Some(commit.to_string());
        st.errors = errors.clone();
        set_condition(
            &mut st.conditions,
            "Ready",
            ConditionStatus::False,
            "CommitRejected",
            &msg,
            generation,
        );
        let in_force = match &st.last_applied_commit {
            Some(c) => format!(
                "commit {short} was rejected; commit {} stays in force",
                git::short(c)
            ),
            None => format!("commit {short} was rejected; nothing has been applied yet"),
        };
        set_condition(
            &mut st.conditions,
            "Synced",
            ConditionStatus::False,
            "CommitRejected",
            &in_force,
            generation,
        );
        report.status_written = self.write_status(obj, &st).await?;
        if report.status_written {
            let lines: Vec<String> = errors.iter().take(20).map(ToString::to_string).collect();
            let event = format!(
                "commit {short} rejected, nothing applied: {}",
                lines.join("; ")
            );
            self.event(obj, EventType::Warning, "CommitRejected", &event)
                .await;
        }
        report.outcome = SyncOutcome::Rejected(errors);
        Ok(report)
    }

    /// Compares the owned objects with the applied commit and records drift
    /// in status (without reverting it). Returns the drift.
    pub async fn check_drift(
        &mut self,
        ns: &str,
        name: &str,
    ) -> Result<Vec<DriftedObject>, GitOpsError> {
        let (obj, spec, old) = self.load(ns, name).await?;
        let Some(commit) = old.last_applied_commit.clone() else {
            return Ok(Vec::new());
        };
        if spec.suspend {
            return Ok(old.drift);
        }
        let desired = match self.read_commit(&obj, &spec, &commit).await {
            Ok(d) if d.errors.is_empty() => d,
            _ => return Ok(old.drift),
        };
        let value = owner_value(ns, name);
        let inventory: BTreeSet<String> = old.inventory.iter().cloned().collect();
        let stored = self.stored().await?;
        let p = plan::plan(&desired, &stored, OWNER_LABEL, &value, &inventory, false);
        let mut drift: Vec<DriftedObject> = p
            .drift()
            .into_iter()
            .filter(|d| inventory.contains(&d.object))
            .collect();
        let generation = obj.metadata.generation.unwrap_or(0);
        let mut st = old.clone();
        let (status, reason, msg) = if drift.is_empty() {
            (
                ConditionStatus::False,
                "InSync",
                "owned objects match the applied commit".to_string(),
            )
        } else {
            (
                ConditionStatus::True,
                "Drifted",
                format!(
                    "{} object(s) differ from commit {} and will be reverted at the next sync: {}",
                    drift.len(),
                    git::short(&commit),
                    drift_message(&drift)
                ),
            )
        };
        set_condition(
            &mut st.conditions,
            "Drifted",
            status,
            reason,
            &msg,
            generation,
        );
        // A rejected newer commit keeps its own Synced=False.
        if st.last_attempted_commit == st.last_applied_commit {
            let (synced, synced_msg) = if drift.is_empty() {
                (
                    ConditionStatus::True,
                    format!("the store matches commit {}", git::short(&commit)),
                )
            } else {
                (ConditionStatus::False, msg.clone())
            };
            set_condition(
                &mut st.conditions,
                "Synced",
                synced,
                reason,
                &synced_msg,
                generation,
            );
        }
        drift.truncate(MAX_STATUS_DRIFT);
        st.drift = drift.clone();
        if self.write_status(&obj, &st).await? && !drift.is_empty() {
            self.event(&obj, EventType::Warning, "DriftDetected", &msg)
                .await;
        }
        Ok(drift)
    }

    /// One pass of the loop: syncs the sources that are due (interval
    /// passed, spec changed, or `berth sync` requested), and checks drift of
    /// the others when objects they own changed.
    pub async fn tick(&mut self) -> Result<(), GitOpsError> {
        let (sources, _) = self
            .store
            .object_list(Kind::GitSource, None, &Selector::default(), None)
            .await?;
        let touched = self.changed_objects().await?;
        let now = Instant::now();
        let mut live = BTreeSet::new();
        for gs in sources {
            let Some(uid) = gs.metadata.uid else { continue };
            live.insert(uid);
            if gs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = (gs.metadata.namespace.clone(), gs.metadata.name.clone());
            let spec: Option<GitSourceSpec> = serde_json::from_value(gs.spec.clone()).ok();
            let status: GitSourceStatus =
                serde_json::from_value(gs.status.clone()).unwrap_or_default();
            let Some(spec) = spec else { continue };
            let interval =
                crate::api::validate::duration(&spec.interval).unwrap_or(Duration::from_secs(60));
            let requested = gs.metadata.annotations.get(SYNC_REQUEST_ANNOTATION);
            let state = self.sources.entry(uid).or_default();
            let due = state.next_due.is_none_or(|t| now >= t)
                || requested.is_some() && requested != status.last_handled_sync_request.as_ref()
                || gs.metadata.generation != Some(status.observed_generation);
            if due {
                state.next_due = Some(now + interval);
                // A bug in one source's sync must not stop the others'.
                let synced = {
                    use futures_util::FutureExt as _;
                    std::panic::AssertUnwindSafe(self.sync(&ns, &name))
                        .catch_unwind()
                        .await
                };
                match synced {
                    Ok(Ok(r)) => {
                        tracing::debug!(gitsource = %format!("{ns}/{name}"), outcome = ?r.outcome, "gitsource synced")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(gitsource = %format!("{ns}/{name}"), error = %e, "gitsource sync failed")
                    }
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(gitsource = %format!("{ns}/{name}"), panic = %msg, "gitsource sync panicked; the others go on");
                        let involved = crate::store::InvolvedObject {
                            kind: "GitSource".into(),
                            namespace: ns.clone(),
                            name: name.clone(),
                            uid,
                        };
                        let _ = self
                            .store
                            .event_record(
                                &involved,
                                crate::store::EventType::Warning,
                                "SyncPanicked",
                                &format!("the GitSource controller hit a bug syncing this source ({msg}); retrying at the next interval"),
                                "gitops",
                            )
                            .await;
                    }
                }
            } else if !spec.suspend && status.inventory.iter().any(|r| touched.contains(r)) {
                if let Err(e) = self.check_drift(&ns, &name).await {
                    tracing::warn!(gitsource = %format!("{ns}/{name}"), error = %e, "gitsource drift check failed");
                }
            }
        }
        self.sources.retain(|uid, _| live.contains(uid));
        Ok(())
    }

    /// References of objects whose spec, labels or annotations changed (or
    /// that were deleted) since the last call.
    async fn changed_objects(&mut self) -> Result<BTreeSet<String>, GitOpsError> {
        let mut out = BTreeSet::new();
        let current = self.store.revision_current().await?;
        if self.drift_seen == 0 || current <= self.drift_seen {
            self.drift_seen = current;
            return Ok(out);
        }
        let filter = WatchFilter {
            kinds: vec![
                Kind::LifecyclePolicy,
                Kind::WorkspaceTemplate,
                Kind::Workspace,
            ],
            // Status writes are never drift.
            skip_status_writes: true,
            ..Default::default()
        };
        match self
            .store
            .changes_since(&filter, self.drift_seen, 20_000)
            .await
        {
            Ok((changes, last)) => {
                for c in changes {
                    if matches!(c.write.as_str(), "spec" | "delete") {
                        if let Some(k) = c.object.kind() {
                            out.insert(format!(
                                "{}/{}/{}",
                                k.plural(),
                                c.object.metadata.namespace,
                                c.object.metadata.name
                            ));
                        }
                    }
                }
                self.drift_seen = last.max(self.drift_seen);
            }
            Err(StoreError::Gone(_)) => self.drift_seen = current,
            Err(e) => return Err(e.into()),
        }
        Ok(out)
    }

    /// Runs the loop until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "gitsource controller pass failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.opts.tick) => {}
            }
        }
    }
}

fn parse_reference(r: &str) -> Option<Key> {
    let mut it = r.splitn(3, '/');
    let (plural, ns, name) = (it.next()?, it.next()?, it.next()?);
    let kind = Kind::ALL.into_iter().find(|k| k.plural() == plural)?;
    Some((kind, ns.to_string(), name.to_string()))
}
