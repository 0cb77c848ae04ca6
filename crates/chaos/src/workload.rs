//! The chaos workload ("traffic"): concurrent clients of a small set of
//! short leases, and the fenced register they increment while they hold
//! one. Three kinds of client:
//!
//! - *Workers* ([`Worker`], identity `w<worker>-g<generation>`) use the
//!   lease API: acquire a lease; when granted, do a few rounds of (fenced
//!   read, fenced write of value + 1, renew), sometimes read the lease,
//!   then release it or abandon it to let it expire (etcd's robustness
//!   suite never lets a lease expire; ours must).
//! - *Kubernetes-style workers* (`super::kube`, identity
//!   `k<worker>-g<generation>`) do what client-go's leader election with a
//!   LeaseLock does: read, create or take over and renew by a
//!   compare-and-swap `Put` of the whole lease with times from their own,
//!   skewed clock, release by a `Put` that clears the holder.
//! - *Deleters* ([`Deleter`]) now and then delete a lease, at the
//!   resourceVersion they read or unconditionally, held or not (a held
//!   lease's tombstone then keeps it from being created again until its
//!   tenure could have lapsed).
//!
//! Every lease call is recorded in the [`History`], with the revision of
//! the change a successful write made (what watchers must deliver).
//!
//! Half the clients send to the node that leads first ([`track_leader`]
//! keeps the hint), the other half start at a node of their own, so that
//! followers forward their calls; all fail over to the other nodes.
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
//! Request ids are also reused on purpose ([`IdReuse`]): some answered
//! writes are sent again unchanged (the answer must repeat exactly), and
//! some ids are sent again with another command, one that would change the
//! lease if it were applied (it must be refused with INVALID_ARGUMENT
//! naming `requestId`; the other command is recorded in the history too,
//! with whatever it got, so the checker sees its effect if it had one).
//!
//! A worker writes to the register only while its lease is valid on its own
//! clock: the send time of its last acknowledged acquire, renew or
//! holder-keeping Put, plus the duration, minus a margin, on the runner's
//! monotonic clock (the server's times, and a Kubernetes-style worker's
//! skewed wall clock, never enter that decision). [`PauseControl`] can
//! suspend a worker right after that check and before the write, for
//! longer than the lease: the classic process pause. With fencing on, the
//! register must refuse the late write; with fencing off (the negative
//! control) it accepts it.

use super::history::{Answer, IdReuse, LeaseView, Lost, Nanos, Op, OpKind, Outcome, RunClock};
use super::register::FencedRegister;
use leasehold_client::{Client, ConnectOptions};
use leasehold_proto::v1 as pb;
use leasehold_proto::wire::{error_info, reason};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// Label every chaos lease carries: `even` or `odd`, by the lease's index
/// (a watcher selects on it).
pub const LABEL_GROUP: &str = "chaos-group";
/// Label a Kubernetes-style worker's Put sets: `kube` when it names a
/// holder, `released` when it clears it. Acquire never changes labels, so a
/// lease keeps what the last Put set until it is deleted; a watcher
/// selecting `chaos-kind=kube` sees leases enter and leave its selection.
pub const LABEL_KIND: &str = "chaos-kind";

/// How the workload behaves.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Client endpoints (`host:port`).
    pub endpoints: Vec<String>,
    /// Namespace of the chaos leases.
    pub namespace: String,
    /// Lease names.
    pub leases: Vec<String>,
    /// Concurrent lease-API workers (ids `1..=workers`).
    pub workers: u32,
    /// Concurrent Kubernetes-style workers (the ids after the workers').
    pub kube_workers: u32,
    /// Clock offsets of the Kubernetes-style workers, ms, assigned in turn
    /// (worker `i` gets entry `i mod len`; empty: no offset).
    pub kube_skews_ms: Vec<i64>,
    /// Concurrent deleters (the ids after the Kubernetes-style workers').
    pub deleters: u32,
    /// Lease duration, seconds.
    pub duration_seconds: i32,
    /// Deadline of one attempt (the client's own failover happens inside).
    pub attempt_timeout: Duration,
    /// How long an ambiguous write is retried with its request id.
    pub resolve_for: Duration,
    /// Seed of the workers' random choices.
    pub seed: u64,
    /// Chance that an answered write is sent again with the same request
    /// id (the answer must repeat).
    pub repeat_same_id: f64,
    /// Chance that a holder reuses the request id of an answered renewal
    /// for a release (it must be refused).
    pub reuse_id_other: f64,
    /// Pause between a holder's rounds, ms (lowest, highest).
    pub round_pause_ms: (u64, u64),
    /// TLS and bearer token of every client.
    pub connect: ConnectOptions,
}

