//! `berth bench gitops`: a git repository with N workspace documents (one
//! file each, plus their template), synced by the GitSource controller into
//! a fresh database. Prints the time of the first sync, of a no-change sync
//! (and the object writes it made, which must be 0), and of a sync of a
//! commit that changes one workspace.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::BenchError;
use crate::gitops::{Controller, GitOpsOptions, SyncOutcome};
use crate::store::{Identity, Store};

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct GitOpsFigures {
    /// Workspace documents.
    pub n: usize,
    /// Writing and committing the repository (not part of any sync).
    pub setup: Duration,
    /// First sync: fetch, read, validate and apply everything.
    pub first: Duration,
    /// Sync of the same commit.
    pub unchanged: Duration,
    /// Revisions taken (object writes) during the no-change sync.
    pub unchanged_writes: i64,
    /// Sync of a commit changing one workspace.
    pub one_change: Duration,
    /// Object writes of that sync.
    pub one_change_writes: i64,
}

impl GitOpsFigures {
    /// Lines for people.
    pub fn render(&self) -> String {
        format!(
            "berth bench gitops: N={} workspace documents (one file each) + 1 template\n  \
             repository written and committed       {:>8.2} s (setup, not a sync)\n  \
             first sync (fetch, read, apply all)    {:>8.2} s\n  \
             no-change sync                         {:>8.3} s   database writes (revisions): {}\n  \
             sync of a commit changing 1 workspace  {:>8.3} s   database writes (revisions): {} (the workspace and the GitSource's status)\n",
            self.n,
            self.setup.as_secs_f64(),
            self.first.as_secs_f64(),
            self.unchanged.as_secs_f64(),
            self.unchanged_writes,
            self.one_change.as_secs_f64(),
            self.one_change_writes,
        )
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<(), BenchError> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Request(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

const TEMPLATE: &str = "apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: bench
spec:
  infrastructure:
    region: us-west-2
    cluster: bench
    subnets: [subnet-1]
    securityGroups: [sg-1]
    fileSystemId: fs-1
    executionRoleArn: arn:aws:iam::123456789012:role/exec
  container:
    image: ghcr.io/example/dev:1
    homePath: /home/dev
  resources:
    default: {cpu: 1024, memory: 2048}
";

fn workspace(i: usize, cpu: u32, memory: u32) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: ws-{i:05}\n  labels: {{team: t{}}}\nspec:\n  owner: user-{}\n  template:\n    name: bench\n  running: false\n  resources: {{cpu: {cpu}, memory: {memory}}}\n",
        i % 20,
        i % 500
    )
}

/// Runs the benchmark against a fresh database on `database_url`'s server.
pub async fn bench_gitops(database_url: &str, n: usize) -> Result<GitOpsFigures, BenchError> {
    crate::bench::with_scratch_database(database_url, |url| async move { run(&url, n).await }).await
}

async fn run(url: &str, n: usize) -> Result<GitOpsFigures, BenchError> {
    let store = Store::connect(url).await?;
    let tmp = std::env::temp_dir().join(format!(
        "berth-bench-gitops-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = async {
        let repo = tmp.join("repo");
        let t = Instant::now();
        std::fs::create_dir_all(repo.join("deploy/ws"))?;
        git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
        std::fs::write(repo.join("deploy/template.yaml"), TEMPLATE)?;
        for i in 0..n {
            std::fs::write(
                repo.join(format!("deploy/ws/ws-{i:05}.yaml")),
                workspace(i, 1024, 2048),
            )?;
        }
        git(&repo, &["add", "-A"])?;
        git(&repo, &["commit", "--quiet", "-m", "bench"])?;
        let setup = t.elapsed();

        let who = Identity {
            user: "bench".into(),
            admin: true,
        };
        let gs = serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "bench"},
            "spec": {"repository": repo.display().to_string(), "path": "deploy", "prune": true},
        });
        crate::apply::apply(&store, &who, &[gs], false)
            .await
            .map_err(|e| BenchError::Request(format!("apply GitSource: {e:?}")))?;
        let mut ctl = Controller::new(
            store.clone(),
            GitOpsOptions {
                cache_dir: tmp.join("cache"),
                ..Default::default()
            },
        );
        let expect = |r: &crate::gitops::SyncReport, what: &str| match &r.outcome {
            SyncOutcome::Applied { .. } | SyncOutcome::Unchanged => Ok(()),
            other => Err(BenchError::Request(format!("{what}: {other:?}"))),
        };

        let t = Instant::now();
        let r = ctl
            .sync("default", "bench")
            .await
            .map_err(|e| BenchError::Request(e.to_string()))?;
        let first = t.elapsed();
        expect(&r, "first sync")?;

        let before = store.revision_current().await?;
        let t = Instant::now();
        let r = ctl
            .sync("default", "bench")
            .await
            .map_err(|e| BenchError::Request(e.to_string()))?;
        let unchanged = t.elapsed();
        let unchanged_writes = store.revision_current().await? - before;
        if r.outcome != SyncOutcome::Unchanged {
            return Err(BenchError::Request(format!(
                "no-change sync: {:?}",
                r.outcome
            )));
        }

        std::fs::write(
            repo.join("deploy/ws/ws-00000.yaml"),
            workspace(0, 2048, 4096),
        )?;
        git(&repo, &["commit", "--quiet", "-am", "resize one"])?;
        let before = store.revision_current().await?;
        let t = Instant::now();
        let r = ctl
            .sync("default", "bench")
            .await
            .map_err(|e| BenchError::Request(e.to_string()))?;
        let one_change = t.elapsed();
        let one_change_writes = store.revision_current().await? - before;
        expect(&r, "one-change sync")?;

        Ok(GitOpsFigures {
            n,
            setup,
            first,
            unchanged,
            unchanged_writes,
            one_change,
            one_change_writes,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
