//! One chaos run from start to verdict: wait for the cluster, start the
//! watchers and the workload, inject faults until the duration is up, heal,
//! stop the workload, probe recovery, let the watchers catch up, check, and
//! write the report.

use super::backend::Backend;
use super::check::{self, Findings, RecoveryProbe, RunData};
use super::faults::{FaultKind, FaultRecord, FaultResult};
use super::history::{Op, OpKind, Outcome, RunClock};
use super::nemesis::{Nemesis, RECOVERY_TIMEOUT};
use super::register::FencedRegister;
use super::watcher::{WatchFilter, WatchLog, Watcher, WatcherSpec};
use super::workload::{
    self, History, PauseControl, Reply, Shared, WorkloadConfig, LABEL_GROUP, LABEL_KIND,
};
use leasehold_client::ConnectOptions;
use leasehold_proto::v1 as pb;
use leasehold_proto::CLOCK_RATE_BOUND_PPM;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// How long faults are injected (the workload runs a little longer:
    /// while the last fault heals and two seconds after).
    pub duration: Duration,
    /// Fault kinds, injected round-robin.
    pub faults: Vec<FaultKind>,
    /// Whether the register enforces fencing tokens (off: the negative
    /// control).
    pub fencing: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Concurrent lease-API workers (acquire, renew, release).
    pub workers: u32,
    /// Concurrent Kubernetes-style workers (compare-and-swap Put).
    pub kube_workers: u32,
    /// Their clock offsets, ms, assigned in turn.
    pub kube_skews_ms: Vec<i64>,
    /// Concurrent deleters.
    pub deleters: u32,
    /// Watchers (up to 4 different filters; 0: none).
    pub watchers: u32,
    /// Number of leases they contend for.
    pub leases: u32,
    /// Lease duration, seconds.
    pub lease_seconds: i32,
    /// Minimum successful operations per second (property 7).
    pub min_rate: f64,
    /// Pause between a holder's rounds, ms (lowest, highest).
    pub round_pause_ms: (u64, u64),
    /// Chance that an answered write is sent again with its request id.
    pub repeat_same_id: f64,
    /// Chance that a holder reuses a renewal's request id for a release.
    pub reuse_id_other: f64,
    /// The nodes' `--history-revisions` (what explains a COMPACTED watch).
    pub history_revisions: u64,
    /// The cluster's maximum election timeout (for the recovery bound).
    pub election_timeout_max: Duration,
    /// Linearizability search budget per lease (model steps).
    pub linear_budget: u64,
    /// Where the report, history and register log are written.
    pub out_dir: PathBuf,
    /// How every client of the run (workers, watchers, the nemesis's
    /// probes) reaches the nodes: TLS and a bearer token, or plaintext.
    pub connect: ConnectOptions,
}

impl RunConfig {
    /// Default lease-API workers.
    pub const DEFAULT_WORKERS: u32 = 20;
    /// Default Kubernetes-style workers.
    pub const DEFAULT_KUBE_WORKERS: u32 = 12;
    /// Default clock offsets of the Kubernetes-style workers, ms.
    pub const DEFAULT_KUBE_SKEWS_MS: [i64; 4] = [-4_000, 3_000, -1_500, 1_000];
    /// Default deleters.
    pub const DEFAULT_DELETERS: u32 = 2;
    /// Default watchers.
    pub const DEFAULT_WATCHERS: u32 = 4;
    /// Default number of leases.
    pub const DEFAULT_LEASES: u32 = 16;
    /// Default lease duration, seconds.
    pub const DEFAULT_LEASE_SECONDS: i32 = 2;
    /// Default minimum rate, successful operations per second.
    pub const DEFAULT_MIN_RATE: f64 = 200.0;

