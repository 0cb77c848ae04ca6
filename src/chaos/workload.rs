//! The chaos workload ("traffic"): concurrent lease clients that acquire,
//! renew, read and release a small set of short leases, and increment the
//! fenced register while they hold one.
//!
//! Each worker is one task with its own [`Client`] and one holder identity
//! `w<worker>-g<generation>`. A worker's loop: pick a lease, acquire it;
//! when granted, do a few rounds of (fenced read, fenced write of value + 1,
//! renew), sometimes read the lease, then release it or abandon it to let
//! it expire (etcd's robustness suite never lets a lease expire; ours
//! must). Every lease call is recorded in the [`History`].
//!
//! A write whose outcome is unknown (timeout, broken connection,
//! UNAVAILABLE) is retried with the same request id until the cluster
//! answers or [`WorkloadConfig::resolve_for`] has passed: the cluster
//! applies a request id at most once and answers a retry with the first
//! application's result, so the retried call is one operation whose
//! interval covers every attempt. Only what stays unknown after that is
//! recorded as [`Outcome::Unknown`]; the worker then retires its identity
//! (a new generation), because it cannot know whether it holds the lease.
//!
//! A worker writes to the register only while its lease is valid on its own
//! clock: the send time of its last acknowledged acquire or renew plus the
//! duration, minus a margin. [`PauseControl`] can suspend a worker right
//! after that check and before the write, for longer than the lease: the
//! classic process pause. With fencing on, the register must refuse the
//! late write; with fencing off (the negative control) it accepts it.

use super::history::{LeaseView, Lost, Nanos, Op, OpKind, Outcome, RunClock};
use super::register::FencedRegister;
use crate::api::status::{error_info, reason};
use crate::client::Client;
use crate::proto::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// How the workload behaves.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Client endpoints (`host:port`).
    pub endpoints: Vec<String>,
    /// Namespace of the chaos leases.
    pub namespace: String,
    /// Lease names.
    pub leases: Vec<String>,
    /// Concurrent workers.
    pub workers: u32,
    /// Lease duration, seconds.
    pub duration_seconds: i32,
    /// Deadline of one attempt (the client's own failover happens inside).
    pub attempt_timeout: Duration,
    /// How long an ambiguous write is retried with its request id.
    pub resolve_for: Duration,
    /// Seed of the workers' random choices.
    pub seed: u64,
}

pub use crate::rng::Rng;

/// The operations recorded so far.
pub struct History {
    clock: RunClock,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl History {
    /// An empty history on `clock`.
    pub fn new(clock: RunClock) -> Self {
        History {
            clock,
            next_id: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// The run clock.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    fn push(&self, mut op: Op) -> Op {
        op.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op.clone());
        op
    }

    /// Every operation, ordered by id (completion order).
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|o| o.id);
        ops
    }

    /// Successful operations so far.
    pub fn ok_count(&self) -> usize {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|o| o.outcome.is_ok())
            .count()
    }
}

/// A tenure a worker believes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The lease.
    pub lease: String,
    /// Its token.
    pub token: u64,
}

/// A client pause that happened.
#[derive(Debug, Clone)]
pub struct PauseEvent {
    /// The paused worker.
    pub worker: u32,
    /// What it held.
    pub holding: Holding,
    /// When it stopped (run clock).
    pub start: Nanos,
    /// When it went on.
    pub end: Nanos,
}

/// Lets the fault scheduler suspend a lease-holding worker at its most
/// dangerous point: after it checked its lease is valid, before it writes.
#[derive(Default)]
pub struct PauseControl {
    holding: Mutex<HashMap<u32, Holding>>,
    armed: Mutex<HashMap<u32, Duration>>,
    done: Mutex<Vec<PauseEvent>>,
    notify: tokio::sync::Notify,
}

impl PauseControl {
    /// Workers holding a lease right now.
    pub fn holders(&self) -> Vec<(u32, Holding)> {
        let h = self.holding.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = h.iter().map(|(w, h)| (*w, h.clone())).collect();
        v.sort_by_key(|(w, _)| *w);
        v
    }

