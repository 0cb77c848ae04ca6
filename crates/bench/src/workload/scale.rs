//! `scale`: many leases (one million by default). Phases:
//! 1. load: acquire `--leases` leases (`scale-NNNNNNN`, each held by a
//!    holder of its own name), `--clients` at a time; report the rate, and
//!    RSS per server and data directory sizes (`--data-dirs`) afterwards;
//! 2. renew: renew them round robin for `--renew-minutes` (closed loop,
//!    `--clients` at a time; the report's latency figures are this phase's),
//!    then RSS and disk again: this is where log growth, snapshots and
//!    compaction show;
//! 3. restart (with `--restart-cmd`, Leasehold only): SIGKILL one node (a
//!    follower unless `--restart-node` says otherwise), run the command
//!    (`{id}` replaced by the node id, through `sh -c`, in its own process
//!    group so it outlives the bench), and time until the node answers
//!    Status, and until it serves a local (stale) read of a loaded lease with
//!    everything committed before the kill applied.
//!
//! During the renew phase the bench asks every node's Status every 20 ms
//! whether it is writing a snapshot; the latency of the renewals sent or
//! answered meanwhile is reported apart (p99.9 and max), and so is each data
//! directory's WAL and snapshot size afterwards (bounded disk: the WAL must
//! not grow without limit while the snapshot holds the live data).

use super::failover::{kill9, start_detached};
use super::{run_clients, timed, Harness};
use crate::config::LoadConfig;
use crate::procstat::{self, ServerUsage};
use crate::report::{Report, RunInfo, ScaleReport};
use crate::systems::{Acquired, Target};
use crate::BenchError;
use futures::StreamExt;
use leasehold_client::{Authorization, ConnectOptions};
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::cluster_client::ClusterClient;
use leasehold_proto::v1::leases_client::LeasesClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of scale lease `i`.
pub fn scale_name(i: usize) -> String {
    format!("scale-{i:07}")
}

/// How long a restarted node may take to serve before the bench gives up.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

fn disk_parts(cfg: &LoadConfig) -> Vec<(String, f64, f64)> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    cfg.scale
        .data_dirs
        .iter()
        .map(|d| {
            (
                d.display().to_string(),
                mib(procstat::dir_size(&d.join("wal"))),
                mib(procstat::dir_size(&d.join("snapshots"))),
            )
        })
        .collect()
}

/// Sets `flag` while any of `endpoints` reports a snapshot in progress;
/// counts the snapshots it saw begin. Runs until aborted.
async fn watch_snapshots(
    endpoints: Vec<String>,
    connect: ConnectOptions,
    auth: Authorization,
    flag: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<AtomicU64>,
) {
    let mut channels: Vec<Option<tonic::transport::Channel>> = vec![None; endpoints.len()];
    let mut was = vec![false; endpoints.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let mut any = false;
        for (i, e) in endpoints.iter().enumerate() {
            if channels[i].is_none() {
                channels[i] = channel(e, &connect).await;
            }
            let Some(ch) = channels[i].clone() else {
                continue;
            };
            match ClusterClient::with_interceptor(ch, auth.clone())
                .status(pb::StatusRequest {})
                .await
            {
                Ok(s) => {
                    let now = s.into_inner().snapshot_in_progress;
                    if now && !was[i] {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    was[i] = now;
                    any |= now;
                }
                Err(_) => channels[i] = None,
            }
        }
        flag.store(any, Ordering::Relaxed);
    }
}

fn disks(cfg: &LoadConfig) -> Vec<(String, f64)> {
    cfg.scale
        .data_dirs
        .iter()
        .map(|d| {
            (
                d.display().to_string(),
                procstat::dir_size(d) as f64 / (1024.0 * 1024.0),
            )
        })
        .collect()
}

/// Phase 1: acquire every lease; returns the versions.
async fn load(
    target: &Target,
    cfg: &LoadConfig,
    scale: &mut ScaleReport,
) -> Result<Vec<u64>, BenchError> {
    let done = Arc::new(AtomicU64::new(0));
    let total = cfg.leases;
    let t0 = Instant::now();
    let printer = cfg.progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.0}s] scale load: {d}/{total} leases ({} /s)",
                    t0.elapsed().as_secs_f64(),
                    d - last
                );
                last = d;
            }
        })
    });
    let results: Vec<(usize, Result<Acquired, String>)> = futures::stream::iter(0..total)
        .map(|i| {
            let done = done.clone();
            async move {
                let name = scale_name(i);
                // One retry: a load of a million should not stop for one
                // transient failure.
                let mut r = target.acquire(i, &name, &name, cfg.lease_seconds).await;
                if r.is_err() {
                    r = target.acquire(i, &name, &name, cfg.lease_seconds).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
                (i, r.map_err(|e| e.to_string()))
            }
        })
        .buffer_unordered(cfg.scale.load_concurrency.max(cfg.clients))
        .collect()
        .await;
    if let Some(p) = printer {
        p.abort();
    }
    scale.load_seconds = t0.elapsed().as_secs_f64();
    scale.leases = total;
    scale.load_rate = total as f64 / scale.load_seconds.max(1e-9);
    let mut versions = vec![0u64; total];
    for (i, r) in results {
        match r {
            Ok(Acquired::Granted { version }) => versions[i] = version,
            Ok(Acquired::Held) => {
                return Err(BenchError::Failed(format!(
                    "load: {} is held by another holder",
                    scale_name(i)
                )))
            }
            Err(e) => {
                return Err(BenchError::Unavailable(format!(
                    "load: cannot acquire {}: {e}",
                    scale_name(i)
                )))
            }
        }
    }
    Ok(versions)
}

