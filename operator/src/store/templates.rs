//! Immutable template versions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{Result, Store};

/// One immutable version of a template.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateVersion {
    /// 1, 2, …
    pub version: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The template spec of this version.
    pub spec: Value,
}

/// The newest version number of a template (0 if none) inside a transaction.
pub(crate) async fn latest_version_tx(
    conn: &mut PgConnection,
    ns: &str,
    name: &str,
) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM template_versions WHERE namespace = $1 AND name = $2")
        .bind(ns)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?)
}

/// Records version `version` of a template.
pub(crate) async fn insert_version_tx(
    conn: &mut PgConnection,
    ns: &str,
    name: &str,
    version: i32,
    template_uid: Uuid,
    spec: &Value,
) -> Result<()> {
    sqlx::query("INSERT INTO template_versions (namespace, name, version, template_uid, spec) VALUES ($1, $2, $3, $4, $5)")
        .bind(ns)
        .bind(name)
        .bind(version)
        .bind(template_uid)
        .bind(spec)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Reads one version inside a transaction.
pub(crate) async fn version_tx(
    conn: &mut PgConnection,
    ns: &str,
    name: &str,
    version: i32,
) -> Result<Option<Value>> {
    Ok(sqlx::query_scalar(
        "SELECT spec FROM template_versions WHERE namespace = $1 AND name = $2 AND version = $3",
    )
    .bind(ns)
    .bind(name)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?)
}

impl Store {
    /// Reads one template version (`None` = the active, newest one).
    pub async fn template_version_get(
        &self,
        ns: &str,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<TemplateVersion>> {
        let row = sqlx::query(
            "SELECT version, created_at, spec FROM template_versions WHERE namespace = $1 AND name = $2
               AND ($3::int IS NULL OR version = $3) ORDER BY version DESC LIMIT 1",
        )
        .bind(ns)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> Result<TemplateVersion> {
            Ok(TemplateVersion {
                version: r.try_get("version")?,
                created_at: r.try_get("created_at")?,
                spec: r.try_get("spec")?,
            })
        })
        .transpose()
    }

    /// Lists the versions of a template, oldest first.
    pub async fn template_version_list(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Vec<TemplateVersion>> {
        let rows = sqlx::query("SELECT version, created_at, spec FROM template_versions WHERE namespace = $1 AND name = $2 ORDER BY version")
            .bind(ns)
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TemplateVersion {
                    version: r.try_get("version")?,
                    created_at: r.try_get("created_at")?,
                    spec: r.try_get("spec")?,
                })
            })
            .collect()
    }
}