    /// Defaults: 20 lease-API workers, 12 Kubernetes-style workers (clocks
    /// from 4 s behind to 3 s ahead) and 2 deleters on 16 leases of 2 s, 4
    /// watchers, fencing on, every fault, at least 200 successful
    /// operations per second.
    pub fn new(duration: Duration, out_dir: PathBuf) -> Self {
        RunConfig {
            duration,
            faults: FaultKind::ALL.to_vec(),
            fencing: true,
            seed: 1,
            workers: Self::DEFAULT_WORKERS,
            kube_workers: Self::DEFAULT_KUBE_WORKERS,
            kube_skews_ms: Self::DEFAULT_KUBE_SKEWS_MS.to_vec(),
            deleters: Self::DEFAULT_DELETERS,
            watchers: Self::DEFAULT_WATCHERS,
            leases: Self::DEFAULT_LEASES,
            lease_seconds: Self::DEFAULT_LEASE_SECONDS,
            min_rate: Self::DEFAULT_MIN_RATE,
            round_pause_ms: (2, 20),
            repeat_same_id: 0.03,
            reuse_id_other: 0.03,
            history_revisions: 10_000,
            election_timeout_max: Duration::from_millis(600),
            linear_budget: 20_000_000,
            out_dir,
            connect: ConnectOptions::default(),
        }
    }
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Definite successes.
    pub ok: usize,
    /// Definite refusals (held, lost, not found).
    pub refused: usize,
    /// Definite failures with no effect (reads that failed, invalid).
    pub failed: usize,
    /// Writes whose outcome stayed unknown.
    pub ambiguous: usize,
    /// Writes that needed more than one attempt but were resolved.
    pub resolved_after_retry: usize,
    /// Per operation kind: ok / total.
    pub by_kind: BTreeMap<String, (usize, usize)>,
    /// Per operation kind: median latency of the definite answers, ms.
    pub median_ms: BTreeMap<String, f64>,
    /// Puts that started a tenure.
    pub put_grants: usize,
    /// Puts that renewed a tenure.
    pub put_renewals: usize,
    /// Puts that cleared the holder.
    pub put_releases: usize,
    /// Deletes that deleted.
    pub deleted: usize,
    /// Deletes that deleted a lease with a holder whose expiry was not
    /// recorded (each may leave a tombstone that refuses creates).
    pub deleted_held: usize,
    /// Put creates refused as held: only a tombstone refuses a create (an
    /// acquire refused on a missing lease is not told apart here).
    pub creates_held: usize,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Backend name.
    pub backend: String,
    /// Seed.
    pub seed: u64,
    /// Fencing on or off.
    pub fencing: bool,
    /// Seconds from start to verdict.
    pub elapsed_secs: f64,
    /// Operation counts.
    pub counts: Counts,
    /// Faults.
    pub faults: Vec<FaultRecord>,
    /// Durability probes.
    pub durability: Vec<super::nemesis::DurabilityProbe>,
    /// Recovery probes.
    pub recovery: Vec<RecoveryProbe>,
    /// Register operations (accepted, refused).
    pub register_ops: (usize, usize),
    /// The highest revision the run acknowledged (watchers must reach it).
    pub watch_target: u64,
    /// The verdict.
    pub findings: Findings,
    /// Where the files are.
    pub out_dir: PathBuf,
}

