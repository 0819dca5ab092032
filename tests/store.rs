//! Store semantics against a real PostgreSQL: generation, resourceVersion,
//! conflicts, template versions, finalizers, events, watch resume, and the
//! all-or-nothing apply.

mod common;

use std::time::Duration;

use berth::api::selector::Selector;
use berth::api::yaml::parse_documents;
use berth::api::Kind;
use berth::apply::{apply, ApplyError};
use berth::store::{
    revision_of, ChangeType, DeleteOutcome, EventType, Identity, InvolvedObject, WatchFilter,
};
use futures_util::StreamExt;

fn admin() -> Identity {
    Identity {
        user: "admin".into(),
        admin: true,
    }
}

async fn apply_yaml(
    store: &berth::store::Store,
    yaml: &str,
) -> Result<Vec<berth::apply::ApplyResult>, ApplyError> {
    apply(store, &admin(), &parse_documents(yaml).unwrap(), false).await
}

#[tokio::test]
async fn generation_moves_only_with_spec_and_unchanged_apply_writes_nothing() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let ws = common::workspace("alice", "alice", "");
    let r = apply_yaml(&store, &ws).await.unwrap();
    assert_eq!(r[0].action, "created");
    let first = r[0].object.clone();
    assert_eq!(first.metadata.generation, Some(1));

    let rev_before = store.revision_current().await.unwrap();
    let r = apply_yaml(&store, &ws).await.unwrap();
    assert_eq!(r[0].action, "unchanged");
    assert_eq!(
        store.revision_current().await.unwrap(),
        rev_before,
        "an unchanged apply must not write"
    );

    let labelled = ws.replace(
        "  name: alice\n",
        "  name: alice\n  labels:\n    team: infra\n",
    );
    let r = apply_yaml(&store, &labelled).await.unwrap();
    assert_eq!(r[0].action, "configured");
    assert_eq!(
        r[0].object.metadata.generation,
        Some(1),
        "labels are not spec"
    );
    assert!(revision_of(&r[0].object) > revision_of(&first));

    let resized = format!("{labelled}  resources: {{cpu: 2048, memory: 4096}}\n");
    let r = apply_yaml(&store, &resized).await.unwrap();
    assert_eq!(r[0].action, "configured");
    assert_eq!(r[0].object.metadata.generation, Some(2));
    assert_eq!(r[0].object.metadata.uid, first.metadata.uid);
}

