//! The PostgreSQL store: objects with `uid`, `generation` (bumped only when
//! spec changes) and `resourceVersion` (one global revision, handed out in
//! commit order), spec and status kept apart, immutable template versions,
//! events, API tokens, and a change log that watches resume from.
//!
//! The store is concrete (no trait): methods are named resource-first and
//! tested against a real PostgreSQL. Transaction-level helpers
//! (`*_tx`) let the apply engine write many objects all-or-nothing.
//!
//! # Guarantees
//! - Every write of an object bumps the global revision inside the writing
//!   transaction, under the revision row's lock, so revisions are assigned
//!   in commit order: a watcher that has seen revision N and reads
//!   `> N` never misses a change.
//! - Every write appends to `changes`; a watch is a read of that log plus a
//!   LISTEN/NOTIFY wake-up, so a dropped connection or a restart loses
//!   nothing (resume from the last revision seen).

mod agent;
mod events;
mod homes;
mod intents;
mod leases;
mod objects;
mod templates;
mod tokens;
mod watch;
mod web;

pub use agent::{
    AgentScript, AgentSession, StoredLine, KEEP_STARTS, LOG_CAP_BYTES, REPLICA_TIMEOUT,
};
pub use events::{Event, EventType, InvolvedObject};
pub use homes::Home;
pub(crate) use intents::insert_intent_tx;
pub use intents::{Activity, NewIntent, PowerAction, PowerIntent};
pub use leases::Lease;
pub(crate) use objects::{delete_tx, get_for_update, labelled_names, write_spec};
pub use objects::{revision_of, DeleteOutcome, Write, WriteKind};
pub use templates::TemplateVersion;
pub(crate) use templates::{insert_version_tx, latest_version_tx, version_tx};
pub use tokens::{token_hash, Identity};
pub use watch::{Change, ChangeType, WatchFilter};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;

/// The channel writers notify after commit; its payload is the revision.
pub const NOTIFY_CHANNEL: &str = "berth_changes";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Running migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write named a stale `resourceVersion`, or a concurrent
    /// writer won.
    #[error("{0}")]
    Conflict(String),
    /// The requested watch revision was compacted away.
    #[error("resourceVersion {0} is too old; re-list and watch from the list's resourceVersion")]
    Gone(i64),
    /// A stored row could not be decoded (a bug or a manual edit).
    #[error("stored object {0} is corrupt: {1}")]
    Corrupt(String, String),
}

impl StoreError {
    /// Whether the error is a unique-key violation (a concurrent create).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Shorthand result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let opts = PgConnectOptions::from_str(url)?.application_name("berth");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(opts)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool (migrations not run).
    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    /// Runs pending migrations (safe to call from several replicas).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