impl RunReport {
    /// Whether the checker found nothing.
    pub fn clean(&self) -> bool {
        self.findings.anomalies.is_empty()
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(
            s,
            "leasehold chaos: backend {}, seed {}, fencing {}, {:.1} s",
            self.backend,
            self.seed,
            if self.fencing {
                "on"
            } else {
                "OFF (negative control)"
            },
            self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "operations: {} ok, {} refused, {} failed, {} ambiguous ({} more resolved by retrying their request id); {:.1} ok/s",
            c.ok, c.refused, c.failed, c.ambiguous, c.resolved_after_retry, self.findings.ok_rate
        );
        for (k, (ok, all)) in &c.by_kind {
            let median = c.median_ms.get(k).copied().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "  {k:<8} {ok:>6} ok of {all:>6}, median latency {median:.1} ms"
            );
        }
        let _ = writeln!(
            s,
            "kubernetes-style puts: {} grants, {} renewals, {} releases; {} conflicts; \
             deletes: {} done ({} of a held lease), {} creates refused by a tombstone; \
             {} compare-and-swap writes checked",
            c.put_grants,
            c.put_renewals,
            c.put_releases,
            self.findings.cas.conflicts,
            c.deleted,
            c.deleted_held,
            c.creates_held,
            self.findings.cas.checked
        );
        let ids = &self.findings.request_ids;
        let _ = writeln!(
            s,
            "request ids: {} sent again unchanged ({} answered identically), {} reused for \
             another command ({} refused naming requestId), {} without a verdict",
            ids.repeated, ids.repeated_identical, ids.reused, ids.reused_refused, ids.inconclusive
        );
        for w in &self.findings.watchers {
            let mut errors: Vec<String> =
                w.errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            errors.sort();
            let _ = writeln!(
                s,
                "watcher {} ({}): {} events, {} progress, {} streams, {} of {} required changes \
                 delivered once, {} revisions covered in {} interval(s), last {}{}",
                w.watcher,
                w.filter,
                w.events,
                w.progress,
                w.streams,
                w.delivered,
                w.required,
                w.covered_revisions,
                w.intervals,
                w.last.map_or("none".to_string(), |l| l.to_string()),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("; stream errors: {}", errors.join(", "))
                }
            );
        }
        let _ = writeln!(
            s,
            "register: {} operations accepted, {} refused as stale",
            self.register_ops.0, self.register_ops.1
        );
        let mut by_kind: BTreeMap<String, (usize, usize, Option<String>)> = BTreeMap::new();
        for f in &self.faults {
            let e = by_kind.entry(f.kind.to_string()).or_default();
            match &f.result {
                FaultResult::Ok => e.0 += 1,
                FaultResult::Failed(_) => e.1 += 1,
                FaultResult::Unsupported(why) => e.2 = Some(why.clone()),
            }
        }
        let _ = writeln!(s, "faults:");
        for (k, (ok, failed, unsupported)) in &by_kind {
            match unsupported {
                Some(why) => {
                    let _ = writeln!(s, "  {k:<19} unsupported: {why}");
                }
                None => {
                    let _ = writeln!(s, "  {k:<19} {ok} done, {failed} failed");
                }
            }
        }
        for p in &self.durability {
            let _ = writeln!(
                s,
                "durability: {} token {} across {}: {}",
                p.lease,
                p.token,
                p.fault,
                if p.intact { "intact" } else { "LOST" }
            );
        }
        for r in &self.recovery {
            let _ = writeln!(
                s,
                "recovery: {} acquired after {} (bound {} ms)",
                r.lease,
                r.took_ms
                    .map(|m| format!("{m} ms"))
                    .unwrap_or_else(|| "never".into()),
                r.bound_ms
            );
        }
        let steps: u64 = self.findings.linear_steps.values().sum();
        let _ = writeln!(
            s,
            "linearizability: {} leases checked, {steps} search steps",
            self.findings.linear_steps.len()
        );
        let _ = writeln!(s, "anomalies: {}", self.findings.anomalies.len());
        for a in self.findings.anomalies.iter().take(20) {
            let first = a.explanation.lines().next().unwrap_or("");
            let _ = writeln!(
                s,
                "  [{}] {}{}",
                a.property,
                a.lease
                    .as_deref()
                    .map(|l| format!("{l}: "))
                    .unwrap_or_default(),
                first
            );
        }
        if self.findings.anomalies.len() > 20 {
            let _ = writeln!(s, "  ... {} more", self.findings.anomalies.len() - 20);
        }
        let _ = writeln!(s, "report: {}", self.out_dir.join("report.json").display());
        s
    }
}

