//! Power loss on one node, in detail: a single node keeps its data
//! directory on the lazy filesystem (`crates/lazyfs`), takes enough
//! acknowledged writes to snapshot several times and purge the log behind
//! the snapshots, is SIGKILLed, loses every write it had not synced, and
//! restarts. Every acknowledged lease must be there with its holder and
//! token, and the next grant must carry a higher token. Then once more with
//! the torn mode (a prefix of each file's unsynced writes survives, the last
//! one cut short), which the WAL's recovery must take in its stride.
//!
//! This test found a real hole: `snapshots/` was created without syncing the
//! data directory, so the power cut took the directory and its snapshot
//! files, and with the log purged behind them the node could not start
//! again (openraft: "Failed to get log entries, expected index: [0, 64)").
//! `store::create_dir_durably` closed it.
//!
//! Needs FUSE (`/dev/fuse`, root); without it the test says SKIPPED.

use crate::common;

use common::{acquire_req, free_ports, Deadline};
use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use leasehold_testkit::lazydisk::{find_beside, unavailable, LazyDisk, LAZYFS_BIN};
use leasehold_testkit::node::{NodeProcess, NodeSpec};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Snapshot every 300 entries.
const SNAPSHOT_LOGS: &str = "300";
/// openraft keeps 1,000 entries behind the latest snapshot and purges the
/// rest: a snapshot at this index means the log before index 500 is gone.
const PURGED_SNAPSHOT_INDEX: u64 = 1_500;
/// Writes per round.
const ROUND: usize = 400;

/// The single node (`leasehold_testkit::node`, the harness's process
/// code): its data directory `<root>/data` is the lazy mount.
fn node_at(root: &Path, port: u16) -> NodeProcess {
    NodeProcess::new(NodeSpec {
        bin: common::BIN.into(),
        id: 1,
        port,
        root: root.to_path_buf(),
        hostname: "power-loss-node".into(),
        heartbeat_ms: common::HEARTBEAT_MS,
        election_timeout_ms: (common::ELECTION_MIN_MS, common::ELECTION_MAX_MS),
        membership_args: Vec::new(),
        extra_args: vec![
            "--no-identity-lease".into(),
            "--snapshot-logs".into(),
            SNAPSHOT_LOGS.into(),
        ],
        env: Vec::new(),
    })
}

/// Starts the node and waits until it serves a linearizable read.
async fn start(client: &Client, node: &NodeProcess) {
    node.spawn(&[]).expect("start the node");
    let d = Deadline::new("the node to serve a read", Duration::from_secs(60));
    loop {
        if let Some(status) = node.exited() {
            panic!(
                "the node exited with {status} instead of recovering:\n{}",
                node.log_tail(200)
            );
        }
        match client
            .get(pb::GetRequest {
                namespace: "pl".into(),
                name: "nothing".into(),
                stale: false,
            })
            .await
        {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::NotFound => return,
            Err(e) => d.check(e).await,
        }
    }
}

/// Checks every acknowledged lease, and returns the highest token seen.
async fn check_all(client: &Client, acked: &[(String, u64)], after: &str) -> u64 {
    let mut max = 0;
    for (name, token) in acked {
        let got = client
            .get(pb::GetRequest {
                namespace: "pl".into(),
                name: name.clone(),
                stale: false,
            })
            .await
            .unwrap_or_else(|e| {
                panic!("{name}, acknowledged with token {token}, after {after}: {e}")
            });
        let lease = got.lease.expect("a lease in the answer");
        let holder = lease.spec.map(|s| s.holder_identity).unwrap_or_default();
        let got_token = lease.status.map(|s| s.fencing_token).unwrap_or(0);
        assert_eq!(
            (holder.as_str(), got_token),
            ("holder", *token),
            "{name} after {after}"
        );
        max = max.max(got_token);
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_loss_across_snapshots_and_purges() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: power-loss faults need FUSE: {why}");
        return;
    }
    let Some(lazyfs) = find_beside(Path::new(common::BIN)) else {
        panic!(
            "{LAZYFS_BIN} was not built next to {}: run the README's `cargo test` (every \
             workspace member), or `cargo build -p leasehold-lazyfs` first",
            common::BIN
        );
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = node_at(tmp.path(), free_ports(1)[0]);
    let data = node.data_dir();
    let disk = LazyDisk::mount(
        &lazyfs,
        &tmp.path().join("disk"),
        &data,
        &tmp.path().join("lazyfs.sock"),
        &tmp.path().join("lazyfs.log"),
    )
    .expect("mount the lazy filesystem");
    let client = Arc::new(
        Client::new(vec![node.addr()])
            .expect("client")
            .with_timeout(Duration::from_secs(10)),
    );
    start(&client, &node).await;

    // Acknowledged writes, four at a time, in rounds, until a snapshot
    // lies far enough ahead that the log behind it was purged (concurrent
    // writes share log entries, so count entries, not writes).
    let mut acked = Vec::new();
    let d = Deadline::new("a snapshot past the purge margin", Duration::from_secs(120));
    loop {
        let status = client.status().await.expect("status");
        if status.snapshot_index >= PURGED_SNAPSHOT_INDEX {
            break;
        }
        let mut tasks = Vec::new();
        for t in 0..4 {
            let client = client.clone();
            let first = acked.len();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in (first + t..first + ROUND).step_by(4) {
                    let name = format!("l{i}");
                    let r = client
                        .acquire(acquire_req("pl", &name, "holder", 3600))
                        .await
                        .unwrap_or_else(|e| panic!("acquire {name}: {e}"));
                    acked.push((name, r.fencing_token));
                }
                acked
            }));
        }
        for t in tasks {
            acked.extend(t.await.expect("writer task"));
        }
        d.check(status.snapshot_index).await;
    }
    let snapshots = std::fs::read_dir(data.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        snapshots > 0,
        "no snapshot was written: the test would not test it"
    );

    for (round, torn) in [(1, None), (2, Some(0x5eed_u64))] {
        node.kill().expect("kill the node");
        let dropped = disk
            .control()
            .lose_unsynced(torn)
            .expect("lose the unsynced writes");
        eprintln!("power loss {round} (torn: {torn:?}): dropped {dropped}");
        start(&client, &node).await;
        let after = format!("power loss {round}");
        let max = check_all(&client, &acked, &after).await;
        // A new tenure gets a token above every one issued before.
        let name = format!("after-{round}");
        let r = client
            .acquire(acquire_req("pl", &name, "holder", 3600))
            .await
            .unwrap_or_else(|e| panic!("acquire {name}: {e}"));
        assert!(
            r.fencing_token > max,
            "{name} got token {} after {after}, not above {max}",
            r.fencing_token
        );
        acked.push((name, r.fencing_token));
    }
    // The node must be gone before its disk unmounts.
    drop(node);
    drop(disk);
}
