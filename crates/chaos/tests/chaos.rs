//! The chaos suite on local processes: three `leasehold serve` processes on
//! loopback, killed, stopped, wiped and restarted (and clock-shifted when
//! libfaketime is installed) under a workload of lease clients,
//! Kubernetes-style clients, deleters and watchers; every history is
//! checked. The docker-compose variant with partitions is `cluster/chaos.sh`.
//!
//! Five runs: two that must be clean (every local fault; power loss on the
//! lazy filesystem) and three negative controls, which must be caught: a
//! register that ignores fencing tokens; servers whose `Put` takes the
//! client's `renewTime` (the debug-only `--fault-put-trusts-client-times`)
//! with Kubernetes-style clients whose clocks run behind; and servers whose
//! WAL acknowledges without `fdatasync` (the debug-only
//! `--fault-skip-wal-sync`) losing power. The runs share the machine's two
//! cores, so they take turns.

use leasehold_chaos::backend::Backend;
use leasehold_chaos::faults::{FaultKind, FaultResult};
use leasehold_chaos::local::{find_faketime, LocalBackend, LocalOptions};
use leasehold_chaos::run::{run, RunConfig, RunReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chaos(
    dir: &Path,
    extra_args: &[&str],
    cfg_of: impl FnOnce(&Path) -> RunConfig,
) -> RunReport {
    chaos_on(dir, extra_args, None, cfg_of).await
}

/// The `leasehold` binary of the server package (see
/// `leasehold_testkit::node::workspace_binary`).
fn leasehold_bin() -> PathBuf {
    leasehold_testkit::node::workspace_binary("leasehold")
}

/// The lazy filesystem's binary, which `cargo test` builds with the rest of
/// the workspace into the directory of the `leasehold` binary; `None` (and
/// a loud SKIPPED) if this machine cannot mount FUSE.
fn lazyfs() -> Option<PathBuf> {
    if let Some(why) = leasehold_chaos::lazydisk::unavailable() {
        eprintln!("SKIPPED: power-loss faults need FUSE: {why}");
        return None;
    }
    let bin = leasehold_bin();
    match leasehold_chaos::lazydisk::find_beside(&bin) {
        Some(p) => Some(p),
        None => panic!(
            "{} was not built next to {}: run the README's `cargo test` (every workspace \
             member), or `cargo build -p leasehold-lazyfs` first",
            leasehold_chaos::lazydisk::LAZYFS_BIN,
            bin.display()
        ),
    }
}

/// Fails the test with every problem found (plus the checker's anomalies,
/// if any), keeping the temp dir with the report, history and node logs as
/// evidence; passes if there is none.
fn verdict(run: &str, tmp: tempfile::TempDir, report: &RunReport, mut problems: Vec<String>) {
    if !report.clean() {
        problems.push(format!(
            "the checker found anomalies:\n{}",
            std::fs::read_to_string(report.out_dir.join("anomalies.txt")).unwrap_or_default()
        ));
    }
    if !problems.is_empty() {
        // The temp dir would be deleted.
        let keep = tmp.keep();
        panic!(
            "{run} failed (report, history and node logs kept in {}):\n{}",
            keep.display(),
            problems.join("\n")
        );
    }
}

async fn chaos_on(
    dir: &Path,
    extra_args: &[&str],
    lazyfs: Option<PathBuf>,
    cfg_of: impl FnOnce(&Path) -> RunConfig,
) -> RunReport {
    let backend = LocalBackend::new(LocalOptions {
        bin: leasehold_bin(),
        root: dir.join("nodes"),
        nodes: 3,
        heartbeat_ms: 100,
        election_timeout_ms: (300, 600),
        faketime: find_faketime(),
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        lazyfs,
    })
    .expect("local backend");
    backend.start_all().await.expect("start nodes");
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let cfg = cfg_of(dir);
    let report = run(&cfg, backend).await.expect("chaos run");
    println!("{}", report.summary());
    report
}

/// Every fault the local backend can inject, at least once each, with
/// fencing on and the full workload: the checker must find nothing, and
/// the run must have exercised what it claims to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_chaos_run_finds_no_anomaly() {
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos(tmp.path(), &[], |dir| {
        let mut cfg = RunConfig::new(Duration::from_secs(45), dir.join("out"));
        cfg.seed = 7;
        // A debug build on whatever machine runs `cargo test` (470 ok/s on
        // a quiet 2-core machine, 190 with a release build beside it): the
        // floor here only says the workload ran. The 200 ok/s minimum is
        // held by cluster/chaos.sh (release build, docker).
        cfg.min_rate = 100.0;
        cfg
    })
    .await;
    // Every expectation is collected first, so that a failure of any keeps
    // the evidence (the temp dir would be deleted) and lists everything.
    let mut problems: Vec<String> = Vec::new();
    let done: Vec<FaultKind> = report
        .faults
        .iter()
        .filter(|f| f.result == FaultResult::Ok)
        .map(|f| f.kind)
        .collect();
    for must in [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::KillTwo,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::PauseClient,
        FaultKind::WipeNode,
        FaultKind::GracefulRestart,
        FaultKind::MemberCycle,
    ] {
        if !done.contains(&must) {
            problems.push(format!("{must} did not happen"));
        }
    }
    if report.durability.is_empty() || !report.durability.iter().all(|p| p.intact) {
        problems.push(format!("durability probes: {:?}", report.durability));
    }
    // What the checker judged must have happened, or a clean verdict would
    // mean little.
    let c = &report.counts;
    let f = &report.findings;
    if c.put_grants == 0 || c.put_renewals == 0 || c.put_releases == 0 || c.deleted == 0 {
        problems.push(format!("too few Kubernetes-style writes or deletes: {c:?}"));
    }
    // Deletes of held leases and the creates their tombstones refused are
    // what the timing check judges the tombstones by.
    if c.deleted_held == 0 || c.creates_held == 0 {
        problems.push(format!(
            "no delete of a held lease, or no create refused by its tombstone: {c:?}"
        ));
    }
    if f.cas.checked == 0 {
        problems.push(format!("no compare-and-swap checked: {:?}", f.cas));
    }
    if f.request_ids.repeated_identical == 0 || f.request_ids.reused_refused == 0 {
        problems.push(format!("request ids: {:?}", f.request_ids));
    }
    if f.watchers.len() != 4 || !f.watchers.iter().all(|w| w.required > 0 && w.streams > 1) {
        problems.push(format!(
            "every watcher must have had changes to deliver and resumed at least once: {:?}",
            f.watchers
        ));
    }
    verdict("the chaos run", tmp, &report, problems);
}