/// One direct call to `addr`, no failover, short deadlines; TLS as
/// `connect` says (its token goes on through an [`Authorization`]).
pub(super) async fn channel(
    addr: &str,
    connect: &ConnectOptions,
) -> Option<tonic::transport::Channel> {
    connect
        .endpoint(addr)
        .ok()?
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// The token of the bench's own channels (the clients carry it already).
pub(super) fn authorization(cfg: &LoadConfig) -> Result<Authorization, BenchError> {
    cfg.connect
        .authorization()
        .map_err(|s| BenchError::Invalid(s.message().to_string()))
}

/// Phase 3: kill, restart, time until serving.
async fn restart(
    target: &Target,
    cfg: &LoadConfig,
    cmd: &str,
    scale: &mut ScaleReport,
) -> Result<(), BenchError> {
    let auth = authorization(cfg)?;
    let Some(lh) = target.leasehold() else {
        return Err(BenchError::Invalid(
            "the restart step of scale is implemented for Leasehold only".into(),
        ));
    };
    let status = lh
        .status()
        .await
        .map_err(|e| BenchError::Unavailable(format!("restart: no status: {e}")))?;
    let id = match cfg.scale.restart_node {
        Some(id) => id,
        None => cfg
            .servers
            .iter()
            .map(|s| s.id)
            .find(|id| *id != status.leader_id)
            .ok_or_else(|| {
                BenchError::Invalid("restart: --server-pids names no follower".into())
            })?,
    };
    let pid = cfg
        .servers
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.pid)
        .ok_or_else(|| BenchError::Invalid(format!("restart: --server-pids has no node {id}")))?;
    let addr = lh
        .address_of(id)
        .await
        .map_err(|e| BenchError::Unavailable(format!("restart: {e}")))?;
    // Everything acknowledged so far is committed at or below this index.
    let must_apply = status.commit_index;
    kill9(pid).await.map_err(BenchError::Failed)?;
    // The process is gone when its main thread is (a zombie at worst), but
    // its other threads may still hold the listening socket for a moment:
    // wait until the port refuses connections too.
    let gone = Instant::now() + Duration::from_secs(10);
    while (procstat::alive(pid) || tokio::net::TcpStream::connect(&addr).await.is_ok())
        && Instant::now() < gone
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cmd = cmd.replace("{id}", &id.to_string());
    if cfg.progress {
        eprintln!("restart: killed node {id} (pid {pid}); running: {cmd}");
    }
    let t0 = Instant::now();
    let mut child =
        start_detached(&cmd).map_err(|e| BenchError::Failed(format!("restart: {e}")))?;
    let new_pid = child.id();
    scale.restarted_id = Some(id);
    scale.restarted_pid = Some(new_pid);
    let probe = scale_name(0);
    while t0.elapsed() < RESTART_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::Failed(format!(
                "restart: the command exited with {status} before node {id} served: {cmd}"
            )));
        }
        if let Some(ch) = channel(&addr, &cfg.connect).await {
            if let Ok(s) = ClusterClient::with_interceptor(ch.clone(), auth.clone())
                .status(pb::StatusRequest {})
                .await
            {
                let s = s.into_inner();
                if scale.restart_to_status_ms.is_none() {
                    scale.restart_to_status_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
                }
                if s.applied_index >= must_apply {
                    let read = LeasesClient::with_interceptor(ch, auth.clone())
                        .get(pb::GetRequest {
                            namespace: cfg.namespace.clone(),
                            name: probe.clone(),
                            stale: true,
                        })
                        .await;
                    if read.is_ok() {
                        scale.restart_to_serving_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scale.rss_mib_after_restart =
        procstat::rss_bytes(new_pid).map(|b| b as f64 / (1024.0 * 1024.0));
    // The node runs on after the bench: dropping the handle neither waits
    // for it nor kills it.
    drop(child);
    if scale.restart_to_serving_ms.is_none() {
        return Err(BenchError::Failed(format!(
            "restart: node {id} did not serve within {} s (command: {cmd})",
            RESTART_TIMEOUT.as_secs()
        )));
    }
    Ok(())
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    if cfg.scale.restart_cmd.is_some() && cfg.servers.is_empty() {
        return Err(BenchError::Invalid(
            "--restart-cmd needs --server-pids ID=PID,... to know what to kill".into(),
        ));
    }
    let auth = authorization(cfg)?;
    let target = Arc::new(target);
    let mut scale = ScaleReport::default();
    let versions = load(&target, cfg, &mut scale).await?;
    scale.rss_mib_after_load = procstat::rss_now(&cfg.servers);
    scale.disk_mib_after_load = disks(cfg);

    // Phase 2: renewals, measured like the renew workload.
    let mut renew_cfg = cfg.clone();
    renew_cfg.duration = cfg.scale.renew_for;
    renew_cfg.warmup = Duration::ZERO;
    let h = Harness::start(&renew_cfg, "scale renew", |r| r);
    let snapshotting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let snapshots_seen = Arc::new(AtomicU64::new(0));
    let during = Arc::new(std::sync::Mutex::new(crate::recorder::histogram()));
    let watcher = tokio::spawn(watch_snapshots(
        cfg.endpoints.clone(),
        cfg.connect.clone(),
        auth.clone(),
        snapshotting.clone(),
        snapshots_seen.clone(),
    ));
    let states: Vec<Vec<(usize, u64)>> = (0..cfg.clients)
        .map(|c| {
            super::owned_by(c, cfg.clients, cfg.leases)
                .into_iter()
                .map(|l| (l, versions[l]))
                .collect()
        })
        .collect();
    drop(versions);
    run_clients(states, |c, mut leases| {
        let (target, rec, cfg) = (target.clone(), h.rec.clone(), renew_cfg.clone());
        let (snapshotting, during) = (snapshotting.clone(), during.clone());
        let mut pacer = h.pacer(&cfg, c);
        async move {
            let mut k = 0usize;
            while let Some(intended) = pacer.next().await {
                let Some(n) = std::num::NonZeroUsize::new(leases.len()) else {
                    break;
                };
                let (l, v) = &mut leases[k % n];
                let name = scale_name(*l);
                let at_send = snapshotting.load(Ordering::Relaxed);
                let (t, r) = timed(
                    intended,
                    target.renew(c, &name, &name, cfg.lease_seconds, *v),
                )
                .await;
                if r.is_ok() && (at_send || snapshotting.load(Ordering::Relaxed)) {
                    let mut h = during.lock().unwrap_or_else(|p| p.into_inner());
                    crate::recorder::record_duration(&mut h, t.done - t.intended);
                }
                match r {
                    Ok(rn) => {
                        *v = rn.version;
                        rec.ok("renew", t, None, true);
                    }
                    Err(e) => {
                        rec.err(t, &e);
                        super::after_error(&cfg).await;
                    }
                }
                k += 1;
            }
            leases
        }
    })
    .await?;
    watcher.abort();
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers): (_, Vec<ServerUsage>) = h.finish().await;
    scale.snapshots_seen = snapshots_seen.load(Ordering::Relaxed);
    scale.renew_during_snapshot_ms =
        crate::report::Percentiles::of(&during.lock().unwrap_or_else(|p| p.into_inner()));
    scale.disk_parts_mib_after_renew = disk_parts(cfg);
    scale.renewals = totals.latency.len();
    scale.renew_seconds = renew_cfg.duration.as_secs_f64();
    scale.rss_mib_after_renew = procstat::rss_now(&cfg.servers);
    scale.disk_mib_after_renew = disks(cfg);

    if let Some(cmd) = &cfg.scale.restart_cmd {
        restart(&target, cfg, cmd, &mut scale).await?;
    }
    let mut report = Report::new(
        RunInfo {
            workload: "scale",
            cfg: &renew_cfg,
            started_at,
            host,
            mix: Some(format!(
                "load {} leases, then renew them round robin for {:.0} s",
                cfg.leases,
                renew_cfg.duration.as_secs_f64()
            )),
            setup: None,
            servers,
        },
        &totals,
    );
    report.scale = Some(scale);
    Ok(report)
}
