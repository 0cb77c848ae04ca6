//! Backup and restore (issue 15): `leasehold snapshot save` from a live
//! cluster under load, then a total loss (every node killed and wiped),
//! `snapshot restore` run separately for each node, and the restored
//! cluster checked against the backup file itself: the same leases
//! (holders, fencing tokens, resourceVersions), new tokens above both the
//! old cluster's last token and the revision floor, watches from before
//! the floor told COMPACTED, one new cluster id on every node. Then what a
//! restored cluster must still do (a log id of term 0 at an index > 0 is
//! not a state openraft's own tests cover): elect a new leader, restart a
//! follower, build a snapshot and restart from it. Refusals: a damaged
//! file, a non-empty data directory, `--bump-revision 0` without a floor.

use crate::common::{
    self, acquire_req, assert_status, cli, rv_holder_token, Cluster, Deadline, Options, Run,
};
use leasehold::api::status::reason;
use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use leasehold::store::backup;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// Long enough that no lease expires (which would change its
/// resourceVersion) while the test runs.
const LONG: i32 = 3600;
const WAIT: Duration = Duration::from_secs(30);

/// Every lease outside the nodes' identity namespace, by `namespace/name`:
/// (resourceVersion, holder, fencing token).
async fn list_all(client: &Client, stale: bool) -> BTreeMap<String, (u64, String, u64)> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let r = client
            .list(pb::ListRequest {
                namespace: String::new(),
                label_selector: String::new(),
                limit: 100,
                continue_token: token,
                stale,
            })
            .await
            .expect("list");
        for l in r.items {
            let m = l.metadata.clone().expect("metadata");
            if m.namespace == leasehold::identity::NAMESPACE {
                continue;
            }
            out.insert(format!("{}/{}", m.namespace, m.name), rv_holder_token(&l));
        }
        token = r.continue_token;
        if token.is_empty() {
            return out;
        }
    }
}

/// The leases in a backup file, decoded by the library (the same shape as
/// [`list_all`]).
fn leases_in(file: &Path) -> (backup::Verified, BTreeMap<String, (u64, String, u64)>) {
    let v = backup::verify(file).expect("the backup verifies");
    let (_, state) = backup::load(&v, 0).expect("the backup decodes");
    let leases = state
        .leases()
        .filter(|l| l.key.namespace != leasehold::identity::NAMESPACE)
        .map(|l| {
            (
                format!("{}/{}", l.key.namespace, l.key.name),
                (
                    l.resource_version,
                    l.holder().unwrap_or_default().to_string(),
                    l.fencing_token,
                ),
            )
        })
        .collect();
    (v, leases)
}

/// The number after `word ` in `text`.
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} not in {text:?}"));
    text[at + word.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {text:?}"))
}

fn assert_ok(what: &str, r: &Run) {
    assert_eq!(r.code, 0, "{what}: {r:?}");
}

/// The first failure of a watch (from opening it or its first message).
async fn watch_error(client: &Client, req: pb::WatchRequest) -> tonic::Status {
    match client.watch_on(0, req).await {
        Err(st) => st,
        Ok(mut s) => match tokio::time::timeout(WAIT, s.message()).await {
            Ok(Err(st)) => st,
            other => panic!("expected the watch to fail, got {other:?}"),
        },
    }
}

fn watch_req(start_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        namespace: "after".into(),
        name: String::new(),
        label_selector: String::new(),
        start_revision,
        progress_notify: false,
        progress_interval_ms: 0,
    }
}

/// The first non-PROGRESS event of a watch.
async fn next_change(s: &mut tonic::Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    loop {
        let m = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("a watch event in time")
            .expect("the watch stays open")
            .expect("the watch stays open");
        if m.r#type != pb::watch_event::Type::Progress as i32 {
            return m;
        }
    }
}

