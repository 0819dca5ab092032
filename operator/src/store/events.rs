//! Kubernetes-style events: what happened to an object, deduplicated by
//! (object, type, reason, message) with a count.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use super::{Result, Store};
use crate::api::Kind;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvolvedObject {
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Uuid,
}

/// One (deduplicated) event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Sentence for people.
    pub message: String,
    /// How often it happened.
    pub count: i32,
    /// The component that reported it.
    pub source: String,
    /// First occurrence.
    pub first_timestamp: DateTime<Utc>,
    /// Last occurrence.
    pub last_timestamp: DateTime<Utc>,
    /// What it is about.
    pub involved_object: InvolvedObject,
}

impl Store {
    /// Records an event; a repeat of the same type, reason and message for
    /// the same object bumps its count and last timestamp.
    pub async fn event_record(
        &self,
        involved: &InvolvedObject,
        type_: EventType,
        reason: &str,
        message: &str,
        source: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (namespace, involved_kind, involved_name, involved_uid, type, reason, message, source, first_timestamp, last_timestamp)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())
             ON CONFLICT (involved_uid, type, reason, md5(message))
             DO UPDATE SET count = events.count + 1, last_timestamp = now()",
        )
        .bind(&involved.namespace)
        .bind(&involved.kind)
        .bind(&involved.name)
        .bind(involved.uid)
        .bind(type_.as_str())
        .bind(reason)
        .bind(message)
        .bind(source)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lists events of one object (by kind, namespace and name; the current
    /// object's uid when it exists), oldest first, at most `limit`.
    pub async fn event_list(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT involved_kind, namespace, involved_name, involved_uid, type, reason, message, count, source, first_timestamp, last_timestamp
               FROM events WHERE involved_kind = $1 AND namespace = $2 AND involved_name = $3
                 AND involved_uid = COALESCE((SELECT uid FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3), involved_uid)
               ORDER BY last_timestamp DESC, id DESC LIMIT $4) e ORDER BY last_timestamp, first_timestamp",
        )
        .bind(kind.as_str())
        .bind(ns)
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let t: String = r.try_get("type")?;
                Ok(Event {
                    type_: if t == "Warning" {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: r.try_get("reason")?,
                    message: r.try_get("message")?,
                    count: r.try_get("count")?,
                    source: r.try_get("source")?,
                    first_timestamp: r.try_get("first_timestamp")?,
                    last_timestamp: r.try_get("last_timestamp")?,
                    involved_object: InvolvedObject {
                        kind: r.try_get("involved_kind")?,
                        namespace: r.try_get("namespace")?,
                        name: r.try_get("involved_name")?,
                        uid: r.try_get("involved_uid")?,
                    },
                })
            })
            .collect()
    }
}
