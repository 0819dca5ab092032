//! GitOps against local git repositories made by each test with the git
//! CLI and a real PostgreSQL: commits create, change and delete
//! workspaces; a bad commit changes nothing and is reported by file,
//! document and field; prune touches only owned objects; drift is reported
//! and reverted; suspend; force-pushed branches; unreachable repositories;
//! `POST /apply?prune=true`; and the `berth` CLI end to end.

#[path = "cli_common.rs"]
mod cli_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth::api::yaml::parse_documents;
use berth::api::{GitSourceStatus, Kind};
use berth::apply::apply;
use berth::gitops::{Controller, GitOpsOptions, SyncOutcome, OWNER_LABEL};
use berth::store::{Identity, NewIntent, PowerAction, Store};
use serde_json::Value;

fn admin() -> Identity {
    Identity {
        user: "admin".into(),
        admin: true,
    }
}

async fn apply_yaml(store: &Store, yaml: &str) {
    apply(store, &admin(), &parse_documents(yaml).unwrap(), false)
        .await
        .unwrap_or_else(|e| panic!("apply: {e:?}"));
}

/// A git repository in a temporary directory, driven with the git CLI.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        r.git(&["init", "--quiet", "--initial-branch=main"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(&self, file: &str, text: &str) {
        let p = self.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.path().join(file)).unwrap();
    }

    /// Commits everything; returns the commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

fn ws(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  owner: alice\n  template:\n    name: dev\n{extra}"
    )
}

fn gitsource(name: &str, repo: &Path, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: GitSource\nmetadata:\n  name: {name}\nspec:\n  repository: {}\n  path: deploy\n  prune: true\n{extra}",
        repo.display()
    )
}

/// A store, a repository with the template and workspaces `a` and `b`
/// under `deploy/`, a GitSource `team` on it, and a controller.
async fn setup() -> (Store, Repo, Controller, tempfile::TempDir) {
    let store = common::store().await;
    let repo = Repo::new();
    repo.write("deploy/template.yaml", common::TEMPLATE);
    repo.write("deploy/ws/a.yaml", &ws("a", ""));
    repo.write("deploy/ws/b.yaml", &ws("b", ""));
    repo.write("README.md", "not a manifest\n");
    repo.commit("first");
    apply_yaml(&store, &gitsource("team", repo.path(), "")).await;
    let cache = tempfile::tempdir().unwrap();
    let ctl = Controller::new(
        store.clone(),
        GitOpsOptions {
            cache_dir: cache.path().to_path_buf(),
            tick: Duration::from_millis(100),
            git_timeout: Duration::from_secs(30),
        },
    );
    (store, repo, ctl, cache)
}

async fn status(store: &Store, name: &str) -> GitSourceStatus {
    let o = store
        .object_get(Kind::GitSource, "default", name)
        .await
        .unwrap()
        .unwrap();
    serde_json::from_value(o.status).unwrap()
}

fn condition<'a>(st: &'a GitSourceStatus, t: &str) -> &'a berth::api::Condition {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {st:?}"))
}

async fn workspace(store: &Store, name: &str) -> Option<berth::api::DynObject> {
    store
        .object_get(Kind::Workspace, "default", name)
        .await
        .unwrap()
}

async fn events(store: &Store, name: &str) -> Vec<(String, String)> {
    store
        .event_list(Kind::GitSource, "default", name, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.reason, e.message))
        .collect()
}