/// Acquires `load/k<i>` for i = 0, 1, ... until told to stop, noting the
/// highest fencing token granted and how many acquires were acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    max_token: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let max_token = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, m, a) = (stop.clone(), max_token.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let r = client
                    .acquire(acquire_req("load", &format!("k{i}"), "writer", LONG))
                    .await
                    .expect("acquire under load");
                m.fetch_max(r.fencing_token, Ordering::Relaxed);
                a.store(i + 1, Ordering::Relaxed);
                i += 1;
            }
        });
        Load {
            stop,
            max_token,
            acked,
            task,
        }
    }

    async fn wait_acked(&self, n: u64) {
        let d = Deadline::new(format!("{n} acquires under load"), WAIT);
        loop {
            let got = self.acked.load(Ordering::Relaxed);
            if got >= n {
                return;
            }
            d.check(got).await;
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        self.max_token.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn save_under_load_wipe_every_node_restore_and_tokens_stay_above_the_floor() {
    let mut c = Cluster::start_with(
        3,
        Options {
            snapshot_logs: Some(40),
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_for_leader(WAIT).await;
    let old = c.status(leader).await.expect("status");
    assert_eq!(old.format_version, leasehold::store::FORMAT_VERSION);
    assert_eq!(old.version, env!("CARGO_PKG_VERSION"));
    let shown = cli(&c.endpoint(leader), &["status"]).await;
    assert!(
        shown.stdout.contains(&format!(
            "on-disk format {}",
            leasehold::store::FORMAT_VERSION
        )),
        "{shown:?}"
    );
    let client = c.client();
    // Leases whose tokens and resourceVersions differ: acquired, renewed,
    // released and taken by someone else.
    for i in 0..20 {
        client
            .acquire(acquire_req(
                "keep",
                &format!("l{i}"),
                &format!("h{i}"),
                LONG,
            ))
            .await
            .expect("acquire");
    }
    for i in 0..5 {
        let name = format!("l{i}");
        let held = client
            .acquire(acquire_req("keep", &name, &format!("h{i}"), LONG))
            .await
            .expect("renew by acquire");
        client
            .release(common::release_req(
                "keep",
                &name,
                &format!("h{i}"),
                held.fencing_token,
            ))
            .await
            .expect("release");
        client
            .acquire(acquire_req("keep", &name, "successor", LONG))
            .await
            .expect("acquire by another");
    }

    // Save under load, through a follower: the CLI follows its NOT_LEADER
    // to the leader.
    let load = Load::start(c.client());
    load.wait_acked(20).await;
    let before_save = load.acked.load(Ordering::Relaxed);
    let follower = *c.ids().iter().find(|id| **id != leader).expect("follower");
    let file = c.root().join("cluster.backup");
    let file_s = file.to_str().expect("utf-8 path");
    let saved = cli(&c.endpoint(follower), &["snapshot", "save", file_s]).await;
    assert_ok("snapshot save", &saved);
    assert!(
        saved
            .stdout
            .contains(&format!("saved from {}", c.endpoint(leader))),
        "saved from the leader: {saved:?}"
    );
    let after_save = load.acked.load(Ordering::Relaxed);
    // Keep writing after the backup, then stop: the old cluster issued
    // tokens the backup does not hold.
    load.wait_acked(after_save + 30).await;
    let max_token = load.stop().await;
    let old_revision = c.status(leader).await.expect("status").revision;
    let highest_old = max_token.max(old_revision);

    let (v, expected) = leases_in(&file);
    let r = v.header.revision;
    assert_eq!(number_after(&saved.stdout, "revision"), r);
    assert!(saved.stdout.contains(&v.sha256_hex()), "{saved:?}");
    assert_eq!(v.header.cluster_id, old.cluster_id);
    assert!(
        max_token > r,
        "writes after the backup issued tokens above its revision ({max_token} vs {r})"
    );
    // Every write acknowledged before the save started is in it, and
    // the ones acknowledged after it ended are not.
    for i in 0..before_save {
        assert!(
            expected.contains_key(&format!("load/k{i}")),
            "load/k{i} was acknowledged before the save but is not in the backup"
        );
    }
    assert!(!expected.contains_key(&format!("load/k{}", after_save + 1)));
    assert_eq!(expected["keep/l0"].1, "successor");
    let status = cli("127.0.0.1:1", &["snapshot", "status", file_s]).await;
    assert_ok("snapshot status", &status);
    assert!(status.stdout.starts_with("ok"), "{status:?}");

    // Total loss, then restore each node on its own.
    c.kill_all();
    let peers = c
        .ids()
        .iter()
        .map(|id| format!("{id}={}", c.endpoint(*id)))
        .collect::<Vec<_>>()
        .join(",");
    let mut floor = None;
    for id in c.ids() {
        c.wipe(id);
        let dir = c.data_dir(id);
        let id_s = id.to_string();
        let mut args = vec![
            "snapshot",
            "restore",
            file_s,
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--id",
            &id_s,
            "--peers",
            &peers,
            "--cluster-token",
            "restore-test",
        ];
        let floor_s = floor.map(|f: u64| f.to_string());
        if let Some(f) = &floor_s {
            args.extend(["--revision-floor", f.as_str()]);
        }
        let restored = cli("127.0.0.1:1", &args).await;
        assert_ok("snapshot restore", &restored);
        let printed = number_after(&restored.stdout, "revision floor");
        assert_eq!(*floor.get_or_insert(printed), printed, "{restored:?}");
    }
    let floor = floor.expect("a floor");
    assert!(floor >= r + 1_000_000_000, "default bump: {floor} vs {r}");
    assert!(floor > highest_old);
    for id in c.ids() {
        c.restart(id).await;
    }
    let leader = c.wait_for_leader(WAIT).await;

    // One new cluster on every node.
    let mut ids = std::collections::BTreeSet::new();
    for id in c.ids() {
        let s = c.status(id).await.expect("status");
        assert!(s.revision >= floor, "node {id}: revision {}", s.revision);
        ids.insert(s.cluster_id);
    }
    assert_eq!(ids.len(), 1, "one cluster id: {ids:?}");
    assert!(!ids.contains(&old.cluster_id), "a new cluster id");

    // The leases are the backup's, on the leader and (stale) on every node.
    let client = c.client();
    assert_eq!(list_all(&client, false).await, expected);
    let applied = c.status(leader).await.expect("status").commit_index;
    for id in c.ids() {
        c.wait_applied(id, applied, WAIT).await;
        assert_eq!(
            list_all(&c.client_for(&[id]), true).await,
            expected,
            "node {id}"
        );
    }

    // A watch from the backup's revision is told to relist; one from now
    // and one from the floor see new changes.
    let st = watch_error(&client, watch_req(r)).await;
    let meta = assert_status("watch from R", &st, Code::OutOfRange, reason::COMPACTED);
    assert_eq!(meta["oldestRevision"], (floor + 1).to_string());
    // The server sends a PROGRESS event at once on a watch with progress
    // notifications: after it, the from-now watch sees every later change.
    let mut now_req = watch_req(0);
    now_req.progress_notify = true;
    now_req.progress_interval_ms = 600_000;
    let mut from_now = client.watch_on(0, now_req).await.expect("watch");
    let first = tokio::time::timeout(WAIT, from_now.message())
        .await
        .expect("the first event in time")
        .expect("the watch is open")
        .expect("the watch is open");
    assert_eq!(first.r#type, pb::watch_event::Type::Progress as i32);
    let mut from_floor = client
        .watch_on(0, watch_req(floor + 1))
        .await
        .expect("watch from the floor");
    let granted = client
        .acquire(acquire_req("after", "new", "newcomer", LONG))
        .await
        .expect("acquire after restore");
    assert!(
        granted.fencing_token > floor && granted.fencing_token > highest_old,
        "token {} vs floor {floor} and old tokens up to {highest_old}",
        granted.fencing_token
    );
    for s in [&mut from_now, &mut from_floor] {
        let e = next_change(s).await;
        assert_eq!(e.revision, granted.fencing_token);
        assert_eq!(
            rv_holder_token(e.lease.as_ref().expect("lease")).1,
            "newcomer"
        );
    }
    // A lease from the backup keeps its tenure: its holder renews with its
    // old token.
    let (_, holder, token) = expected["keep/l7"].clone();
    client
        .renew(common::renew_req("keep", "l7", &holder, token))
        .await
        .expect("the backup's holder renews with its token");

    // An election: the leader dies, another takes over and grants above.
    c.kill(leader);
    let leader = c.wait_for_leader(WAIT).await;
    let next = c
        .client()
        .acquire(acquire_req("after", "second", "newcomer", LONG))
        .await
        .expect("acquire after the election");
    assert!(next.fencing_token > granted.fencing_token);
    let dead = *c
        .ids()
        .iter()
        .find(|id| !c.live_ids().contains(id))
        .expect("the killed node");
    c.restart(dead).await;

    // Snapshots after the restore (--snapshot-logs 40), and a follower
    // restarting from one.
    let client = c.client();
    for i in 0..60 {
        client
            .acquire(acquire_req("after", &format!("s{i}"), "newcomer", LONG))
            .await
            .expect("acquire");
    }
    let follower = *c.ids().iter().find(|id| **id != leader).expect("follower");
    let top = c.status(leader).await.expect("status").commit_index;
    c.wait_applied(follower, top, WAIT).await;
    let d = Deadline::new(
        format!(
            "node {follower} to build a snapshot past {}",
            v.header.applied_index
        ),
        WAIT,
    );
    loop {
        let s = c.status(follower).await.expect("status");
        if s.snapshot_index > v.header.applied_index {
            break;
        }
        d.check(s.snapshot_index).await;
    }
    c.kill(follower);
    c.restart(follower).await;
    let top = c.status(leader).await.expect("status").commit_index;
    c.wait_applied(follower, top, WAIT).await;
    let on_leader = list_all(&c.client_for(&[leader]), false).await;
    assert_eq!(list_all(&c.client_for(&[follower]), true).await, on_leader);
    assert_eq!(on_leader.len(), expected.len() + 62);
    c.assert_no_crashes();
}

/// What restore refuses, each with a clear message and nothing written: a
/// flipped byte anywhere (the sha256 over the file), a data directory that
/// holds anything, a bump of 0 without a floor, a floor below the backup.
#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_damage_a_used_directory_and_no_floor() {
    use futures::StreamExt;
    let c = Cluster::start(1).await;
    c.wait_for_leader(WAIT).await;
    // Enough leases for a body of several 64 KiB chunks.
    let client = c.client();
    let n = futures::stream::iter(0..800)
        .map(|i| {
            client.acquire(acquire_req(
                "ns",
                &format!("lease-with-a-longer-name-{i:04}"),
                "alice",
                LONG,
            ))
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(n, 800);
    let file = c.root().join("one.backup");
    let file_s = file.to_str().expect("utf-8 path");
    assert_ok(
        "save",
        &cli(&c.endpoint(1), &["snapshot", "save", file_s]).await,
    );
    assert!(!c.root().join("one.backup.part").exists());
    let (v, leases) = leases_in(&file);
    assert_eq!(leases.len(), 800);
    assert!(
        v.body_len > 2 * 64 * 1024,
        "several chunks: {} bytes",
        v.body_len
    );
    let restore = |file: &str, dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "snapshot".to_string(),
            "restore".into(),
            file.into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--id".into(),
            "1".into(),
            "--peers".into(),
            "1=127.0.0.1:1".into(),
            "--cluster-token".into(),
            "t".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli("127.0.0.1:1", &args).await
        }
    };

    // A flipped byte in the middle of the body.
    let mut bytes = std::fs::read(&file).expect("read backup");
    let damaged = c.root().join("damaged.backup");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&damaged, &bytes).expect("write");
    let damaged_s = damaged.to_str().expect("utf-8 path");
    let st = cli("127.0.0.1:1", &["snapshot", "status", damaged_s]).await;
    assert_eq!(st.code, 1, "{st:?}");
    assert!(st.stderr.contains("sha256 mismatch"), "{st:?}");
    let dir = c.root().join("fresh");
    let r = restore(damaged_s, &dir, &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("sha256 mismatch"), "{r:?}");
    assert!(!dir.exists(), "nothing written");

    // A directory in use.
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("stray"), b"x").expect("write");
    let r = restore(file_s, &dir, &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not empty"), "{r:?}");
    assert!(!dir.join("node.json").exists());

    // No floor at all, and a floor below the backup's revision.
    let empty = c.root().join("empty");
    let r = restore(file_s, &empty, &["--bump-revision", "0"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--revision-floor"), "{r:?}");
    let r = restore(file_s, &empty, &["--revision-floor", "1"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("below the backup's revision"), "{r:?}");
    assert!(!empty.exists(), "nothing written");

    // And the undamaged file restores (with an explicit floor, printed).
    let r = restore(file_s, &empty, &["--revision-floor", "5000"]).await;
    assert_ok("restore", &r);
    assert_eq!(number_after(&r.stdout, "revision floor"), 5000);
    assert!(empty.join("node.json").exists());
}

/// The backup copy carries the request-id records that the readers' view
/// leaves out, so a retry after a restore still gets its first answer.
#[tokio::test]
async fn the_backup_copy_keeps_request_ids() {
    use leasehold::lease::{Command, LeaseKey, Proposal, Timestamp};
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().expect("tmp");
    let (_log, mut sm) = leasehold::store::open(dir.path()).expect("open store");
    let proposal = Proposal::single(
        Timestamp::from_micros(1_700_000_000_000_000),
        1,
        Command::Acquire {
            key: LeaseKey::new("ns", "a"),
            holder: "alice".into(),
            duration_seconds: 10,
            labels: Default::default(),
        },
        Some("request-1".into()),
    );
    let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1);
    let entry = openraft::Entry {
        log_id,
        payload: openraft::EntryPayload::Normal(proposal),
    };
    sm.apply([entry]).await.expect("apply");
    assert_eq!(sm.view().dedup_len(), 0, "readers do not carry them");
    let (state, applied, _) = sm.backup_copy();
    assert_eq!(state.dedup_len(), 1);
    assert_eq!(applied, Some(log_id));
    assert_eq!(state.revision(), 1);
}

/// At most two backups stream from one node at once (each holds a blocking
/// thread and a copy of the state): a third is refused with
/// `RESOURCE_EXHAUSTED` naming the limit, and is admitted once a reader
/// goes away (its encoder notices at its next chunk and frees the slot).
/// The state is made larger than what a stream buffers ahead of a reader
/// that is not reading (16 chunks of 64 KiB plus the HTTP/2 windows), so
/// the two held streams really are still streaming.
#[tokio::test(flavor = "multi_thread")]
async fn a_third_concurrent_backup_is_refused_until_one_ends() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(Duration::from_secs(20)).await;
    let client = c.client();
    // 40 leases of about 240 KiB of annotations: about 9.6 MiB of state.
    for i in 0..40 {
        let mut m = common::meta("cap", &format!("big-{i}"), 0);
        if let Some(m) = m.as_mut() {
            m.annotations = (0..2)
                .map(|k| (format!("note-{k}"), "a".repeat(120 * 1024)))
                .collect();
        }
        let spec = pb::LeaseSpec {
            holder_identity: "h".into(),
            lease_duration_seconds: Some(LONG),
            ..Default::default()
        };
        client
            .put(common::put_req(m, spec))
            .await
            .unwrap_or_else(|e| panic!("put big-{i}: {e:?}"));
    }
    let addr = c.endpoint(1);
    let mut held = Vec::new();
    for k in 0..2 {
        let mut s = client
            .snapshot_on(&addr)
            .await
            .unwrap_or_else(|e| panic!("backup {k}: {e:?}"));
        let first = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("the first message in time")
            .expect("the first message");
        assert!(
            matches!(
                first.and_then(|m| m.part),
                Some(pb::snapshot_chunk::Part::Info(_))
            ),
            "backup {k} starts with its info"
        );
        held.push(s);
    }
    let third = client
        .snapshot_on(&addr)
        .await
        .map(|_| ())
        .expect_err("a third backup while two stream");
    let meta = assert_status(
        "the third backup",
        &third,
        Code::ResourceExhausted,
        reason::TOO_MANY,
    );
    assert_eq!(meta.get("what").map(String::as_str), Some("backups"));
    assert_eq!(meta.get("limit").map(String::as_str), Some("2"));
    assert!(
        third.message().contains("2 backups are already streaming"),
        "{third:?}"
    );

    // One reader goes away: its slot frees once the encoder notices.
    drop(held.pop());
    let d = Deadline::new("a backup admitted after one reader left", WAIT);
    let mut s = loop {
        match client.snapshot_on(&addr).await {
            Ok(s) => break s,
            Err(e) if e.code() == Code::ResourceExhausted => d.check(&e).await,
            Err(e) => panic!("backup after one reader left: {e:?}"),
        }
    };
    // And it streams to the end: every chunk, then the checksum.
    let mut bytes = 0usize;
    let mut ended = false;
    while let Some(m) = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("a message in time")
        .expect("a message")
    {
        match m.part {
            Some(pb::snapshot_chunk::Part::Data(d)) => bytes += d.len(),
            Some(pb::snapshot_chunk::Part::Sha256(_)) => ended = true,
            _ => {}
        }
    }
    assert!(ended, "the stream ends with its checksum");
    assert!(bytes > 9 << 20, "{bytes} bytes of data");
    c.assert_no_crashes();
}
