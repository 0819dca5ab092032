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
//! # Guarantees
//! - All or nothing: one bad document means nothing is written.
//! - Idempotent: an unchanged document writes nothing and bumps nothing.

use std::collections::BTreeSet;

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
    let mut p = Problems::default();
    let mut objects: Vec<(usize, Kind, DynObject)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, doc) in docs.iter().enumerate() {
        match validate::decode(doc, Some(i)) {
            Ok((kind, obj)) => {
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
    if docs.is_empty() {
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
                if !check_workspace(&mut tx, who, &mut obj, existing.as_ref(), i, &mut p).await? {
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
                    let row = store::intent_row(action, "Spec", &who.user, &message, None, None);
                    store::insert_intent_tx(&mut tx, uid, row).await?;
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
    if !p.is_empty() {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(p.into_error());
    }
    if dry_run {
        tx.rollback().await.map_err(StoreError::from)?;
    } else {
        tx.commit().await.map_err(StoreError::from)?;
    }
    Ok(results)
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
    let latest = store::latest_version_tx(tx, &ns, &tname).await?;
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
    let Some(tspec) = store::version_tx(tx, &ns, &tname, version).await? else {
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