fn count(ops: &[Op]) -> Counts {
    let mut c = Counts::default();
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for op in ops {
        if !op.outcome.is_unknown() {
            latencies
                .entry(op.kind.name().to_string())
                .or_default()
                .push(op.complete.saturating_sub(op.invoke));
        }
        let name = op.kind.name();
        let e = c.by_kind.entry(name.to_string()).or_default();
        e.1 += 1;
        match &op.outcome {
            o if o.is_ok() => {
                c.ok += 1;
                e.0 += 1;
            }
            Outcome::Unknown { .. } => c.ambiguous += 1,
            Outcome::Failed { .. } => c.failed += 1,
            _ => c.refused += 1,
        }
        if op.attempts > 1 && !op.outcome.is_unknown() {
            c.resolved_after_retry += 1;
        }
        match &op.outcome {
            Outcome::Put { view, .. } if view.holder.is_none() => c.put_releases += 1,
            Outcome::Put { view, .. } if op.revision == Some(view.token) => c.put_grants += 1,
            Outcome::Put { .. } => c.put_renewals += 1,
            Outcome::Deleted(v) => {
                c.deleted += 1;
                if v.holder.is_some() && !v.expired {
                    c.deleted_held += 1;
                }
            }
            Outcome::Held { .. } if matches!(op.kind, OpKind::Put { base: 0, .. }) => {
                c.creates_held += 1;
            }
            _ => {}
        }
    }
    for (k, mut v) in latencies {
        v.sort_unstable();
        if let Some(m) = v.get(v.len() / 2) {
            c.median_ms.insert(k, *m as f64 / 1e6);
        }
    }
    c
}

