//! Homes: the owner's access point per namespace and file system (see the
//! migration `homes`).

use sqlx::Row as _;

use super::{Result, Store};

/// An owner's home on one file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    /// `fs-…`.
    pub file_system_id: String,
    /// Namespace (organization).
    pub namespace: String,
    /// Owner.
    pub owner: String,
    /// `fsap-…`, empty until one is recorded.
    pub access_point_id: String,
    /// Mixed into the access point's client token.
    pub attempt: i32,
    /// A create under this attempt began (and may have succeeded without
    /// being recorded).
    pub create_started: bool,
}

fn home(row: &sqlx::postgres::PgRow) -> Result<Home> {
    Ok(Home {
        file_system_id: row.try_get("file_system_id")?,
        namespace: row.try_get("namespace")?,
        owner: row.try_get("owner")?,
        access_point_id: row.try_get("access_point_id")?,
        attempt: row.try_get("attempt")?,
        create_started: row.try_get("create_started")?,
    })
}

const COLUMNS: &str = "file_system_id, namespace, owner, access_point_id, attempt, \
                       create_started_at IS NOT NULL AS create_started";

impl Store {
    /// The home of `owner` in `ns` on `fs`, made (empty) when it has none.
    pub async fn home_get_or_insert(&self, fs: &str, ns: &str, owner: &str) -> Result<Home> {
        sqlx::query(
            "INSERT INTO homes (file_system_id, namespace, owner) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM homes WHERE file_system_id = $1 AND namespace = $2 AND owner = $3"
        ))
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        home(&row)
    }

    /// The home, if it has a row.
    pub async fn home_get(&self, fs: &str, ns: &str, owner: &str) -> Result<Option<Home>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM homes WHERE file_system_id = $1 AND namespace = $2 AND owner = $3"
        ))
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(home).transpose()
    }

    /// Records the home's access point, made (or adopted) under `attempt`;
    /// false when the home moved on to another attempt meanwhile.
    pub async fn home_set_access_point(
        &self,
        fs: &str,
        ns: &str,
        owner: &str,
        attempt: i32,
        access_point_id: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE homes SET access_point_id = $5, creator = NULL, create_started_at = NULL
             WHERE file_system_id = $1 AND namespace = $2 AND owner = $3 AND attempt = $4",
        )
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .bind(attempt)
        .bind(access_point_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Moves the home on from `attempt` (its access point is gone, or the
    /// token is spent): the next create uses a new token. Idempotent for
    /// concurrent callers that saw the same attempt. Returns the home.
    pub async fn home_next_attempt(
        &self,
        fs: &str,
        ns: &str,
        owner: &str,
        attempt: i32,
    ) -> Result<Home> {
        sqlx::query(
            "UPDATE homes SET attempt = attempt + 1, access_point_id = '', creator = NULL, create_started_at = NULL
             WHERE file_system_id = $1 AND namespace = $2 AND owner = $3 AND attempt = $4",
        )
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        self.home_get_or_insert(fs, ns, owner).await
    }

    /// Claims the create of the home's access point under `attempt` for
    /// workspace `creator`: true when it is free (not claimed, claimed by
    /// `creator` itself in an earlier pass, or claimed over a minute ago);
    /// false while another workspace holds the claim.
    pub async fn home_claim_create(
        &self,
        fs: &str,
        ns: &str,
        owner: &str,
        attempt: i32,
        creator: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE homes SET creator = $5, create_started_at = now()
             WHERE file_system_id = $1 AND namespace = $2 AND owner = $3 AND attempt = $4
               AND access_point_id = ''
               AND (create_started_at IS NULL OR creator = $5
                    OR create_started_at < now() - interval '1 minute')",
        )
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .bind(attempt)
        .bind(creator)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Forgets the home whose access point `access_point_id` was removed
    /// with the owner's last workspace (not one made since). The next
    /// workspace makes a new one.
    pub async fn home_delete(
        &self,
        fs: &str,
        ns: &str,
        owner: &str,
        access_point_id: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM homes
             WHERE file_system_id = $1 AND namespace = $2 AND owner = $3 AND access_point_id = $4",
        )
        .bind(fs)
        .bind(ns)
        .bind(owner)
        .bind(access_point_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
