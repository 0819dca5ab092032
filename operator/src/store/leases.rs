//! Per-object leases for running several operator replicas on one database.
//!
//! # Guarantees
//! - At most one holder per key while the lease is unexpired.
//! - A holder that stops renewing (a dead replica) loses its leases after
//!   the TTL; another replica then takes over with a higher token.
//! - Writes made under a lease check it in the same transaction
//!   ([`Store::object_update_status_leased`]): a holder whose lease was taken
//!   over cannot overwrite the new holder's status.

use std::time::Duration;

use serde_json::Value;

use super::objects::{check_precondition_pub, get_for_update, write_status};
use super::{Result, Store, StoreError};
use crate::api::{DynObject, Kind};

/// A held lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The leased key.
    pub key: String,
    /// The holder (a replica id).
    pub holder: String,
    /// Fencing token.
    pub token: i64,
    /// When this process asked for it (before the query: its expiry in the
    /// database is at least this plus the TTL).
    pub acquired: std::time::Instant,
}

impl Store {
    /// Takes the lease on `key` for `holder` if it is free, expired, or
    /// already `holder`'s. Returns `None` when another holder has it.
    pub async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let acquired = std::time::Instant::now();
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (key, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                 token = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.token ELSE leases.token + 1 END
             WHERE leases.expires_at < now() OR leases.holder = EXCLUDED.holder
             RETURNING token",
        )
        .bind(key)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(token.map(|token| Lease {
            key: key.to_string(),
            holder: holder.to_string(),
            token,
            acquired,
        }))
    }

    /// How long the lease on `key` has left (None: free or expired).
    pub async fn lease_remaining(&self, key: &str) -> Result<Option<Duration>> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (expires_at - now()))::float8 FROM leases
             WHERE key = $1 AND expires_at > now()",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(secs.map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0))))
    }

    /// Gives a lease back.
    pub async fn lease_release(&self, lease: &Lease) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE key = $1 AND holder = $2 AND token = $3")
            .bind(&lease.key)
            .bind(&lease.holder)
            .bind(lease.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Extends every lease of `holder` (the replica's heartbeat).
    pub async fn lease_renew_all(&self, holder: &str, ttl: Duration) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $2) WHERE holder = $1",
        )
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Writes an object's status only while `lease` is still held.
    pub async fn object_update_status_leased(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        status: &Value,
        lease: &Lease,
    ) -> Result<DynObject> {
        let mut tx = self.pool.begin().await?;
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM leases WHERE key = $1 AND holder = $2 AND token = $3 AND expires_at > now() FOR SHARE)",
        )
        .bind(&lease.key)
        .bind(&lease.holder)
        .bind(lease.token)
        .fetch_one(&mut *tx)
        .await?;
        if !held {
            return Err(StoreError::Conflict(format!(
                "lease on {} was lost; another replica owns it now",
                lease.key
            )));
        }
        let cur = get_for_update(&mut tx, kind, ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}/{name}", kind.plural())))?;
        check_precondition_pub(&cur, None)?;
        if &cur.status == status {
            return Ok(cur);
        }
        let obj = write_status(&mut tx, kind, ns, name, status).await?;
        tx.commit().await?;
        Ok(obj)
    }
}
