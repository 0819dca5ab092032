//! The apply engine: validates a set of documents and writes them as one
//! unit. Shared by the HTTP API (`berth apply`) and GitOps.
//!
//! # Expected flow
//! 1. Every document is decoded and checked on its own ([`api::validate::decode`]).
//! 2. Duplicates within the request and permissions are checked.
//! 3. In one transaction, in apply order (policies, templates, workspaces),
//!    each object is checked against the store and the objects before it
//!    (a workspace against the template version it uses, immutable
//!    parameters against the stored workspace, one policy per namespace) and
//!    written.
//! 4. If anything failed, the transaction is rolled back and every error of
//!    every document is returned; with `dry_run` it is rolled back anyway.
//!
//! 5. With [`ApplyOptions::prune`], after the writes and in the same
//!    transaction, objects matching the prune selector that the request does
//!    not contain are deleted through the normal delete path (finalizers
//!    hold them until controllers finish), workspaces before templates
//!    before policies.
//!
//! # Guarantees
//! - All or nothing: one bad document means nothing is written and nothing
//!   is pruned.
//! - Idempotent: an unchanged document writes nothing and bumps nothing.
//! - With a [`Manager`] (GitOps), every object written carries the
//!   manager's label, and an existing object that carries no such label or
//!   another manager's is a conflict: it is never taken over silently.
//! - Prune never deletes what the caller could not delete by hand (users:
//!   their own workspaces only), nor a template still used by workspaces
//!   (that one is reported as kept and pruned by a later apply).

use std::collections::BTreeSet;

use crate::api::selector::Selector;

use serde::Serialize;
use serde_json::Value;

use crate::api::template::WorkspaceTemplateSpec;
use crate::api::validate::{self, Errors, FieldError};
use crate::api::{DynObject, Kind, WorkspaceSpec};
use crate::store::{self, Identity, PowerAction, Store, StoreError};

/// The result of applying one object.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyResult {
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub action: &'static str,
    /// The object as stored (or as it would be, on a dry run).
    pub object: DynObject,
}

/// One object deleted (or kept) by prune.
#[derive(Clone, Debug, Serialize)]
pub struct PruneResult {
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `deleted`, `deleting` (finalizers hold it) or `kept` (see `message`).
    pub action: &'static str,
    /// Why it was kept.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Who manages the objects of an apply (GitOps ownership).
#[derive(Clone, Debug, Default)]
pub struct Manager {
    /// The label every written object carries (`berth.dev/gitsource`).
    pub label: String,
    /// Its value (`default.team`).
    pub value: String,
    /// Objects this manager applied before (its inventory) that may be
    /// relabelled without a conflict when someone removed the label.
    pub adoptable: BTreeSet<(Kind, String, String)>,
}

/// What prune may delete.
#[derive(Clone, Debug, Default)]
pub struct Prune {
    /// Only objects matching this (never empty for people's applies).
    pub selector: Selector,
    /// Only in these namespaces; `None` = every namespace.
    pub namespaces: Option<BTreeSet<String>>,
    /// Objects to keep besides those in the request (GitOps sends only the
    /// documents that changed; the rest of the commit is kept).
    pub keep: BTreeSet<(Kind, String, String)>,
}

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions<'a> {
    /// Validate and report without writing.
    pub dry_run: bool,
    /// Label objects and refuse to take over others' (GitOps).
    pub manager: Option<&'a Manager>,
    /// Delete matching objects the request no longer contains.
    pub prune: Option<&'a Prune>,
}

/// What an apply did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApplyOutcome {
    /// One per document, in apply order.
    pub results: Vec<ApplyResult>,
    /// Objects pruned (or kept), with prune.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<PruneResult>,
}

/// Why an apply wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// One or more documents are invalid.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The caller may not write one or more of the objects.
    #[error("forbidden")]
    Forbidden(Vec<FieldError>),
    /// A stale `resourceVersion`, an object being deleted, or a concurrent write.
    #[error("conflict")]
    Conflict(Vec<FieldError>),
    /// The store failed.
    #[error("store error")]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct Problems {
    invalid: Vec<FieldError>,
    forbidden: Vec<FieldError>,
    conflict: Vec<FieldError>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.invalid.is_empty() && self.forbidden.is_empty() && self.conflict.is_empty()
    }

    fn into_error(self) -> ApplyError {
        // The most fundamental problem decides the status code; every cause is reported.
        if !self.forbidden.is_empty() {
            let mut all = self.forbidden;
            all.extend(self.conflict);
            all.extend(self.invalid);
            ApplyError::Forbidden(all)
        } else if !self.conflict.is_empty() {
            let mut all = self.conflict;
            all.extend(self.invalid);
            ApplyError::Conflict(all)
        } else {
            ApplyError::Invalid(self.invalid)
        }
    }
}

