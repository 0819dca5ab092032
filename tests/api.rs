//! The HTTP API over a real PostgreSQL: status codes, bodies, and auth
//! isolation on every endpoint.

mod common;

use common::{workspace, Api, TEMPLATE};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn body(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

async fn ws_uid(api: &Api, path: &str) -> uuid::Uuid {
    let name = path.rsplit('/').next().unwrap();
    api.store
        .object_get(berth::api::Kind::Workspace, "default", name)
        .await
        .unwrap()
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

async fn setup() -> (Api, String, String) {
    let api = Api::start().await;
    assert_eq!(
        api.apply(&api.admin, TEMPLATE).await.status(),
        StatusCode::OK
    );
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let r = api.apply(&alice, &workspace("alice-ws", "alice", "")).await;
    assert_eq!(r.status(), StatusCode::OK);
    (api, alice, bob)
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let api = Api::start().await;
    let r = api
        .client
        .get(format!("{}/workspaces", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(r).await["reason"], "Unauthorized");
    let r = api.get("berth_not-a-token", "/workspaces").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let health = api
        .client
        .get(api.base.replace("/apis/berth.dev/v1alpha1", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_user_can_neither_read_nor_change_another_users_workspace() {
    let (api, alice, bob) = setup().await;
    let path = "/namespaces/default/workspaces/alice-ws";
    // get
    assert_eq!(api.get(&alice, path).await.status(), StatusCode::OK);
    assert_eq!(api.get(&bob, path).await.status(), StatusCode::NOT_FOUND);
    // list (namespaced and all) and watch
    for list in ["/namespaces/default/workspaces", "/workspaces"] {
        let items = body(api.get(&bob, list).await).await["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(items, 0, "{list}");
        let items = body(api.get(&alice, list).await).await["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(items, 1, "{list}");
    }
    let watch = api
        .client
        .get(format!(
            "{}/workspaces?watch=true&resourceVersion=1",
            api.base
        ))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut stream = watch.bytes_stream();
    // alice changes her workspace; bob's watch must not see it
    api.apply(
        &alice,
        &workspace("alice-ws", "alice", "  running: false\n"),
    )
    .await;
    let seen = tokio::time::timeout(
        std::time::Duration::from_millis(1500),
        futures_util::StreamExt::next(&mut stream),
    )
    .await;
    assert!(seen.is_err(), "bob's watch saw alice's workspace: {seen:?}");
    // events
    let ev = api
        .get(
            &bob,
            "/namespaces/default/events?kind=Workspace&name=alice-ws",
        )
        .await;
    assert_eq!(ev.status(), StatusCode::NOT_FOUND);
    // apply over it (same name) and claiming alice as owner
    let r = api.apply(&bob, &workspace("alice-ws", "bob", "")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api.apply(&bob, &workspace("new-one", "alice", "")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(r).await["details"]["causes"][0]["field"], "spec.owner");
    // put
    let r = api
        .client
        .put(format!("{}{path}", api.base))
        .bearer_auth(&bob)
        .body(workspace("alice-ws", "alice", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // delete
    let r = api
        .client
        .delete(format!("{}{path}", api.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // status
    let r = api
        .client
        .put(format!("{}{path}/status", api.base))
        .bearer_auth(&bob)
        .json(&json!({"status": {"phase": "Running"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // power intents, activity and extend
    let intents_before = api
        .store
        .intent_list(ws_uid(&api, path).await, 10)
        .await
        .unwrap()
        .len();
    for action in ["start", "stop", "restart", "activity", "extend"] {
        let r = api
            .client
            .post(format!("{}{path}/{action}", api.base))
            .bearer_auth(&bob)
            .json(&json!({"duration": "1h", "kind": "ssh"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        api.store
            .intent_list(ws_uid(&api, path).await, 10)
            .await
            .unwrap()
            .len(),
        intents_before,
        "bob recorded no intent"
    );
    // still alice's, unchanged by bob
    let ws = body(api.get(&alice, path).await).await;
    assert_eq!(ws["spec"]["owner"], "alice");
    assert!(ws.get("status").is_none());
    // alice can delete her own
    let r = api
        .client
        .delete(format!("{}{path}", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn templates_and_policies_are_readable_by_users_and_writable_only_by_admins() {
    let (api, alice, _bob) = setup().await;
    assert_eq!(
        api.get(&alice, "/namespaces/default/workspacetemplates/dev")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.get(
            &alice,
            "/namespaces/default/workspacetemplates/dev/versions"
        )
        .await
        .status(),
        StatusCode::OK
    );
    let r = api.apply(&alice, &TEMPLATE.replace("dev:1", "dev:2")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let policy = "apiVersion: berth.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: org}\nspec: {autostop: {defaultAfterInactivity: 2h}}\n";
    assert_eq!(
        api.apply(&alice, policy).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.apply(&api.admin, policy).await.status(), StatusCode::OK);
    assert_eq!(
        api.get(&alice, "/namespaces/default/lifecyclepolicies/org")
            .await
            .status(),
        StatusCode::OK
    );
    let r = api
        .client
        .delete(format!(
            "{}/namespaces/default/lifecyclepolicies/org",
            api.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api
        .client
        .post(format!("{}/tokens", api.base))
        .bearer_auth(&alice)
        .json(&json!({"user": "eve", "admin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api
        .client
        .post(format!("{}/tokens", api.base))
        .bearer_auth(&api.admin)
        .json(&json!({"user": "carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = body(r).await["token"].as_str().unwrap().to_string();
    let me = body(api.get(&token, "/whoami").await).await;
    assert_eq!(me, json!({"user": "carol", "admin": false}));
}

#[tokio::test]
async fn invalid_documents_get_422_with_every_cause_and_a_stale_write_gets_409() {
    let (api, alice, _bob) = setup().await;
    let yaml = format!(
        "{}\n---\n{}",
        workspace("w1", "alice", "  resources: {cpu: 2048, memory: 1024}\n"),
        workspace(
            "w2",
            "alice",
            "  parameters: {disk_gb: 500, nope: 1}\n  bogus: 1\n"
        ),
    );
    let r = api.apply(&alice, &yaml).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let b = body(r).await;
    let causes = b["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"spec.resources.memory"), "{b}");
    assert!(fields.contains(&"spec.bogus"), "{b}");
    let mem = causes
        .iter()
        .find(|c| c["field"] == "spec.resources.memory")
        .unwrap();
    assert!(
        mem["message"].as_str().unwrap().contains("4096, 5120"),
        "{mem}"
    );
    assert_eq!(mem["document"], 0);

    let ws = body(
        api.get(&alice, "/namespaces/default/workspaces/alice-ws")
            .await,
    )
    .await;
    let rv = ws["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    api.apply(
        &alice,
        &workspace("alice-ws", "alice", "  running: false\n"),
    )
    .await;
    let stale = workspace("alice-ws", "alice", "").replace(
        "  name: alice-ws\n",
        &format!("  name: alice-ws\n  resourceVersion: \"{rv}\"\n"),
    );
    let r = api.apply(&alice, &stale).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(body(r).await["reason"], "Conflict");
}

#[tokio::test]
async fn yaml_in_and_out_dry_run_and_selectors() {
    let (api, alice, _bob) = setup().await;
    let r = api
        .client
        .post(format!("{}/apply?dryRun=true", api.base))
        .bearer_auth(&alice)
        .body(workspace("dry", "alice", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["results"][0]["action"], "created");
    assert_eq!(
        api.get(&alice, "/namespaces/default/workspaces/dry")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let labelled = workspace("labelled", "alice", "").replace(
        "  name: labelled\n",
        "  name: labelled\n  labels: {team: infra}\n",
    );
    api.apply(&alice, &labelled).await;
    let r = api
        .get(
            &alice,
            "/namespaces/default/workspaces?labelSelector=team%3Dinfra",
        )
        .await;
    let items = body(r).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .collect::<Vec<_>>();
    assert_eq!(items, vec![json!("labelled")]);

    let r = api
        .client
        .get(format!(
            "{}/namespaces/default/workspaces/labelled",
            api.base
        ))
        .bearer_auth(&alice)
        .header("accept", "application/yaml")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("kind: Workspace") && text.contains("team: infra"),
        "{text}"
    );
}

#[tokio::test]
async fn database_errors_do_not_leak_internals() {
    let (api, alice, _bob) = setup().await;
    sqlx::query("DROP TABLE events")
        .execute(api.store.pool())
        .await
        .unwrap();
    let r = api
        .get(
            &alice,
            "/namespaces/default/events?kind=Workspace&name=alice-ws",
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = r.text().await.unwrap();
    assert!(text.contains("internal error (id"), "{text}");
    assert!(
        !text.contains("events") && !text.contains("relation"),
        "leaks: {text}"
    );
}

#[tokio::test]
async fn metrics_can_be_kept_behind_a_token() {
    let store = common::store().await;
    let app = berth::server::router(berth::server::AppState {
        metrics_token: Some(std::sync::Arc::from("scrape-me")),
        ..berth::server::AppState::new(store)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("scrape-you")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = client
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.text().await.unwrap().contains("berth_"));
    // Without a token configured, /metrics stays open (the default).
    let api = Api::start().await;
    let open = api.base.replace("/apis/berth.dev/v1alpha1", "/metrics");
    assert_eq!(
        client.get(&open).send().await.unwrap().status(),
        StatusCode::OK
    );
}
