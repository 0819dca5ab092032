//! [`Efs`] on `aws-sdk-efs`.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_efs::types as t;
use aws_sdk_efs::Client;
use berth_cloud::efs::{
    AccessPoint, CreateAccessPoint, CreationInfo, Efs, LifeCycleState, PosixUser, RootDirectory,
    MAX_CLIENT_TOKEN_LEN,
};
use berth_cloud::{CloudError, CloudResult, ErrorCode, Tags};

use crate::convert::non_empty;
use crate::error::map_sdk_error;
use crate::invalid;

/// Pages followed at most by one list call.
const MAX_PAGES: usize = 10_000;

/// EFS through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsEfs {
    efs: Client,
}

impl AwsEfs {
    /// Wraps an SDK client.
    pub fn new(efs: Client) -> Self {
        AwsEfs { efs }
    }
}

fn life_cycle_state(s: Option<&t::LifeCycleState>) -> LifeCycleState {
    match s {
        Some(t::LifeCycleState::Available) => LifeCycleState::Available,
        Some(t::LifeCycleState::Creating) => LifeCycleState::Creating,
        Some(t::LifeCycleState::Updating) => LifeCycleState::Updating,
        Some(t::LifeCycleState::Deleting) => LifeCycleState::Deleting,
        Some(t::LifeCycleState::Deleted) => LifeCycleState::Deleted,
        Some(t::LifeCycleState::Error) => LifeCycleState::Error,
        // Unknown or missing: not usable yet; the controller waits.
        _ => LifeCycleState::Creating,
    }
}