impl WorkloadConfig {
    /// The labels every lease carries (`LABEL_GROUP`).
    pub fn base_labels(&self, lease: &str) -> BTreeMap<String, String> {
        let i = self.leases.iter().position(|l| l == lease).unwrap_or(0);
        let group = if i % 2 == 0 { "even" } else { "odd" };
        BTreeMap::from([(LABEL_GROUP.to_string(), group.to_string())])
    }

    /// First id of the Kubernetes-style workers.
    pub fn first_kube_id(&self) -> u32 {
        self.workers + 1
    }

    /// First id of the deleters.
    pub fn first_deleter_id(&self) -> u32 {
        self.workers + self.kube_workers + 1
    }
}

pub use leasehold_rng::Rng;

/// The operations and request-id reuses recorded so far.
pub struct History {
    clock: RunClock,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    reuses: Mutex<Vec<IdReuse>>,
}

impl History {
    /// An empty history on `clock`.
    pub fn new(clock: RunClock) -> Self {
        History {
            clock,
            next_id: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
            reuses: Mutex::new(Vec::new()),
        }
    }

    /// The run clock.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Records `op` with the next id.
    pub fn push(&self, mut op: Op) -> Op {
        op.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op.clone());
        op
    }

    fn push_reuse(&self, r: IdReuse) {
        self.reuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    /// Every operation, ordered by id (completion order).
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|o| o.id);
        ops
    }

    /// Every request-id reuse, in the order they were answered.
    pub fn reuses(&self) -> Vec<IdReuse> {
        self.reuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

    /// The highest revision any successful write recorded so far made.
    pub fn max_revision(&self) -> u64 {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|o| o.kind.is_write() && o.outcome.is_ok())
            .filter_map(|o| o.revision)
            .max()
            .unwrap_or(0)
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

    pub(crate) fn set_holding(&self, worker: u32, h: Option<Holding>) {
        let mut m = self.holding.lock().unwrap_or_else(|p| p.into_inner());
        match h {
            Some(h) => m.insert(worker, h),
            None => m.remove(&worker),
        };
    }

    pub(crate) async fn pause_point(&self, worker: u32, holding: &Holding, clock: RunClock) {
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
    /// Index (into `cfg.endpoints`) of the node that leads, as last seen;
    /// `usize::MAX` when unknown. Leader-aware workers send there first.
    pub leader: Arc<std::sync::atomic::AtomicUsize>,
}

impl Shared {
    /// Whether the workload is stopping.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.cfg.duration_seconds).unwrap_or(1))
    }

    /// A client whose endpoint list starts at endpoint `first`.
    fn client_from(&self, first: usize) -> Result<Client, Status> {
        let mut endpoints = self.cfg.endpoints.clone();
        if !endpoints.is_empty() {
            let n = endpoints.len();
            endpoints.rotate_left(first % n);
        }
        Ok(Client::with_options(endpoints, self.cfg.connect.clone())?
            .with_timeout(self.cfg.attempt_timeout))
    }

    /// The clients of worker `id`. Odd ids talk to the endpoints starting
    /// at a different one per worker (so a follower forwards most of their
    /// writes and reads to the leader); even ids start at the node that
    /// leads, as [`Shared::leader`] last saw it, as a client that follows
    /// leader hints does (forwarding costs the nodes a second request, and
    /// the machine has two cores). Both fail over to the other endpoints.
    pub fn clients_for(&self, id: u32) -> Result<Clients, Status> {
        let n = self.cfg.endpoints.len().max(1);
        let clients = if id.is_multiple_of(2) {
            (0..n)
                .map(|k| self.client_from(k))
                .collect::<Result<_, _>>()?
        } else {
            vec![self.client_from(id as usize % n)?]
        };
        Ok(Clients { clients })
    }

    /// Worker `id`'s random generator.
    pub fn rng_for(&self, id: u32) -> Rng {
        Rng::new(self.cfg.seed ^ (u64::from(id) + 1).wrapping_mul(0x5851_F42D))
    }
}

/// A worker's connections (see [`Shared::clients_for`]).
pub struct Clients {
    /// One client, or one per starting endpoint.
    clients: Vec<Client>,
}

impl Clients {
    /// The client to send the next call with.
    pub fn pick(&self, shared: &Shared) -> &Client {
        let leader = shared.leader.load(Ordering::Relaxed);
        match self.clients.get(leader) {
            Some(c) if self.clients.len() > 1 => c,
            _ => &self.clients[0],
        }
    }
}

