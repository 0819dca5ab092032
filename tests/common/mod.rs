//! Shared test fixtures: a fresh PostgreSQL database per test, an API
//! server on a free loopback port, and tokens.
#![allow(dead_code)]

pub mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use berth::server::{router, AppState};
use berth::store::Store;

pub use berth::bench::replace_database as url_with_database;

/// Creates an empty database for one test and returns its URL.
///
/// Names carry their creation time (`berth_test_<unix secs>_<random>`), and
/// the first call of a test process drops test databases older than an hour,
/// so that databases left behind by earlier runs do not pile up on a shared
/// server while concurrent runs keep theirs.
pub async fn fresh_database() -> String {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with scripts/test.sh (which starts a private PostgreSQL) or point DATABASE_URL at a server",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!(
        "berth_test_{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to DATABASE_URL");
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let mut sweep = false;
    SWEPT.call_once(|| sweep = true);
    if sweep {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'berth\\_test\\_%'",
        )
        .fetch_all(&admin)
        .await
        .unwrap_or_default();
        for db in old {
            let created = db.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
            // Old-style names (no timestamp) and anything older than an hour.
            if created.is_none_or(|t| t + 3600 < now) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
            }
        }
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    url_with_database(&url, &name)
}

/// A migrated store on a fresh database.
pub async fn store() -> Store {
    Store::connect(&fresh_database().await)
        .await
        .expect("connect store")
}

/// A running API server.
pub struct Api {
    pub store: Store,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn start() -> Api {
        let store = store().await;
        let admin = store
            .token_bootstrap_admin()
            .await
            .unwrap()
            .expect("first admin token");
        let state = AppState {
            watch_poll: Duration::from_millis(200),
            ..AppState::new(store.clone())
        };
        // This replica proves itself alive, so the agents it holds count as connected.
        tokio::spawn(berth::server::replica_heartbeat(
            store.clone(),
            state.agents.replica.clone(),
            String::new(),
        ));
        tokio::spawn(berth::server::activity_flush_loop(state.clone()));
        let app = router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Api {
            store,
            base: format!("http://{addr}/apis/berth.dev/v1alpha1"),
            admin,
            client: reqwest::Client::new(),
        }
    }

    /// A token for a non-admin user.
    pub async fn user(&self, name: &str) -> String {
        self.store.token_create(name, false, "test").await.unwrap()
    }

    pub async fn apply(&self, token: &str, yaml: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/apply", self.base))
            .bearer_auth(token)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

pub const TEMPLATE: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: WorkspaceTemplate
metadata:
  name: dev
spec:
  infrastructure:
    region: us-west-2
    cluster: CoderCluster
    subnets: [subnet-1]
    securityGroups: [sg-1]
    fileSystemId: fs-1
    executionRoleArn: arn:aws:iam::123456789012:role/exec
  container:
    image: ghcr.io/example/dev:1
    homePath: /home/dev
  resources:
    default: {cpu: 1024, memory: 2048}
    cpuOptions: [512, 1024, 2048]
  parameters:
    - name: vscode_web
      type: bool
      default: false
      mutable: true
    - name: region_code
      type: string
      default: "us"
      options: ["us", "eu"]
    - name: runner_url
      type: string
      default: "https://github.com/example/repo"
      mutable: true
      validation: {regex: "https://github\\.com/.+"}
    - name: disk_gb
      type: number
      default: 10
      mutable: true
      validation: {min: 5, max: 100}
"#;

pub fn workspace(name: &str, owner: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  owner: {owner}\n  template:\n    name: dev\n{extra}"
    )
}