    /// Makes `worker` pause for `for_` at its next pause point.
    pub fn arm(&self, worker: u32, for_: Duration) {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker, for_);
    }

    /// Cancels a pause that has not started.
    pub fn disarm(&self, worker: u32) -> bool {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&worker)
            .is_some()
    }

    /// Waits until a pause has completed and returns it.
    pub async fn wait_done(&self, worker: u32, timeout: Duration) -> Option<PauseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(e) = self
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .rev()
                .find(|e| e.worker == worker)
                .cloned()
            {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn set_holding(&self, worker: u32, h: Option<Holding>) {
        let mut m = self.holding.lock().unwrap_or_else(|p| p.into_inner());
        match h {
            Some(h) => m.insert(worker, h),
            None => m.remove(&worker),
        };
    }

    async fn pause_point(&self, worker: u32, holding: &Holding, clock: RunClock) {
        let armed = self
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&worker);
        if let Some(d) = armed {
            let start = clock.now();
            tokio::time::sleep(d).await;
            self.done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(PauseEvent {
                    worker,
                    holding: holding.clone(),
                    start,
                    end: clock.now(),
                });
            self.notify.notify_waiters();
        }
    }
}

/// What workers share.
pub struct Shared {
    /// The configuration.
    pub cfg: WorkloadConfig,
    /// The recorded history.
    pub history: Arc<History>,
    /// The fenced register.
    pub register: Arc<FencedRegister>,
    /// Client pauses.
    pub pauses: Arc<PauseControl>,
    /// Set to stop the workers (each finishes its current call).
    pub stop: Arc<AtomicBool>,
}

/// The gRPC code's name, e.g. `Unavailable`.
fn code_name(s: &Status) -> String {
    format!("{:?}", s.code())
}

/// Whether a failed write may have taken effect.
fn ambiguous(s: &Status) -> bool {
    match error_info(s) {
        Some((r, _)) if r == reason::OUTCOME_UNKNOWN || r == reason::UNAVAILABLE => true,
        Some((r, _)) if r == reason::NOT_LEADER => true,
        Some(_) => false,
        None => !matches!(
            s.code(),
            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::OutOfRange
        ),
    }
}

/// Turns a refusal into the definite outcome it reports, if it is one.
fn refusal(s: &Status) -> Option<Outcome> {
    let (r, meta) = error_info(s)?;
    let get = |k: &str| meta.get(k).cloned();
    Some(match r.as_str() {
        x if x == reason::LEASE_HELD => Outcome::Held {
            holder: get("holder").unwrap_or_default(),
        },
        x if x == reason::LEASE_LOST => Outcome::Lost(match get("lostReason").as_deref() {
            Some("NO_HOLDER") => Lost::NoHolder,
            Some("OTHER_HOLDER") => Lost::OtherHolder {
                holder: get("holder").unwrap_or_default(),
            },
            Some("STALE_TOKEN") => Lost::StaleToken {
                current: get("currentFencingToken")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            },
            _ => Lost::Expired,
        }),
        x if x == reason::NOT_FOUND => Outcome::NotFound,
        x if x == reason::INVALID_ARGUMENT => Outcome::Failed {
            code: code_name(s),
            message: s.message().to_string(),
        },
        _ => return None,
    })
}

