//! Watches: the change log read from a revision, woken by LISTEN/NOTIFY.
//!
//! # Expected flow
//! List (which returns the revision it is consistent with), then watch from
//! that revision. Each [`Change`] carries its revision; remember the last one
//! and resume from it after a dropped connection or a restart.
//!
//! # Guarantees
//! - No change is lost or reordered: the log is read in revision order and
//!   revisions are assigned in commit order (see the module docs of
//!   [`crate::store`]).
//! - Notifications are only a wake-up hint. A listener misses them while it
//!   is disconnected, so the stream also polls the log on an interval.
//!
//! # Caveats
//! - Changes older than the compaction watermark are gone: the stream ends
//!   with [`StoreError::Gone`] and the client must re-list.

use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::Row;

use super::{Result, Store, StoreError, NOTIFY_CHANNEL};
use crate::api::selector::Selector;
use crate::api::{DynObject, Kind};

/// ADDED, MODIFIED or DELETED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    /// Created.
    Added,
    /// Spec, metadata, status or finalizers changed.
    Modified,
    /// Removed (the object as it was).
    Deleted,
}

/// One entry of the change log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The revision of this change.
    #[serde(skip)]
    pub revision: i64,
    /// What happened.
    #[serde(rename = "type")]
    pub type_: ChangeType,
    /// The object after the change (before it, for a delete).
    pub object: DynObject,
    /// What kind of write it was (`spec`, `status`, `intent`, `finalizers`, `delete`).
    #[serde(skip)]
    pub write: String,
    /// Whether a person caused it.
    #[serde(skip)]
    pub interactive: bool,
}

/// Which changes a watch wants.
#[derive(Clone, Debug, Default)]
pub struct WatchFilter {
    /// Only these kinds (empty = all).
    pub kinds: Vec<Kind>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only workspaces of this owner (other kinds pass).
    pub owner: Option<String>,
    /// Only objects whose labels match.
    pub selector: Selector,
    /// Leave out status writes (controllers do not react to their own).
    pub skip_status_writes: bool,
}

impl WatchFilter {
    fn matches(&self, c: &Change, owner: Option<&str>) -> bool {
        if let Some(o) = &self.owner {
            if c.object.kind() == Some(Kind::Workspace) && owner != Some(o.as_str()) {
                return false;
            }
        }
        self.selector.matches(&c.object.metadata.labels)
    }
}

impl Store {
    /// The newest revision.
    pub async fn revision_current(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT value FROM revision")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Reads up to `limit` changes after `since` that pass `filter`. Returns
    /// them and the revision read up to (so a caller skips filtered-out
    /// changes next time).
    pub async fn changes_since(
        &self,
        filter: &WatchFilter,
        since: i64,
        limit: i64,
    ) -> Result<(Vec<Change>, i64)> {
        let compacted: i64 = sqlx::query_scalar("SELECT compacted FROM revision")
            .fetch_one(&self.pool)
            .await?;
        if since < compacted {
            return Err(StoreError::Gone(since));
        }
        let kinds: Vec<String> = filter
            .kinds
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        let rows = sqlx::query(
            "SELECT resource_version, change_type, owner, object, write, interactive FROM changes
             WHERE resource_version > $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) AND ($3::text IS NULL OR namespace = $3)
               AND NOT ($5 AND write = 'status')
             ORDER BY resource_version LIMIT $4",
        )
        .bind(since)
        .bind(&kinds)
        .bind(filter.namespace.as_deref())
        .bind(limit)
        .bind(filter.skip_status_writes)
        .fetch_all(&self.pool)
        .await?;
        let mut last = since;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let rv: i64 = r.try_get("resource_version")?;
            last = rv;
            let t: String = r.try_get("change_type")?;
            let owner: Option<String> = r.try_get("owner")?;
            let object: Value = r.try_get("object")?;
            let object: DynObject = serde_json::from_value(object)
                .map_err(|e| StoreError::Corrupt(format!("change {rv}"), e.to_string()))?;
            let type_ = match t.as_str() {
                "ADDED" => ChangeType::Added,
                "DELETED" => ChangeType::Deleted,
                _ => ChangeType::Modified,
            };
            let c = Change {
                revision: rv,
                type_,
                object,
                write: r.try_get("write")?,
                interactive: r.try_get("interactive")?,
            };
            if filter.matches(&c, owner.as_deref()) {
                out.push(c);
            }
        }
        Ok((out, last))
    }

    /// Drops change-log entries older than `keep` (by age) and moves the
    /// compaction watermark. Returns the number of entries removed.
    pub async fn changes_compact(&self, keep: Duration) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let cutoff: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(resource_version) FROM changes WHERE at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        let n = sqlx::query("DELETE FROM changes WHERE resource_version <= $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE revision SET compacted = GREATEST(compacted, $1)")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Watches changes after `since`: a stream that never ends on its own
    /// except with an error ([`StoreError::Gone`], or a database error that
    /// outlasted reconnection). `poll` is the backstop interval.
    pub fn watch(
        &self,
        filter: WatchFilter,
        since: i64,
        poll: Duration,
    ) -> impl Stream<Item = Result<Change>> + Send + 'static {
        let store = self.clone();
        async_stream::try_stream! {
            let mut last = since;
            let mut listener: Option<PgListener> = None;
            loop {
                if listener.is_none() {
                    // Listen before reading, so a change committed between
                    // the read and the wait still wakes us.
                    match PgListener::connect_with(&store.pool).await {
                        Ok(mut l) => {
                            if l.listen(NOTIFY_CHANNEL).await.is_ok() {
                                listener = Some(l);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "watch: cannot listen; polling"),
                    }
                }
                let (changes, upto) = store.changes_since(&filter, last, 500).await?;
                let full = changes.len() == 500;
                for c in changes {
                    yield c;
                }
                last = upto;
                if full {
                    continue;
                }
                match listener.as_mut() {
                    Some(l) => {
                        match tokio::time::timeout(poll, l.try_recv()).await {
                            Ok(Ok(Some(_))) | Err(_) => {}
                            // Ok(None) = connection lost (reconnects on next
                            // call); an error drops the listener.
                            Ok(Ok(None)) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "watch: listener failed; reconnecting");
                                listener = None;
                            }
                        }
                    }
                    None => tokio::time::sleep(poll).await,
                }
            }
        }
    }
}