#[tokio::test]
async fn commits_create_change_and_delete_workspaces_and_an_unchanged_sync_writes_nothing() {
    let (store, repo, mut ctl, _cache) = setup().await;
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(
        r.outcome,
        SyncOutcome::Applied {
            created: 3,
            configured: 0,
            pruned: 0
        }
    );
    let head = repo.git(&["rev-parse", "HEAD"]);
    let st = status(&store, "team").await;
    assert_eq!(st.last_applied_commit.as_deref(), Some(head.as_str()));
    assert_eq!(
        condition(&st, "Ready").status,
        berth::api::meta::ConditionStatus::True
    );
    assert_eq!(
        condition(&st, "Synced").status,
        berth::api::meta::ConditionStatus::True
    );
    assert_eq!(
        st.inventory,
        vec![
            "workspacetemplates/default/dev",
            "workspaces/default/a",
            "workspaces/default/b",
        ]
    );
    let a = workspace(&store, "a").await.unwrap();
    assert_eq!(
        a.metadata.labels.get(OWNER_LABEL).map(String::as_str),
        Some("default.team")
    );

    // A freshly synced source is in sync: the next sync writes nothing at all.
    let before = store.revision_current().await.unwrap();
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(r.outcome, SyncOutcome::Unchanged);
    assert!(!r.status_written);
    assert_eq!(store.revision_current().await.unwrap(), before);

    // Change a, delete b.
    repo.write(
        "deploy/ws/a.yaml",
        &ws("a", "  resources: {cpu: 2048, memory: 4096}\n"),
    );
    repo.remove("deploy/ws/b.yaml");
    let second = repo.commit("resize a, drop b");
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(
        r.outcome,
        SyncOutcome::Applied {
            created: 0,
            configured: 1,
            pruned: 1
        }
    );
    let a = workspace(&store, "a").await.unwrap();
    assert_eq!(a.spec["resources"]["cpu"], 2048);
    assert!(workspace(&store, "b").await.is_none());
    let st = status(&store, "team").await;
    assert_eq!(st.last_applied_commit.as_deref(), Some(second.as_str()));
    assert!(events(&store, "team")
        .await
        .iter()
        .any(|(r, m)| r == "Applied" && m.contains("1 configured, 1 pruned")));
    let before = store.revision_current().await.unwrap();
    assert_eq!(
        ctl.sync("default", "team").await.unwrap().outcome,
        SyncOutcome::Unchanged
    );
    assert_eq!(store.revision_current().await.unwrap(), before);
}

#[tokio::test]
async fn a_commit_with_one_bad_document_changes_nothing_and_names_file_document_and_field() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    let good = repo.git(&["rev-parse", "HEAD"]);
    repo.write(
        "deploy/ws/a.yaml",
        &ws("a", "  resources: {cpu: 2048, memory: 4096}\n"),
    );
    repo.write(
        "deploy/more.yaml",
        &format!(
            "{}---\n{}",
            ws("c", ""),
            ws("d", "  resources: {cpu: 1024, memory: 1024}\n")
        ),
    );
    let bad = repo.commit("one bad document");
    let r = ctl.sync("default", "team").await.unwrap();
    let SyncOutcome::Rejected(errors) = r.outcome else {
        panic!("expected a rejection, got {:?}", r.outcome);
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.file, "deploy/more.yaml");
    assert_eq!(e.document, Some(2));
    assert_eq!(e.object, "workspaces/d");
    assert_eq!(e.field, "spec.resources.memory");
    // Nothing of the commit was applied.
    assert!(workspace(&store, "a")
        .await
        .unwrap()
        .spec
        .get("resources")
        .is_none());
    assert!(workspace(&store, "c").await.is_none());
    let st = status(&store, "team").await;
    assert_eq!(st.last_applied_commit.as_deref(), Some(good.as_str()));
    assert_eq!(st.last_attempted_commit.as_deref(), Some(bad.as_str()));
    assert_eq!(st.errors, errors);
    let ready = condition(&st, "Ready");
    assert_eq!(ready.status, berth::api::meta::ConditionStatus::False);
    assert_eq!(ready.reason, "CommitRejected");
    assert!(
        ready.message.contains("deploy/more.yaml (document 2)"),
        "{}",
        ready.message
    );
    assert!(events(&store, "team")
        .await
        .iter()
        .any(|(r, m)| r == "CommitRejected"
            && m.contains("deploy/more.yaml (document 2): workspaces/d: spec.resources.memory")));

    // A rejection the engine finds (template check) is located the same way.
    repo.write(
        "deploy/more.yaml",
        &ws("d", "  template:\n    name: nope\n").replace("  template:\n    name: dev\n", ""),
    );
    repo.commit("unknown template");
    let r = ctl.sync("default", "team").await.unwrap();
    let SyncOutcome::Rejected(errors) = r.outcome else {
        panic!("expected a rejection, got {:?}", r.outcome);
    };
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.file.as_str(), e.document, e.field.as_str()))
            .collect::<Vec<_>>(),
        vec![("deploy/more.yaml", Some(1), "spec.template.name")]
    );
    assert!(workspace(&store, "a")
        .await
        .unwrap()
        .spec
        .get("resources")
        .is_none());

    // Fixing the commit applies it.
    repo.remove("deploy/more.yaml");
    repo.commit("fix");
    assert!(matches!(
        ctl.sync("default", "team").await.unwrap().outcome,
        SyncOutcome::Applied { configured: 1, .. }
    ));
    assert!(status(&store, "team").await.errors.is_empty());
}

