//! Power intents ("last intent wins") and per-start agent tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::objects::{touch, Write};
use super::{Result, Store, StoreError};
use crate::api::Kind;

/// What an intent asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// Run the workspace.
    Start,
    /// Scale it to zero.
    Stop,
    /// Stop and start now, applying the newest template version.
    Restart,
}

impl PowerAction {
    /// `start`, `stop`, `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Restart => "restart",
        }
    }

    fn parse(s: &str) -> PowerAction {
        match s {
            "stop" => PowerAction::Stop,
            "restart" => PowerAction::Restart,
            _ => PowerAction::Start,
        }
    }

    /// Whether the workspace should run after this intent.
    pub fn runs(self) -> bool {
        self != PowerAction::Stop
    }
}

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PowerIntent {
    /// Increasing id; the highest is the newest.
    pub id: i64,
    /// Start, stop or restart.
    pub action: PowerAction,
    /// `Spec`, `Manual`, `AutoStop`, `AutoStart`, `MaxLifetime`, ...
    pub reason: String,
    /// Who decided (a user, or a controller).
    pub actor: String,
    /// Details for people.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
    /// An autostart's scheduled time, when it began earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl PowerIntent {
    /// Where the run's inactivity clock starts: the start itself, or an
    /// early autostart's scheduled time (a workspace started early so that
    /// it is Running at 8:00 is not idle before 8:00).
    pub fn idle_from(&self) -> DateTime<Utc> {
        self.scheduled_for.map_or(self.at, |s| s.max(self.at))
    }

    fn from_row(r: &sqlx::postgres::PgRow) -> Result<PowerIntent> {
        Ok(PowerIntent {
            id: r.try_get("id")?,
            action: PowerAction::parse(&r.try_get::<String, _>("action")?),
            reason: r.try_get("reason")?,
            actor: r.try_get("actor")?,
            message: r.try_get("message")?,
            at: r.try_get("at")?,
            scheduled_for: r.try_get("scheduled_for")?,
        })
    }
}

/// Records an intent inside a transaction (no touch of the object).
pub(crate) async fn insert_intent_tx(
    conn: &mut PgConnection,
    uid: Uuid,
    row: &NewIntent<'_>,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO power_intents (workspace_uid, action, reason, actor, message, dedupe_key, at, scheduled_for)
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, now()), $8)
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(uid)
    .bind(row.action.as_str())
    .bind(row.reason)
    .bind(row.actor)
    .bind(row.message)
    .bind(row.dedupe_key)
    .bind(row.at)
    .bind(row.scheduled_for)
    .fetch_optional(&mut *conn)
    .await?)
}

/// An intent to record.
#[derive(Clone, Debug)]
pub struct NewIntent<'a> {
    /// Start, stop or restart.
    pub action: PowerAction,
    /// `Manual`, `Spec`, `AutoStop`, `AutoStart`, ...
    pub reason: &'a str,
    /// Who decided.
    pub actor: &'a str,
    /// Details for people.
    pub message: &'a str,
    /// Makes automatic decisions exactly-once: a second intent with the
    /// same key is ignored.
    pub dedupe_key: Option<&'a str>,
    /// When the decision was made (default: the database's now).
    pub at: Option<DateTime<Utc>>,
    /// An autostart's scheduled time (it may begin earlier).
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl<'a> NewIntent<'a> {
    /// A person's `berth start|stop|restart`.
    pub fn manual(action: PowerAction, actor: &'a str) -> Self {
        NewIntent {
            action,
            reason: "Manual",
            actor,
            message: "",
            dedupe_key: None,
            at: None,
            scheduled_for: None,
        }
    }

    /// A change of `spec.running` applied by `actor`.
    pub fn spec(action: PowerAction, actor: &'a str, message: &'a str) -> Self {
        NewIntent {
            reason: "Spec",
            message,
            ..NewIntent::manual(action, actor)
        }
    }
}

impl Store {
    /// Records an intent for a workspace and wakes its watchers. With a
    /// `dedupe_key`, a second intent with the same key (from another
    /// replica, or a retry) is ignored and `None` is returned.
    pub async fn intent_record(
        &self,
        ns: &str,
        name: &str,
        intent: &NewIntent<'_>,
    ) -> Result<Option<i64>> {
        let reason = intent.reason;
        let mut tx = self.pool.begin().await?;
        let obj = super::get_for_update(&mut tx, Kind::Workspace, ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("workspaces/{name}")))?;
        if obj.metadata.deletion_timestamp.is_some() {
            return Err(StoreError::Conflict(format!(
                "workspaces/{name} is being deleted"
            )));
        }
        let uid = obj
            .metadata
            .uid
            .ok_or_else(|| StoreError::Corrupt(format!("workspaces/{name}"), "no uid".into()))?;
        let id = insert_intent_tx(&mut tx, uid, intent).await?;
        if id.is_some() {
            let interactive = matches!(reason, "Manual" | "Spec");
            touch(
                &mut tx,
                Kind::Workspace,
                ns,
                name,
                Write::Intent { interactive },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The newest intent of a workspace.
    pub async fn intent_latest(&self, uid: Uuid) -> Result<Option<PowerIntent>> {
        Ok(self.intent_list(uid, 1).await?.into_iter().next())
    }

    /// The newest `limit` intents of a workspace, newest first.
    pub async fn intent_list(&self, uid: Uuid, limit: i64) -> Result<Vec<PowerIntent>> {
        let rows = sqlx::query(
            "SELECT id, action, reason, actor, message, at, scheduled_for FROM power_intents WHERE workspace_uid = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(uid)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PowerIntent::from_row).collect()
    }

    /// Stores the hash of a workspace's new agent token (replacing the old
    /// one, so the old one is refused from now on); each new token begins a
    /// new start, which script states and logs are kept by.
    pub async fn agent_token_set(&self, uid: Uuid, token: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_tokens (workspace_uid, token_hash) VALUES ($1, $2)
             ON CONFLICT (workspace_uid) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now(),
                 start_id = nextval('agent_start_seq')",
        )
        .bind(uid)
        .bind(super::tokens::token_hash(token))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether `token` is the current agent token of the workspace.
    pub async fn agent_token_check(&self, uid: Uuid, token: &str) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agent_tokens WHERE workspace_uid = $1 AND token_hash = $2)")
            .bind(uid)
            .bind(super::tokens::token_hash(token))
            .fetch_one(&self.pool)
            .await?)
    }
}

