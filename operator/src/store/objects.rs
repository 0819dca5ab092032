//! Objects: reads, and the transaction-level write primitives.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{Result, Store, StoreError};
use crate::api::selector::Selector;
use crate::api::{DynObject, Kind, ObjectMeta, API_VERSION};

const COLUMNS: &str = "kind, namespace, name, uid, generation, resource_version, labels, annotations, spec, status, finalizers, created_at, deletion_timestamp";

/// How a write changed an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A new object.
    Created,
    /// Spec, labels or annotations changed.
    Configured,
    /// Nothing changed; nothing was written.
    Unchanged,
}

impl WriteKind {
    /// `created`, `configured`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Created => "created",
            WriteKind::Configured => "configured",
            WriteKind::Unchanged => "unchanged",
        }
    }
}

/// What kind of write made a change (recorded in the change log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Spec, labels or annotations (a person or GitOps).
    Spec,
    /// Status (a controller).
    Status,
    /// A power intent; `interactive` when a person decided it.
    Intent {
        /// Whether a person caused it.
        interactive: bool,
    },
    /// Finalizers (a controller).
    Finalizers,
    /// A delete request or the final removal.
    Delete,
}

impl Write {
    /// The name stored in the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            Write::Spec => "spec",
            Write::Status => "status",
            Write::Intent { .. } => "intent",
            Write::Finalizers => "finalizers",
            Write::Delete => "delete",
        }
    }

    /// Whether a person caused the write.
    pub fn interactive(self) -> bool {
        match self {
            Write::Spec | Write::Delete => true,
            Write::Intent { interactive } => interactive,
            Write::Status | Write::Finalizers => false,
        }
    }
}

/// What a delete did.
#[derive(Clone, Debug)]
pub enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Deleted(DynObject),
    /// Finalizers hold it; `deletionTimestamp` is set.
    Terminating(DynObject),
}

pub(crate) fn row_to_object(row: &sqlx::postgres::PgRow) -> Result<DynObject> {
    let kind: String = row.try_get("kind")?;
    let name: String = row.try_get("name")?;
    let labels: Value = row.try_get("labels")?;
    let annotations: Value = row.try_get("annotations")?;
    let corrupt =
        |e: serde_json::Error| StoreError::Corrupt(format!("{kind}/{name}"), e.to_string());
    let labels: BTreeMap<String, String> = serde_json::from_value(labels).map_err(corrupt)?;
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(annotations).map_err(corrupt)?;
    let rv: i64 = row.try_get("resource_version")?;
    Ok(DynObject {
        api_version: API_VERSION.to_string(),
        kind: kind.clone(),
        metadata: ObjectMeta {
            name: name.clone(),
            namespace: row.try_get("namespace")?,
            labels,
            annotations,
            uid: Some(row.try_get::<Uuid, _>("uid")?),
            generation: Some(row.try_get("generation")?),
            resource_version: Some(rv.to_string()),
            creation_timestamp: Some(row.try_get::<DateTime<Utc>, _>("created_at")?),
            deletion_timestamp: row.try_get::<Option<DateTime<Utc>>, _>("deletion_timestamp")?,
            finalizers: row.try_get::<Vec<String>, _>("finalizers")?,
        },
        spec: row.try_get("spec")?,
        status: row.try_get("status")?,
    })
}

/// The revision of an object read from the store.
pub fn revision_of(obj: &DynObject) -> i64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn owner_of(kind: Kind, spec: &Value) -> Option<String> {
    (kind == Kind::Workspace).then(|| {
        spec.get("owner")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    })
}

