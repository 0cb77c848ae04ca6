//! Kubernetes-style lease clients: what client-go's leader election does
//! with a `LeaseLock`, against Leasehold's Kubernetes-shaped `Get` and
//! `Put`.
//!
//! One round of client-go's `tryAcquireOrRenew`, as a [`KubeWorker`] does
//! it (identity `k<worker>-g<generation>`):
//! - `Get` the lease. Missing: create it (`Put` at resourceVersion 0) with
//!   itself as holder, `leaseTransitions` 0.
//! - Found: if the record (holder, duration, times, transitions) differs
//!   from the one it observed last, note it and the time it noticed
//!   (client-go's `observedRecord` and `observedTime`). If another holder
//!   is named and the record has not changed for a lease duration on the
//!   worker's own clock, the lease is free for it; if less, it waits.
//! - Take it over (or back): `Put` at the resourceVersion it read, naming
//!   itself, `leaseTransitions` + 1 when the holder changes, and
//!   `acquireTime` and `renewTime` from its own clock.
//! - While it leads, renew without reading first (client-go's fast path):
//!   `Put` its cached object, at the resourceVersion of its last write, with
//!   a new `renewTime`. A conflict means it lost.
//! - Release (client-go does on cancel): `Put` at the cached
//!   resourceVersion with an empty holder and a duration of 1 s.
//!
//! Every worker has its own clock offset (some ahead, some behind by a few
//! seconds), used for every time it sends, as a node with a wrong clock
//! would. The server must take none of them: it stamps `renewTime` and
//! `acquireTime` itself, so a clock that runs behind cannot make a lease
//! look lapsed early (the negative control turns that off on the server).
//!
//! Like the lease-API workers (`workload::Worker`), a worker writes the
//! fenced register only while valid by the client-side rule: send time of
//! its last acknowledged grant or renewal plus the duration minus a
//! margin, on the runner's monotonic clock. Its token is the one the
//! cluster stored with its Put (a Put that keeps a lapsed tenure's holder
//! starts a new tenure, with a new token).

use super::history::{Nanos, OpKind, Outcome};
use super::workload::{
    get_op, labels_of, reuse_id_for_other, rv_of, use_tenure, Clients, Holding, Reply, Rng, Shared,
    Written, LABEL_KIND,
};
use leasehold_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tonic::Status;

/// One Kubernetes-style client.
pub struct KubeWorker {
    id: u32,
    generation: u32,
    /// How far this worker's wall clock is ahead of real time (negative:
    /// behind), ms.
    skew_ms: i64,
    rng: Rng,
    clients: Clients,
    shared: Arc<Shared>,
    /// Per lease: the record last observed and when (run clock), as
    /// client-go's `observedRecord` and `observedTime`.
    observed: HashMap<String, (String, Nanos)>,
}

/// What a Put sends besides the holder.
struct PutSpec {
    base: u64,
    holder: Option<String>,
    tenure: u64,
    base_labels: Option<BTreeMap<String, String>>,
    acquire_time: String,
    transitions: i32,
}

impl KubeWorker {
    /// Worker `id`, whose clock is `skew_ms` ahead of real time.
    pub fn new(id: u32, skew_ms: i64, shared: Arc<Shared>) -> Result<Self, Status> {
        Ok(KubeWorker {
            id,
            generation: 0,
            skew_ms,
            rng: shared.rng_for(id),
            clients: shared.clients_for(id)?,
            shared,
            observed: HashMap::new(),
        })
    }

    fn holder(&self) -> String {
        format!("k{}-g{}", self.id, self.generation)
    }

    /// This worker's wall clock, as Kubernetes prints a MicroTime.
    fn now_text(&self) -> String {
        let t = chrono::Utc::now() + chrono::Duration::milliseconds(self.skew_ms);
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    async fn pause(&mut self) {
        let (lo, hi) = self.shared.cfg.round_pause_ms;
        let d = self.rng.millis(lo, hi);
        tokio::time::sleep(d).await;
    }

    /// The leader election record of `l` (what client-go compares).
    fn record(l: &pb::Lease) -> String {
        let s = l.spec.clone().unwrap_or_default();
        format!(
            "{}|{:?}|{}|{}|{:?}|{}|{}",
            s.holder_identity,
            s.lease_duration_seconds,
            s.acquire_time,
            s.renew_time,
            s.lease_transitions,
            s.strategy,
            s.preferred_holder
        )
    }

    /// Notes `l` as observed; returns when its record was first seen.
    fn observe(&mut self, lease: &str, l: &pb::Lease) -> Nanos {
        let record = Self::record(l);
        let now = self.shared.history.clock().now();
        match self.observed.get(lease) {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.observed.insert(lease.to_string(), (record, now));
                now
            }
        }
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        while !self.shared.stopped() {
            let n = self.shared.cfg.leases.len() as u64;
            let lease = self.shared.cfg.leases[self.rng.below(n) as usize].clone();
            let (op, found) = get_op(
                &self.shared,
                self.clients.pick(&self.shared),
                self.id,
                &lease,
            )
            .await;
            match (&op.outcome, found) {
                (Outcome::NotFound, _) => self.create(&lease).await,
                (Outcome::Read(_), Some(l)) => self.take(&lease, l).await,
                _ => self.pause().await,
            }
        }
    }

