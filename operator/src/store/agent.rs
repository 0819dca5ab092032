//! What workspace agents report: one session per workspace (the agent of its
//! newest start), script states and bounded script logs per start, and the
//! replicas that hold agent connections.
//!
//! # Write budget
//! An agent's heartbeats cost no writes: a session says which replica holds
//! the connection, and a replica proves it is alive with one heartbeat row
//! of its own ([`Store::replica_heartbeat`]). A session held by a replica
//! whose heartbeat is older than [`REPLICA_TIMEOUT`] counts as
//! disconnected. Writes happen on connect, disconnect, script and
//! lifecycle changes, and log batches.
//!
//! # Logs
//! Lines are kept per `(workspace, start, script)` with their sequence
//! number, at most [`LOG_CAP_BYTES`] per script: beyond it the oldest lines
//! are deleted and counted in `dropped`. A resent line (same sequence) is
//! stored once. Only the newest [`KEEP_STARTS`] starts are kept.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{Result, Store};
use crate::agent::protocol::{LogLine, ManifestScript, ScriptStatus};

/// Most bytes of log text kept per script and start.
pub const LOG_CAP_BYTES: i64 = 1024 * 1024;
/// How many starts of a workspace keep their scripts and logs.
pub const KEEP_STARTS: i64 = 3;
/// A replica whose heartbeat is older than this is considered gone, and so
/// are the agent connections it held.
pub const REPLICA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The agent of a workspace's newest start, as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSession {
    /// The start it belongs to.
    pub start_id: i64,
    /// Connected now: held by a replica that is alive.
    pub connected: bool,
    /// When it last connected.
    pub connected_at: DateTime<Utc>,
    /// When it disconnected (or its replica was last alive), if it is not connected.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// When it was last heard of.
    pub last_seen: DateTime<Utc>,
    /// Its version.
    pub agent_version: String,
    /// Its lifecycle (`Starting`, `Ready`, …).
    pub lifecycle: String,
}

/// A script of one start, as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentScript {
    /// Its name.
    pub name: String,
    /// Label shown to people.
    pub display_name: String,
    /// Whether logins wait for it.
    pub blocks_login: bool,
    /// Whether it runs at stop.
    pub run_on_stop: bool,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub state: String,
    /// Exit code once finished.
    pub exit_code: Option<i32>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Lines dropped (oldest first) to stay within the cap, or lost by the agent.
    pub dropped: i64,
    /// Lines received so far (the next sequence number).
    pub lines: i64,
}

/// One stored log line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredLine {
    /// The script.
    pub script: String,
    /// Its sequence number in the script's output.
    pub seq: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the agent read it.
    pub at: DateTime<Utc>,
    /// The text.
    pub text: String,
}

fn session_from_row(r: &sqlx::postgres::PgRow) -> Result<AgentSession> {
    let connected: bool = r.try_get("alive")?;
    let disconnected_at: Option<DateTime<Utc>> = r.try_get("disconnected_at")?;
    let replica_seen: Option<DateTime<Utc>> = r.try_get("replica_seen")?;
    Ok(AgentSession {
        start_id: r.try_get("start_id")?,
        connected,
        connected_at: r.try_get("connected_at")?,
        disconnected_at: if connected {
            None
        } else {
            disconnected_at.or(replica_seen)
        },
        last_seen: r.try_get("last_seen")?,
        agent_version: r.try_get("agent_version")?,
        lifecycle: r.try_get("lifecycle")?,
    })
}