/// The negative control: the same workload with a register that ignores
/// fencing tokens, and paused lease holders. The checker must catch the
/// paused holders' late writes, and nothing else: the lease service itself
/// stays correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_fencing_is_caught() {
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos(tmp.path(), &[], |dir| {
        let mut cfg = RunConfig::new(Duration::from_secs(20), dir.join("out"));
        cfg.seed = 11;
        cfg.fencing = false;
        cfg.faults = vec![FaultKind::PauseClient];
        cfg.min_rate = 50.0;
        cfg
    })
    .await;
    let a = &report.findings.anomalies;
    assert!(
        a.iter().any(|a| a.property == "register"),
        "no register anomaly without fencing: {a:?}"
    );
    assert!(
        a.iter().all(|a| a.property == "register"),
        "only the unfenced register may fail: {a:?}"
    );
}

/// The negative control of the Put path, as an A/B pair with one seed and
/// one workload: Kubernetes-style clients whose clocks run 3 to 5 s
/// behind, no faults. Without the fault the checker must find nothing;
/// with every node storing the `renewTime` and `acquireTime` a Put sends
/// (`--fault-put-trusts-client-times`, debug builds only) each of their
/// renewals makes the lease look lapsed at once, a lease-API worker takes
/// it over while the Put's sender still holds it by the client-side rule,
/// and the checker must report lease-timing anomalies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_put_trusting_client_times_is_caught() {
    let _turn = TURN.lock().await;
    let cfg_of = |dir: &Path| {
        let mut cfg = RunConfig::new(Duration::from_secs(15), dir.join("out"));
        cfg.seed = 13;
        cfg.faults = vec![];
        cfg.kube_skews_ms = vec![-5_000, -3_000, -4_000];
        // A short run without faults; its rate is not what it tests.
        cfg.min_rate = 50.0;
        cfg
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ordinary = chaos(tmp.path(), &[], cfg_of).await;
    assert!(
        ordinary.clean(),
        "the same workload without the fault must be clean: {:?}",
        ordinary.findings.anomalies
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let faulty = chaos(tmp.path(), &["--fault-put-trusts-client-times"], cfg_of).await;
    for r in [&ordinary, &faulty] {
        assert!(
            r.counts.put_renewals > 0 && r.counts.put_grants > 0,
            "the Put path was not exercised: {:?}",
            r.counts
        );
    }
    let a = &faulty.findings.anomalies;
    assert!(
        a.iter().any(|a| a.property == "lease-timing"),
        "no lease-timing anomaly although Put trusted clocks that run behind: {a:?}"
    );
}

/// Power loss on the lazy filesystem: followers, the leader and every node
/// at once lose whatever they had not synced (every other cut tears the
/// last unsynced write of each file) under the full workload. Nothing
/// acknowledged may be lost, no token issued twice, and every node must
/// restart by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_run_finds_no_anomaly() {
    let Some(lazyfs) = lazyfs() else { return };
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos_on(tmp.path(), &[], Some(lazyfs), |dir| {
        // 45 s: time for the three kinds, round-robin, with their gaps.
        let mut cfg = RunConfig::new(Duration::from_secs(45), dir.join("out"));
        cfg.seed = 17;
        cfg.faults = vec![
            FaultKind::PowerLossFollower,
            FaultKind::PowerLossLeader,
            FaultKind::PowerLossAll,
        ];
        // Debug build, data through FUSE: the floor only says it ran.
        cfg.min_rate = 50.0;
        cfg
    })
    .await;
    let mut problems: Vec<String> = Vec::new();
    for must in [
        FaultKind::PowerLossFollower,
        FaultKind::PowerLossLeader,
        FaultKind::PowerLossAll,
    ] {
        let done = report
            .faults
            .iter()
            .filter(|f| f.kind == must && f.result == FaultResult::Ok)
            .count();
        if done == 0 {
            problems.push(format!("{must} did not happen: {:?}", report.faults));
        }
    }
    if !report.durability.iter().all(|p| p.intact) {
        problems.push(format!("durability probes: {:?}", report.durability));
    }
    verdict("the power-loss run", tmp, &report, problems);
}

