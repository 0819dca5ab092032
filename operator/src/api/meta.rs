//! Object metadata, kinds and the untyped object envelope.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{API_VERSION, DEFAULT_NAMESPACE};

/// The kinds of resource Berth stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Organization defaults and limits for workspace lifecycles.
    LifecyclePolicy,
    /// A versioned workspace blueprint: image, scripts, parameters, infrastructure.
    WorkspaceTemplate,
    /// One developer's workspace.
    Workspace,
    /// A git repository whose documents are kept applied (GitOps).
    GitSource,
}

impl Kind {
    /// Every kind, in apply order: policies and templates before workspaces,
    /// git sources last.
    pub const ALL: [Kind; 4] = [
        Kind::LifecyclePolicy,
        Kind::WorkspaceTemplate,
        Kind::Workspace,
        Kind::GitSource,
    ];

    /// The kind's name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LifecyclePolicy => "LifecyclePolicy",
            Kind::WorkspaceTemplate => "WorkspaceTemplate",
            Kind::Workspace => "Workspace",
            Kind::GitSource => "GitSource",
        }
    }

    /// The plural resource name used in URLs and `kind/name` references.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::LifecyclePolicy => "lifecyclepolicies",
            Kind::WorkspaceTemplate => "workspacetemplates",
            Kind::Workspace => "workspaces",
            Kind::GitSource => "gitsources",
        }
    }

    /// The lower-case singular name printed by the CLI (`workspace/alice`).
    pub fn singular(self) -> &'static str {
        match self {
            Kind::LifecyclePolicy => "lifecyclepolicy",
            Kind::WorkspaceTemplate => "workspacetemplate",
            Kind::Workspace => "workspace",
            Kind::GitSource => "gitsource",
        }
    }

    /// The short name (`ws`, `wst`, `lp`, `gs`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::LifecyclePolicy => "lp",
            Kind::WorkspaceTemplate => "wst",
            Kind::Workspace => "ws",
            Kind::GitSource => "gs",
        }
    }

    /// Position in a multi-document apply: lower applies first.
    pub fn apply_order(self) -> u8 {
        match self {
            Kind::LifecyclePolicy => 0,
            Kind::WorkspaceTemplate => 1,
            Kind::Workspace => 2,
            Kind::GitSource => 3,
        }
    }

    /// Parses the `kind:` field of a document (exact, as Kubernetes does).
    pub fn from_kind_field(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Parses what a person types on the command line or in a URL:
    /// kind, singular, plural or short name, case-insensitively.
    pub fn from_user(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            l == k.singular()
                || l == k.plural()
                || l == k.short()
                || l == k.as_str().to_ascii_lowercase()
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// Standard object metadata. `uid`, `generation`, `resourceVersion`,
/// `creationTimestamp`, `deletionTimestamp` and `finalizers` are set by the
/// server; when a document carries them (a `get -o yaml` edited and applied
/// back) they are ignored, except `resourceVersion`, which makes the write
/// conditional (a stale one is a conflict).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name: an RFC 1123 DNS label (lower-case alphanumerics and '-', at most 63).
    pub name: String,
    /// The organization the object belongs to. Defaults to `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels for selection (`-l key=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Server-set unique id, stable for the object's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Uuid>,
    /// Server-set; bumped only when `spec` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Server-set revision of the last write; send it back for a conditional update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Server-set creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// Server-set when deletion was requested and finalizers still hold the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    /// Controllers' cleanup obligations; the object is removed when none remain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// A typed object: `apiVersion`, `kind`, `metadata`, `spec`, `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S, T> {
    /// Always `berth.dev/v1alpha1`.
    pub api_version: String,
    /// The resource kind.
    pub kind: String,
    /// Standard metadata.
    pub metadata: ObjectMeta,
    /// Desired state, written by users.
    pub spec: S,
    /// Observed state, written only by controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<T>,
}

/// The untyped envelope used by the store, the API and the CLI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynObject {
    /// `berth.dev/v1alpha1`.
    pub api_version: String,
    /// The resource kind.
    pub kind: String,
    /// Standard metadata.
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Observed state (`{}` until a controller writes it).
    #[serde(default, skip_serializing_if = "value_is_empty")]
    pub status: serde_json::Value,
}

fn value_is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

impl DynObject {
    /// The object's kind, if it is one Berth knows.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_kind_field(&self.kind)
    }

    /// `workspaces/alice`-style reference used in messages.
    pub fn reference(&self) -> String {
        match self.kind() {
            Some(k) => format!("{}/{}", k.plural(), self.metadata.name),
            None => format!("{}/{}", self.kind, self.metadata.name),
        }
    }

    /// Converts to a typed resource.
    pub fn to_typed<S, T>(&self) -> Result<Resource<S, T>, serde_json::Error>
    where
        S: serde::de::DeserializeOwned,
        T: serde::de::DeserializeOwned,
    {
        Ok(Resource {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            metadata: self.metadata.clone(),
            spec: serde_json::from_value(self.spec.clone())?,
            status: if value_is_empty(&self.status) {
                None
            } else {
                Some(serde_json::from_value(self.status.clone())?)
            },
        })
    }
}

impl<S: Serialize, T: Serialize> Resource<S, T> {
    /// Converts to the untyped envelope.
    pub fn to_dyn(&self) -> DynObject {
        DynObject {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            metadata: self.metadata.clone(),
            spec: serde_json::to_value(&self.spec).unwrap_or(serde_json::Value::Null),
            status: self
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Creates the envelope of a new object of `kind` (helper for tests and tools).
pub fn new_object(kind: Kind, namespace: &str, name: &str, spec: serde_json::Value) -> DynObject {
    DynObject {
        api_version: API_VERSION.to_string(),
        kind: kind.as_str().to_string(),
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ..Default::default()
        },
        spec,
        status: serde_json::Value::Null,
    }
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// A Kubernetes-shaped status condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Synced`, `Outdated`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// One CamelCase word saying why.
    #[serde(default)]
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The generation the condition was computed for.
    #[serde(default)]
    pub observed_generation: i64,
}
