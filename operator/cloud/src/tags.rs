//! Ownership tags.
//!
//! Every ECS and EFS object Berth creates carries the owning object's uid,
//! namespace and name. A crash between a create call and the status write
//! then leaves an object the next reconcile can *adopt* (find by tag) instead
//! of creating a second one, and an operator can tell from the AWS console
//! which workspace an object belongs to.

use std::collections::BTreeMap;

/// Tags as AWS stores them: key → value. A `BTreeMap` keeps rendering and
/// content hashes deterministic.
pub type Tags = BTreeMap<String, String>;

/// Tag key holding the owning object's `metadata.uid`.
pub const UID: &str = "berth.dev/uid";
/// Tag key holding the owning object's `metadata.namespace`.
pub const NAMESPACE: &str = "berth.dev/namespace";
/// Tag key holding the owning object's `metadata.name`.
pub const NAME: &str = "berth.dev/name";
/// Tag key a controller may use to record the content hash an object was
/// rendered from (e.g. a task definition revision), so "unchanged" can be
/// decided from AWS alone.
pub const CONTENT_HASH: &str = "berth.dev/content-hash";

/// Tag key of a home (an owner's access point, shared by the owner's
/// workspaces in a namespace): the owner. With [`NAMESPACE`], and without
/// [`UID`], since no one workspace owns it.
pub const HOME_OWNER: &str = "berth.dev/home-owner";

/// The tags of `owner`'s home in `namespace`.
pub fn home_tags(namespace: &str, owner: &str) -> Tags {
    Tags::from([
        (NAMESPACE.to_owned(), namespace.to_owned()),
        (HOME_OWNER.to_owned(), owner.to_owned()),
    ])
}

/// True when the tags say: `owner`'s home in `namespace`.
pub fn is_home_of(tags: &Tags, namespace: &str, owner: &str) -> bool {
    tags.get(NAMESPACE).is_some_and(|v| v == namespace)
        && tags.get(HOME_OWNER).is_some_and(|v| v == owner)
}

/// AWS limit: at most 50 user tags on a resource.
pub const MAX_TAGS: usize = 50;
/// AWS limit: tag keys are at most 128 characters.
pub const MAX_KEY_LEN: usize = 128;
/// AWS limit: tag values are at most 256 characters.
pub const MAX_VALUE_LEN: usize = 256;

/// The owner of a cloud object, as recorded in its tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `metadata.uid` of the owning object.
    pub uid: String,
    /// `metadata.namespace` of the owning object.
    pub namespace: String,
    /// `metadata.name` of the owning object.
    pub name: String,
}

impl Owner {
    /// An owner from its uid, namespace and name.
    pub fn new(
        uid: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Owner {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The three ownership tags for this owner.
    pub fn tags(&self) -> Tags {
        owner_tags(&self.uid, &self.namespace, &self.name)
    }

    /// Reads the owner back from an object's tags; `None` unless all three
    /// keys are present.
    pub fn from_tags(tags: &Tags) -> Option<Owner> {
        Some(Owner {
            uid: tags.get(UID)?.clone(),
            namespace: tags.get(NAMESPACE)?.clone(),
            name: tags.get(NAME)?.clone(),
        })
    }
}

/// Builds the ownership tags for an object owned by `uid` /
/// `namespace`/`name`.
pub fn owner_tags(uid: &str, namespace: &str, name: &str) -> Tags {
    Tags::from([
        (UID.to_owned(), uid.to_owned()),
        (NAMESPACE.to_owned(), namespace.to_owned()),
        (NAME.to_owned(), name.to_owned()),
    ])
}

/// True when `tags` say the object belongs to the object with `uid`.
pub fn is_owned_by(tags: &Tags, uid: &str) -> bool {
    tags.get(UID).is_some_and(|v| v == uid)
}

/// Checks tags against AWS's limits (count, key and value length, the
/// reserved `aws:` prefix); the error text is AWS's wording.
pub fn validate(tags: &Tags) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "The number of tags ({}) exceeds the maximum of {MAX_TAGS}.",
            tags.len()
        ));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
            return Err(format!(
                "Tag key '{key}' must be between 1 and {MAX_KEY_LEN} characters."
            ));
        }
        if value.chars().count() > MAX_VALUE_LEN {
            return Err(format!(
                "Tag value for key '{key}' must be at most {MAX_VALUE_LEN} characters."
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("Tag key '{key}' uses the reserved prefix 'aws:'."));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tags_round_trip_through_from_tags() {
        let owner = Owner::new("u-1", "acme", "alice");
        let tags = owner.tags();
        assert_eq!(tags.get(UID).map(String::as_str), Some("u-1"));
        assert_eq!(Owner::from_tags(&tags), Some(owner));
        assert!(is_owned_by(&tags, "u-1"));
        assert!(!is_owned_by(&tags, "u-2"));
    }

    #[test]
    fn reserved_prefix_and_overlong_values_are_rejected() {
        let mut tags = owner_tags("u", "n", "w");
        assert!(validate(&tags).is_ok());
        tags.insert("aws:cloudformation".into(), "x".into());
        assert!(validate(&tags).is_err());
        let long = Tags::from([("k".to_owned(), "v".repeat(257))]);
        assert!(validate(&long).is_err());
    }
}