#[tokio::test]
async fn prune_removes_only_owned_objects_and_a_hand_made_object_is_a_conflict_not_taken_over() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    apply_yaml(&store, &ws("hand", "")).await;
    // Another source's object, and a hand-made one, of the same kind.
    repo.remove("deploy/ws/b.yaml");
    repo.commit("drop b");
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(r.outcome, SyncOutcome::Applied { pruned: 1, .. }),
        "{r:?}"
    );
    assert!(workspace(&store, "b").await.is_none());
    assert!(workspace(&store, "hand").await.is_some());

    // Declaring the hand-made workspace in git is a conflict: the whole
    // commit is rejected and the object is left as it is.
    repo.write("deploy/ws/hand.yaml", &ws("hand", "  running: false\n"));
    repo.write("deploy/ws/a.yaml", &ws("a", "  running: false\n"));
    repo.commit("claim hand");
    let r = ctl.sync("default", "team").await.unwrap();
    let SyncOutcome::Rejected(errors) = r.outcome else {
        panic!("expected a conflict, got {:?}", r.outcome);
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, "deploy/ws/hand.yaml");
    assert_eq!(errors[0].field, format!("metadata.labels.{OWNER_LABEL}"));
    assert!(
        errors[0].message.contains("not taken over"),
        "{}",
        errors[0].message
    );
    let hand = workspace(&store, "hand").await.unwrap();
    assert!(!hand.metadata.labels.contains_key(OWNER_LABEL));
    assert_eq!(hand.spec["running"], true);
    assert_eq!(workspace(&store, "a").await.unwrap().spec["running"], true);

    // Without prune nothing is deleted.
    repo.remove("deploy/ws/hand.yaml");
    repo.remove("deploy/ws/a.yaml");
    repo.write("deploy/ws/c.yaml", &ws("c", ""));
    repo.commit("drop a, add c");
    apply_yaml(
        &store,
        &gitsource("team", repo.path(), "").replace("prune: true", "prune: false"),
    )
    .await;
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(
            r.outcome,
            SyncOutcome::Applied {
                created: 1,
                pruned: 0,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(workspace(&store, "a").await.is_some());
}

#[tokio::test]
async fn drift_is_reported_then_reverted_with_an_event_naming_the_fields() {
    let (store, _repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    assert!(ctl.check_drift("default", "team").await.unwrap().is_empty());

    // Power intents are not drift.
    store
        .intent_record(
            "default",
            "a",
            &NewIntent::manual(PowerAction::Stop, "alice"),
        )
        .await
        .unwrap();
    assert!(ctl.check_drift("default", "team").await.unwrap().is_empty());

    // Someone re-applies a by hand, resized and without the owner label.
    apply_yaml(&store, &ws("a", "  resources: {cpu: 2048, memory: 4096}\n")).await;
    let drift = ctl.check_drift("default", "team").await.unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].object, "workspaces/default/a");
    assert_eq!(
        drift[0].fields,
        vec![
            format!("metadata.labels.{OWNER_LABEL}"),
            "spec.resources".to_string()
        ]
    );
    let st = status(&store, "team").await;
    assert_eq!(st.drift, drift);
    assert_eq!(
        condition(&st, "Drifted").status,
        berth::api::meta::ConditionStatus::True
    );
    assert_eq!(
        condition(&st, "Synced").status,
        berth::api::meta::ConditionStatus::False
    );

    // The next sync reverts it, with an event naming the fields.
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(r.reverted, drift);
    let a = workspace(&store, "a").await.unwrap();
    assert!(a.spec.get("resources").is_none());
    assert_eq!(
        a.metadata.labels.get(OWNER_LABEL).map(String::as_str),
        Some("default.team")
    );
    assert!(events(&store, "team")
        .await
        .iter()
        .any(|(r, m)| r == "DriftReverted"
            && m.contains(
                "workspaces/default/a (metadata.labels.berth.dev/gitsource, spec.resources)"
            )));
    let st = status(&store, "team").await;
    assert!(st.drift.is_empty());
    assert_eq!(
        condition(&st, "Drifted").status,
        berth::api::meta::ConditionStatus::False
    );

    // An owned object deleted by hand is drift too, and comes back.
    store
        .object_delete(Kind::Workspace, "default", "b", None)
        .await
        .unwrap();
    let drift = ctl.check_drift("default", "team").await.unwrap();
    assert_eq!(drift[0].fields, vec!["<deleted>".to_string()]);
    ctl.sync("default", "team").await.unwrap();
    assert!(workspace(&store, "b").await.is_some());
}