/// The negative control of the power-loss fault: the same fault on servers
/// whose WAL acknowledges after `write` without `fdatasync`
/// (`--fault-skip-wal-sync`, debug builds only). Losing every node's
/// unsynced writes at once must then lose acknowledged writes (seen in 10
/// of 11 runs: the probe lost, tokens granted twice, revisions reused), or
/// leave a cluster that cannot recover (1 of 11), and the checker must say
/// so. If it did not, the fault would not bite and a clean power-loss run
/// would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_wal_without_fdatasync_loses_acknowledged_writes() {
    let Some(lazyfs) = lazyfs() else { return };
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos_on(
        tmp.path(),
        // Snapshots (which are synced) every 20 entries keep the cluster's
        // membership across the cut, so the nodes restart from a snapshot
        // and lose only what the WAL never synced. Without one, all three
        // may lose their whole log, membership included, and then sit
        // without a leader: a failure too, but not the one to show.
        &["--fault-skip-wal-sync", "--snapshot-logs", "20"],
        Some(lazyfs),
        |dir| {
            let mut cfg = RunConfig::new(Duration::from_secs(15), dir.join("out"));
            cfg.seed = 19;
            cfg.faults = vec![FaultKind::PowerLossAll];
            cfg.min_rate = 20.0;
            cfg
        },
    )
    .await;
    let lost: Vec<_> = report
        .findings
        .anomalies
        .iter()
        .filter(|a| {
            matches!(
                a.property.as_str(),
                "durability" | "linearizability" | "fencing-tokens" | "revisions"
            )
        })
        .collect();
    // The other way the same fault shows: the cut took so much that the
    // cluster did not come back (the WAL lost the votes and entries its
    // snapshot needs). The checker reports that as a failed fault; a store
    // that syncs must never do either.
    let unrecovered = report
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::PowerLossAll && matches!(f.result, FaultResult::Failed(_)));
    eprintln!(
        "negative control: {} lost-write anomalies; cluster {}",
        lost.len(),
        if unrecovered {
            "did not recover"
        } else {
            "recovered"
        }
    );
    if lost.is_empty() && !unrecovered {
        let keep = tmp.keep();
        panic!(
            "no lost acknowledged write although the WAL never synced and every node lost power \
             (kept in {}): faults {:?}, anomalies {:?}",
            keep.display(),
            report.faults,
            report.findings.anomalies
        );
    }
}