/// Keeps `shared.leader` up to date: every 300 ms, asks every node for its
/// status and notes the leader of the highest term. Runs until aborted.
pub fn track_leader(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clients: Vec<Option<Client>> = shared
            .cfg
            .endpoints
            .iter()
            .map(|e| {
                Client::with_options(vec![e.clone()], shared.cfg.connect.clone())
                    .ok()
                    .map(|c| c.with_timeout(Duration::from_millis(300)))
            })
            .collect();
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (i, c) in clients.iter().enumerate() {
                let Some(c) = c else { continue };
                if let Ok(st) = c.status().await {
                    if st.state == "LEADER" && best.is_none_or(|(t, _)| st.term > t) {
                        best = Some((st.term, i));
                    }
                }
            }
            shared
                .leader
                .store(best.map_or(usize::MAX, |(_, i)| i), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// Uses a tenure once, as a holder does: a fenced read-modify-write of the
/// register by worker `id` while `holding` is still valid on the holder's
/// own reckoning (`still_valid`), with the pause point between the read
/// and the write, where a paused ex-holder would write late. Returns
/// `false` when the register refused the token (the tenure is lost);
/// `true` also when the tenure was too old to use (nothing written).
pub(crate) async fn use_tenure(
    shared: &Shared,
    id: u32,
    holding: &Holding,
    clock: RunClock,
    valid_from: Nanos,
    d: Duration,
) -> bool {
    if !still_valid(clock, valid_from, d) {
        return true;
    }
    let (lease, token) = (holding.lease.as_str(), holding.token);
    let Ok(v) = shared.register.read(id, lease, token) else {
        return false;
    };
    if still_valid(clock, valid_from, d) {
        shared.pauses.pause_point(id, holding, clock).await;
        if shared.register.write(id, lease, token, v + 1).is_err() {
            return false;
        }
    }
    true
}

/// Whether a worker acting as holder since `valid_from` (the send time of
/// its last acknowledged grant or renewal, run clock) may still act: until
/// the duration minus a margin has passed on the runner's clock.
pub(crate) fn still_valid(clock: RunClock, valid_from: Nanos, d: Duration) -> bool {
    // Act as holder only until d minus this margin after the send time.
    let margin = Duration::from_millis(300);
    let until = clock.instant(valid_from) + d.saturating_sub(margin);
    std::time::Instant::now() < until
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
        x if x == reason::CONFLICT => Outcome::Conflict,
        x if x == reason::ALREADY_EXISTS => Outcome::AlreadyExists,
        x if x == reason::INVALID_ARGUMENT => Outcome::Failed {
            code: code_name(s),
            message: s.message().to_string(),
        },
        _ => return None,
    })
}