#[tokio::test]
async fn suspend_stops_syncing_until_it_is_unset() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    apply_yaml(&store, &gitsource("team", repo.path(), "  suspend: true\n")).await;
    repo.write("deploy/ws/c.yaml", &ws("c", ""));
    repo.commit("add c");
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(r.outcome, SyncOutcome::Suspended);
    assert!(workspace(&store, "c").await.is_none());
    assert_eq!(
        condition(&status(&store, "team").await, "Synced").reason,
        "Suspended"
    );
    apply_yaml(&store, &gitsource("team", repo.path(), "")).await;
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(r.outcome, SyncOutcome::Applied { created: 1, .. }),
        "{r:?}"
    );
    assert!(workspace(&store, "c").await.is_some());
}

#[tokio::test]
async fn a_force_pushed_branch_is_followed() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    // Rewrite history: an unrelated branch replaces main.
    repo.git(&["checkout", "--quiet", "--orphan", "rewrite"]);
    repo.git(&["rm", "-r", "--quiet", "--cached", "."]);
    for f in ["deploy/ws/a.yaml", "deploy/ws/b.yaml"] {
        repo.remove(f);
    }
    repo.write("deploy/ws/x.yaml", &ws("x", ""));
    let rewritten = repo.commit("rewritten");
    repo.git(&["branch", "--quiet", "-M", "main"]);
    let r = ctl.sync("default", "team").await.unwrap();
    assert_eq!(r.commit.as_deref(), Some(rewritten.as_str()));
    assert!(
        matches!(
            r.outcome,
            SyncOutcome::Applied {
                created: 1,
                pruned: 2,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(workspace(&store, "x").await.is_some());
    assert!(workspace(&store, "a").await.is_none());
}

#[tokio::test]
async fn an_unreachable_repository_leaves_the_last_good_state_with_ready_false() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    let good = status(&store, "team").await.last_applied_commit;
    let moved = repo.path().with_extension("moved");
    std::fs::rename(repo.path(), &moved).unwrap();
    let r = ctl.sync("default", "team").await;
    std::fs::rename(&moved, repo.path()).unwrap();
    let r = r.unwrap();
    assert!(matches!(r.outcome, SyncOutcome::FetchFailed(_)), "{r:?}");
    let st = status(&store, "team").await;
    let ready = condition(&st, "Ready");
    assert_eq!(ready.status, berth::api::meta::ConditionStatus::False);
    assert_eq!(ready.reason, "FetchFailed");
    assert!(
        ready
            .message
            .contains("does not appear to be a git repository"),
        "{}",
        ready.message
    );
    assert_eq!(st.last_applied_commit, good);
    assert!(workspace(&store, "a").await.is_some());
    assert!(workspace(&store, "b").await.is_some());
    // A missing branch is reported the same way.
    apply_yaml(&store, &gitsource("team", repo.path(), "  branch: nope\n")).await;
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(&r.outcome, SyncOutcome::FetchFailed(m) if m.contains("branch \"nope\" not found")),
        "{r:?}"
    );
    assert!(workspace(&store, "b").await.is_some());
}

#[tokio::test]
async fn an_empty_folder_or_a_git_source_in_git_is_refused() {
    let (store, repo, mut ctl, _cache) = setup().await;
    ctl.sync("default", "team").await.unwrap();
    for f in [
        "deploy/template.yaml",
        "deploy/ws/a.yaml",
        "deploy/ws/b.yaml",
    ] {
        repo.remove(f);
    }
    repo.write("deploy/notes.txt", "nothing here\n");
    repo.commit("empty");
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(&r.outcome, SyncOutcome::Rejected(e) if e[0].message.contains("has no YAML documents")),
        "{r:?}"
    );
    assert!(workspace(&store, "a").await.is_some());
    repo.write("deploy/gs.yaml", &gitsource("other", Path::new("/x"), ""));
    repo.commit("a gitsource");
    let r = ctl.sync("default", "team").await.unwrap();
    assert!(
        matches!(&r.outcome, SyncOutcome::Rejected(e) if e[0].field == "kind" && e[0].file == "deploy/gs.yaml"),
        "{r:?}"
    );
}