/// Takes the next global revision. Holds the revision row lock until the
/// transaction ends, which is what makes revisions commit-ordered.
pub(crate) async fn next_revision(conn: &mut PgConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("UPDATE revision SET value = value + 1 RETURNING value")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Records a change in the log and notifies watchers (delivered at commit).
pub(crate) async fn record_change(
    conn: &mut PgConnection,
    rv: i64,
    change: &str,
    obj: &DynObject,
    write: Write,
) -> Result<()> {
    let kind = obj
        .kind()
        .ok_or_else(|| StoreError::Corrupt(obj.reference(), "unknown kind".into()))?;
    sqlx::query(
        "INSERT INTO changes (resource_version, kind, namespace, name, change_type, owner, object, write, interactive) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
        .bind(rv)
        .bind(&obj.kind)
        .bind(&obj.metadata.namespace)
        .bind(&obj.metadata.name)
        .bind(change)
        .bind(owner_of(kind, &obj.spec))
        .bind(serde_json::to_value(obj).unwrap_or(Value::Null))
        .bind(write.as_str())
        .bind(write.interactive())
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::NOTIFY_CHANNEL)
        .bind(rv.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Reads one object inside a transaction, locking its row.
pub(crate) async fn get_for_update(
    conn: &mut PgConnection,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Option<DynObject>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3 FOR UPDATE"
    ))
    .bind(kind.as_str())
    .bind(ns)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(row_to_object).transpose()
}

/// Creates or updates the spec, labels and annotations of `desired`
/// (metadata.name/namespace, spec) against `existing` (read with
/// [`get_for_update`] in the same transaction). Returns what happened and
/// the object as now stored. Generation is bumped only when spec changes.
pub(crate) async fn write_spec(
    conn: &mut PgConnection,
    kind: Kind,
    desired: &DynObject,
    existing: Option<&DynObject>,
    status: Option<&Value>,
) -> Result<(WriteKind, DynObject)> {
    let m = &desired.metadata;
    match existing {
        None => {
            let rv = next_revision(conn).await?;
            let uid = Uuid::new_v4();
            let row = sqlx::query(&format!(
                "INSERT INTO objects (kind, namespace, name, uid, generation, resource_version, labels, annotations, spec, status, owner, created_at)
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, COALESCE($10, '{{}}'::jsonb), $9, now()) RETURNING {COLUMNS}"
            ))
            .bind(kind.as_str())
            .bind(&m.namespace)
            .bind(&m.name)
            .bind(uid)
            .bind(rv)
            .bind(serde_json::to_value(&m.labels).unwrap_or_default())
            .bind(serde_json::to_value(&m.annotations).unwrap_or_default())
            .bind(&desired.spec)
            .bind(owner_of(kind, &desired.spec))
            .bind(status)
            .fetch_one(&mut *conn)
            .await?;
            let obj = row_to_object(&row)?;
            record_change(conn, rv, "ADDED", &obj, Write::Spec).await?;
            Ok((WriteKind::Created, obj))
        }
        Some(old) => {
            let spec_changed = old.spec != desired.spec;
            if !spec_changed
                && old.metadata.labels == m.labels
                && old.metadata.annotations == m.annotations
            {
                return Ok((WriteKind::Unchanged, old.clone()));
            }
            let rv = next_revision(conn).await?;
            let row = sqlx::query(&format!(
                "UPDATE objects SET resource_version = $4, labels = $5, annotations = $6, spec = $7, owner = $8,
                   generation = generation + CASE WHEN $9 THEN 1 ELSE 0 END,
                   status = COALESCE($10, status)
                 WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING {COLUMNS}"
            ))
            .bind(kind.as_str())
            .bind(&m.namespace)
            .bind(&m.name)
            .bind(rv)
            .bind(serde_json::to_value(&m.labels).unwrap_or_default())
            .bind(serde_json::to_value(&m.annotations).unwrap_or_default())
            .bind(&desired.spec)
            .bind(owner_of(kind, &desired.spec))
            .bind(spec_changed)
            .bind(status)
            .fetch_one(&mut *conn)
            .await?;
            let obj = row_to_object(&row)?;
            record_change(conn, rv, "MODIFIED", &obj, Write::Spec).await?;
            Ok((WriteKind::Configured, obj))
        }
    }
}

/// Bumps an object's revision without changing it, so watchers wake up
/// (used when something the object depends on changed, e.g. a power intent).
pub(crate) async fn touch(
    conn: &mut PgConnection,
    kind: Kind,
    ns: &str,
    name: &str,
    write: Write,
) -> Result<DynObject> {
    let rv = next_revision(conn).await?;
    let row = sqlx::query(&format!(
        "UPDATE objects SET resource_version = $4 WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING {COLUMNS}"
    ))
    .bind(kind.as_str())
    .bind(ns)
    .bind(name)
    .bind(rv)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
    let obj = row_to_object(&row)?;
    record_change(conn, rv, "MODIFIED", &obj, write).await?;
    Ok(obj)
}

