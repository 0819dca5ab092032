//! `berth bench agents` with a few agents against a real PostgreSQL: the
//! figures are sane (every agent connected, heartbeats counted, the
//! connects' writes seen by PostgreSQL). No timing or memory thresholds.

use std::time::Duration;

use berth::bench_agents::{bench_agents, AgentsBench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_agents_are_connected_and_their_heartbeats_and_writes_are_counted() {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with scripts/test.sh (which starts a private PostgreSQL) or point DATABASE_URL at a server",
    );
    let cfg = AgentsBench {
        connect_concurrency: 8,
        ..AgentsBench::new(20, Duration::from_secs(3), Duration::from_millis(200))
    };
    let f = bench_agents(&url, &cfg).await.expect("bench agents");
    let out = f.render();
    println!("{out}");
    assert_eq!(f.connected, 20, "{out}");
    assert_eq!(f.connected_end, 20, "{out}");
    assert!(f.heartbeats > 0, "{out}");
    assert!(f.pings_seen > 0, "{out}");
    // Each connect opens a session (and touches its workspace): rows PostgreSQL counted.
    assert!(f.connect_writes.rows >= 20, "{out}");
    assert!(f.connect_writes.xact_commit >= 20, "{out}");
    assert!(f.writes.rows >= 0 && f.writes.xact_commit >= 0, "{out}");
    assert!(f.rss_before_kib > 0 && f.rss_connected_kib > 0, "{out}");
    assert!(out.contains("ping period 200ms"), "{out}");
    assert!(out.contains("PASS") || out.contains("FAIL"), "{out}");
}
