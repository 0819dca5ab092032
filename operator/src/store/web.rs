//! Browser sessions: one-time tickets exchanged for path-scoped session
//! cookies (see the migration `web_sessions`). Only hashes are stored.

use std::time::Duration;

use sqlx::Row as _;

use super::tokens::{new_token, token_hash, Identity};
use super::{Result, Store};

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// Mints a one-time ticket for `who`, good for `ttl` on `scope` (a path).
    pub async fn web_ticket_create(
        &self,
        who: &Identity,
        scope: &str,
        ttl: Duration,
    ) -> Result<String> {
        let ticket = new_token();
        sqlx::query(
            "INSERT INTO web_tickets (hash, user_name, admin, scope, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(token_hash(&ticket))
        .bind(&who.user)
        .bind(who.admin)
        .bind(scope)
        .bind(secs(ttl))
        .execute(&self.pool)
        .await?;
        // Expired tickets are of no use to anyone.
        sqlx::query("DELETE FROM web_tickets WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(ticket)
    }

    /// Uses a ticket up: who it was for, if it is valid for `scope` and
    /// unexpired. A ticket works once.
    pub async fn web_ticket_redeem(&self, ticket: &str, scope: &str) -> Result<Option<Identity>> {
        let row = sqlx::query(
            "DELETE FROM web_tickets WHERE hash = $1 RETURNING user_name, admin, scope, expires_at > now() AS fresh",
        )
        .bind(token_hash(ticket))
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let (fresh, s): (bool, String) = (r.try_get("fresh")?, r.try_get("scope")?);
        if !fresh || s != scope {
            return Ok(None);
        }
        Ok(Some(Identity {
            user: r.try_get("user_name")?,
            admin: r.try_get("admin")?,
        }))
    }

    /// Opens a session for `who` on `scope`; returns its id (the cookie's value).
    pub async fn web_session_create(
        &self,
        who: &Identity,
        scope: &str,
        ttl: Duration,
    ) -> Result<String> {
        let id = new_token();
        sqlx::query(
            "INSERT INTO web_sessions (hash, user_name, admin, scope, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(token_hash(&id))
        .bind(&who.user)
        .bind(who.admin)
        .bind(scope)
        .bind(secs(ttl))
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Who a session cookie belongs to, if it is open on `scope`.
    pub async fn web_session_lookup(&self, id: &str, scope: &str) -> Result<Option<Identity>> {
        let row = sqlx::query(
            "SELECT user_name, admin FROM web_sessions WHERE hash = $1 AND scope = $2 AND expires_at > now()",
        )
        .bind(token_hash(id))
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Identity {
                user: r.try_get("user_name")?,
                admin: r.try_get("admin")?,
            })
        })
        .transpose()
    }

    /// Closes a session (sign out). Closing an unknown session is not an error.
    pub async fn web_session_delete(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE hash = $1")
            .bind(token_hash(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
