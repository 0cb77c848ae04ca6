//! The checker ("validate"): judges a recorded run against the properties
//! Leasehold promises. Each property has its own module; this one gathers
//! the run's data and the anomalies.
//!
//! 1. [`linear`]: each lease's history (acquire, renew, release, get, put,
//!    delete) is linearizable against the lease model (ambiguous writes may
//!    or may not have taken effect; an undecided search is a failure).
//! 2. [`tokens`]: fencing tokens are unique across the run (so across
//!    restarts and re-creations), and a grant that completed before another
//!    began has the lower token, on any lease; Put grants included.
//! 3. [`register`]: the fenced register saw no lost and no stale update.
//! 4. [`timing`]: no new holder's grant (acquire or Put) completed before
//!    the previous holder's last acknowledged acquire, renew or renewing
//!    Put was sent plus the lease duration, unless that holder released.
//! 5. durability: every probe acknowledged before all nodes were killed
//!    (or all lost power together) read back intact after the restart.
//! 6. recovery: after the last fault healed and the workload stopped, each
//!    lease was acquired within its duration plus an election timeout.
//! 7. faults and rate: every planned fault happened (was injected, verified
//!    and healed) and the workload kept its minimum rate.
//! 8. [`watch`]: every watcher got every acknowledged change it covers
//!    exactly once, in revision order, across resumes, and caught up.
//! 9. [`revisions`]: revisions are unique and follow real time, reads see
//!    what was acknowledged before them, and a compare-and-swap succeeded
//!    only if nothing changed the lease since the version it was based on.
//! 10. [`request_ids`]: a request id sent again with the same command got
//!     the first answer again; with another command it was refused.

pub mod linear;
pub mod register;
pub mod request_ids;
pub mod revisions;
pub mod timing;
pub mod tokens;
pub mod watch;

use super::faults::{FaultKind, FaultRecord, FaultResult};
use super::history::{IdReuse, Nanos, Op};
use super::nemesis::DurabilityProbe;
use super::register::RegOp;
use super::watcher::WatchLog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A violated property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Which property, e.g. `linearizability`, `fencing-tokens`.
    pub property: String,
    /// The lease concerned, if one.
    pub lease: Option<String>,
    /// What is wrong, in words.
    pub explanation: String,
    /// History op ids (or register log indexes) involved.
    pub ops: Vec<u64>,
}

impl Anomaly {
    /// A new anomaly.
    pub fn new(property: &str, lease: Option<&str>, explanation: String, ops: Vec<u64>) -> Self {
        Anomaly {
            property: property.to_string(),
            lease: lease.map(str::to_string),
            explanation,
            ops,
        }
    }
}

/// How long the recovery probe took to acquire one lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryProbe {
    /// The lease.
    pub lease: String,
    /// From the end of the workload to the grant, ms; `None` if never.
    pub took_ms: Option<u64>,
    /// The bound it had to meet, ms.
    pub bound_ms: u64,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Lease duration of the workload, seconds.
    pub lease_seconds: u64,
    /// How long the workload ran, ns.
    pub workload_span: Nanos,
    /// The lease operations.
    pub ops: Vec<Op>,
    /// The fenced register's log.
    pub register: Vec<RegOp>,
    /// The faults.
    pub faults: Vec<FaultRecord>,
    /// Fault kinds that were planned (requested).
    pub planned: Vec<FaultKind>,
    /// Durability probes.
    pub durability: Vec<DurabilityProbe>,
    /// Recovery probes.
    pub recovery: Vec<RecoveryProbe>,
    /// Minimum successful operations per second.
    pub min_rate: f64,
    /// Search budget per lease for the linearizability check.
    pub linear_budget: u64,
    /// Deliberate request-id reuses.
    pub reuses: Vec<IdReuse>,
    /// What the watchers received.
    pub watches: Vec<WatchLog>,
    /// The highest revision the run acknowledged, which every watcher must
    /// have reached.
    pub watch_target: u64,
    /// How many changes a node's watch history keeps
    /// (`--history-revisions`).
    pub history_revisions: u64,
}

/// What the checker found, and how it spent its effort.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Findings {
    /// Violations.
    pub anomalies: Vec<Anomaly>,
    /// Linearizability search steps per lease.
    pub linear_steps: BTreeMap<String, u64>,
    /// Successful operations per second over the workload.
    pub ok_rate: f64,
    /// What each watcher did.
    pub watchers: Vec<watch::WatcherStats>,
    /// Request-id reuses.
    pub request_ids: request_ids::IdStats,
    /// Compare-and-swap writes checked.
    pub cas: revisions::CasStats,
}