fn id(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The fields of an access point as the SDK returns them (create output and
/// description share them but are distinct types).
struct Fields<'a> {
    access_point_id: Option<&'a str>,
    access_point_arn: Option<&'a str>,
    client_token: Option<&'a str>,
    file_system_id: Option<&'a str>,
    posix_user: Option<&'a t::PosixUser>,
    root_directory: Option<&'a t::RootDirectory>,
    life_cycle_state: Option<&'a t::LifeCycleState>,
    tags: &'a [t::Tag],
    name: Option<&'a str>,
}

fn access_point(f: Fields<'_>) -> AccessPoint {
    let tags: Tags = f
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    AccessPoint {
        access_point_id: f.access_point_id.unwrap_or_default().to_owned(),
        access_point_arn: f.access_point_arn.unwrap_or_default().to_owned(),
        client_token: f.client_token.unwrap_or_default().to_owned(),
        file_system_id: f.file_system_id.unwrap_or_default().to_owned(),
        posix_user: f.posix_user.map(|p| PosixUser {
            uid: id(p.uid),
            gid: id(p.gid),
            secondary_gids: p.secondary_gids().iter().map(|g| id(*g)).collect(),
        }),
        root_directory: match f.root_directory {
            Some(r) => RootDirectory {
                path: r.path.clone().unwrap_or_else(|| "/".into()),
                creation_info: r.creation_info.as_ref().map(|c| CreationInfo {
                    owner_uid: id(c.owner_uid),
                    owner_gid: id(c.owner_gid),
                    permissions: c.permissions.clone(),
                }),
            },
            None => RootDirectory {
                path: "/".into(),
                creation_info: None,
            },
        },
        life_cycle_state: life_cycle_state(f.life_cycle_state),
        name: f
            .name
            .map(str::to_owned)
            .or_else(|| tags.get("Name").cloned()),
        tags,
        // EFS does not report a creation time for access points.
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn from_description(d: &t::AccessPointDescription) -> AccessPoint {
    access_point(Fields {
        access_point_id: d.access_point_id.as_deref(),
        access_point_arn: d.access_point_arn.as_deref(),
        client_token: d.client_token.as_deref(),
        file_system_id: d.file_system_id.as_deref(),
        posix_user: d.posix_user.as_ref(),
        root_directory: d.root_directory.as_ref(),
        life_cycle_state: d.life_cycle_state.as_ref(),
        tags: d.tags(),
        name: d.name.as_deref(),
    })
}

fn build_err(op: &'static str, e: aws_smithy_types::error::operation::BuildError) -> CloudError {
    invalid(op, e.to_string())
}

impl AwsEfs {
    async fn describe_page(
        &self,
        file_system_id: Option<&str>,
        access_point_id: Option<&str>,
        token: Option<String>,
    ) -> CloudResult<(Vec<AccessPoint>, Option<String>)> {
        const OP: &str = "DescribeAccessPoints";
        let out = self
            .efs
            .describe_access_points()
            .set_file_system_id(file_system_id.map(str::to_owned))
            .set_access_point_id(access_point_id.map(str::to_owned))
            .set_max_results(file_system_id.map(|_| 100))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok((
            out.access_points().iter().map(from_description).collect(),
            out.next_token.as_deref().and_then(non_empty),
        ))
    }
}

#[async_trait]
impl Efs for AwsEfs {
    async fn create_access_point(&self, input: CreateAccessPoint) -> CloudResult<AccessPoint> {
        const OP: &str = "CreateAccessPoint";
        if input.client_token.is_empty() || input.client_token.len() > MAX_CLIENT_TOKEN_LEN {
            return Err(CloudError::new(
                OP,
                ErrorCode::BadRequest,
                format!("ClientToken must be 1 to {MAX_CLIENT_TOKEN_LEN} characters."),
            ));
        }
        let posix_user = match &input.posix_user {
            Some(p) => Some(
                t::PosixUser::builder()
                    .uid(i64::from(p.uid))
                    .gid(i64::from(p.gid))
                    .set_secondary_gids(
                        (!p.secondary_gids.is_empty())
                            .then(|| p.secondary_gids.iter().map(|g| i64::from(*g)).collect()),
                    )
                    .build()
                    .map_err(|e| build_err(OP, e))?,
            ),
            None => None,
        };
        let root_directory = match &input.root_directory {
            Some(r) => Some(
                t::RootDirectory::builder()
                    .path(&r.path)
                    .set_creation_info(match &r.creation_info {
                        Some(c) => Some(
                            t::CreationInfo::builder()
                                .owner_uid(i64::from(c.owner_uid))
                                .owner_gid(i64::from(c.owner_gid))
                                .permissions(&c.permissions)
                                .build()
                                .map_err(|e| build_err(OP, e))?,
                        ),
                        None => None,
                    })
                    .build(),
            ),
            None => None,
        };
        let tags = input
            .tags
            .iter()
            .map(|(k, v)| t::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| build_err(OP, e))?;
        let out = self
            .efs
            .create_access_point()
            .client_token(&input.client_token)
            .file_system_id(&input.file_system_id)
            .set_posix_user(posix_user)
            .set_root_directory(root_directory)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        let mut ap = access_point(Fields {
            access_point_id: out.access_point_id.as_deref(),
            access_point_arn: out.access_point_arn.as_deref(),
            client_token: out.client_token.as_deref(),
            file_system_id: out.file_system_id.as_deref(),
            posix_user: out.posix_user.as_ref(),
            root_directory: out.root_directory.as_ref(),
            life_cycle_state: out.life_cycle_state.as_ref(),
            tags: out.tags(),
            name: out.name.as_deref(),
        });
        if ap.tags.is_empty() {
            ap.tags = input.tags;
        }
        Ok(ap)
    }

    async fn describe_access_points(&self, file_system_id: &str) -> CloudResult<Vec<AccessPoint>> {
        let mut all = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let (page, next) = self
                .describe_page(Some(file_system_id), None, token)
                .await?;
            all.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
        Err(CloudError::new(
            "DescribeAccessPoints",
            ErrorCode::Other("TooManyPages".into()),
            "pagination did not end",
        ))
    }

    async fn describe_access_point(&self, access_point_id: &str) -> CloudResult<AccessPoint> {
        let (page, _) = self
            .describe_page(None, Some(access_point_id), None)
            .await?;
        page.into_iter()
            .find(|ap| ap.access_point_id == access_point_id)
            .ok_or_else(|| {
                CloudError::new(
                    "DescribeAccessPoints",
                    ErrorCode::AccessPointNotFound,
                    format!("Access point '{access_point_id}' does not exist."),
                )
            })
    }

    async fn delete_access_point(&self, access_point_id: &str) -> CloudResult<()> {
        const OP: &str = "DeleteAccessPoint";
        self.efs
            .delete_access_point()
            .access_point_id(access_point_id)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, e))?;
        Ok(())
    }
}
