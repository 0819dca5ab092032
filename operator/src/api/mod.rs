//! Berth's resource types (`berth.dev/v1alpha1`) and their validation.
//!
//! Every object has the Kubernetes shape: `apiVersion`, `kind`, `metadata`,
//! `spec` (written by users) and `status` (written only by controllers).
//! Typed structs (serde + schemars) define the shapes; [`DynObject`] is the
//! untyped envelope the store and the HTTP API move around, so that one code
//! path serves every kind. Parsing a document goes YAML → JSON value → typed
//! struct through `serde_path_to_error`, so an unknown or mistyped field is
//! reported with its full path (`spec.resources.memory`).

pub mod fargate;
pub mod gitsource;
pub mod meta;
pub mod policy;
pub mod selector;
pub mod template;
pub mod validate;
pub mod workspace;
pub mod yaml;

pub use gitsource::{GitSource, GitSourceSpec, GitSourceStatus};
pub use meta::{Condition, DynObject, Kind, ObjectMeta, Resource};
pub use policy::{LifecyclePolicy, LifecyclePolicySpec, LifecyclePolicyStatus};
pub use template::{WorkspaceTemplate, WorkspaceTemplateSpec, WorkspaceTemplateStatus};
pub use validate::{FieldError, Invalid};
pub use workspace::{Workspace, WorkspaceSpec, WorkspaceStatus};

/// The API group of every Berth resource.
pub const GROUP: &str = "berth.dev";
/// The API version of every Berth resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in documents.
pub const API_VERSION: &str = "berth.dev/v1alpha1";
/// The namespace (organization) used when a document names none.
pub const DEFAULT_NAMESPACE: &str = "default";