/// Runs every check.
pub fn check(data: &RunData) -> Findings {
    let mut f = Findings::default();
    let mut by_lease: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in &data.ops {
        by_lease
            .entry(op.lease.as_str())
            .or_default()
            .push(op.clone());
    }
    // 1. Linearizability, per lease.
    for (lease, ops) in &by_lease {
        match linear::check_lease(ops, data.linear_budget) {
            linear::Verdict::Linearizable { steps } => {
                f.linear_steps.insert(lease.to_string(), steps);
            }
            linear::Verdict::Violation { explanation, ops } => {
                f.anomalies.push(Anomaly::new(
                    "linearizability",
                    Some(lease),
                    explanation,
                    ops,
                ));
            }
            linear::Verdict::Undecided { steps } => {
                f.linear_steps.insert(lease.to_string(), steps);
                f.anomalies.push(Anomaly::new(
                    "linearizability",
                    Some(lease),
                    format!(
                        "undecided: the search used its budget of {steps} steps \
                         without finding a linearization or proving there is none"
                    ),
                    vec![],
                ));
            }
        }
    }
    // 2. Tokens.
    f.anomalies.extend(tokens::check(&data.ops));
    // 3. Register.
    f.anomalies.extend(register::check(&data.register));
    // 4. Timing.
    let d = Duration::from_secs(data.lease_seconds);
    for (lease, ops) in &by_lease {
        f.anomalies.extend(timing::check(lease, ops, d));
    }
    // 5. Durability.
    for p in &data.durability {
        if !p.intact {
            f.anomalies.push(Anomaly::new(
                "durability",
                Some(&p.lease),
                format!(
                    "acknowledged {}/{} before {}; read back after the restart: {}",
                    p.holder,
                    p.token,
                    if p.fault.is_power_loss() {
                        "every node lost power"
                    } else {
                        "every node was killed"
                    },
                    p.read_back
                ),
                vec![],
            ));
        }
    }
    // 6. Recovery.
    for r in &data.recovery {
        match r.took_ms {
            Some(ms) if ms <= r.bound_ms => {}
            Some(ms) => f.anomalies.push(Anomaly::new(
                "recovery",
                Some(&r.lease),
                format!(
                    "acquired {ms} ms after the workload stopped; the bound is {} ms",
                    r.bound_ms
                ),
                vec![],
            )),
            None => f.anomalies.push(Anomaly::new(
                "recovery",
                Some(&r.lease),
                format!(
                    "not acquired after the workload stopped (bound {} ms)",
                    r.bound_ms
                ),
                vec![],
            )),
        }
    }
    // 7. Faults happened; rate kept.
    for kind in &data.planned {
        let recs: Vec<&FaultRecord> = data.faults.iter().filter(|r| r.kind == *kind).collect();
        let unsupported = recs
            .iter()
            .any(|r| matches!(r.result, FaultResult::Unsupported(_)));
        if !unsupported && !recs.iter().any(|r| r.result == FaultResult::Ok) {
            f.anomalies.push(Anomaly::new(
                "faults",
                None,
                format!("planned fault {kind} never happened (the run may be too short)"),
                vec![],
            ));
        }
    }
    for r in &data.faults {
        if let FaultResult::Failed(why) = &r.result {
            f.anomalies.push(Anomaly::new(
                "faults",
                None,
                format!(
                    "{} on {} at {:.1} s failed: {why}",
                    r.kind,
                    r.target,
                    r.start as f64 / 1e9
                ),
                vec![],
            ));
        }
    }
    // 8. Watchers.
    let (anomalies, stats) = watch::check(
        &data.watches,
        &data.ops,
        data.watch_target,
        data.history_revisions,
    );
    f.anomalies.extend(anomalies);
    f.watchers = stats;
    // 9. Revisions and compare-and-swap.
    let (anomalies, cas) = revisions::check(&data.ops);
    f.anomalies.extend(anomalies);
    f.cas = cas;
    // 10. Request ids.
    let (anomalies, ids) = request_ids::check(&data.reuses);
    f.anomalies.extend(anomalies);
    f.request_ids = ids;
    let ok = data.ops.iter().filter(|o| o.outcome.is_ok()).count();
    let span = (data.workload_span as f64 / 1e9).max(1e-9);
    f.ok_rate = ok as f64 / span;
    if f.ok_rate < data.min_rate {
        f.anomalies.push(Anomaly::new(
            "rate",
            None,
            format!(
                "{ok} successful operations in {span:.1} s = {:.1}/s, below the minimum {:.1}/s",
                f.ok_rate, data.min_rate
            ),
            vec![],
        ));
    }
    f
}