/// The answer a status is, for request-id checks.
pub fn answer_of_status(s: &Status) -> Answer {
    let (reason, metadata) = match error_info(s) {
        Some((r, m)) => (r, m.into_iter().collect()),
        None => (String::new(), BTreeMap::new()),
    };
    Answer {
        code: code_name(s),
        reason,
        metadata,
        body: s.message().to_string(),
    }
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

/// A lease's resourceVersion (0 when the response had no metadata).
pub fn rv_of(l: &pb::Lease) -> u64 {
    l.metadata.as_ref().map_or(0, |m| m.resource_version)
}

/// A lease's labels, sorted.
pub fn labels_of(l: &pb::Lease) -> BTreeMap<String, String> {
    l.metadata
        .as_ref()
        .map(|m| m.labels.clone().into_iter().collect())
        .unwrap_or_default()
}

/// A lease in one canonical line (maps sorted): equal leases give equal
/// text, whatever order the protobuf maps came in.
pub fn canonical_lease(l: &pb::Lease) -> String {
    let mut s = String::new();
    let m = l.metadata.clone().unwrap_or_default();
    let sorted = |h: &std::collections::HashMap<String, String>| {
        let b: BTreeMap<_, _> = h.iter().collect();
        format!("{b:?}")
    };
    let _ = write!(
        s,
        "{}/{} uid={} rv={} created={} labels={} annotations={}",
        m.namespace,
        m.name,
        m.uid,
        m.resource_version,
        m.creation_timestamp,
        sorted(&m.labels),
        sorted(&m.annotations)
    );
    let _ = write!(s, " spec={:?} status={:?}", l.spec, l.status);
    s
}

/// What a successful call answered.
pub struct Reply {
    /// The outcome it records.
    pub outcome: Outcome,
    /// The revision of the change (writes) or the resourceVersion read.
    pub revision: Option<u64>,
    /// The lease's labels after the change (for a Delete: as it was).
    pub labels: Option<BTreeMap<String, String>>,
    /// The response in canonical text, for request-id checks.
    pub body: String,
    /// The lease in the response, if any.
    pub lease: Option<pb::Lease>,
}

impl Reply {
    fn of_lease(outcome: Outcome, lease: Option<pb::Lease>, body: String) -> Self {
        Reply {
            outcome,
            revision: lease.as_ref().map(rv_of),
            labels: lease.as_ref().map(labels_of),
            body,
            lease,
        }
    }

    /// The reply to an Acquire.
    pub fn acquired(r: pb::AcquireResponse) -> Self {
        let body = format!(
            "acquire token={} newly={} created={} {}",
            r.fencing_token,
            r.newly_acquired,
            r.created,
            r.lease.as_ref().map(canonical_lease).unwrap_or_default()
        );
        Reply::of_lease(
            Outcome::Acquired {
                token: r.fencing_token,
                newly: r.newly_acquired,
            },
            r.lease,
            body,
        )
    }

    /// The reply to a Renew.
    pub fn renewed(r: pb::RenewResponse) -> Self {
        let body = format!(
            "renew {}",
            r.lease.as_ref().map(canonical_lease).unwrap_or_default()
        );
        Reply::of_lease(Outcome::Renewed, r.lease, body)
    }

    /// The reply to a Release.
    pub fn released(r: pb::ReleaseResponse) -> Self {
        let body = format!(
            "release {}",
            r.lease.as_ref().map(canonical_lease).unwrap_or_default()
        );
        Reply::of_lease(Outcome::Released, r.lease, body)
    }

    /// The reply to a Put.
    pub fn put(r: pb::PutResponse) -> Self {
        let lease = r.lease.unwrap_or_default();
        let body = format!("put created={} {}", r.created, canonical_lease(&lease));
        Reply::of_lease(
            Outcome::Put {
                view: view_of(&lease),
                created: r.created,
            },
            Some(lease),
            body,
        )
    }

    /// The reply to a Delete: the revision is the deletion's.
    pub fn deleted(r: pb::DeleteResponse) -> Self {
        let lease = r.lease.unwrap_or_default();
        let body = format!("delete revision={} {}", r.revision, canonical_lease(&lease));
        Reply {
            outcome: Outcome::Deleted(view_of(&lease)),
            revision: Some(r.revision),
            labels: Some(labels_of(&lease)),
            body,
            lease: Some(lease),
        }
    }
}

/// A recorded write and the answer it got.
pub struct Written {
    /// The recorded op.
    pub op: Op,
    /// The request id it was sent with.
    pub request_id: String,
    /// The final answer (for an unknown outcome: the last attempt's).
    pub answer: Answer,
    /// The lease in a successful response.
    pub lease: Option<pb::Lease>,
}

/// Sends a write (the closure sends it with a fixed request id), retrying
/// ambiguous failures until the cluster answers or `resolve_for` has
/// passed. Returns the outcome, the reply if it succeeded, the answer and
/// the number of attempts.
async fn send_resolved<F, Fut>(shared: &Shared, send: &F) -> (Outcome, Option<Reply>, Answer, u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Reply, Status>>,
{
    let clock = shared.history.clock();
    let give_up = clock.instant(clock.now()) + shared.cfg.resolve_for;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match send().await {
            Ok(r) => {
                let answer = Answer {
                    code: "Ok".to_string(),
                    reason: String::new(),
                    metadata: BTreeMap::new(),
                    body: r.body.clone(),
                };
                return (r.outcome.clone(), Some(r), answer, attempts);
            }
            Err(s) => {
                let answer = answer_of_status(&s);
                if let Some(o) = refusal(&s) {
                    return (o, None, answer, attempts);
                }
                if !ambiguous(&s) {
                    let o = Outcome::Failed {
                        code: code_name(&s),
                        message: s.message().to_string(),
                    };
                    return (o, None, answer, attempts);
                }
                if std::time::Instant::now() >= give_up {
                    let o = Outcome::Unknown {
                        code: code_name(&s),
                        message: s.message().to_string(),
                    };
                    return (o, None, answer, attempts);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one write (the closure sends it with a fixed request id), retrying
/// ambiguous failures until the cluster answers or `resolve_for` has passed,
/// and records it. With `repeat`, a write that got a definite answer is
/// then sent once more with the same request id and the two answers are
/// recorded as an [`IdReuse`].
pub async fn write_op<F, Fut>(
    shared: &Shared,
    worker: u32,
    lease: &str,
    kind: OpKind,
    request_id: &str,
    repeat: bool,
    send: F,
) -> Written
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Reply, Status>>,
{
    let clock = shared.history.clock();
    let invoke = clock.now();
    let (outcome, reply, answer, attempts) = send_resolved(shared, &send).await;
    let (revision, labels, reply_lease) = match reply {
        Some(r) => (r.revision, r.labels, r.lease),
        None => (None, None, None),
    };
    let op = shared.history.push(Op {
        id: 0,
        worker,
        lease: lease.to_string(),
        kind,
        invoke,
        complete: clock.now(),
        outcome,
        attempts,
        revision,
        labels,
    });
    let definite = !op.outcome.is_unknown() && !matches!(op.outcome, Outcome::Failed { .. });
    if repeat && definite {
        let again = clock.now();
        let (second, _, second_answer, _) = send_resolved(shared, &send).await;
        shared.history.push_reuse(IdReuse {
            op: op.id,
            worker,
            lease: lease.to_string(),
            same_command: true,
            other_op: None,
            sent: format!("the same {} again", op.kind.name()),
            invoke: again,
            complete: clock.now(),
            first: answer.clone(),
            second: (!second.is_unknown()).then_some(second_answer),
        });
    }
    Written {
        op,
        request_id: request_id.to_string(),
        answer,
        lease: reply_lease,
    }
}

/// Sends another command (`kind`, sent by `send`) with the request id of
/// the answered write `first`, records it as an op and the pair as an
/// [`IdReuse`]. The cluster must refuse it (INVALID_ARGUMENT naming
/// `requestId`); if it did not, the op records what it did instead.
pub async fn reuse_id_for_other<F, Fut>(
    shared: &Shared,
    first: &Written,
    kind: OpKind,
    sent: String,
    send: F,
) -> Op
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Reply, Status>>,
{
    let w = write_op(
        shared,
        first.op.worker,
        &first.op.lease,
        kind,
        &first.request_id,
        false,
        send,
    )
    .await;
    shared.history.push_reuse(IdReuse {
        op: first.op.id,
        worker: first.op.worker,
        lease: first.op.lease.clone(),
        same_command: false,
        other_op: Some(w.op.id),
        sent,
        invoke: w.op.invoke,
        complete: w.op.complete,
        first: first.answer.clone(),
        second: (!w.op.outcome.is_unknown()).then_some(w.answer),
    });
    w.op
}

/// A linearizable Get, recorded; returns the op and the lease read.
pub async fn get_op(
    shared: &Shared,
    client: &Client,
    worker: u32,
    lease: &str,
) -> (Op, Option<pb::Lease>) {
    let clock = shared.history.clock();
    let invoke = clock.now();
    let req = pb::GetRequest {
        namespace: shared.cfg.namespace.clone(),
        name: lease.to_string(),
        stale: false,
    };
    let (outcome, found) = match client.get(req).await {
        Ok(r) => match r.lease {
            Some(l) => (Outcome::Read(view_of(&l)), Some(l)),
            None => (Outcome::NotFound, None),
        },
        Err(s) => match refusal(&s) {
            Some(Outcome::NotFound) => (Outcome::NotFound, None),
            _ => (
                Outcome::Failed {
                    code: code_name(&s),
                    message: s.message().to_string(),
                },
                None,
            ),
        },
    };
    let op = shared.history.push(Op {
        id: 0,
        worker,
        lease: lease.to_string(),
        kind: OpKind::Get,
        invoke,
        complete: clock.now(),
        outcome,
        attempts: 1,
        revision: found.as_ref().map(rv_of),
        labels: None,
    });
    (op, found)
}

/// One lease-API worker.
pub struct Worker {
    id: u32,
    generation: u32,
    rng: Rng,
    clients: Clients,
    shared: Arc<Shared>,
}

impl Worker {
    /// Worker `id`.
    pub fn new(id: u32, shared: Arc<Shared>) -> Result<Self, Status> {
        Ok(Worker {
            id,
            generation: 0,
            rng: shared.rng_for(id),
            clients: shared.clients_for(id)?,
            shared,
        })
    }

    fn holder(&self) -> String {
        format!("w{}-g{}", self.id, self.generation)
    }

    fn stopped(&self) -> bool {
        self.shared.stopped()
    }

    fn repeat(&mut self) -> bool {
        let p = self.shared.cfg.repeat_same_id;
        self.rng.chance(p)
    }

    async fn pause(&mut self) {
        let (lo, hi) = self.shared.cfg.round_pause_ms;
        let d = self.rng.millis(lo, hi);
        tokio::time::sleep(d).await;
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        // When each lease is worth trying again: a refused acquire is a log
        // entry too, so a worker told "held for another X ms" tries other
        // leases meanwhile (and comes back when X is up, which is when the
        // takeover races are).
        let mut retry_at: HashMap<String, std::time::Instant> = HashMap::new();
        while !self.stopped() {
            let now = std::time::Instant::now();
            let free: Vec<&String> = self
                .shared
                .cfg
                .leases
                .iter()
                .filter(|l| retry_at.get(*l).is_none_or(|t| *t <= now))
                .collect();
            if free.is_empty() {
                let pause = self.rng.millis(20, 100);
                tokio::time::sleep(pause).await;
                continue;
            }
            let lease = free[self.rng.index(free.len())].clone();
            if self.rng.chance(0.85) {
                // Look first, as a polite client does; some attempts go
                // straight in, to race the holder's renewals.
                let (_, found) = get_op(
                    &self.shared,
                    self.clients.pick(&self.shared),
                    self.id,
                    &lease,
                )
                .await;
                if let Some(l) = found {
                    let v = view_of(&l);
                    if v.holder.is_some_and(|h| h != self.holder()) && !v.expired {
                        let wait = self.rng.millis(100, 500);
                        retry_at.insert(lease, std::time::Instant::now() + wait);
                        continue;
                    }
                }
            }
            let w = self.acquire(&lease).await;
            match w.op.outcome {
                Outcome::Acquired { token, .. } => {
                    retry_at.remove(&lease);
                    self.hold(&lease, token, w.op.invoke).await;
                }
                Outcome::Unknown { .. } => self.generation += 1,
                Outcome::Held { .. } => {
                    let hint = w
                        .answer
                        .metadata
                        .get("remainingMillis")
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(250)
                        .min(self.shared.lease_duration().as_millis() as u64);
                    let jitter = self.rng.millis(0, 50);
                    retry_at.insert(
                        lease,
                        std::time::Instant::now() + Duration::from_millis(hint) + jitter,
                    );
                    self.pause().await;
                }
                _ => self.pause().await,
            }
        }
    }

    /// Holds a granted tenure for a few rounds, then releases or abandons.
    async fn hold(&mut self, lease: &str, token: u64, mut valid_from: Nanos) {
        let clock = self.shared.history.clock();
        let d = self.shared.lease_duration();
        let holding = Holding {
            lease: lease.to_string(),
            token,
        };
        self.shared
            .pauses
            .set_holding(self.id, Some(holding.clone()));
        let rounds = 1 + self.rng.below(8);
        let mut lost = false;
        for _ in 0..rounds {
            if self.stopped() {
                // Abandon: the lease must expire on its own.
                self.shared.pauses.set_holding(self.id, None);
                return;
            }
            if !use_tenure(&self.shared, self.id, &holding, clock, valid_from, d).await {
                lost = true;
            }
            if lost {
                break;
            }
            self.pause().await;
            if self.rng.chance(0.5) {
                get_op(
                    &self.shared,
                    self.clients.pick(&self.shared),
                    self.id,
                    lease,
                )
                .await;
            }
            let w = self.renew(lease, token).await;
            match w.op.outcome {
                Outcome::Renewed => {
                    valid_from = w.op.invoke;
                    if self.rng.chance(self.shared.cfg.reuse_id_other)
                        && self.release_with_id_of(&w, token).await
                    {
                        lost = true;
                        break;
                    }
                }
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
            let op = self.release(lease, token).await.op;
            if op.outcome.is_unknown() {
                self.generation += 1;
            }
        }
        // Otherwise abandon it: it expires, and someone takes it over.
    }

    fn acquire_request(&self, lease: &str) -> pb::AcquireRequest {
        pb::AcquireRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            holder: self.holder(),
            lease_duration_seconds: self.shared.cfg.duration_seconds,
            labels: self.shared.cfg.base_labels(lease).into_iter().collect(),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    async fn acquire(&mut self, lease: &str) -> Written {
        let req = self.acquire_request(lease);
        let kind = OpKind::Acquire {
            holder: self.holder(),
            duration_seconds: self.shared.cfg.duration_seconds,
        };
        let repeat = self.repeat();
        let client = self.clients.pick(&self.shared);
        write_op(
            &self.shared,
            self.id,
            lease,
            kind,
            &req.request_id,
            repeat,
            || {
                let req = req.clone();
                async move { client.acquire(req).await.map(Reply::acquired) }
            },
        )
        .await
    }

    fn release_request(&self, lease: &str, token: u64, request_id: String) -> pb::ReleaseRequest {
        pb::ReleaseRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            holder: self.holder(),
            fencing_token: token,
            request_id,
        }
    }

    async fn renew(&mut self, lease: &str, token: u64) -> Written {
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
        let repeat = self.repeat();
        let client = self.clients.pick(&self.shared);
        write_op(
            &self.shared,
            self.id,
            lease,
            kind,
            &req.request_id,
            repeat,
            || {
                let req = req.clone();
                async move { client.renew(req).await.map(Reply::renewed) }
            },
        )
        .await
    }

    async fn release(&mut self, lease: &str, token: u64) -> Written {
        let req = self.release_request(lease, token, uuid::Uuid::new_v4().to_string());
        let kind = OpKind::Release {
            holder: self.holder(),
            token,
        };
        let repeat = self.repeat();
        let client = self.clients.pick(&self.shared);
        write_op(
            &self.shared,
            self.id,
            lease,
            kind,
            &req.request_id,
            repeat,
            || {
                let req = req.clone();
                async move { client.release(req).await.map(Reply::released) }
            },
        )
        .await
    }

    /// Sends a release of `token` with the request id of the answered
    /// renewal `renewed`: the cluster must refuse it. Returns whether the
    /// tenure may be gone (the release was applied, or may have been).
    async fn release_with_id_of(&mut self, renewed: &Written, token: u64) -> bool {
        let lease = renewed.op.lease.clone();
        let req = self.release_request(&lease, token, renewed.request_id.clone());
        let kind = OpKind::Release {
            holder: self.holder(),
            token,
        };
        let client = self.clients.pick(&self.shared);
        let op = reuse_id_for_other(
            &self.shared,
            renewed,
            kind,
            format!("a release of token {token} with the renewal's request id"),
            || {
                let req = req.clone();
                async move { client.release(req).await.map(Reply::released) }
            },
        )
        .await;
        !matches!(op.outcome, Outcome::Failed { .. })
    }
}

/// A client that now and then deletes a lease: at the resourceVersion it
/// just read, or unconditionally, as `kubectl delete lease` does. The
/// cluster refuses a stale resourceVersion (`Conflict`) and a missing lease
/// (`NotFound`), and deletes any other lease, held or not (it never answers
/// `Held`). When the deleted lease had a holder whose tenure could still be
/// live, the cluster keeps a tombstone of that tenure: until the tenure
/// could have lapsed, every create of the lease (an acquire of the missing
/// lease or a Put at resourceVersion 0, whoever it names, the deleted
/// holder too) is refused as `Held` by the deleted holder, so nobody is
/// granted the lease while that holder may still act on it. After that the
/// next acquire or create makes the lease anew, with a new, higher token.
///
/// Most deletes are of leases that look deletable (no holder, or the
/// holder's expiry recorded), as a careful operator's are; the rest delete
/// a held lease on purpose ([`DELETE_HELD`] of the read-based ones, and
/// blind deletes of whatever is there), so that runs exercise tombstones:
/// the holder's renewals answer `NotFound`, and acquirers, Kubernetes-style
/// creators and the deleted holder itself meet the tombstone's `Held`.
pub struct Deleter {
    id: u32,
    rng: Rng,
    clients: Clients,
    shared: Arc<Shared>,
}

impl Deleter {
    /// Deleter `id`.
    pub fn new(id: u32, shared: Arc<Shared>) -> Result<Self, Status> {
        Ok(Deleter {
            id,
            rng: shared.rng_for(id),
            clients: shared.clients_for(id)?,
            shared,
        })
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        while !self.shared.stopped() {
            let pause = self.rng.millis(50, 250);
            tokio::time::sleep(pause).await;
            let n = self.shared.cfg.leases.len() as u64;
            let lease = self.shared.cfg.leases[self.rng.below(n) as usize].clone();
            let base = if self.rng.chance(0.7) {
                // Delete what it read, if it looks deletable (no holder,
                // or the holder's expiry recorded), or sometimes though it
                // is held; the rest go blind.
                match get_op(
                    &self.shared,
                    self.clients.pick(&self.shared),
                    self.id,
                    &lease,
                )
                .await
                {
                    (_, Some(l)) => {
                        let v = view_of(&l);
                        let live = v.holder.is_some() && !v.expired;
                        if live && !self.rng.chance(DELETE_HELD) {
                            continue;
                        }
                        Some(rv_of(&l))
                    }
                    _ => continue,
                }
            } else if self.rng.chance(0.5) {
                None
            } else {
                continue;
            };
            self.delete(&lease, base).await;
        }
    }

    async fn delete(&mut self, lease: &str, base: Option<u64>) -> Written {
        // No uid precondition: the deleters know the lease only by name
        // and resourceVersion.
        let req = pb::DeleteRequest {
            namespace: self.shared.cfg.namespace.clone(),
            name: lease.to_string(),
            resource_version: base,
            request_id: uuid::Uuid::new_v4().to_string(),
            uid: String::new(),
        };
        let repeat = self.rng.chance(self.shared.cfg.repeat_same_id);
        let client = self.clients.pick(&self.shared);
        write_op(
            &self.shared,
            self.id,
            lease,
            OpKind::Delete { base },
            &req.request_id,
            repeat,
            || {
                let req = req.clone();
                async move { client.delete(req).await.map(Reply::deleted) }
            },
        )
        .await
    }
}

/// The chance that a deleter deletes a lease it read as held (by a holder
/// whose expiry was not recorded) rather than leave it alone.
pub const DELETE_HELD: f64 = 0.3;

/// Starts every worker, Kubernetes-style worker and deleter; they run until
/// `shared.stop` is set.
pub fn spawn_workers(shared: Arc<Shared>) -> Result<tokio::task::JoinSet<()>, Status> {
    let mut set = tokio::task::JoinSet::new();
    let cfg = &shared.cfg;
    for id in 1..=cfg.workers {
        let w = Worker::new(id, shared.clone())?;
        set.spawn(w.run());
    }
    for i in 0..cfg.kube_workers {
        let id = cfg.first_kube_id() + i;
        let skew = if cfg.kube_skews_ms.is_empty() {
            0
        } else {
            cfg.kube_skews_ms[i as usize % cfg.kube_skews_ms.len()]
        };
        let w = super::kube::KubeWorker::new(id, skew, shared.clone())?;
        set.spawn(w.run());
    }
    for i in 0..cfg.deleters {
        let d = Deleter::new(cfg.first_deleter_id() + i, shared.clone())?;
        set.spawn(d.run());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal as the server sends it: code, Leasehold's ErrorInfo
    /// reason and metadata, and the field for invalid input (the server's
    /// own error map is checked against these wire constants by the server
    /// package's `client_errors` tests).
    fn refused(code: Code, why: &str, meta: &[(&str, String)], field: Option<&str>) -> Status {
        leasehold_proto::wire::error_status(
            code,
            format!("refused: {why}"),
            why,
            meta,
            field.map(|f| (f, "is not acceptable")),
        )
    }

    #[test]
    fn refusals_are_definite_and_transport_failures_ambiguous() {
        let held = refused(
            Code::FailedPrecondition,
            reason::LEASE_HELD,
            &[("holder", "w1-g0".into()), ("remainingMillis", "5".into())],
            None,
        );
        assert_eq!(
            refusal(&held),
            Some(Outcome::Held {
                holder: "w1-g0".into()
            })
        );
        assert!(!ambiguous(&held));
        let conflict = refused(Code::Aborted, reason::CONFLICT, &[], None);
        assert_eq!(refusal(&conflict), Some(Outcome::Conflict));
        assert!(!ambiguous(&conflict));
        let exists = refused(Code::AlreadyExists, reason::ALREADY_EXISTS, &[], None);
        assert_eq!(refusal(&exists), Some(Outcome::AlreadyExists));
        let broken = Status::unavailable("connection reset");
        assert!(refusal(&broken).is_none());
        assert!(ambiguous(&broken));
        assert!(ambiguous(&Status::deadline_exceeded("deadline")));
        assert!(!ambiguous(&Status::invalid_argument("bad")));
    }

    #[test]
    fn a_reused_request_id_refusal_is_definite_and_names_the_field() {
        let s = refused(
            Code::InvalidArgument,
            reason::INVALID_ARGUMENT,
            &[("field", "requestId".into())],
            Some("requestId"),
        );
        assert!(matches!(refusal(&s), Some(Outcome::Failed { .. })));
        let a = answer_of_status(&s);
        assert_eq!(a.code, "InvalidArgument");
        assert_eq!(
            a.metadata.get("field").map(String::as_str),
            Some("requestId")
        );
    }

    #[test]
    fn canonical_lease_ignores_map_order() {
        let mut a = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut b = a.clone();
        for i in 0..20 {
            if let Some(m) = a.metadata.as_mut() {
                m.labels.insert(format!("k{i}"), "v".into());
            }
        }
        for i in (0..20).rev() {
            if let Some(m) = b.metadata.as_mut() {
                m.labels.insert(format!("k{i}"), "v".into());
            }
        }
        assert_eq!(canonical_lease(&a), canonical_lease(&b));
        if let Some(m) = b.metadata.as_mut() {
            m.labels.insert("k3".into(), "w".into());
        }
        assert_ne!(canonical_lease(&a), canonical_lease(&b));
    }
}
