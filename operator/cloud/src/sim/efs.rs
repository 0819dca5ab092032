//! Simulated EFS: file systems (ids only) and access points.
//!
//! Access points are `creating` for [`Delays::access_point_creating`], then
//! `available`; a deleted one is `deleting` for
//! [`Delays::access_point_deleting`], then gone. States are computed from
//! timestamps when read.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{hex, Delays, State};
use crate::efs::{
    AccessPoint, CreateAccessPoint, Efs, LifeCycleState, RootDirectory,
    MAX_ACCESS_POINTS_PER_FILE_SYSTEM, MAX_CLIENT_TOKEN_LEN, MAX_ROOT_DIRECTORY_LEN,
};
use crate::error::{CloudError, CloudResult, ErrorCode};
use crate::ops::Operation;
use crate::{tags, Sim};

#[derive(Default)]
pub(super) struct EfsState {
    pub file_systems: BTreeSet<String>,
    access_points: BTreeMap<String, ApRec>,
    /// Client tokens of deleted access points → their ids: EFS remembers
    /// a token it answered, and a create that reuses it is refused with
    /// `AccessPointAlreadyExists` (a new access point needs a new token).
    spent_tokens: BTreeMap<String, String>,
}

struct ApRec {
    ap: AccessPoint,
    created: Instant,
    deleting_since: Option<Instant>,
}

impl ApRec {
    fn state(&self, t: Instant, d: &Delays) -> LifeCycleState {
        match self.deleting_since {
            Some(since) if t >= since + d.access_point_deleting => LifeCycleState::Deleted,
            Some(_) => LifeCycleState::Deleting,
            None if t < self.created + d.access_point_creating => LifeCycleState::Creating,
            None => LifeCycleState::Available,
        }
    }

    fn view(&self, t: Instant, d: &Delays) -> AccessPoint {
        AccessPoint {
            life_cycle_state: self.state(t, d),
            ..self.ap.clone()
        }
    }
}

impl EfsState {
    pub(super) fn advance(&mut self, now: Instant, d: &Delays) {
        let spent = &mut self.spent_tokens;
        self.access_points.retain(|_, ap| {
            let keep = ap.state(now, d) != LifeCycleState::Deleted;
            if !keep {
                spent.insert(ap.ap.client_token.clone(), ap.ap.access_point_id.clone());
            }
            keep
        });
    }

    /// True when a task may mount `access_point` of `file_system` at `t`.
    pub(super) fn usable(
        &self,
        access_point: &str,
        file_system: &str,
        t: Instant,
        d: &Delays,
    ) -> bool {
        self.access_points.get(access_point).is_some_and(|ap| {
            ap.ap.file_system_id == file_system
                && matches!(
                    ap.state(t, d),
                    LifeCycleState::Creating | LifeCycleState::Available
                )
        })
    }

    pub(super) fn list(
        &self,
        file_system: &str,
        now: Instant,
        d: &Delays,
    ) -> Option<Vec<AccessPoint>> {
        if !self.file_systems.contains(file_system) {
            return None;
        }
        let mut out: Vec<&ApRec> = self
            .access_points
            .values()
            .filter(|ap| ap.ap.file_system_id == file_system)
            .collect();
        out.sort_by(|a, b| {
            (a.created, &a.ap.access_point_id).cmp(&(b.created, &b.ap.access_point_id))
        });
        Some(out.into_iter().map(|ap| ap.view(now, d)).collect())
    }

    /// An access point that is not gone yet, as it is at `now`.
    pub(super) fn peek(&self, id: &str, now: Instant, d: &Delays) -> Option<AccessPoint> {
        self.access_points
            .get(id)
            .map(|ap| ap.view(now, d))
            .filter(|ap| ap.life_cycle_state != LifeCycleState::Deleted)
    }

    pub(super) fn count(&self) -> usize {
        self.access_points.len()
    }
}

fn valid_root_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_ROOT_DIRECTORY_LEN
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == ".." || seg == ".")
}

fn valid_permissions(mode: &str) -> bool {
    (3..=4).contains(&mode.len()) && mode.chars().all(|c| ('0'..='7').contains(&c))
}

impl State {
    fn file_system(&mut self, op: Operation, id: &str) -> CloudResult<()> {
        if !self.efs.file_systems.contains(id) {
            if !self.cfg.permissive {
                return Err(CloudError::new(
                    op.as_str(),
                    ErrorCode::FileSystemNotFound,
                    format!("File system '{id}' does not exist."),
                ));
            }
            self.efs.file_systems.insert(id.to_owned());
        }
        Ok(())
    }

