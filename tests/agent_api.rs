//! The operator's end of the agent protocol over a real PostgreSQL and a
//! real WebSocket: token rules, the manifest, script states, logs that are
//! stored once across a reconnect, and `GET …/logs` as users read it. The
//! test plays the agent with a plain WebSocket client.

mod common;

use common::{workspace, Api};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use berth::agent::protocol::{
    AgentMessage, Lifecycle, LogLine, ScriptState, ScriptStatus, ServerMessage, Stream,
    PROTOCOL_VERSION,
};

const TEMPLATE: &str = r#"
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
    secrets:
      RUNNER_PAT: arn:aws:secretsmanager:us-west-2:123456789012:secret:pat
  resources:
    default: {cpu: 1024, memory: 2048}
  parameters:
    - name: web
      type: bool
      default: false
  scripts:
    - name: setup
      script: echo setup
    - name: web
      when: web
      blocksLogin: false
      script: echo web
    - name: deregister
      runOnStop: true
      script: echo bye
"#;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(api: &Api, name: &str) -> String {
    format!(
        "{}/namespaces/default/workspaces/{name}/agent",
        api.base.replace("http://", "ws://")
    )
}

async fn connect(api: &Api, name: &str, token: &str) -> Result<Socket, u16> {
    let mut req = ws_url(api, name).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

async fn send(s: &mut Socket, m: &AgentMessage) {
    s.send(Message::Text(m.encode().into())).await.unwrap();
}

async fn recv(s: &mut Socket) -> ServerMessage {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Text(t))) => return ServerMessage::decode(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn hello(scripts: Vec<ScriptStatus>) -> AgentMessage {
    AgentMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "test".into(),
        lifecycle: Lifecycle::Starting,
        scripts,
    }
}

fn lines(from: u64, n: u64) -> Vec<LogLine> {
    (from..from + n)
        .map(|seq| LogLine {
            seq,
            stream: if seq % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            at: chrono::Utc::now(),
            text: format!("line {seq}"),
        })
        .collect()
}

