//! Durable before acknowledged, shown on a real process: a node runs under
//! `strace`, a client makes twenty acquires one after another, and for
//! every acknowledged acquire an `fdatasync` of a WAL segment (a file under
//! `<data-dir>/wal/`) must have started between the moment the request was
//! sent and the moment the answer arrived. (With the sled store this replaced,
//! twenty acknowledged acquires made no `fsync`/`fdatasync` at all: sled's
//! flush ends in `sync_file_range`.)
//!
//! Needs `strace` (Debian: `strace`; `.ci/run` installs it). Without it the
//! test says so and does nothing else.

use crate::common;
use std::os::unix::process::CommandExt;

use common::{acquire_req, free_ports, Deadline};
use leasehold::client::Client;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Start times (epoch seconds) of the `fdatasync` calls on files under
/// SIGKILLs a process group when dropped (also when the test panics).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0) {
            // SAFETY: killpg only sends a signal; a stale group id at worst
            // fails with ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// `wal_dir` in an `strace -f -ttt -yy` log.
fn wal_syncs(log: &str, wal_dir: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| {
            // "<pid> <secs.micros> fdatasync(<fd></path>) = 0" or
            // "... fdatasync(<fd></path> <unfinished ...>"
            let at = line.find("fdatasync(")?;
            let args = &line[at..];
            if !args.contains(wal_dir) {
                return None;
            }
            let mut fields = line[..at].split_whitespace();
            let first = fields.next()?;
            let ts = match fields.next() {
                Some(ts) => ts,
                None => first,
            };
            ts.parse::<f64>().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_was_fdatasynced_first() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed (apt-get install strace); .ci/run installs it");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let trace = tmp.path().join("strace.log");
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let mut node = Command::new("strace")
        .args([
            "-f",
            "-ttt",
            "-yy",
            "-qq",
            "-e",
            "trace=fdatasync,fsync,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .arg(common::BIN)
        .args([
            "serve",
            "--id",
            "1",
            "--listen",
            &addr,
            "--no-identity-lease",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: killing strace alone detaches the traced
        // node and leaves it running, so the group is killed (below).
        .process_group(0)
        .spawn()
        .expect("start the node under strace");
    let group = KillGroup(node.id());

    let client = Client::new(vec![addr.clone()])
        .expect("client")
        .with_timeout(Duration::from_secs(10));
    let d = Deadline::new("the traced node to serve a write", Duration::from_secs(30));
    loop {
        match client.acquire(acquire_req("dur", "warmup", "h", 30)).await {
            Ok(_) => break,
            Err(e) => d.check(e).await,
        }
    }
    let mut windows = Vec::new();
    for i in 0..20 {
        let sent = now_s();
        client
            .acquire(acquire_req("dur", &format!("l{i}"), "h", 30))
            .await
            .expect("acquire");
        windows.push((sent, now_s()));
    }
    drop(group);
    let _ = node.wait();

    let log = std::fs::read_to_string(&trace).expect("read the trace");
    let wal_dir = data.join("wal").display().to_string();
    let syncs = wal_syncs(&log, &wal_dir);
    assert!(
        syncs.len() >= windows.len(),
        "{} fdatasyncs of the WAL for {} acknowledged writes; trace:\n{}",
        syncs.len(),
        windows.len(),
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    for (i, (sent, acked)) in windows.iter().enumerate() {
        assert!(
            syncs.iter().any(|t| t >= sent && t <= acked),
            "acquire {i} was acknowledged ({acked:.6}) without an fdatasync of the WAL since it \
             was sent ({sent:.6})"
        );
    }
}