/// The model's view of a lease from the API.
pub fn view_of(l: &pb::Lease) -> LeaseView {
    let holder = l
        .spec
        .as_ref()
        .map(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let status = l.status.clone().unwrap_or_default();
    LeaseView {
        holder,
        token: status.fencing_token,
        expired: status.expired,
    }
}

/// One worker.
pub struct Worker {
    id: u32,
    generation: u32,
    rng: Rng,
    client: Client,
    shared: Arc<Shared>,
}

impl Worker {
    /// Worker `id`; its client talks to the endpoints starting at a
    /// different one per worker, so load spreads over the nodes.
    pub fn new(id: u32, shared: Arc<Shared>) -> Result<Self, Status> {
        let mut endpoints = shared.cfg.endpoints.clone();
        if !endpoints.is_empty() {
            let n = endpoints.len();
            endpoints.rotate_left(id as usize % n);
        }
        let client = Client::new(endpoints)?.with_timeout(shared.cfg.attempt_timeout);
        let rng = Rng::new(shared.cfg.seed ^ (u64::from(id) + 1).wrapping_mul(0x5851_F42D));
        Ok(Worker {
            id,
            generation: 0,
            rng,
            client,
            shared,
        })
    }

    fn holder(&self) -> String {
        format!("w{}-g{}", self.id, self.generation)
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        while !self.stopped() {
            let n = self.shared.cfg.leases.len() as u64;
            let lease = self.shared.cfg.leases[self.rng.below(n) as usize].clone();
            if self.rng.chance(0.15) {
                self.get(&lease).await;
            }
            let op = self.acquire(&lease).await;
            match op.outcome {
                Outcome::Acquired { token, .. } => {
                    self.hold(&lease, token, op.invoke).await;
                }
                Outcome::Unknown { .. } => self.generation += 1,
                _ => {
                    let pause = self.rng.millis(20, 300);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Holds a granted tenure for a few rounds, then releases or abandons.
    async fn hold(&mut self, lease: &str, token: u64, mut valid_from: Nanos) {
        let clock = self.shared.history.clock();
        let d = Duration::from_secs(u64::try_from(self.shared.cfg.duration_seconds).unwrap_or(1));
        // Act as holder only until d minus this margin after the send time
        // of the last acknowledged acquire or renew.
        let margin = Duration::from_millis(300);
        let valid = |from: Nanos| -> bool {
            let until = clock.instant(from) + d.saturating_sub(margin);
            std::time::Instant::now() < until
        };
        let holding = Holding {
            lease: lease.to_string(),
            token,
        };
        self.shared
            .pauses
            .set_holding(self.id, Some(holding.clone()));
        let rounds = 1 + self.rng.below(6);
        let mut lost = false;
        for _ in 0..rounds {
            if self.stopped() {
                // Abandon: the lease must expire on its own.
                self.shared.pauses.set_holding(self.id, None);
                return;
            }
            if valid(valid_from) {
                if let Ok(v) = self.shared.register.read(self.id, lease, token) {
                    if valid(valid_from) {
                        self.shared
                            .pauses
                            .pause_point(self.id, &holding, clock)
                            .await;
                        if self
                            .shared
                            .register
                            .write(self.id, lease, token, v + 1)
                            .is_err()
                        {
                            lost = true;
                        }
                    }
                } else {
                    lost = true;
                }
            }
            if lost {
                break;
            }
            tokio::time::sleep(self.rng.millis(50, 400)).await;
            if self.rng.chance(0.2) {
                self.get(lease).await;
            }
            let op = self.renew(lease, token).await;
            match op.outcome {
                Outcome::Renewed => valid_from = op.invoke,
                Outcome::Unknown { .. } => {}
                _ => {
                    lost = true;
                    break;
                }
            }
        }
        self.shared.pauses.set_holding(self.id, None);
        if lost || self.stopped() {
            return;
        }
        if self.rng.chance(0.65) {
            let op = self.release(lease, token).await;
            if op.outcome.is_unknown() {
                self.generation += 1;
            }
        }
        // Otherwise abandon it: it expires, and someone takes it over.
    }

    async fn get(&mut self, lease: &str) -> Op {
        let clock = self.shared.history.clock();
        let invoke = clock.now();
        let req = pb::GetRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            stale: false,
        };
        let outcome = match self.client.get(req).await {
            Ok(r) => match r.lease {
                Some(l) => Outcome::Read(view_of(&l)),
                None => Outcome::NotFound,
            },
            Err(s) => match refusal(&s) {
                Some(Outcome::NotFound) => Outcome::NotFound,
                _ => Outcome::Failed {
                    code: code_name(&s),
                    message: s.message().to_string(),
                },
            },
        };
        self.shared.history.push(Op {
            id: 0,
            worker: self.id,
            lease: lease.to_string(),
            kind: OpKind::Get,
            invoke,
            complete: clock.now(),
            outcome,
            attempts: 1,
        })
    }

    async fn acquire(&mut self, lease: &str) -> Op {
        let req = pb::AcquireRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            holder: self.holder(),
            lease_duration_seconds: self.shared.cfg.duration_seconds,
            labels: Default::default(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let kind = OpKind::Acquire {
            holder: self.holder(),
            duration_seconds: self.shared.cfg.duration_seconds,
        };
        let client = &self.client;
        write_op(&self.shared, self.id, lease, kind, || {
            let req = req.clone();
            async move {
                client.acquire(req).await.map(|r| Outcome::Acquired {
                    token: r.fencing_token,
                    newly: r.newly_acquired,
                })
            }
        })
        .await
    }

    async fn renew(&mut self, lease: &str, token: u64) -> Op {
        let req = pb::RenewRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            holder: self.holder(),
            fencing_token: token,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let kind = OpKind::Renew {
            holder: self.holder(),
            token,
        };
        let client = &self.client;
        write_op(&self.shared, self.id, lease, kind, || {
            let req = req.clone();
            async move { client.renew(req).await.map(|_| Outcome::Renewed) }
        })
        .await
    }

    async fn release(&mut self, lease: &str, token: u64) -> Op {
        let req = pb::ReleaseRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            holder: self.holder(),
            fencing_token: token,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let kind = OpKind::Release {
            holder: self.holder(),
            token,
        };
        let client = &self.client;
        write_op(&self.shared, self.id, lease, kind, || {
            let req = req.clone();
            async move { client.release(req).await.map(|_| Outcome::Released) }
        })
        .await
    }
}

/// Runs one write (the closure sends it with a fixed request id), retrying
/// ambiguous failures until the cluster answers or `resolve_for` has passed,
/// and records it.
pub async fn write_op<F, Fut>(
    shared: &Shared,
    worker: u32,
    lease: &str,
    kind: OpKind,
    send: F,
) -> Op
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, Status>>,
{
    let clock = shared.history.clock();
    let invoke = clock.now();
    let give_up = clock.instant(invoke) + shared.cfg.resolve_for;
    let mut attempts = 0u32;
    let outcome = loop {
        attempts += 1;
        match send().await {
            Ok(o) => break o,
            Err(s) => {
                if let Some(o) = refusal(&s) {
                    break o;
                }
                if !ambiguous(&s) {
                    break Outcome::Failed {
                        code: code_name(&s),
                        message: s.message().to_string(),
                    };
                }
                if std::time::Instant::now() >= give_up {
                    break Outcome::Unknown {
                        code: code_name(&s),
                        message: s.message().to_string(),
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    shared.history.push(Op {
        id: 0,
        worker,
        lease: lease.to_string(),
        kind,
        invoke,
        complete: clock.now(),
        outcome,
        attempts,
    })
}

/// Starts `cfg.workers` workers; they run until `shared.stop` is set.
pub fn spawn_workers(shared: Arc<Shared>) -> Result<tokio::task::JoinSet<()>, Status> {
    let mut set = tokio::task::JoinSet::new();
    for id in 1..=shared.cfg.workers {
        let w = Worker::new(id, shared.clone())?;
        set.spawn(w.run());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_definite_and_transport_failures_ambiguous() {
        let held = crate::api::status::from_lease_error(&crate::lease::LeaseError::Held {
            key: crate::lease::LeaseKey::new("ns", "a"),
            holder: "w1-g0".into(),
            expire_time: crate::lease::Timestamp(0),
            remaining_millis: 5,
        });
        assert_eq!(
            refusal(&held),
            Some(Outcome::Held {
                holder: "w1-g0".into()
            })
        );
        assert!(!ambiguous(&held));
        let broken = Status::unavailable("connection reset");
        assert!(refusal(&broken).is_none());
        assert!(ambiguous(&broken));
        assert!(ambiguous(&Status::deadline_exceeded("deadline")));
        assert!(!ambiguous(&Status::invalid_argument("bad")));
    }
}