/// A workspace's recorded activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Last reported activity.
    pub last_activity_at: DateTime<Utc>,
    /// Its kind (`ssh`, `vscode`, `app`, `manual`).
    pub source: String,
    /// `berth extend`: autostop not before this.
    pub extended_until: Option<DateTime<Utc>>,
}

impl Store {
    /// Records activity at `at` unless the stored one is less than
    /// `coalesce` older (so heartbeats do not each become a write).
    /// Returns whether a write happened.
    pub async fn activity_report(
        &self,
        uid: Uuid,
        at: DateTime<Utc>,
        source: &str,
        coalesce: std::time::Duration,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO workspace_activity (workspace_uid, last_activity_at, source) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_uid) DO UPDATE SET last_activity_at = EXCLUDED.last_activity_at, source = EXCLUDED.source
             WHERE workspace_activity.last_activity_at < EXCLUDED.last_activity_at - make_interval(secs => $4)",
        )
        .bind(uid)
        .bind(at)
        .bind(source)
        .bind(coalesce.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Writes many reports in one statement; each moves its workspace's
    /// last activity forward only (an older report changes nothing).
    pub async fn activity_report_many(
        &self,
        reports: &[(Uuid, DateTime<Utc>, String)],
    ) -> Result<u64> {
        let uids: Vec<Uuid> = reports.iter().map(|r| r.0).collect();
        let ats: Vec<DateTime<Utc>> = reports.iter().map(|r| r.1).collect();
        let kinds: Vec<String> = reports.iter().map(|r| r.2.clone()).collect();
        let n = sqlx::query(
            "INSERT INTO workspace_activity (workspace_uid, last_activity_at, source)
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[])
             ON CONFLICT (workspace_uid) DO UPDATE SET last_activity_at = EXCLUDED.last_activity_at, source = EXCLUDED.source
             WHERE workspace_activity.last_activity_at < EXCLUDED.last_activity_at",
        )
        .bind(&uids)
        .bind(&ats)
        .bind(&kinds)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Sets the `berth extend` deadline.
    pub async fn activity_extend(
        &self,
        uid: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO workspace_activity (workspace_uid, last_activity_at, source, extended_until) VALUES ($1, $3, 'manual', $2)
             ON CONFLICT (workspace_uid) DO UPDATE SET extended_until = EXCLUDED.extended_until",
        )
        .bind(uid)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims the lifecycle notice `key` of a workspace: true the first
    /// time (for this replica to give it), false ever after.
    pub async fn notice_claim(&self, uid: Uuid, key: &str) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO lifecycle_notices (workspace_uid, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(key)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Reads a workspace's activity.
    pub async fn activity_get(&self, uid: Uuid) -> Result<Option<Activity>> {
        let row = sqlx::query("SELECT last_activity_at, source, extended_until FROM workspace_activity WHERE workspace_uid = $1")
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Activity {
                last_activity_at: r.try_get("last_activity_at")?,
                source: r.try_get("source")?,
                extended_until: r.try_get("extended_until")?,
            })
        })
        .transpose()
    }

    /// Reads every workspace's activity (for the lifecycle loop).
    pub async fn activity_all(&self) -> Result<std::collections::HashMap<Uuid, Activity>> {
        let rows = sqlx::query("SELECT workspace_uid, last_activity_at, source, extended_until FROM workspace_activity")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("workspace_uid")?,
                    Activity {
                        last_activity_at: r.try_get("last_activity_at")?,
                        source: r.try_get("source")?,
                        extended_until: r.try_get("extended_until")?,
                    },
                ))
            })
            .collect()
    }

    /// The newest intent of every workspace (for the lifecycle loop).
    pub async fn intent_latest_all(&self) -> Result<std::collections::HashMap<Uuid, PowerIntent>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (workspace_uid) workspace_uid, id, action, reason, actor, message, at, scheduled_for
             FROM power_intents ORDER BY workspace_uid, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("workspace_uid")?, PowerIntent::from_row(r)?)))
            .collect()
    }

    /// Counts intents of a reason (tests and benchmarks: "stopped exactly once").
    pub async fn intent_count(&self, reason: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM power_intents WHERE reason = $1")
                .bind(reason)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