fn err(obj: &DynObject, doc: usize, field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        object: obj.reference(),
        field: field.to_string(),
        message: message.into(),
        document: Some(doc),
    }
}

/// Applies `docs` (parsed documents) as `who`. See the module docs.
pub async fn apply(
    store: &Store,
    who: &Identity,
    docs: &[Value],
    dry_run: bool,
) -> Result<Vec<ApplyResult>, ApplyError> {
    let opts = ApplyOptions {
        dry_run,
        ..Default::default()
    };
    Ok(apply_with(store, who, docs, &opts).await?.results)
}

/// Applies `docs` as `who` with ownership and prune. See the module docs.
pub async fn apply_with(
    store: &Store,
    who: &Identity,
    docs: &[Value],
    opts: &ApplyOptions<'_>,
) -> Result<ApplyOutcome, ApplyError> {
    let dry_run = opts.dry_run;
    let mut p = Problems::default();
    let mut objects: Vec<(usize, Kind, DynObject)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, doc) in docs.iter().enumerate() {
        match validate::decode(doc, Some(i)) {
            Ok((kind, mut obj)) => {
                if let Some(m) = opts.manager {
                    obj.metadata.labels.insert(m.label.clone(), m.value.clone());
                }
                if let Some(pr) = opts.prune {
                    if !pr.selector.matches(&obj.metadata.labels) {
                        p.invalid.push(err(
                            &obj,
                            i,
                            "metadata.labels",
                            "does not match the prune selector; an apply with --prune would delete it next time (add the labels or change -l)",
                        ));
                        continue;
                    }
                }
                let key = (
                    kind,
                    obj.metadata.namespace.clone(),
                    obj.metadata.name.clone(),
                );
                if !seen.insert(key) {
                    p.invalid.push(err(
                        &obj,
                        i,
                        "metadata.name",
                        "appears more than once in this request",
                    ));
                    continue;
                }
                if kind != Kind::Workspace && !who.admin {
                    p.forbidden.push(err(
                        &obj,
                        i,
                        "",
                        format!(
                            "user {:?} may not write {}; only admins can",
                            who.user,
                            kind.plural()
                        ),
                    ));
                    continue;
                }
                objects.push((i, kind, obj));
            }
            Err(validate::Invalid(errs)) => p.invalid.extend(errs),
        }
    }
    if docs.is_empty() && opts.prune.is_none() {
        p.invalid.push(FieldError {
            object: "request".into(),
            field: String::new(),
            message: "no documents to apply".into(),
            document: None,
        });
    }
    objects.sort_by_key(|(i, k, _)| (k.apply_order(), *i));

    let mut tx = store.pool().begin().await.map_err(StoreError::from)?;
    let mut results = Vec::with_capacity(objects.len());
    let mut templates = TemplateCache::default();
    for (i, kind, mut obj) in objects {
        let (ns, name) = (obj.metadata.namespace.clone(), obj.metadata.name.clone());
        let existing = store::get_for_update(&mut tx, kind, &ns, &name).await?;
        if let Some(ex) = &existing {
            if ex.metadata.deletion_timestamp.is_some() {
                p.conflict.push(err(
                    &obj,
                    i,
                    "",
                    "is being deleted; wait until it is gone before applying it again",
                ));
                continue;
            }
            if let Some(want) = obj.metadata.resource_version.as_deref() {
                if want != ex.metadata.resource_version.as_deref().unwrap_or_default() {
                    p.conflict.push(err(
                        &obj,
                        i,
                        "metadata.resourceVersion",
                        format!(
                            "{want} is stale (current is {}); the object changed since you read it",
                            ex.metadata.resource_version.as_deref().unwrap_or("?")
                        ),
                    ));
                    continue;
                }
            }
            if let Some(m) = opts.manager {
                let holder = ex.metadata.labels.get(&m.label);
                let adoptable = m.adoptable.contains(&(kind, ns.clone(), name.clone()));
                if holder != Some(&m.value) && !(holder.is_none() && adoptable) {
                    let who_has = match holder {
                        Some(other) => {
                            format!("is managed by gitsource {}", other.replacen('.', "/", 1))
                        }
                        None => "exists and is not managed by this source (created by hand?)"
                            .to_string(),
                    };
                    p.conflict.push(err(
                        &obj,
                        i,
                        &format!("metadata.labels.{}", m.label),
                        format!(
                            "{who_has}; it is not taken over: delete it, or label it {}={} to hand it over",
                            m.label, m.value
                        ),
                    ));
                    continue;
                }
            }
        } else if obj.metadata.resource_version.is_some() {
            p.conflict.push(err(
                &obj,
                i,
                "metadata.resourceVersion",
                "is set, but the object does not exist (it was deleted?)",
            ));
            continue;
        }
        let mut status = None;
        match kind {
            Kind::Workspace => {
                if !check_workspace(
                    &mut tx,
                    who,
                    &mut obj,
                    existing.as_ref(),
                    i,
                    &mut p,
                    &mut templates,
                )
                .await?
                {
                    continue;
                }
            }
            Kind::WorkspaceTemplate => {
                let spec_changed = existing.as_ref().is_none_or(|e| e.spec != obj.spec);
                if spec_changed {
                    let version = store::latest_version_tx(&mut tx, &ns, &name).await? + 1;
                    let generation = existing
                        .as_ref()
                        .and_then(|e| e.metadata.generation)
                        .unwrap_or(0)
                        + 1;
                    let mut st = existing
                        .as_ref()
                        .map(|e| e.status.clone())
                        .unwrap_or(Value::Null);
                    if !st.is_object() {
                        st = Value::Object(Default::default());
                    }
                    st["latestVersion"] = version.into();
                    st["observedGeneration"] = generation.into();
                    status = Some((version, st));
                }
            }
            Kind::GitSource => {}
            Kind::LifecyclePolicy => {
                if existing.is_none() {
                    let other: Option<String> = sqlx::query_scalar(
                        "SELECT name FROM objects WHERE kind = 'LifecyclePolicy' AND namespace = $1 AND name <> $2 LIMIT 1",
                    )
                    .bind(&ns)
                    .bind(&name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                    if let Some(other) = other {
                        p.invalid.push(err(
                            &obj,
                            i,
                            "metadata.name",
                            format!("namespace {ns:?} already has LifecyclePolicy {other:?}; there is one policy per namespace"),
                        ));
                        continue;
                    }
                }
            }
        }
        // Valid objects are written even after another document failed, so
        // that later documents are checked against them; the transaction is
        // rolled back at the end if anything failed.
        let (action, stored) = match store::write_spec(
            &mut tx,
            kind,
            &obj,
            existing.as_ref(),
            status.as_ref().map(|s| &s.1),
        )
        .await
        {
            Ok(r) => r,
            Err(e) if e.is_unique_violation() => {
                p.conflict.push(err(
                    &obj,
                    i,
                    "",
                    "was created concurrently by another request; retry",
                ));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some((version, _)), Some(uid)) = (&status, stored.metadata.uid) {
            store::insert_version_tx(&mut tx, &ns, &name, *version, uid, &stored.spec).await?;
        }
        if kind == Kind::Workspace {
            // A change of spec.running (or a new workspace) is a power intent;
            // re-applying unchanged YAML records none.
            let running = |o: &DynObject| {
                o.spec
                    .get("running")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
            };
            let now_running = running(&stored);
            if existing.as_ref().is_none_or(|e| running(e) != now_running) {
                if let Some(uid) = stored.metadata.uid {
                    let action = if now_running {
                        PowerAction::Start
                    } else {
                        PowerAction::Stop
                    };
                    let message = format!("spec.running set to {now_running} by {}", who.user);
                    let row = store::NewIntent::spec(action, &who.user, &message);
                    store::insert_intent_tx(&mut tx, uid, &row).await?;
                }
            }
        }
        results.push(ApplyResult {
            kind: kind.as_str().into(),
            namespace: ns,
            name,
            action: action.as_str(),
            object: stored,
        });
    }
    let mut pruned = Vec::new();
    if let (Some(pr), true) = (opts.prune, p.is_empty()) {
        pruned = prune(&mut tx, who, pr, &results).await?;
    }
    if !p.is_empty() {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(p.into_error());
    }
    if dry_run {
        tx.rollback().await.map_err(StoreError::from)?;
    } else {
        tx.commit().await.map_err(StoreError::from)?;
    }
    Ok(ApplyOutcome { results, pruned })
}

/// Deletes, inside the apply's transaction, the objects matching `pr` that
/// the apply did not write, in reverse apply order.
async fn prune(
    tx: &mut sqlx::PgConnection,
    who: &Identity,
    pr: &Prune,
    applied: &[ApplyResult],
) -> Result<Vec<PruneResult>, ApplyError> {
    let keep: BTreeSet<(&str, &str, &str)> = applied
        .iter()
        .map(|r| (r.kind.as_str(), r.namespace.as_str(), r.name.as_str()))
        .collect();
    let mut out = Vec::new();
    let mut kinds = Kind::ALL;
    kinds.sort_by_key(|k| std::cmp::Reverse(k.apply_order()));
    for kind in kinds {
        if kind != Kind::Workspace && !who.admin {
            continue;
        }
        let candidates = store::labelled_names(tx, kind, &pr.selector).await?;
        for (ns, name, owner, deleting) in candidates {
            if keep.contains(&(kind.as_str(), ns.as_str(), name.as_str()))
                || pr.keep.contains(&(kind, ns.clone(), name.clone()))
                || deleting
            {
                continue;
            }
            if pr.namespaces.as_ref().is_some_and(|set| !set.contains(&ns)) {
                continue;
            }
            if !who.admin && owner.as_deref() != Some(who.user.as_str()) {
                continue;
            }
            let mut r = PruneResult {
                kind: kind.as_str().into(),
                namespace: ns.clone(),
                name: name.clone(),
                action: "deleted",
                message: String::new(),
            };
            match store::delete_tx(tx, kind, &ns, &name, None).await {
                Ok(store::DeleteOutcome::Deleted(_)) => {}
                Ok(store::DeleteOutcome::Terminating(_)) => r.action = "deleting",
                // A template still used (e.g. by workspaces being deleted
                // just now): a later prune removes it.
                Err(StoreError::Conflict(m)) => {
                    r.action = "kept";
                    r.message = m;
                }
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// Template versions read during one apply. Workspaces apply after every
/// template of the request, so what is read for the first workspace holds
/// for the rest (a large apply reads each template version once).
#[derive(Default)]
struct TemplateCache {
    latest: std::collections::HashMap<(String, String), i32>,
    specs: std::collections::HashMap<(String, String, i32), Option<Value>>,
}

/// Checks a workspace against ownership, its template and its stored
/// version; fills in the owner. Returns false when it recorded a problem.
async fn check_workspace(
    tx: &mut sqlx::PgConnection,
    who: &Identity,
    obj: &mut DynObject,
    existing: Option<&DynObject>,
    i: usize,
    p: &mut Problems,
    cache: &mut TemplateCache,
) -> Result<bool, ApplyError> {
    let mut spec: WorkspaceSpec = match serde_json::from_value(obj.spec.clone()) {
        Ok(s) => s,
        Err(e) => {
            p.invalid.push(err(obj, i, "spec", e.to_string()));
            return Ok(false);
        }
    };
    let previous: Option<WorkspaceSpec> =
        existing.and_then(|e| serde_json::from_value(e.spec.clone()).ok());
    if let Some(prev) = &previous {
        if !who.admin && prev.owner != who.user {
            p.forbidden.push(err(
                obj,
                i,
                "",
                format!(
                    "belongs to another user; user {:?} may not change it",
                    who.user
                ),
            ));
            return Ok(false);
        }
    }
    if spec.owner.is_empty() {
        spec.owner = previous
            .as_ref()
            .map(|p| p.owner.clone())
            .unwrap_or_else(|| who.user.clone());
    }
    if !who.admin && spec.owner != who.user {
        p.forbidden.push(err(
            obj,
            i,
            "spec.owner",
            format!(
                "user {:?} may only create workspaces they own (got {:?})",
                who.user, spec.owner
            ),
        ));
        return Ok(false);
    }
    if let Some(prev) = &previous {
        if prev.owner != spec.owner {
            p.invalid.push(err(
                obj,
                i,
                "spec.owner",
                format!("is immutable: the workspace belongs to {:?}", prev.owner),
            ));
            return Ok(false);
        }
    }
    let (ns, tname) = (obj.metadata.namespace.clone(), spec.template.name.clone());
    let tkey = (ns.clone(), tname.clone());
    let latest = match cache.latest.get(&tkey) {
        Some(v) => *v,
        None => {
            let v = store::latest_version_tx(tx, &ns, &tname).await?;
            cache.latest.insert(tkey, v);
            v
        }
    };
    if latest == 0 {
        p.invalid.push(err(
            obj,
            i,
            "spec.template.name",
            format!("template {tname:?} does not exist in namespace {ns:?}"),
        ));
        return Ok(false);
    }
    let version = spec.template.version.unwrap_or(latest);
    let vkey = (ns.clone(), tname.clone(), version);
    let tspec = match cache.specs.get(&vkey) {
        Some(v) => v.clone(),
        None => {
            let v = store::version_tx(tx, &ns, &tname, version).await?;
            cache.specs.insert(vkey, v.clone());
            v
        }
    };
    let Some(tspec) = tspec else {
        p.invalid.push(err(
            obj,
            i,
            "spec.template.version",
            format!("template {tname:?} has no version {version}; its versions are 1 to {latest}"),
        ));
        return Ok(false);
    };
    let tspec: WorkspaceTemplateSpec = match serde_json::from_value(tspec) {
        Ok(t) => t,
        Err(e) => {
            return Err(StoreError::Corrupt(
                format!("workspacetemplates/{tname} version {version}"),
                e.to_string(),
            )
            .into())
        }
    };
    let mut errs = Errors::new(obj.reference(), Some(i));
    validate::workspace_against_template(&mut errs, &spec, &tspec, previous.as_ref());
    if !errs.is_empty() {
        p.invalid.extend(errs.list);
        return Ok(false);
    }
    obj.spec = serde_json::to_value(&spec).unwrap_or(Value::Null);
    Ok(true)
}
