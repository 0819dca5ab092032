//! API tokens. Only the SHA-256 of a token is stored; the token itself is
//! shown once, to whoever created it.

use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Result, Store};

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name (a DNS label; workspaces' `spec.owner`).
    pub user: String,
    /// Admins read and write everything; users only their own workspaces.
    pub admin: bool,
}

/// Hashes a token for storage and lookup.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn new_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("berth_{body}")
}

impl Store {
    /// Creates a token for `user` and returns it (the only time it is visible).
    pub async fn token_create(&self, user: &str, admin: bool, description: &str) -> Result<String> {
        let token = new_token();
        sqlx::query("INSERT INTO tokens (id, user_name, admin, token_hash, description) VALUES ($1, $2, $3, $4, $5)")
            .bind(Uuid::new_v4())
            .bind(user)
            .bind(admin)
            .bind(token_hash(&token))
            .bind(description)
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// Creates the first admin token if no admin token exists yet; returns it
    /// only when it was created. Safe against several replicas starting at once.
    pub async fn token_bootstrap_admin(&self) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7368757101)")
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE admin)")
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            return Ok(None);
        }
        let token = new_token();
        sqlx::query("INSERT INTO tokens (id, user_name, admin, token_hash, description) VALUES ($1, 'admin', TRUE, $2, 'bootstrap')")
            .bind(Uuid::new_v4())
            .bind(token_hash(&token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// Resolves a presented token to an identity.
    pub async fn token_lookup(&self, token: &str) -> Result<Option<Identity>> {
        let row: Option<(String, bool)> =
            sqlx::query_as("SELECT user_name, admin FROM tokens WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(user, admin)| Identity { user, admin }))
    }
}