/// Replaces the status of an object inside a transaction (bumps the revision).
pub(crate) async fn write_status(
    conn: &mut PgConnection,
    kind: Kind,
    ns: &str,
    name: &str,
    status: &Value,
) -> Result<DynObject> {
    let rv = next_revision(conn).await?;
    let row = sqlx::query(&format!(
        "UPDATE objects SET status = $4, resource_version = $5 WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING {COLUMNS}"
    ))
    .bind(kind.as_str())
    .bind(ns)
    .bind(name)
    .bind(status)
    .bind(rv)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
    let obj = row_to_object(&row)?;
    record_change(conn, rv, "MODIFIED", &obj, Write::Status).await?;
    Ok(obj)
}

pub(crate) fn check_precondition_pub(current: &DynObject, expected: Option<i64>) -> Result<()> {
    check_precondition(current, expected)
}

fn check_precondition(current: &DynObject, expected: Option<i64>) -> Result<()> {
    if let Some(exp) = expected {
        let cur = revision_of(current);
        if cur != exp {
            return Err(StoreError::Conflict(format!(
                "{}: the object has been modified (resourceVersion {exp} is stale, current is {cur}); read it again and retry",
                current.reference()
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Bumps an object's revision so controllers look at it again (its
    /// spec and status unchanged), e.g. after activity moved its deadline.
    pub async fn object_touch(&self, kind: Kind, ns: &str, name: &str) -> Result<DynObject> {
        let mut tx = self.pool.begin().await?;
        let obj = touch(
            &mut tx,
            kind,
            ns,
            name,
            Write::Intent { interactive: false },
        )
        .await?;
        tx.commit().await?;
        Ok(obj)
    }

    /// Sets one annotation of an object (a metadata write: the revision is
    /// bumped, the generation is not).
    pub async fn object_annotate(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<DynObject> {
        let mut tx = self.pool.begin().await?;
        let cur = get_for_update(&mut tx, kind, ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
        let mut desired = cur.clone();
        desired
            .metadata
            .annotations
            .insert(key.to_string(), value.to_string());
        let (_, obj) = write_spec(&mut tx, kind, &desired, Some(&cur), None).await?;
        tx.commit().await?;
        Ok(obj)
    }

    /// Reads one object.
    pub async fn object_get(&self, kind: Kind, ns: &str, name: &str) -> Result<Option<DynObject>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3"
        ))
        .bind(kind.as_str())
        .bind(ns)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_object).transpose()
    }

    /// Lists objects of `kind` in `ns` (all namespaces if `None`), matching
    /// `selector`, and owned by `owner` when given (workspaces only).
    /// Returns the objects and the revision the list is consistent with.
    pub async fn object_list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        selector: &Selector,
        owner: Option<&str>,
    ) -> Result<(Vec<DynObject>, i64)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rv: i64 = sqlx::query_scalar("SELECT value FROM revision")
            .fetch_one(&mut *tx)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM objects WHERE kind = $1 AND ($2::text IS NULL OR namespace = $2) AND ($3::text IS NULL OR owner = $3)
             ORDER BY namespace, name"
        ))
        .bind(kind.as_str())
        .bind(ns)
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let obj = row_to_object(row)?;
            if selector.matches(&obj.metadata.labels) {
                out.push(obj);
            }
        }
        Ok((out, rv))
    }

    /// Writes the status of an object (the controllers' path). With
    /// `expected_revision`, fails with a conflict if the object changed since.
    pub async fn object_update_status(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        status: &Value,
        expected_revision: Option<i64>,
    ) -> Result<DynObject> {
        let mut tx = self.pool.begin().await?;
        let cur = get_for_update(&mut tx, kind, ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
        check_precondition(&cur, expected_revision)?;
        if &cur.status == status {
            return Ok(cur);
        }
        let obj = write_status(&mut tx, kind, ns, name, status).await?;
        tx.commit().await?;
        Ok(obj)
    }

    /// Replaces an object's finalizers. When the object is being deleted and
    /// no finalizer remains, the object is removed.
    pub async fn object_set_finalizers(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        finalizers: &[String],
        expected_revision: Option<i64>,
    ) -> Result<Option<DynObject>> {
        let mut tx = self.pool.begin().await?;
        let cur = get_for_update(&mut tx, kind, ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
        check_precondition(&cur, expected_revision)?;
        if cur.metadata.finalizers == finalizers {
            return Ok(Some(cur));
        }
        let rv = next_revision(&mut tx).await?;
        if cur.metadata.deletion_timestamp.is_some() && finalizers.is_empty() {
            let mut gone = cur.clone();
            gone.metadata.finalizers.clear();
            gone.metadata.resource_version = Some(rv.to_string());
            remove_row(&mut tx, kind, &gone).await?;
            record_change(&mut tx, rv, "DELETED", &gone, Write::Delete).await?;
            tx.commit().await?;
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "UPDATE objects SET finalizers = $4, resource_version = $5 WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING {COLUMNS}"
        ))
        .bind(kind.as_str())
        .bind(ns)
        .bind(name)
        .bind(finalizers)
        .bind(rv)
        .fetch_one(&mut *tx)
        .await?;
        let obj = row_to_object(&row)?;
        record_change(&mut tx, rv, "MODIFIED", &obj, Write::Finalizers).await?;
        tx.commit().await?;
        Ok(Some(obj))
    }

    /// Deletes an object: removes it at once when no finalizer holds it,
    /// otherwise sets `deletionTimestamp` and leaves the rest to controllers.
    pub async fn object_delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        expected_revision: Option<i64>,
    ) -> Result<DeleteOutcome> {
        let mut tx = self.pool.begin().await?;
        let out = delete_tx(&mut tx, kind, ns, name, expected_revision).await?;
        tx.commit().await?;
        Ok(out)
    }
}