impl Store {
    /// The workspace and start an agent token belongs to, if it is a
    /// current agent token (a replaced one is not).
    pub async fn agent_token_lookup(&self, token: &str) -> Result<Option<(Uuid, i64)>> {
        let row =
            sqlx::query("SELECT workspace_uid, start_id FROM agent_tokens WHERE token_hash = $1")
                .bind(super::tokens::token_hash(token))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((r.try_get("workspace_uid")?, r.try_get("start_id")?)))
            .transpose()
    }

    /// The current start of a workspace (that of its current agent token).
    pub async fn agent_current_start(&self, uid: Uuid) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT start_id FROM agent_tokens WHERE workspace_uid = $1")
                .bind(uid)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// How many replicas proved alive within [`REPLICA_TIMEOUT`] (at least
    /// the caller, once it heartbeat).
    pub async fn replicas_live(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM replicas WHERE heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(REPLICA_TIMEOUT.as_secs_f64())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records that `replica` is alive (and where other replicas reach it).
    pub async fn replica_heartbeat(&self, replica: &str, url: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (id, url, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, heartbeat_at = now()",
        )
        .bind(replica)
        .bind(url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Opens the session of an agent that connected to `replica`: records
    /// the manifest's scripts (Pending) unless known, then the states the
    /// agent reports, and returns per script the next log sequence number
    /// expected. Older starts beyond [`KEEP_STARTS`] are pruned.
    #[allow(clippy::too_many_arguments)]
    pub async fn agent_session_open(
        &self,
        uid: Uuid,
        start_id: i64,
        replica: &str,
        agent_version: &str,
        lifecycle: &str,
        template_version: i32,
        manifest: &[ManifestScript],
        reported: &[ScriptStatus],
    ) -> Result<(DateTime<Utc>, BTreeMap<String, u64>)> {
        let mut tx = self.pool.begin().await?;
        let connected_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO agent_sessions (workspace_uid, start_id, replica, connected_at, last_seen, agent_version, lifecycle, template_version)
             VALUES ($1, $2, $3, now(), now(), $4, $5, $6)
             ON CONFLICT (workspace_uid) DO UPDATE SET start_id = EXCLUDED.start_id, replica = EXCLUDED.replica,
                 connected_at = now(), disconnected_at = NULL, last_seen = now(),
                 agent_version = EXCLUDED.agent_version, lifecycle = EXCLUDED.lifecycle,
                 template_version = EXCLUDED.template_version
             RETURNING connected_at",
        )
        .bind(uid)
        .bind(start_id)
        .bind(replica)
        .bind(agent_version)
        .bind(lifecycle)
        .bind(template_version)
        .fetch_one(&mut *tx)
        .await?;
        for (i, s) in manifest.iter().enumerate() {
            sqlx::query(
                "INSERT INTO agent_scripts (workspace_uid, start_id, name, position, display_name, blocks_login, run_on_stop, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'Pending') ON CONFLICT DO NOTHING",
            )
            .bind(uid)
            .bind(start_id)
            .bind(&s.name)
            .bind(i as i32)
            .bind(&s.display_name)
            .bind(s.blocks_login)
            .bind(s.run_on_stop)
            .execute(&mut *tx)
            .await?;
        }
        for s in reported {
            script_set(&mut tx, uid, start_id, s).await?;
        }
        let rows = sqlx::query(
            "SELECT name, next_seq FROM agent_scripts WHERE workspace_uid = $1 AND start_id = $2",
        )
        .bind(uid)
        .bind(start_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut acked = BTreeMap::new();
        for r in rows {
            let n: i64 = r.try_get("next_seq")?;
            acked.insert(r.try_get("name")?, n.max(0) as u64);
        }
        // Keep the newest starts only.
        sqlx::query(
            "WITH old AS (
                 SELECT DISTINCT start_id FROM agent_scripts WHERE workspace_uid = $1
                 ORDER BY start_id DESC OFFSET $2)
             , d AS (DELETE FROM agent_logs WHERE workspace_uid = $1 AND start_id IN (SELECT start_id FROM old))
             DELETE FROM agent_scripts WHERE workspace_uid = $1 AND start_id IN (SELECT start_id FROM old)",
        )
        .bind(uid)
        .bind(KEEP_STARTS)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((connected_at, acked))
    }

    /// Closes the session opened at `connected_at` if it is still the
    /// current one (a newer connection of the same agent is left alone).
    pub async fn agent_session_close(
        &self,
        uid: Uuid,
        start_id: i64,
        connected_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agent_sessions SET replica = NULL, disconnected_at = now(), last_seen = now()
             WHERE workspace_uid = $1 AND start_id = $2 AND connected_at = $3",
        )
        .bind(uid)
        .bind(start_id)
        .bind(connected_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the sessions held by replicas that stopped proving alive (a
    /// killed operator cannot close its own), as of their replica's last
    /// heartbeat, and returns their workspaces (`namespace`, `name`), so
    /// that their status is recomputed.
    pub async fn agent_sessions_reap(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "WITH d AS (
                 UPDATE agent_sessions s SET replica = NULL,
                     disconnected_at = COALESCE((SELECT heartbeat_at FROM replicas r WHERE r.id = s.replica), now())
                 WHERE s.replica IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM replicas r
                     WHERE r.id = s.replica AND r.heartbeat_at > now() - make_interval(secs => $1))
                 RETURNING s.workspace_uid)
             SELECT o.namespace, o.name FROM objects o JOIN d ON o.uid = d.workspace_uid",
        )
        .bind(REPLICA_TIMEOUT.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("namespace")?, r.try_get("name")?)))
            .collect()
    }

    /// Records the agent's lifecycle.
    pub async fn agent_lifecycle_set(
        &self,
        uid: Uuid,
        start_id: i64,
        lifecycle: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE agent_sessions SET lifecycle = $3, last_seen = now() WHERE workspace_uid = $1 AND start_id = $2",
        )
        .bind(uid)
        .bind(start_id)
        .bind(lifecycle)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a script's state. Returns false when the start has no such script.
    pub async fn agent_script_set(
        &self,
        uid: Uuid,
        start_id: i64,
        status: &ScriptStatus,
    ) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        script_set(&mut conn, uid, start_id, status).await
    }

    /// Appends a batch of one script's lines: lines below the stored
    /// sequence are skipped (a resend), a gap above it counts as dropped
    /// lines, and the oldest lines beyond [`LOG_CAP_BYTES`] are deleted and
    /// counted. Returns the next sequence number expected, or `None` when
    /// the start has no such script.
    pub async fn agent_logs_append(
        &self,
        uid: Uuid,
        start_id: i64,
        script: &str,
        lines: &[LogLine],
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT next_seq, bytes FROM agent_scripts WHERE workspace_uid = $1 AND start_id = $2 AND name = $3 FOR UPDATE",
        )
        .bind(uid)
        .bind(start_id)
        .bind(script)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let next: i64 = row.try_get("next_seq")?;
        let mut bytes: i64 = row.try_get("bytes")?;
        let fresh: Vec<&LogLine> = lines.iter().filter(|l| l.seq as i64 >= next).collect();
        let Some(first) = fresh.first() else {
            tx.commit().await?;
            return Ok(Some(next.max(0) as u64));
        };
        let gap = first.seq as i64 - next;
        let (mut seqs, mut streams, mut ats, mut texts) = (vec![], vec![], vec![], vec![]);
        for l in &fresh {
            seqs.push(l.seq as i64);
            streams.push(l.stream.as_str());
            ats.push(l.at);
            texts.push(l.text.as_str());
            bytes += l.text.len() as i64;
        }
        let last = seqs.last().copied().unwrap_or(next);
        sqlx::query(
            "INSERT INTO agent_logs (workspace_uid, start_id, script, seq, stream, at, line)
             SELECT $1, $2, $3, * FROM UNNEST($4::bigint[], $5::text[], $6::timestamptz[], $7::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(start_id)
        .bind(script)
        .bind(&seqs)
        .bind(&streams)
        .bind(&ats)
        .bind(&texts)
        .execute(&mut *tx)
        .await?;
        let mut dropped = gap.max(0);
        if bytes > LOG_CAP_BYTES {
            let r = sqlx::query(
                "WITH kept AS (
                     SELECT seq, sum(octet_length(line)) OVER (ORDER BY seq DESC) AS tail
                     FROM agent_logs WHERE workspace_uid = $1 AND start_id = $2 AND script = $3)
                 , del AS (
                     DELETE FROM agent_logs a USING kept k
                     WHERE a.workspace_uid = $1 AND a.start_id = $2 AND a.script = $3
                       AND a.seq = k.seq AND k.tail > $4
                     RETURNING octet_length(a.line) AS n)
                 SELECT count(*) AS lines, COALESCE(sum(n), 0)::bigint AS bytes FROM del",
            )
            .bind(uid)
            .bind(start_id)
            .bind(script)
            .bind(LOG_CAP_BYTES)
            .fetch_one(&mut *tx)
            .await?;
            let n: i64 = r.try_get("lines")?;
            let b: i64 = r.try_get("bytes")?;
            dropped += n;
            bytes -= b;
        }
        sqlx::query(
            "UPDATE agent_scripts SET next_seq = $4, bytes = $5, dropped = dropped + $6
             WHERE workspace_uid = $1 AND start_id = $2 AND name = $3",
        )
        .bind(uid)
        .bind(start_id)
        .bind(script)
        .bind(last + 1)
        .bind(bytes)
        .bind(dropped)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((last + 1) as u64))
    }

    /// The session of the workspace's current start, if its agent ever connected.
    pub async fn agent_session(&self, uid: Uuid) -> Result<Option<AgentSession>> {
        let row = sqlx::query(
            "SELECT s.*, r.heartbeat_at AS replica_seen,
                    COALESCE(s.replica IS NOT NULL AND r.heartbeat_at > now() - make_interval(secs => $2), false) AS alive
             FROM agent_sessions s
             JOIN agent_tokens t ON t.workspace_uid = s.workspace_uid AND t.start_id = s.start_id
             LEFT JOIN replicas r ON r.id = s.replica
             WHERE s.workspace_uid = $1",
        )
        .bind(uid)
        .bind(REPLICA_TIMEOUT.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// The replica holding the connection of the workspace's current agent
    /// and the URL other replicas reach it at, while that replica is alive.
    pub async fn agent_replica(&self, uid: Uuid) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT r.id, r.url FROM agent_sessions s
             JOIN agent_tokens t ON t.workspace_uid = s.workspace_uid AND t.start_id = s.start_id
             JOIN replicas r ON r.id = s.replica
             WHERE s.workspace_uid = $1 AND r.heartbeat_at > now() - make_interval(secs => $2)",
        )
        .bind(uid)
        .bind(REPLICA_TIMEOUT.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("url")?)))
            .transpose()
    }

    /// The starts of a workspace that have scripts kept, newest first.
    pub async fn agent_starts(&self, uid: Uuid) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT start_id FROM agent_scripts WHERE workspace_uid = $1 ORDER BY start_id DESC",
        )
        .bind(uid)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The scripts of one start, in manifest order.
    pub async fn agent_scripts(&self, uid: Uuid, start_id: i64) -> Result<Vec<AgentScript>> {
        let rows = sqlx::query(
            "SELECT * FROM agent_scripts WHERE workspace_uid = $1 AND start_id = $2 ORDER BY position",
        )
        .bind(uid)
        .bind(start_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentScript {
                    name: r.try_get("name")?,
                    display_name: r.try_get("display_name")?,
                    blocks_login: r.try_get("blocks_login")?,
                    run_on_stop: r.try_get("run_on_stop")?,
                    state: r.try_get("state")?,
                    exit_code: r.try_get("exit_code")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    dropped: r.try_get("dropped")?,
                    lines: r.try_get("next_seq")?,
                })
            })
            .collect()
    }

    /// Log lines of one start (of one script, or all), each script from the
    /// sequence number `from[script]` on (0 when missing), ordered by time,
    /// at most `limit`.
    pub async fn agent_logs(
        &self,
        uid: Uuid,
        start_id: i64,
        script: Option<&str>,
        from: &BTreeMap<String, i64>,
        limit: i64,
    ) -> Result<Vec<StoredLine>> {
        let from = serde_json::to_value(from).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT l.script, l.seq, l.stream, l.at, l.line FROM agent_logs l
             JOIN agent_scripts s ON s.workspace_uid = l.workspace_uid AND s.start_id = l.start_id AND s.name = l.script
             WHERE l.workspace_uid = $1 AND l.start_id = $2 AND ($3::text IS NULL OR l.script = $3)
               AND l.seq >= COALESCE(($4::jsonb ->> l.script)::bigint, 0)
             ORDER BY l.at, s.position, l.seq LIMIT $5",
        )
        .bind(uid)
        .bind(start_id)
        .bind(script)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredLine {
                    script: r.try_get("script")?,
                    seq: r.try_get("seq")?,
                    stream: r.try_get("stream")?,
                    at: r.try_get("at")?,
                    text: r.try_get("line")?,
                })
            })
            .collect()
    }
}

async fn script_set(
    conn: &mut sqlx::PgConnection,
    uid: Uuid,
    start_id: i64,
    s: &ScriptStatus,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE agent_scripts SET state = $4, exit_code = $5, started_at = $6, finished_at = $7
         WHERE workspace_uid = $1 AND start_id = $2 AND name = $3",
    )
    .bind(uid)
    .bind(start_id)
    .bind(&s.name)
    .bind(s.state.as_str())
    .bind(s.exit_code)
    .bind(s.started_at)
    .bind(s.finished_at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}