    fn create_access_point(
        &mut self,
        input: CreateAccessPoint,
        now: Instant,
    ) -> CloudResult<AccessPoint> {
        let op = Operation::CreateAccessPoint;
        let bad = |msg: String| CloudError::new(op.as_str(), ErrorCode::BadRequest, msg);
        if input.client_token.is_empty() || input.client_token.len() > MAX_CLIENT_TOKEN_LEN {
            return Err(bad(format!(
                "ClientToken must be 1 to {MAX_CLIENT_TOKEN_LEN} characters."
            )));
        }
        self.file_system(op, &input.file_system_id)?;
        tags::validate(&input.tags).map_err(bad)?;
        let root = input.root_directory.clone().unwrap_or(RootDirectory {
            path: "/".into(),
            creation_info: None,
        });
        if !valid_root_path(&root.path) {
            return Err(bad(format!(
                "RootDirectory path '{}' is invalid.",
                root.path
            )));
        }
        if let Some(info) = &root.creation_info {
            if !valid_permissions(&info.permissions) {
                return Err(bad(format!(
                    "CreationInfo permissions '{}' must be an octal mode such as 0755.",
                    info.permissions
                )));
            }
        }
        let d = &self.cfg.delays;
        if let Some(existing) = self
            .efs
            .access_points
            .values()
            .find(|ap| ap.ap.client_token == input.client_token && ap.deleting_since.is_none())
        {
            let same = existing.ap.file_system_id == input.file_system_id
                && existing.ap.posix_user == input.posix_user
                && existing.ap.root_directory == root
                && existing.ap.tags == input.tags;
            if same {
                return Ok(existing.view(now, d));
            }
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::AccessPointAlreadyExists,
                format!(
                    "Access point {} already exists with the client token you provided.",
                    existing.ap.access_point_id
                ),
            ));
        }
        let deleted = self
            .efs
            .access_points
            .values()
            .find(|ap| ap.ap.client_token == input.client_token)
            .map(|ap| ap.ap.access_point_id.clone())
            .or_else(|| self.efs.spent_tokens.get(&input.client_token).cloned());
        if let Some(id) = deleted {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::AccessPointAlreadyExists,
                format!("Access point {id} already exists with the client token you provided."),
            ));
        }
        let on_fs = self
            .efs
            .access_points
            .values()
            .filter(|ap| ap.ap.file_system_id == input.file_system_id)
            .count();
        if on_fs >= MAX_ACCESS_POINTS_PER_FILE_SYSTEM {
            return Err(CloudError::new(
                op.as_str(),
                ErrorCode::AccessPointLimitExceeded,
                format!(
                    "You have reached the maximum number of access points \
                     ({MAX_ACCESS_POINTS_PER_FILE_SYSTEM}) for file system {}.",
                    input.file_system_id
                ),
            ));
        }
        let id = format!("fsap-{}", hex(&mut self.ids, 17));
        let ap = AccessPoint {
            access_point_arn: format!(
                "arn:aws:elasticfilesystem:{}:{}:access-point/{id}",
                super::region_now(&self.cfg),
                self.cfg.account_id
            ),
            access_point_id: id.clone(),
            client_token: input.client_token,
            file_system_id: input.file_system_id,
            posix_user: input.posix_user,
            root_directory: root,
            life_cycle_state: LifeCycleState::Creating,
            name: input.tags.get("Name").cloned(),
            tags: input.tags,
            created_at: self.clock.wall(now),
        };
        let rec = ApRec {
            ap,
            created: now,
            deleting_since: None,
        };
        let out = rec.view(now, d);
        self.efs.access_points.insert(id, rec);
        Ok(out)
    }

    fn describe_access_points(
        &mut self,
        file_system: &str,
        now: Instant,
    ) -> CloudResult<Vec<AccessPoint>> {
        self.file_system(Operation::DescribeAccessPoints, file_system)?;
        Ok(self
            .efs
            .list(file_system, now, &self.cfg.delays)
            .unwrap_or_default())
    }

    fn not_found(op: Operation, id: &str) -> CloudError {
        CloudError::new(
            op.as_str(),
            ErrorCode::AccessPointNotFound,
            format!("Access point '{id}' does not exist."),
        )
    }

    fn describe_access_point(&self, id: &str, now: Instant) -> CloudResult<AccessPoint> {
        self.efs
            .access_points
            .get(id)
            .map(|ap| ap.view(now, &self.cfg.delays))
            .ok_or_else(|| State::not_found(Operation::DescribeAccessPoints, id))
    }

    fn delete_access_point(&mut self, id: &str, now: Instant) -> CloudResult<()> {
        let ap = self
            .efs
            .access_points
            .get_mut(id)
            .ok_or_else(|| State::not_found(Operation::DeleteAccessPoint, id))?;
        ap.deleting_since.get_or_insert(now);
        Ok(())
    }
}

#[async_trait]
impl Efs for Sim {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        self.call(Operation::CreateAccessPoint, |st, now| {
            st.create_access_point(input, now)
        })
        .await
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        self.call(Operation::DescribeAccessPoints, |st, now| {
            st.describe_access_points(file_system_id, now)
        })
        .await
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        self.call(Operation::DescribeAccessPoints, |st, now| {
            st.describe_access_point(access_point_id, now)
        })
        .await
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        self.call(Operation::DeleteAccessPoint, |st, now| {
            st.delete_access_point(access_point_id, now)
        })
        .await
    }
}