/// Runs the workload against `backend`'s (already started) cluster with
/// faults, checks the history and writes the report to `cfg.out_dir`.
pub async fn run(cfg: &RunConfig, backend: Arc<dyn Backend>) -> Result<RunReport, String> {
    std::fs::create_dir_all(&cfg.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.out_dir.display()))?;
    let clock = RunClock::start();
    let namespace = "chaos".to_string();
    let stamp = chrono::Utc::now().timestamp();
    let leases: Vec<String> = (0..cfg.leases)
        .map(|i| format!("run{stamp}-l{i}"))
        .collect();
    let endpoints: Vec<String> = backend
        .node_ids()
        .into_iter()
        .map(|id| backend.client_endpoint(id))
        .collect();
    let pauses = Arc::new(PauseControl::default());
    let lease_secs = u64::try_from(cfg.lease_seconds.max(1)).unwrap_or(1);
    let mut nemesis = Nemesis::new(
        backend.clone(),
        clock,
        pauses.clone(),
        lease_secs,
        namespace.clone(),
        cfg.seed,
        cfg.connect.clone(),
    );
    nemesis
        .wait_healthy(Duration::from_secs(60))
        .await
        .map_err(|e| format!("the cluster is not healthy before the run: {e}"))?;

    let history = Arc::new(History::new(clock));
    let register = Arc::new(FencedRegister::new(clock, cfg.fencing));
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        cfg: WorkloadConfig {
            endpoints: endpoints.clone(),
            namespace: namespace.clone(),
            leases: leases.clone(),
            workers: cfg.workers,
            kube_workers: cfg.kube_workers,
            kube_skews_ms: cfg.kube_skews_ms.clone(),
            deleters: cfg.deleters,
            duration_seconds: cfg.lease_seconds,
            attempt_timeout: Duration::from_secs(2),
            resolve_for: Duration::from_secs(30),
            seed: cfg.seed,
            repeat_same_id: cfg.repeat_same_id,
            reuse_id_other: cfg.reuse_id_other,
            round_pause_ms: cfg.round_pause_ms,
            connect: cfg.connect.clone(),
        },
        history: history.clone(),
        register: register.clone(),
        pauses: pauses.clone(),
        stop: stop.clone(),
        leader: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
    });
    let tracker = workload::track_leader(shared.clone());
    // Watchers first, so that they cover the workload from its start.
    let watchers = start_watchers(cfg, &leases, &endpoints, &namespace, clock)?;
    let mut workers =
        workload::spawn_workers(shared.clone()).map_err(|e| format!("workers: {}", e.message()))?;
    let workload_start = clock.now();

    // Faults until the duration is up (the workload runs that long even
    // when no fault is planned or supported); then heal and recover.
    let until = workload_start + u64::try_from(cfg.duration.as_nanos()).unwrap_or(u64::MAX);
    let faults = nemesis.run(&cfg.faults, until).await;
    let left = until.saturating_sub(clock.now());
    tokio::time::sleep(Duration::from_nanos(left)).await;
    let mut setup_problem = None;
    if let Err(e) = nemesis.heal_all().await {
        setup_problem = Some(format!("final heal: {e}"));
    }
    if let Err(e) = nemesis.wait_healthy(RECOVERY_TIMEOUT).await {
        setup_problem = Some(format!("after the final heal: {e}"));
    }
    // Some traffic on the healed cluster, then stop. Workers abandon what
    // they hold: the recovery probe must get every lease by expiry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let join = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(90), join)
        .await
        .is_err()
    {
        workers.abort_all();
        setup_problem = Some("workers did not stop within 90 s".into());
    }
    let workload_span = clock.now().saturating_sub(workload_start);
    tracker.abort();

    // Recovery: every lease can be acquired within d(1+ρ) plus an election
    // timeout (a healed partition may force one election), plus 250 ms for
    // the probe's own round trips and retry interval.
    let d_ms = lease_secs * 1000;
    let bound_ms = d_ms
        + d_ms * u64::try_from(CLOCK_RATE_BOUND_PPM).unwrap_or(0) / 1_000_000
        + u64::try_from(cfg.election_timeout_max.as_millis()).unwrap_or(0)
        + 250;
    let stopped_at = clock.now();
    let mut probes = tokio::task::JoinSet::new();
    for lease in &leases {
        let shared = shared.clone();
        let lease = lease.clone();
        let client = leasehold_client::Client::with_options(
            shared.cfg.endpoints.clone(),
            shared.cfg.connect.clone(),
        )
        .map_err(|e| e.message().to_string())?
        .with_timeout(Duration::from_secs(2));
        probes.spawn(async move {
            let holder = "recovery-probe".to_string();
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let req = pb::AcquireRequest {
                    namespace: shared.cfg.namespace.clone(),
                    name: lease.clone(),
                    holder: holder.clone(),
                    lease_duration_seconds: shared.cfg.duration_seconds,
                    labels: shared.cfg.base_labels(&lease).into_iter().collect(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                };
                let kind = OpKind::Acquire {
                    holder: holder.clone(),
                    duration_seconds: shared.cfg.duration_seconds,
                };
                let op =
                    workload::write_op(&shared, 0, &lease, kind, &req.request_id, false, || {
                        let req = req.clone();
                        let client = &client;
                        async move { client.acquire(req).await.map(Reply::acquired) }
                    })
                    .await
                    .op;
                if matches!(op.outcome, Outcome::Acquired { .. }) {
                    return (lease, Some(op.complete));
                }
                if std::time::Instant::now() >= give_up {
                    return (lease, None);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let mut recovery = Vec::new();
    while let Some(r) = probes.join_next().await {
        if let Ok((lease, at)) = r {
            recovery.push(RecoveryProbe {
                lease,
                took_ms: at.map(|t| t.saturating_sub(stopped_at) / 1_000_000),
                bound_ms,
            });
        }
    }
    recovery.sort_by(|a, b| a.lease.cmp(&b.lease));

    // The watchers must reach the last acknowledged change; then they stop.
    let watch_target = history.max_revision();
    let caught_up = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < caught_up
        && !watchers
            .iter()
            .all(|w| w.last().is_some_and(|l| l >= watch_target))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut watches: Vec<WatchLog> = Vec::new();
    for w in watchers {
        watches.push(w.finish().await);
    }

    let ops = history.ops();
    let reuses = history.reuses();
    let reg_log = register.log();
    let data = RunData {
        lease_seconds: lease_secs,
        workload_span,
        ops: ops.clone(),
        register: reg_log.clone(),
        faults: faults.clone(),
        planned: cfg.faults.clone(),
        durability: nemesis.durability.clone(),
        recovery: recovery.clone(),
        min_rate: cfg.min_rate,
        linear_budget: cfg.linear_budget,
        reuses: reuses.clone(),
        watches: watches.clone(),
        watch_target,
        history_revisions: cfg.history_revisions,
    };
    let checking = tokio::task::spawn_blocking(move || check::check(&data));
    let mut findings = checking
        .await
        .map_err(|e| format!("the checker panicked: {e}"))?;
    if let Some(p) = setup_problem {
        findings
            .anomalies
            .push(check::Anomaly::new("faults", None, p, vec![]));
    }
    let accepted = reg_log.iter().filter(|r| r.accepted).count();
    let report = RunReport {
        backend: backend.name().to_string(),
        seed: cfg.seed,
        fencing: cfg.fencing,
        elapsed_secs: clock.now() as f64 / 1e9,
        counts: count(&ops),
        faults,
        durability: nemesis.durability.clone(),
        recovery,
        register_ops: (accepted, reg_log.len() - accepted),
        watch_target,
        findings,
        out_dir: cfg.out_dir.clone(),
    };
    write_files(&report, &ops, &reg_log, backend.as_ref())?;
    write_jsonl(&cfg.out_dir.join("request_ids.jsonl"), &reuses)?;
    write_jsonl(&cfg.out_dir.join("watch.jsonl"), &watches)?;
    Ok(report)
}

/// The watchers of a run: up to four, each on its own node, following the
/// whole namespace, the leases a Kubernetes-style Put labelled `kube`
/// (which enter and leave that selection), one lease by name, and the
/// `even` group.
fn start_watchers(
    cfg: &RunConfig,
    leases: &[String],
    endpoints: &[String],
    namespace: &str,
    clock: RunClock,
) -> Result<Vec<Watcher>, String> {
    let filters = [
        WatchFilter::all(),
        WatchFilter {
            name: None,
            label: Some((LABEL_KIND.to_string(), "kube".to_string())),
        },
        WatchFilter {
            name: leases.first().cloned(),
            label: None,
        },
        WatchFilter {
            name: None,
            label: Some((LABEL_GROUP.to_string(), "even".to_string())),
        },
    ];
    let mut out = Vec::new();
    for (i, filter) in filters.into_iter().enumerate().take(cfg.watchers as usize) {
        let spec = WatcherSpec {
            id: i as u32 + 1,
            filter,
            first_endpoint: i,
        };
        let w = Watcher::start(
            spec,
            endpoints.to_vec(),
            cfg.connect.clone(),
            namespace.to_string(),
            clock,
        )
        .map_err(|e| format!("watcher: {}", e.message()))?;
        out.push(w);
    }
    Ok(out)
}

fn write_jsonl<T: Serialize>(path: &std::path::Path, items: &[T]) -> Result<(), String> {
    let mut out = String::new();
    for i in items {
        let line = serde_json::to_string(i).map_err(|e| format!("json: {e}"))?;
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_files(
    report: &RunReport,
    ops: &[Op],
    reg: &[super::register::RegOp],
    backend: &dyn Backend,
) -> Result<(), String> {
    let dir = &report.out_dir;
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("json: {e}"))?;
    std::fs::write(dir.join("report.json"), json)
        .map_err(|e| format!("cannot write report.json: {e}"))?;
    write_jsonl(&dir.join("history.jsonl"), ops)?;
    write_jsonl(&dir.join("register.jsonl"), reg)?;
    std::fs::write(dir.join("summary.txt"), report.summary())
        .map_err(|e| format!("cannot write summary.txt: {e}"))?;
    if !report.clean() {
        let mut text = String::new();
        for (i, a) in report.findings.anomalies.iter().enumerate() {
            let _ = writeln!(
                text,
                "## anomaly {} [{}] {}\n{}\nops: {:?}\n",
                i + 1,
                a.property,
                a.lease.as_deref().unwrap_or("-"),
                a.explanation,
                a.ops
            );
        }
        let _ = writeln!(text, "## node logs");
        for id in backend.node_ids() {
            let _ = writeln!(text, "node {id}: {}", backend.log_hint(id));
        }
        let _ = writeln!(
            text,
            "\nThe history is history.jsonl (one op per line, times in ns on the run's \
             monotonic clock); the register's log is register.jsonl."
        );
        std::fs::write(dir.join("anomalies.txt"), text)
            .map_err(|e| format!("cannot write anomalies.txt: {e}"))?;
    }
    Ok(())
}