    async fn create(&mut self, lease: &str) {
        let spec = PutSpec {
            base: 0,
            holder: Some(self.holder()),
            tenure: 0,
            base_labels: None,
            acquire_time: self.now_text(),
            transitions: 0,
        };
        let w = self.put(lease, spec, false).await;
        self.after_claim(lease, w).await;
    }

    /// Takes `l` over, or back, if client-go would.
    async fn take(&mut self, lease: &str, l: pb::Lease) {
        let observed_at = self.observe(lease, &l);
        let me = self.holder();
        let spec = l.spec.clone().unwrap_or_default();
        let other = !spec.holder_identity.is_empty() && spec.holder_identity != me;
        let d = u64::try_from(self.shared.lease_duration().as_nanos()).unwrap_or(u64::MAX);
        if other && self.shared.history.clock().now() < observed_at.saturating_add(d) {
            // Held, and its record changed less than a duration ago.
            self.pause().await;
            return;
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let put = if other || spec.holder_identity.is_empty() {
            PutSpec {
                base: rv_of(&l),
                holder: Some(me),
                tenure: 0,
                base_labels: Some(labels_of(&l)),
                acquire_time: self.now_text(),
                transitions: transitions.saturating_add(1),
            }
        } else {
            // Its own record (it stopped leading after a conflict): renew
            // it, keeping acquireTime and transitions as client-go does.
            PutSpec {
                base: rv_of(&l),
                holder: Some(me),
                tenure: l.status.as_ref().map_or(0, |s| s.fencing_token),
                base_labels: Some(labels_of(&l)),
                acquire_time: spec.acquire_time.clone(),
                transitions,
            }
        };
        let w = self.put(lease, put, false).await;
        self.after_claim(lease, w).await;
    }

    /// Leads if a create or takeover Put stored this worker as holder.
    async fn after_claim(&mut self, lease: &str, w: Written) {
        match (&w.op.outcome, w.lease) {
            (Outcome::Put { view, .. }, Some(l))
                if view.holder.as_deref() == Some(&self.holder()) =>
            {
                let token = view.token;
                self.lead(lease, token, l, w.op.invoke).await;
            }
            (Outcome::Unknown { .. }, _) => self.generation += 1,
            _ => self.pause().await,
        }
    }

    /// Leads for a few rounds, renewing by compare-and-swap, then releases
    /// or abandons the lease.
    async fn lead(
        &mut self,
        lease: &str,
        mut token: u64,
        mut obj: pb::Lease,
        mut valid_from: Nanos,
    ) {
        let clock = self.shared.history.clock();
        let d = self.shared.lease_duration();
        let mut holding = Holding {
            lease: lease.to_string(),
            token,
        };
        self.shared
            .pauses
            .set_holding(self.id, Some(holding.clone()));
        let rounds = 1 + self.rng.below(8);
        let mut lost = false;
        for _ in 0..rounds {
            if self.shared.stopped() {
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
            if self.rng.chance(0.3) {
                get_op(
                    &self.shared,
                    self.clients.pick(&self.shared),
                    self.id,
                    lease,
                )
                .await;
            }
            let spec = obj.spec.clone().unwrap_or_default();
            let renew = PutSpec {
                base: rv_of(&obj),
                holder: Some(self.holder()),
                tenure: token,
                base_labels: Some(labels_of(&obj)),
                acquire_time: spec.acquire_time.clone(),
                transitions: spec.lease_transitions.unwrap_or(0),
            };
            let repeat = self.rng.chance(self.shared.cfg.repeat_same_id);
            let w = self.put(lease, renew, repeat).await;
            match (&w.op.outcome, &w.lease) {
                (Outcome::Put { view, .. }, Some(l))
                    if view.holder.as_deref() == Some(&self.holder()) =>
                {
                    valid_from = w.op.invoke;
                    obj = l.clone();
                    if view.token != token {
                        // The old tenure had lapsed: the Put started a new
                        // one, with a new token, and nobody else held it
                        // in between (the compare-and-swap says so).
                        token = view.token;
                        holding.token = token;
                        self.shared
                            .pauses
                            .set_holding(self.id, Some(holding.clone()));
                    }
                    if self.rng.chance(self.shared.cfg.reuse_id_other)
                        && self.release_with_id_of(lease, &w, token).await
                    {
                        lost = true;
                        break;
                    }
                }
                (Outcome::Unknown { .. }, _) => {
                    // The cached resourceVersion is unknown now.
                    self.generation += 1;
                    lost = true;
                    break;
                }
                _ => {
                    lost = true;
                    break;
                }
            }
        }
        self.shared.pauses.set_holding(self.id, None);
        if lost || self.shared.stopped() {
            return;
        }
        if self.rng.chance(0.65) {
            let release = self.release_spec(&obj, token);
            let repeat = self.rng.chance(self.shared.cfg.repeat_same_id);
            let w = self.put(lease, release, repeat).await;
            if w.op.outcome.is_unknown() {
                self.generation += 1;
            }
        }
        // Otherwise abandon it: it expires, and someone takes it over.
    }

    /// The request of a Put, with a new request id.
    fn put_request(&self, lease: &str, p: &PutSpec, request_id: String) -> pb::PutRequest {
        let mut labels = self.shared.cfg.base_labels(lease);
        let kind = if p.holder.is_some() {
            "kube"
        } else {
            "released"
        };
        labels.insert(LABEL_KIND.to_string(), kind.to_string());
        let duration = if p.holder.is_some() {
            self.shared.cfg.duration_seconds
        } else {
            1
        };
        let now = self.now_text();
        pb::PutRequest {
            lease: Some(pb::Lease {
                metadata: Some(pb::ObjectMeta {
                    namespace: self.shared.cfg.namespace.clone(),
                    name: lease.to_string(),
                    resource_version: p.base,
                    labels: labels.into_iter().collect(),
                    ..Default::default()
                }),
                spec: Some(pb::LeaseSpec {
                    holder_identity: p.holder.clone().unwrap_or_default(),
                    lease_duration_seconds: Some(duration),
                    acquire_time: if p.holder.is_some() {
                        p.acquire_time.clone()
                    } else {
                        now.clone()
                    },
                    renew_time: now,
                    lease_transitions: Some(p.transitions),
                    ..Default::default()
                }),
                status: None,
            }),
            request_id,
        }
    }

    fn put_kind(&self, p: &PutSpec) -> OpKind {
        OpKind::Put {
            holder: p.holder.clone(),
            base: p.base,
            tenure: p.tenure,
            base_labels: p.base_labels.clone(),
            skew_ms: self.skew_ms,
        }
    }

    async fn put(&mut self, lease: &str, p: PutSpec, repeat: bool) -> Written {
        let req = self.put_request(lease, &p, uuid::Uuid::new_v4().to_string());
        let kind = self.put_kind(&p);
        let client = self.clients.pick(&self.shared);
        super::workload::write_op(
            &self.shared,
            self.id,
            lease,
            kind,
            &req.request_id,
            repeat,
            || {
                let req = req.clone();
                async move { client.put(req).await.map(Reply::put) }
            },
        )
        .await
    }

    /// The update that releases `obj` (tenure `token`) as client-go does:
    /// an empty holder, everything else kept.
    fn release_spec(&self, obj: &pb::Lease, token: u64) -> PutSpec {
        PutSpec {
            base: rv_of(obj),
            holder: None,
            tenure: token,
            base_labels: Some(labels_of(obj)),
            acquire_time: self.now_text(),
            transitions: obj
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0),
        }
    }

    /// Sends a release Put at the resourceVersion the renewal `renewed`
    /// stored, with the renewal's request id: the cluster must refuse it.
    /// Returns whether the tenure may be gone (the release was applied, or
    /// may have been).
    async fn release_with_id_of(&mut self, lease: &str, renewed: &Written, token: u64) -> bool {
        let Some(obj) = renewed.lease.clone() else {
            return false;
        };
        let p = self.release_spec(&obj, token);
        let req = self.put_request(lease, &p, renewed.request_id.clone());
        let kind = self.put_kind(&p);
        let client = self.clients.pick(&self.shared);
        let op = reuse_id_for_other(
            &self.shared,
            renewed,
            kind,
            format!(
                "a release Put at resourceVersion {} with the renewal's request id",
                p.base
            ),
            || {
                let req = req.clone();
                async move { client.put(req).await.map(Reply::put) }
            },
        )
        .await;
        !matches!(op.outcome, Outcome::Failed { .. })
    }
}
