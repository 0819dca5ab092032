//! `berth bench relay` with small sizes against a real PostgreSQL and a
//! child `berth agent`: every transfer comes back byte-identical, and the
//! figures are sane. No timing thresholds.

use std::path::PathBuf;
use std::time::Duration;

use berth::bench_relay::{bench_relay, RelayBench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_through_the_relay_and_ssh_cat_come_back_identical_and_are_timed() {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with scripts/test.sh (which starts a private PostgreSQL) or point DATABASE_URL at a server",
    );
    let cfg = RelayBench {
        mib: 2,
        round_trips: 50,
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_berth")),
        server_nagle: false,
    };
    let f = bench_relay(&url, &cfg).await.expect("bench relay");
    let out = f.render();
    println!("{out}");
    assert!(f.all_identical(), "{out}");
    let bytes = 2 * 1024 * 1024;
    for t in [f.duplex, f.pipe_cat, f.tcp_direct, f.relay_tcp, f.ssh_cat] {
        assert_eq!(t.bytes, bytes, "{out}");
        assert!(t.identical, "{out}");
        assert!(t.elapsed > Duration::ZERO && t.mb_per_s() > 0.0, "{out}");
    }
    assert!(f.ssh_setup > Duration::ZERO, "{out}");
    assert!(f.agent_connect > Duration::ZERO, "{out}");
    for r in [&f.rtt_direct, &f.rtt_relay] {
        assert_eq!(r.samples.len(), 50, "{out}");
        assert!(r.percentile(50.0) > Duration::ZERO, "{out}");
        assert!(r.percentile(99.0) >= r.percentile(50.0), "{out}");
    }
    assert!(out.contains("berth ssh -- cat"), "{out}");
    assert!(!out.contains("BYTES DIFFER"), "{out}");
}