#[tokio::test]
async fn git_source_specs_are_validated_with_field_paths() {
    let store = common::store().await;
    let doc = "apiVersion: berth.dev/v1alpha1\nkind: GitSource\nmetadata:\n  name: bad\nspec:\n  repository: \"ext::sh -c evil\"\n  branch: \"a..b\"\n  path: ../up\n  interval: 0s\n";
    let err = apply(&store, &admin(), &parse_documents(doc).unwrap(), false)
        .await
        .unwrap_err();
    let berth::apply::ApplyError::Invalid(errs) = err else {
        panic!("{err:?}");
    };
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.repository",
            "spec.branch",
            "spec.path",
            "spec.interval"
        ]
    );
    // Only admins write git sources.
    let user = Identity {
        user: "alice".into(),
        admin: false,
    };
    let err = apply(
        &store,
        &user,
        &parse_documents(&gitsource("ok", Path::new("/x"), "")).unwrap(),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, berth::apply::ApplyError::Forbidden(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_sync_route_is_for_admins_and_the_loop_picks_the_request_up() {
    let api = common::Api::start().await;
    let repo = Repo::new();
    repo.write("deploy/template.yaml", common::TEMPLATE);
    repo.write("deploy/a.yaml", &ws("a", ""));
    repo.commit("first");
    assert!(api
        .apply(
            &api.admin,
            &gitsource("team", repo.path(), "  interval: 1h\n")
        )
        .await
        .status()
        .is_success());
    let cache = tempfile::tempdir().unwrap();
    let ctl = Controller::new(
        api.store.clone(),
        GitOpsOptions {
            cache_dir: cache.path().to_path_buf(),
            tick: Duration::from_millis(100),
            git_timeout: Duration::from_secs(30),
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loop_ = tokio::spawn(ctl.run(async move {
        let _ = stopped.await;
    }));
    let url = format!("{}/namespaces/default/gitsources/team/sync", api.base);
    let alice = api.user("alice").await;
    let resp = api
        .client
        .post(&url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The first pass syncs (nothing was due yet); then a new commit waits
    // for the hour-long interval unless a sync is requested.
    wait_for(&api.store, "team", |st| st.last_applied_commit.is_some()).await;
    repo.write("deploy/b.yaml", &ws("b", ""));
    let second = repo.commit("second");
    let resp = api
        .client
        .post(&url)
        .bearer_auth(&api.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let token = body["metadata"]["annotations"]["berth.dev/sync-requested-at"]
        .as_str()
        .unwrap()
        .to_string();
    let st = wait_for(&api.store, "team", |st| {
        st.last_handled_sync_request.as_deref() == Some(token.as_str())
    })
    .await;
    assert_eq!(st.last_applied_commit.as_deref(), Some(second.as_str()));
    assert!(workspace(&api.store, "b").await.is_some());
    // The status path of git sources is served too.
    let resp = api
        .client
        .put(format!(
            "{}/namespaces/default/gitsources/team/status",
            api.base
        ))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"status": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = api
        .get(&api.admin, "/namespaces/default/gitsources/team")
        .await;
    assert_eq!(resp.status(), 200);
    let _ = stop.send(());
    loop_.await.unwrap();
}

async fn wait_for(
    store: &Store,
    name: &str,
    ok: impl Fn(&GitSourceStatus) -> bool,
) -> GitSourceStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(store, name).await;
        if ok(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "timed out; status: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn apply_with_prune_deletes_only_matching_objects_the_request_no_longer_contains() {
    let api = common::Api::start().await;
    let labelled = |name: &str| {
        ws(name, "").replace(
            &format!("  name: {name}\n"),
            &format!("  name: {name}\n  labels: {{app: web}}\n"),
        )
    };
    assert!(api
        .apply(&api.admin, common::TEMPLATE)
        .await
        .status()
        .is_success());
    let both = format!("{}---\n{}", labelled("a"), labelled("b"));
    assert!(api.apply(&api.admin, &both).await.status().is_success());
    assert!(api
        .apply(&api.admin, &ws("hand", ""))
        .await
        .status()
        .is_success());
    let post = |query: &'static str, body: String| {
        let api = &api;
        async move {
            api.client
                .post(format!("{}/apply?{query}", api.base))
                .bearer_auth(&api.admin)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // Prune needs a selector, and every document must match it.
    assert_eq!(post("prune=true", labelled("a")).await.status(), 400);
    let resp = post("prune=true&labelSelector=app%3Dweb", ws("a", "")).await;
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("metadata.labels"));
    // A dry run reports without deleting.
    let resp = post(
        "prune=true&labelSelector=app%3Dweb&dryRun=true",
        labelled("a"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["pruned"][0]["name"], "b");
    assert!(workspace(&api.store, "b").await.is_some());
    let resp = post("prune=true&labelSelector=app%3Dweb", labelled("a")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["pruned"].as_array().unwrap().len(), 1, "{body}");
    assert!(workspace(&api.store, "b").await.is_none());
    assert!(workspace(&api.store, "hand").await.is_some());
    assert!(workspace(&api.store, "a").await.is_some());
}

/// `berth apply --prune -l`, `berth get gs` and `berth sync` against the
/// built operator (which runs the GitSource controller without a cloud).
#[test]
fn cli_applies_with_prune_lists_git_sources_and_syncs_them() {
    let op = cli_common::Operator::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |f: &str, text: &str| std::fs::write(d.join(f), text).unwrap();
    let arg = |p: PathBuf| p.display().to_string();
    let labelled = |name: &str| {
        ws(name, "").replace(
            &format!("  name: {name}\n"),
            &format!("  name: {name}\n  labels: {{app: web}}\n"),
        )
    };
    write("template.yaml", common::TEMPLATE);
    assert_eq!(
        op.cli(&["apply", "-f", &arg(d.join("template.yaml"))]).code,
        0
    );
    std::fs::create_dir(d.join("ws")).unwrap();
    write("ws/a.yaml", &labelled("a"));
    write("ws/b.yaml", &labelled("b"));
    let ws_dir = arg(d.join("ws"));
    let out = op.cli(&["apply", "-f", &ws_dir, "--prune", "-l", "app=web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "workspace/a created\nworkspace/b created\n");
    let out = op.cli(&["apply", "-f", &ws_dir, "--prune"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--prune needs a label selector"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(d.join("ws/b.yaml")).unwrap();
    let out = op.cli(&["diff", "-f", &ws_dir, "--prune", "-l", "app=web"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("--- workspaces/default/b (live)\n+++ /dev/null\n"),
        "{}",
        out.stdout
    );
    let out = op.cli(&["apply", "-f", &ws_dir, "--prune", "-l", "app=web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "workspace/a unchanged\nworkspace/b pruned\n");
    assert_eq!(
        op.cli(&["diff", "-f", &ws_dir, "--prune", "-l", "app=web"])
            .code,
        0
    );

    // A GitSource on a local repository, synced on request.
    let repo = Repo::new();
    repo.write("deploy/c.yaml", &ws("c", ""));
    let head = repo.commit("c");
    write(
        "gs.yaml",
        &gitsource("team", repo.path(), "  interval: 1h\n"),
    );
    assert_eq!(op.cli(&["apply", "-f", &arg(d.join("gs.yaml"))]).code, 0);
    let out = op.cli(&["sync", "team", "--timeout", "60s"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("gitsource/team synced: "),
        "{}",
        out.stdout
    );
    let out = op.cli(&["get", "gs"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "NAME",
            "REPOSITORY",
            "BRANCH",
            "COMMIT",
            "SYNCED",
            "MESSAGE",
            "AGE"
        ]
    );
    assert!(lines[1].starts_with("team "), "{}", out.stdout);
    assert!(lines[1].contains(&head[..7]), "{}", out.stdout);
    assert!(lines[1].contains(" True "), "{}", out.stdout);
    let out = op.cli(&["get", "ws", "c", "-o", "yaml"]);
    assert!(
        out.stdout.contains("berth.dev/gitsource: default.team"),
        "{}",
        out.stdout
    );
    // A rejected commit: `berth sync` fails and names the file, document and field.
    repo.write(
        "deploy/c.yaml",
        &ws("c", "  resources: {cpu: 3, memory: 1}\n"),
    );
    repo.commit("bad");
    let out = op.cli(&["sync", "gs/team"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: deploy/c.yaml (document 1): workspaces/c: spec.resources.cpu:"),
        "{}",
        out.stderr
    );
    let out = op.cli(&["describe", "gs", "team"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("CommitRejected"), "{}", out.stdout);
}

#[test]
fn the_example_git_source_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/gitops/gitsource.yaml"
    );
    let docs = parse_documents(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (kind, _) = berth::api::validate::decode(&docs[0], None).unwrap();
    assert_eq!(kind, Kind::GitSource);
}
