//! The chaos suite on local processes: three `leasehold serve` processes on
//! loopback, killed, stopped, wiped and restarted (and clock-shifted when
//! libfaketime is installed) under a lease workload; every history is
//! checked. The docker-compose variant with partitions is `cluster/chaos.sh`.
//!
//! The two runs share the machine's two cores, so they take turns.

use leasehold::chaos::backend::Backend;
use leasehold::chaos::faults::FaultKind;
use leasehold::chaos::local::{find_faketime, LocalBackend, LocalOptions};
use leasehold::chaos::run::{run, RunConfig, RunReport};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chaos(dir: &Path, cfg_of: impl FnOnce(&Path) -> RunConfig) -> RunReport {
    let backend = LocalBackend::new(LocalOptions {
        bin: env!("CARGO_BIN_EXE_leasehold").into(),
        root: dir.join("nodes"),
        nodes: 3,
        heartbeat_ms: 100,
        election_timeout_ms: (300, 600),
        faketime: find_faketime(),
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
/// fencing on: the checker must find nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_chaos_run_finds_no_anomaly() {
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos(tmp.path(), |dir| {
        let mut cfg = RunConfig::new(Duration::from_secs(45), dir.join("out"));
        cfg.seed = 7;
        cfg
    })
    .await;
    let done: Vec<FaultKind> = report
        .faults
        .iter()
        .filter(|f| f.result == leasehold::chaos::faults::FaultResult::Ok)
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
    ] {
        assert!(
            done.contains(&must),
            "{must} did not happen: {:?}",
            report.faults
        );
    }
    assert!(
        report.durability.iter().all(|p| p.intact) && !report.durability.is_empty(),
        "durability probes: {:?}",
        report.durability
    );
    assert!(
        report.counts.ok > 300,
        "too little traffic: {:?}",
        report.counts
    );
    if !report.clean() {
        let text =
            std::fs::read_to_string(report.out_dir.join("anomalies.txt")).unwrap_or_default();
        let logs = std::fs::read_dir(tmp.path().join("nodes"))
            .map(|d| d.count())
            .unwrap_or(0);
        // Keep the evidence: the temp dir would be deleted.
        let keep = tmp.keep();
        panic!(
            "the checker found anomalies ({logs} node dirs kept in {}):\n{text}",
            keep.display()
        );
    }
}

/// The negative control: the same workload with a register that ignores
/// fencing tokens, and paused lease holders. The checker must catch the
/// paused holders' late writes, and nothing else: the lease service itself
/// stays correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_fencing_is_caught() {
    let _turn = TURN.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = chaos(tmp.path(), |dir| {
        let mut cfg = RunConfig::new(Duration::from_secs(20), dir.join("out"));
        cfg.seed = 11;
        cfg.fencing = false;
        cfg.faults = vec![FaultKind::PauseClient];
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