async fn remove_row(conn: &mut PgConnection, kind: Kind, obj: &DynObject) -> Result<()> {
    sqlx::query("DELETE FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3")
        .bind(kind.as_str())
        .bind(&obj.metadata.namespace)
        .bind(&obj.metadata.name)
        .execute(&mut *conn)
        .await?;
    if kind == Kind::WorkspaceTemplate {
        sqlx::query("DELETE FROM template_versions WHERE namespace = $1 AND name = $2")
            .bind(&obj.metadata.namespace)
            .bind(&obj.metadata.name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Names of the objects of `kind` whose labels match `selector`, inside a
/// transaction: `(namespace, name, owner, being deleted)`.
pub(crate) async fn labelled_names(
    conn: &mut PgConnection,
    kind: Kind,
    selector: &Selector,
) -> Result<Vec<(String, String, Option<String>, bool)>> {
    let rows = sqlx::query(
        "SELECT namespace, name, owner, labels, deletion_timestamp IS NOT NULL AS deleting FROM objects WHERE kind = $1 ORDER BY namespace, name",
    )
    .bind(kind.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let labels: Value = r.try_get("labels")?;
        let labels: BTreeMap<String, String> = serde_json::from_value(labels).unwrap_or_default();
        if selector.matches(&labels) {
            out.push((
                r.try_get("namespace")?,
                r.try_get("name")?,
                r.try_get("owner")?,
                r.try_get("deleting")?,
            ));
        }
    }
    Ok(out)
}

/// Deletes inside a transaction (see [`Store::object_delete`]).
pub(crate) async fn delete_tx(
    conn: &mut PgConnection,
    kind: Kind,
    ns: &str,
    name: &str,
    expected_revision: Option<i64>,
) -> Result<DeleteOutcome> {
    let cur = get_for_update(conn, kind, ns, name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
    check_precondition(&cur, expected_revision)?;
    if kind == Kind::WorkspaceTemplate {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM objects WHERE kind = 'Workspace' AND namespace = $1 AND spec->'template'->>'name' = $2 ORDER BY name LIMIT 5",
        )
        .bind(ns)
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "workspacetemplates/{name} is used by workspaces ({}); delete or move them first",
                users.join(", ")
            )));
        }
    }
    if cur.metadata.deletion_timestamp.is_some() {
        return Ok(DeleteOutcome::Terminating(cur));
    }
    let rv = next_revision(conn).await?;
    if cur.metadata.finalizers.is_empty() {
        let mut gone = cur.clone();
        gone.metadata.resource_version = Some(rv.to_string());
        gone.metadata.deletion_timestamp = Some(Utc::now());
        remove_row(conn, kind, &gone).await?;
        record_change(conn, rv, "DELETED", &gone, Write::Delete).await?;
        return Ok(DeleteOutcome::Deleted(gone));
    }
    let row = sqlx::query(&format!(
        "UPDATE objects SET deletion_timestamp = now(), resource_version = $4 WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING {COLUMNS}"
    ))
    .bind(kind.as_str())
    .bind(ns)
    .bind(name)
    .bind(rv)
    .fetch_one(&mut *conn)
    .await?;
    let obj = row_to_object(&row)?;
    record_change(conn, rv, "MODIFIED", &obj, Write::Delete).await?;
    Ok(DeleteOutcome::Terminating(obj))
}