/// A template, alice's workspace and a current agent token for it.
async fn setup() -> (Api, String, String, uuid::Uuid) {
    let api = Api::start().await;
    assert_eq!(
        api.apply(&api.admin, TEMPLATE).await.status(),
        StatusCode::OK
    );
    let alice = api.user("alice").await;
    let r = api.apply(&alice, &workspace("alice", "alice", "")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let uid = api
        .store
        .object_get(berth::api::Kind::Workspace, "default", "alice")
        .await
        .unwrap()
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let token = "berth_agent_test_token_1".to_string();
    api.store.agent_token_set(uid, &token).await.unwrap();
    (api, alice, token, uid)
}

#[tokio::test]
async fn an_old_starts_token_another_workspaces_token_and_a_user_token_are_refused() {
    let (api, alice, token, _) = setup().await;
    let r = api.apply(&alice, &workspace("other", "alice", "")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let other = api
        .store
        .object_get(berth::api::Kind::Workspace, "default", "other")
        .await
        .unwrap()
        .unwrap()
        .metadata
        .uid
        .unwrap();
    api.store
        .agent_token_set(other, "berth_agent_other")
        .await
        .unwrap();
    assert!(
        connect(&api, "alice", &token).await.is_ok(),
        "the current token is taken"
    );
    assert_eq!(
        connect(&api, "alice", "berth_agent_other").await.err(),
        Some(401),
        "another workspace's token"
    );
    assert_eq!(
        connect(&api, "alice", &alice).await.err(),
        Some(401),
        "a user token"
    );
    assert_eq!(
        connect(&api, "nobody", &token).await.err(),
        Some(401),
        "a missing workspace answers alike"
    );
    // A new start replaces the token: the old one is refused from then on.
    let uid = api
        .store
        .object_get(berth::api::Kind::Workspace, "default", "alice")
        .await
        .unwrap()
        .unwrap()
        .metadata
        .uid
        .unwrap();
    api.store
        .agent_token_set(uid, "berth_agent_test_token_2")
        .await
        .unwrap();
    assert_eq!(
        connect(&api, "alice", &token).await.err(),
        Some(401),
        "an earlier start's token"
    );
    // The activity endpoint, the other one an agent token opens, has the same rules.
    let activity = |tok: &'static str| {
        api.client
            .post(format!(
                "{}/namespaces/default/workspaces/alice/activity",
                api.base
            ))
            .bearer_auth(tok)
            .json(&serde_json::json!({"kind": "ssh"}))
            .send()
    };
    let old: &'static str = "berth_agent_test_token_1";
    assert_eq!(old, token);
    assert_eq!(
        activity(old).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "an earlier start's token on the activity endpoint"
    );
    // Another workspace's (valid) agent token: answered as if alice did not
    // exist, so it learns nothing about her.
    assert_eq!(
        activity("berth_agent_other").await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "another workspace's token on the activity endpoint"
    );
    assert!(activity("berth_agent_test_token_2")
        .await
        .unwrap()
        .status()
        .is_success());
    // Neither may the agent token act as a person.
    let r = api
        .get(
            "berth_agent_test_token_2",
            "/namespaces/default/workspaces/alice/logs",
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_manifest_has_the_scripts_that_apply_and_names_secrets_but_not_their_values() {
    let (api, _, token, _) = setup().await;
    let mut s = connect(&api, "alice", &token).await.unwrap();
    send(&mut s, &hello(vec![])).await;
    let ServerMessage::Welcome {
        manifest,
        logs_acked,
        ..
    } = recv(&mut s).await
    else {
        panic!("expected welcome")
    };
    let names: Vec<&str> = manifest.scripts.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["setup", "deregister"],
        "`web` is off by its `when` parameter"
    );
    assert!(manifest.scripts[1].run_on_stop && !manifest.scripts[1].blocks_login);
    assert_eq!(manifest.secret_env, ["RUNNER_PAT"]);
    assert!(!manifest
        .encode_for_test()
        .contains("arn:aws:secretsmanager"));
    assert_eq!(logs_acked.get("setup"), Some(&0));
}

trait EncodeForTest {
    fn encode_for_test(&self) -> String;
}

impl EncodeForTest for berth::agent::protocol::Manifest {
    fn encode_for_test(&self) -> String {
        serde_json::to_string(self).unwrap()
    }
}

#[tokio::test]
async fn logs_resent_after_a_reconnect_are_stored_once_and_users_read_them_in_order() {
    let (api, alice, token, _) = setup().await;
    let mut s = connect(&api, "alice", &token).await.unwrap();
    send(&mut s, &hello(vec![])).await;
    assert!(matches!(recv(&mut s).await, ServerMessage::Welcome { .. }));
    let running = ScriptStatus {
        name: "setup".into(),
        state: ScriptState::Running,
        exit_code: None,
        started_at: Some(chrono::Utc::now()),
        finished_at: None,
    };
    send(
        &mut s,
        &AgentMessage::Script {
            status: running.clone(),
        },
    )
    .await;
    send(
        &mut s,
        &AgentMessage::Logs {
            script: "setup".into(),
            lines: lines(0, 50),
            dropped: 0,
        },
    )
    .await;
    assert_eq!(
        recv(&mut s).await,
        ServerMessage::LogsAck {
            script: "setup".into(),
            next_seq: 50
        }
    );
    // The connection drops with a batch in flight; the agent reconnects and
    // learns what was stored, then resends an overlapping batch.
    drop(s);
    let mut s = connect(&api, "alice", &token).await.unwrap();
    send(&mut s, &hello(vec![running])).await;
    let ServerMessage::Welcome { logs_acked, .. } = recv(&mut s).await else {
        panic!("expected welcome")
    };
    assert_eq!(logs_acked.get("setup"), Some(&50));
    send(
        &mut s,
        &AgentMessage::Logs {
            script: "setup".into(),
            lines: lines(40, 60),
            dropped: 0,
        },
    )
    .await;
    assert_eq!(
        recv(&mut s).await,
        ServerMessage::LogsAck {
            script: "setup".into(),
            next_seq: 100
        }
    );
    let done = ScriptStatus {
        name: "setup".into(),
        state: ScriptState::Succeeded,
        exit_code: Some(0),
        started_at: Some(chrono::Utc::now()),
        finished_at: Some(chrono::Utc::now()),
    };
    send(&mut s, &AgentMessage::Script { status: done }).await;
    send(
        &mut s,
        &AgentMessage::Lifecycle {
            state: Lifecycle::Ready,
        },
    )
    .await;
    // Going back is refused and closes the connection.
    send(
        &mut s,
        &AgentMessage::Lifecycle {
            state: Lifecycle::Starting,
        },
    )
    .await;
    match recv(&mut s).await {
        ServerMessage::Error { message } => assert!(
            message.contains("Ready cannot become Starting"),
            "{message}"
        ),
        other => panic!("expected an error, got {other:?}"),
    }

    let r = api
        .get(
            &alice,
            "/namespaces/default/workspaces/alice/logs?script=setup",
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let seqs: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let scripts = api
        .store
        .agent_scripts(
            api.store
                .object_get(berth::api::Kind::Workspace, "default", "alice")
                .await
                .unwrap()
                .unwrap()
                .metadata
                .uid
                .unwrap(),
            api.store
                .agent_token_lookup(&token)
                .await
                .unwrap()
                .unwrap()
                .1,
        )
        .await
        .unwrap();
    let setup = scripts.iter().find(|s| s.name == "setup").unwrap();
    assert_eq!(
        (setup.state.as_str(), setup.exit_code, setup.dropped),
        ("Succeeded", Some(0), 0)
    );

    // Another user sees nothing of it.
    let bob = api.user("bob").await;
    let r = api
        .get(&bob, "/namespaces/default/workspaces/alice/logs")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_script_over_the_cap_keeps_its_newest_lines_and_counts_the_dropped_ones() {
    let (api, alice, token, _) = setup().await;
    let mut s = connect(&api, "alice", &token).await.unwrap();
    send(&mut s, &hello(vec![])).await;
    assert!(matches!(recv(&mut s).await, ServerMessage::Welcome { .. }));
    let big = "x".repeat(8000);
    let mut seq = 0;
    // 200 lines of 8000 bytes = 1.6 MB > the 1 MiB cap.
    for _ in 0..4 {
        let batch: Vec<LogLine> = (seq..seq + 50)
            .map(|n| LogLine {
                seq: n,
                stream: Stream::Stdout,
                at: chrono::Utc::now(),
                text: format!("{n} {big}"),
            })
            .collect();
        send(
            &mut s,
            &AgentMessage::Logs {
                script: "setup".into(),
                lines: batch,
                dropped: 0,
            },
        )
        .await;
        assert!(matches!(recv(&mut s).await, ServerMessage::LogsAck { .. }));
        seq += 50;
    }
    let r = api
        .get(
            &alice,
            "/namespaces/default/workspaces/alice/logs?script=setup",
        )
        .await;
    let text = r.text().await.unwrap();
    let mut rows = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    let first = rows.next().unwrap();
    let dropped = first["dropped"]
        .as_i64()
        .expect("a dropped marker comes first");
    let kept: Vec<i64> = rows.map(|v| v["seq"].as_i64().unwrap()).collect();
    assert!(dropped > 0);
    assert_eq!(dropped + kept.len() as i64, 200);
    assert_eq!(kept.last(), Some(&199), "the newest lines are kept");
    assert_eq!(kept.first(), Some(&dropped), "the oldest are dropped");
}

/// The controller's side: on the simulated cloud (no local runtime), a
/// running task is not Ready until its agent connects and the blocking
/// script finished; an agent that goes away is reported after the grace.
#[tokio::test]
async fn ready_waits_for_the_agent_and_its_blocking_script_and_a_gone_agent_is_reported() {
    use common::sim::{condition, fast_sim, spawn_controller, wait_for_event, wait_until};
    let api = Api::start().await;
    assert_eq!(
        api.apply(&api.admin, TEMPLATE).await.status(),
        StatusCode::OK
    );
    let alice = api.user("alice").await;
    let r = api.apply(&alice, &workspace("alice", "alice", "")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let sim = fast_sim();
    let mut ctx = common::sim::ctx(&api.store, &sim);
    ctx.require_agent = true;
    ctx.agent_disconnect_grace = std::time::Duration::from_secs(1);
    let controller = spawn_controller(std::sync::Arc::new(ctx));

    let st = wait_until(
        &api.store,
        "alice",
        "a running task waiting for its agent",
        |st| condition(st, "Ready").1 == "AgentConnecting",
    )
    .await;
    assert_eq!(st.phase, berth::api::workspace::Phase::Running);
    // The container would read its token from this secret.
    let token = sim
        .secret_value(&common::sim::agent_secret(&api.store, "alice").await)
        .expect("the agent token's secret")
        .expose()
        .to_string();
    let mut s = connect(&api, "alice", &token)
        .await
        .expect("the agent connects");
    send(&mut s, &hello(vec![])).await;
    assert!(matches!(recv(&mut s).await, ServerMessage::Welcome { .. }));
    let st = wait_until(
        &api.store,
        "alice",
        "waiting for the blocking script",
        |st| condition(st, "Ready").1 == "StartupScriptsRunning",
    )
    .await;
    let agent = st.agent.expect("status.agent");
    assert!(agent.connected);
    assert_eq!(agent.version, "test");
    let names: Vec<(&str, &str)> = agent
        .scripts
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        names,
        [("setup", "Pending"), ("deregister", "Pending")],
        "web's `when` is false"
    );

    let now = chrono::Utc::now();
    for (state, code) in [
        (ScriptState::Running, None),
        (ScriptState::Succeeded, Some(0)),
    ] {
        send(
            &mut s,
            &AgentMessage::Script {
                status: ScriptStatus {
                    name: "setup".into(),
                    state,
                    exit_code: code,
                    started_at: Some(now),
                    finished_at: code.map(|_| now),
                },
            },
        )
        .await;
    }
    send(
        &mut s,
        &AgentMessage::Lifecycle {
            state: Lifecycle::Ready,
        },
    )
    .await;
    let st = wait_until(&api.store, "alice", "AgentReady", |st| {
        condition(st, "Ready")
            == (
                berth::api::meta::ConditionStatus::True,
                "AgentReady".to_string(),
            )
    })
    .await;
    let agent = st.agent.unwrap();
    assert_eq!(agent.lifecycle, "Ready");
    assert_eq!(agent.scripts[0].exit_code, Some(0));

    // The agent goes away: still Ready through the grace, then not.
    drop(s);
    let st = wait_until(&api.store, "alice", "AgentDisconnected", |st| {
        condition(st, "Ready").1 == "AgentDisconnected"
    })
    .await;
    assert!(!st.agent.unwrap().connected);
    wait_for_event(&api.store, "alice", |reason, m| {
        reason == "AgentDisconnected" && m.contains("has not reported since")
    })
    .await;
    controller.stop().await;
}
