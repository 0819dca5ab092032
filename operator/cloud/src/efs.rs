//! The EFS seam: access points.
//!
//! Each workspace mounts its owner's home directory through an EFS *access
//! point* that pins the POSIX identity (uid/gid) and roots the mount at the
//! owner's directory, creating it with the right owner and mode on first use.
//! Files on EFS are never deleted by Berth; only access points come and go.
//! Access point creation is idempotent through a client token derived from
//! the workspace uid, and access points carry ownership tags so a lost
//! response is adopted rather than duplicated.

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::CloudResult;
use crate::tags::Tags;

/// EFS limit: access points per file system.
pub const MAX_ACCESS_POINTS_PER_FILE_SYSTEM: usize = 10_000;
/// EFS limit: length of an access point root directory path.
pub const MAX_ROOT_DIRECTORY_LEN: usize = 100;
/// EFS limit: length of a client token.
pub const MAX_CLIENT_TOKEN_LEN: usize = 64;

/// The POSIX identity every file operation through the access point uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PosixUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Extra group ids.
    pub secondary_gids: Vec<u32>,
}

/// How EFS creates the root directory when it does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreationInfo {
    /// Owner uid of the created directory.
    pub owner_uid: u32,
    /// Owner gid of the created directory.
    pub owner_gid: u32,
    /// Octal mode, e.g. `"0750"`.
    pub permissions: String,
}

/// The directory the access point exposes as `/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootDirectory {
    /// Absolute path on the file system, e.g. `/home/alice`.
    pub path: String,
    /// Creation info; without it a missing path makes mounts fail.
    pub creation_info: Option<CreationInfo>,
}

/// Input of `CreateAccessPoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAccessPoint {
    /// Idempotency token (≤ 64 characters).
    pub client_token: String,
    /// `fs-…` id.
    pub file_system_id: String,
    /// Enforced POSIX identity.
    pub posix_user: Option<PosixUser>,
    /// Root directory.
    pub root_directory: Option<RootDirectory>,
    /// Tags.
    pub tags: Tags,
}

/// `LifeCycleState` of an access point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifeCycleState {
    /// Being created.
    Creating,
    /// Usable.
    Available,
    /// Being updated.
    Updating,
    /// Being deleted.
    Deleting,
    /// Deleted.
    Deleted,
    /// Creation failed.
    Error,
}

/// An EFS access point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessPoint {
    /// `fsap-…` id.
    pub access_point_id: String,
    /// `arn:aws:elasticfilesystem:…:access-point/fsap-…`.
    pub access_point_arn: String,
    /// The token it was created with.
    pub client_token: String,
    /// `fs-…` id.
    pub file_system_id: String,
    /// POSIX identity.
    pub posix_user: Option<PosixUser>,
    /// Root directory (`/` when created without one).
    pub root_directory: RootDirectory,
    /// Lifecycle state.
    pub life_cycle_state: LifeCycleState,
    /// Tags.
    pub tags: Tags,
    /// The `Name` tag, as EFS reports it.
    pub name: Option<String>,
    /// When it was created (not in the EFS API; informative).
    pub created_at: SystemTime,
}

/// The EFS calls a Berth controller makes.
#[async_trait]
pub trait Efs: Send + Sync {
    /// Creates an access point (state `creating`, then `available`).
    /// Repeating the call with the same client token and parameters returns
    /// the existing access point; the same token with other parameters →
    /// `AccessPointAlreadyExists`. Unknown file system → `FileSystemNotFound`.
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint>;

    /// All access points of a file system, with tags (all pages).
    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>>;

    /// One access point by id; unknown → `AccessPointNotFound`.
    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint>;

    /// Deletes an access point (files stay); unknown → `AccessPointNotFound`.
    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()>;
}
