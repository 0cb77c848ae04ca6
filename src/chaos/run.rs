//! One chaos run from start to verdict: wait for the cluster, start the
//! workload, inject faults, heal, stop the workload, probe recovery, check,
//! and write the report.

use super::backend::Backend;
use super::check::{self, Findings, RecoveryProbe, RunData};
use super::faults::{FaultKind, FaultRecord, FaultResult};
use super::history::{Op, OpKind, Outcome, RunClock};
use super::nemesis::{Nemesis, RECOVERY_TIMEOUT};
use super::register::FencedRegister;
use super::workload::{self, History, PauseControl, Shared, WorkloadConfig};
use crate::lease::apply::CLOCK_RATE_BOUND_PPM;
use crate::proto::v1 as pb;
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
    /// Concurrent workers.
    pub workers: u32,
    /// Number of leases they contend for.
    pub leases: u32,
    /// Lease duration, seconds.
    pub lease_seconds: i32,
    /// Minimum successful operations per second.
    pub min_rate: f64,
    /// The cluster's maximum election timeout (for the recovery bound).
    pub election_timeout_max: Duration,
    /// Linearizability search budget per lease (model steps).
    pub linear_budget: u64,
    /// Where the report, history and register log are written.
    pub out_dir: PathBuf,
}

impl RunConfig {
    /// Defaults: 8 workers on 4 leases of 2 s, fencing on, every fault.
    pub fn new(duration: Duration, out_dir: PathBuf) -> Self {
        RunConfig {
            duration,
            faults: FaultKind::ALL.to_vec(),
            fencing: true,
            seed: 1,
            workers: 8,
            leases: 4,
            lease_seconds: 2,
            min_rate: 10.0,
            election_timeout_max: Duration::from_millis(600),
            linear_budget: 20_000_000,
            out_dir,
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
            let _ = writeln!(s, "  {k:<8} {ok:>6} ok of {all:>6}");
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
                    let _ = writeln!(s, "  {k:<17} unsupported: {why}");
                }
                None => {
                    let _ = writeln!(s, "  {k:<17} {ok} done, {failed} failed");
                }
            }
        }
        for p in &self.durability {
            let _ = writeln!(
                s,
                "durability: {} token {} after killing every node: {}",
                p.lease,
                p.token,
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
    for op in ops {
        let name = match op.kind {
            OpKind::Acquire { .. } => "acquire",
            OpKind::Renew { .. } => "renew",
            OpKind::Release { .. } => "release",
            OpKind::Get => "get",
        };
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
            endpoints,
            namespace: namespace.clone(),
            leases: leases.clone(),
            workers: cfg.workers,
            duration_seconds: cfg.lease_seconds,
            attempt_timeout: Duration::from_secs(2),
            resolve_for: Duration::from_secs(30),
            seed: cfg.seed,
        },
        history: history.clone(),
        register: register.clone(),
        pauses: pauses.clone(),
        stop: stop.clone(),
    });
    let mut workers =
        workload::spawn_workers(shared.clone()).map_err(|e| format!("workers: {}", e.message()))?;
    let workload_start = clock.now();

    // Faults until the duration is up; then heal and recover.
    let until = workload_start + u64::try_from(cfg.duration.as_nanos()).unwrap_or(u64::MAX);
    let faults = nemesis.run(&cfg.faults, until).await;
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
        let client = crate::client::Client::new(shared.cfg.endpoints.clone())
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
                    labels: Default::default(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                };
                let kind = OpKind::Acquire {
                    holder: holder.clone(),
                    duration_seconds: shared.cfg.duration_seconds,
                };
                let op = workload::write_op(&shared, 0, &lease, kind, || {
                    let req = req.clone();
                    let client = &client;
                    async move {
                        client.acquire(req).await.map(|r| Outcome::Acquired {
                            token: r.fencing_token,
                            newly: r.newly_acquired,
                        })
                    }
                })
                .await;
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

    let ops = history.ops();
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
        findings,
        out_dir: cfg.out_dir.clone(),
    };
    write_files(&report, &ops, &reg_log, backend.as_ref())?;
    Ok(report)
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