#[tokio::test]
async fn resource_versions_are_one_global_increasing_sequence() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let mut last = 0;
    for name in ["a", "b", "c"] {
        let r = apply_yaml(&store, &common::workspace(name, name, ""))
            .await
            .unwrap();
        let rv = revision_of(&r[0].object);
        assert!(rv > last, "{rv} after {last}");
        last = rv;
    }
    assert_eq!(store.revision_current().await.unwrap(), last);
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict_and_changes_nothing() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let r = apply_yaml(&store, &common::workspace("alice", "alice", ""))
        .await
        .unwrap();
    let rv = revision_of(&r[0].object);
    apply_yaml(
        &store,
        &common::workspace("alice", "alice", "  running: false\n"),
    )
    .await
    .unwrap();
    let stale = common::workspace("alice", "alice", "  resources: {cpu: 2048, memory: 4096}\n")
        .replace(
            "  name: alice\n",
            &format!("  name: alice\n  resourceVersion: \"{rv}\"\n"),
        );
    match apply_yaml(&store, &stale).await {
        Err(ApplyError::Conflict(c)) => assert_eq!(c[0].field, "metadata.resourceVersion"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = store
        .object_get(Kind::Workspace, "default", "alice")
        .await
        .unwrap()
        .unwrap();
    assert!(now.spec.get("resources").is_none());

    // The status path honours preconditions too.
    let err = store
        .object_update_status(
            Kind::Workspace,
            "default",
            "alice",
            &serde_json::json!({"phase": "Running"}),
            Some(rv),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, berth::store::StoreError::Conflict(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn every_template_spec_change_makes_a_new_immutable_version() {
    let store = common::store().await;
    let r = apply_yaml(&store, common::TEMPLATE).await.unwrap();
    assert_eq!(r[0].object.status["latestVersion"], 1);
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let v2 = common::TEMPLATE.replace("dev:1", "dev:2");
    let r = apply_yaml(&store, &v2).await.unwrap();
    assert_eq!(r[0].object.status["latestVersion"], 2);
    let versions = store.template_version_list("default", "dev").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        versions[0].spec["container"]["image"],
        "ghcr.io/example/dev:1"
    );
    assert_eq!(
        versions[1].spec["container"]["image"],
        "ghcr.io/example/dev:2"
    );

    // Pinning to an existing version works; to a missing one is an error on the field.
    apply_yaml(
        &store,
        &common::workspace("pinned", "alice", "    version: 1\n"),
    )
    .await
    .unwrap();
    match apply_yaml(
        &store,
        &common::workspace("pinned2", "alice", "    version: 7\n"),
    )
    .await
    {
        Err(ApplyError::Invalid(c)) => {
            assert_eq!(c[0].field, "spec.template.version");
            assert!(c[0].message.contains("1 to 2"), "{}", c[0].message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_multi_document_apply_with_one_bad_document_writes_nothing_and_reports_every_error() {
    let store = common::store().await;
    let yaml = format!(
        "{}\n---\n{}\n---\n{}\n---\n{}",
        common::TEMPLATE,
        common::workspace("good", "alice", ""),
        common::workspace(
            "bad-memory",
            "alice",
            "  resources: {cpu: 2048, memory: 2048}\n"
        ),
        common::workspace("Bad_Name", "alice", ""),
    );
    let rev = store.revision_current().await.unwrap();
    let err = apply_yaml(&store, &yaml).await.unwrap_err();
    let ApplyError::Invalid(causes) = err else {
        panic!("{err:?}")
    };
    let fields: Vec<(String, String)> = causes
        .iter()
        .map(|c| (c.object.clone(), c.field.clone()))
        .collect();
    assert!(
        fields.contains(&(
            "workspaces/bad-memory".into(),
            "spec.resources.memory".into()
        )),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("workspaces/Bad_Name".into(), "metadata.name".into())),
        "{fields:?}"
    );
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert_eq!(store.revision_current().await.unwrap(), rev);
    for kind in [Kind::WorkspaceTemplate, Kind::Workspace] {
        let (items, _) = store
            .object_list(kind, None, &Selector::default(), None)
            .await
            .unwrap();
        assert!(items.is_empty(), "{kind} written despite the bad document");
    }
    // Workspaces listed before their template still apply: templates go first.
    let ordered = format!(
        "{}\n---\n{}",
        common::workspace("good", "alice", ""),
        common::TEMPLATE
    );
    let r = apply_yaml(&store, &ordered).await.unwrap();
    assert_eq!(r[0].kind, "WorkspaceTemplate");
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_released() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    apply_yaml(&store, &common::workspace("alice", "alice", ""))
        .await
        .unwrap();
    store
        .object_set_finalizers(
            Kind::Workspace,
            "default",
            "alice",
            &["berth.dev/cloud".to_string()],
            None,
        )
        .await
        .unwrap();
    let out = store
        .object_delete(Kind::Workspace, "default", "alice", None)
        .await
        .unwrap();
    let DeleteOutcome::Terminating(obj) = out else {
        panic!("expected Terminating")
    };
    assert!(obj.metadata.deletion_timestamp.is_some());
    // Re-applying a terminating object is refused.
    assert!(matches!(
        apply_yaml(&store, &common::workspace("alice", "alice", "")).await,
        Err(ApplyError::Conflict(_))
    ));
    let gone = store
        .object_set_finalizers(Kind::Workspace, "default", "alice", &[], None)
        .await
        .unwrap();
    assert!(gone.is_none());
    assert!(store
        .object_get(Kind::Workspace, "default", "alice")
        .await
        .unwrap()
        .is_none());
    // A template in use cannot be deleted; unused, it can.
    apply_yaml(&store, &common::workspace("bob", "bob", ""))
        .await
        .unwrap();
    assert!(store
        .object_delete(Kind::WorkspaceTemplate, "default", "dev", None)
        .await
        .is_err());
    store
        .object_delete(Kind::Workspace, "default", "bob", None)
        .await
        .unwrap();
    assert!(matches!(
        store
            .object_delete(Kind::WorkspaceTemplate, "default", "dev", None)
            .await
            .unwrap(),
        DeleteOutcome::Deleted(_)
    ));
}

#[tokio::test]
async fn repeated_events_are_counted_not_duplicated() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let r = apply_yaml(&store, &common::workspace("alice", "alice", ""))
        .await
        .unwrap();
    let involved = InvolvedObject {
        kind: "Workspace".into(),
        namespace: "default".into(),
        name: "alice".into(),
        uid: r[0].object.metadata.uid.unwrap(),
    };
    for _ in 0..3 {
        store
            .event_record(
                &involved,
                EventType::Warning,
                "Throttled",
                "ECS throttled UpdateService",
                "test",
            )
            .await
            .unwrap();
    }
    store
        .event_record(
            &involved,
            EventType::Normal,
            "Started",
            "desiredCount 1",
            "test",
        )
        .await
        .unwrap();
    let events = store
        .event_list(Kind::Workspace, "default", "alice", 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    let throttled = events.iter().find(|e| e.reason == "Throttled").unwrap();
    assert_eq!(throttled.count, 3);
}

#[tokio::test]
async fn a_watch_resumed_from_the_last_revision_loses_nothing_across_a_dropped_listener() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    let since = store.revision_current().await.unwrap();
    let filter = WatchFilter {
        kinds: vec![Kind::Workspace],
        ..Default::default()
    };
    // A long poll interval: delivery within the timeout proves NOTIFY woke the watch.
    let mut w = Box::pin(store.watch(filter.clone(), since, Duration::from_secs(60)));
    apply_yaml(&store, &common::workspace("w1", "alice", ""))
        .await
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("woken by NOTIFY")
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.type_, c.object.metadata.name.as_str()),
        (ChangeType::Added, "w1")
    );
    let last_seen = c.revision;
    drop(w); // the connection drops; changes keep coming

    apply_yaml(&store, &common::workspace("w2", "alice", ""))
        .await
        .unwrap();
    apply_yaml(
        &store,
        &common::workspace("w1", "alice", "  running: false\n"),
    )
    .await
    .unwrap();
    store
        .object_delete(Kind::Workspace, "default", "w2", None)
        .await
        .unwrap();

    let mut w = Box::pin(store.watch(filter, last_seen, Duration::from_secs(60)));
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((c.type_, c.object.metadata.name.clone()));
    }
    assert_eq!(
        got,
        vec![
            (ChangeType::Added, "w2".to_string()),
            (ChangeType::Modified, "w1".to_string()),
            (ChangeType::Deleted, "w2".to_string())
        ]
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_gone() {
    let store = common::store().await;
    apply_yaml(&store, common::TEMPLATE).await.unwrap();
    apply_yaml(&store, &common::workspace("w1", "alice", ""))
        .await
        .unwrap();
    store.changes_compact(Duration::ZERO).await.unwrap();
    let err = store
        .changes_since(&WatchFilter::default(), 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, berth::store::StoreError::Gone(0)), "{err:?}");
    let cur = store.revision_current().await.unwrap();
    assert!(store
        .changes_since(&WatchFilter::default(), cur, 10)
        .await
        .unwrap()
        .0
        .is_empty());
}

#[tokio::test]
async fn the_examples_apply_cleanly_and_reapply_unchanged() {
    let store = common::store().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        docs.extend(parse_documents(&std::fs::read_to_string(f).unwrap()).unwrap());
    }
    let r = apply(&store, &admin(), &docs, false).await.unwrap();
    assert!(
        r.iter().all(|r| r.action == "created"),
        "{:?}",
        r.iter().map(|r| (&r.name, r.action)).collect::<Vec<_>>()
    );
    assert!(r.len() >= 5);
    let r = apply(&store, &admin(), &docs, false).await.unwrap();
    assert!(r.iter().all(|r| r.action == "unchanged"));
}
