//! A lock session: hold one lease for as long as a piece of work runs, and
//! learn in time when it must stop.
//!
//! This is what `leasehold lock` does around a command, as a library:
//! - [`LockSession::acquire`] waits until the lease is free and takes it.
//!   It watches the lease while it waits, so a release, an expiry or a
//!   delete ends the wait at once instead of at the next poll; the time the
//!   holder's refusal names (`remaining`) bounds each wait in case the
//!   holder simply stops renewing. [`LockSession::acquire_until`] gives up
//!   at a deadline.
//! - [`Lock::keep`] renews every third of the duration and returns a
//!   [`Loss`] when the lock is gone: a renew was refused (the tenure ended,
//!   the lease was deleted), or no renew succeeded for so long that only
//!   [`LockConfig::grace`] is left before the validity deadline (but never
//!   before half the duration, so one failed renew does not end the lock).
//!   [`Loss::stop_by`] is when the work must have stopped; with the
//!   defaults (15 s, grace 5 s) it is exactly the validity deadline, the
//!   send time of the last successful renew + d × (1 − ρ): the work has
//!   stopped before anyone else can hold the lease.
//! - [`Lock::release`] gives the lease up when the work is done, so a
//!   waiting session takes over at once; [`LockSession::release_if_ours`]
//!   undoes an acquire whose answer never arrived.
//!
//! Unlike a [`LeaderElector`](super::elector::LeaderElector), a session
//! does not campaign again after a loss: the work it protected has to stop,
//! and whether to start it again is the caller's decision.
//!
//! The lease alone cannot stop a holder that pauses past its validity
//! deadline; pass [`Lock::fencing_token`] with every write to the protected
//! resource, which refuses lower tokens ([`Fence`](super::fence::Fence)).
//!
//! Cancelling: every method may be cancelled by dropping its future (a
//! `tokio::select!` on a signal, say). An acquire dropped in flight may
//! still be applied by the cluster: call [`LockSession::release_if_ours`]
//! afterwards, or the lease stays taken until its duration lapses.

use super::errors::LeaseClientError;
use super::fence::validity_deadline;
use super::tenure::{self, Ended, Holder, Renewal};
use super::Client;
use leasehold_proto::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Streaming;

/// Longest wait between two acquire attempts while the lease is held: the
/// watch normally ends the wait much earlier.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Wait between acquire attempts when no watch could be opened.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long opening a watch on one endpoint may take.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to the holder's `remaining` before trying again, so the retry
/// comes after the lapse rather than just before it.
const AFTER_LAPSE: Duration = Duration::from_millis(20);
/// Longest wait between renew attempts after a failure that may pass.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Which lease a session locks, for whom, and its timings. Start from
/// [`LockConfig::new`] and change fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// Namespace of the lease.
    pub namespace: String,
    /// Name of the lease.
    pub name: String,
    /// Holder identity; unique among the sessions that contend for the
    /// lease (hostname plus a process id, say).
    pub holder: String,
    /// Lease duration, whole seconds (the server stores seconds). It is
    /// renewed every third of it. Default 15 s.
    pub duration: Duration,
    /// How long the work needs to stop once the lock is lost: when renews
    /// keep failing, [`Lock::keep`] reports the loss this long before the
    /// validity deadline. Default 5 s.
    pub grace: Duration,
}

impl LockConfig {
    /// A configuration with the defaults of `leasehold lock`: duration
    /// 15 s, grace 5 s.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        holder: impl Into<String>,
    ) -> Self {
        LockConfig {
            namespace: namespace.into(),
            name: name.into(),
            holder: holder.into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }

    /// Checks what the session itself relies on: a duration of a positive
    /// whole number of seconds that fits the wire's `i32`. The names are the
    /// server's to judge (Kubernetes' rules): an invalid one fails the first
    /// acquire with [`LeaseClientError::Invalid`].
    pub fn validate(&self) -> Result<(), LeaseClientError> {
        if self.duration.is_zero()
            || self.duration.subsec_nanos() != 0
            || self.duration.as_secs() > i32::MAX as u64
        {
            return Err(LeaseClientError::Invalid {
                field: "duration".into(),
                reason: format!(
                    "{:?} must be a positive whole number of seconds",
                    self.duration
                ),
            });
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The renew timings of a lock of duration `d` whose work needs `grace` to
/// stop: renew every `d/3`, retry a failure within a second, and give up
/// `grace` before the validity deadline, but no sooner than `d/2` after the
/// last successful renew (one failed renew must not end the lock) and no
/// later than the validity deadline.
fn renewal(d: Duration, grace: Duration) -> Renewal {
    let epoch = Instant::now();
    let valid_for = validity_deadline(epoch, d) - epoch;
    let every = d / 3;
    Renewal {
        every,
        retry: every.min(MAX_RETRY),
        give_up_after: valid_for.saturating_sub(grace).max(d / 2).min(valid_for),
    }
}

/// Locks one lease for one holder. See the module documentation.
pub struct LockSession {
    client: Arc<Client>,
    config: LockConfig,
    holder: Holder,
}

impl LockSession {
    /// A session with `config` (validated).
    pub fn new(client: Arc<Client>, config: LockConfig) -> Result<Self, LeaseClientError> {
        config.validate()?;
        let holder = Holder::new(&config.namespace, &config.name, &config.holder);
        Ok(LockSession {
            client,
            config,
            holder,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LockConfig {
        &self.config
    }

    /// Acquires the lease, waiting as long as someone else holds it.
    ///
    /// Returns an error for what waiting cannot fix: an invalid name or
    /// holder ([`LeaseClientError::Invalid`]), or a failure of the acquire
    /// call itself once the client's deadline and failover are exhausted
    /// (`Unavailable`; `OutcomeUnknown`, after which
    /// [`LockSession::release_if_ours`] undoes an acquire that went
    /// through unseen).
    pub async fn acquire(&self) -> Result<Lock, LeaseClientError> {
        self.acquire_with(None, |_, _| {}).await
    }

    /// Like [`LockSession::acquire`], but stops waiting at `deadline`: if
    /// the lease is still held then, returns the holder's last refusal
    /// ([`LeaseClientError::Held`]). An acquire already sent is not cut
    /// short (it ends within the client's call deadline), so a deadline in
    /// the past means "try once".
    pub async fn acquire_until(&self, deadline: Instant) -> Result<Lock, LeaseClientError> {
        self.acquire_with(Some(deadline), |_, _| {}).await
    }

    /// The general form of [`LockSession::acquire`] and
    /// [`LockSession::acquire_until`]: `on_held` hears every refusal while
    /// waiting, with the current holder and how long, at the earliest,
    /// until the lease can pass on (to tell a user what it waits for).
    pub async fn acquire_with(
        &self,
        deadline: Option<Instant>,
        mut on_held: impl FnMut(&str, Duration),
    ) -> Result<Lock, LeaseClientError> {
        let mut endpoint = 0usize;
        let mut watch: Option<Streaming<pb::WatchEvent>> = None;
        loop {
            if watch.is_none() {
                let open = open_watch(&self.client, &mut endpoint, &self.holder);
                watch = match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), open).await.ok().flatten(),
                    None => open.await,
                };
            }
            // Opened before the attempt: whatever happens after the refusal
            // below reaches the watch.
            let sent = Instant::now();
            let r = self
                .client
                .acquire(self.holder.acquire_request(self.config.duration_seconds()))
                .await
                .map_err(LeaseClientError::from);
            let (holder, remaining) = match r {
                Ok(r) => return Ok(Lock::new(self, r.fencing_token, sent)),
                Err(LeaseClientError::Held { holder, remaining }) => (holder, remaining),
                Err(e) => return Err(e),
            };
            on_held(&holder, remaining);
            tracing::debug!(lease = %self.holder, %holder, ?remaining, "lease held; waiting");
            let mut until = Instant::now() + wait_bound(remaining);
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Err(LeaseClientError::Held { holder, remaining });
                }
                until = until.min(d);
            }
            wait_free(&mut watch, until).await;
        }
    }

    /// The fencing token of this holder's tenure, if it holds the lease
    /// now (an acquire may have gone through unseen).
    pub async fn held_token(&self) -> Result<Option<u64>, LeaseClientError> {
        self.holder.held_token(&self.client).await
    }

    /// Releases this holder's tenure with `token`. `Ok(false)` when there
    /// was nothing left to release (the tenure had ended or the lease was
    /// deleted). [`Lock::release`] is the usual way; this one is for a
    /// token learned from [`LockSession::held_token`].
    pub async fn release(&self, token: u64) -> Result<bool, LeaseClientError> {
        self.holder.release(&self.client, token).await
    }

    /// Releases the lease if this holder holds it: after an acquire was
    /// cancelled in flight or ended `OutcomeUnknown`, so the lease does not
    /// stay taken for a whole duration. `Ok(true)` if it released a tenure.
    pub async fn release_if_ours(&self) -> Result<bool, LeaseClientError> {
        match self.held_token().await? {
            Some(token) => self.release(token).await,
            None => Ok(false),
        }
    }
}

/// How long to wait for the lease to come free after a refusal that said
/// it can pass on in `remaining` at the earliest.
fn wait_bound(remaining: Duration) -> Duration {
    (remaining + AFTER_LAPSE).min(MAX_WAIT)
}

/// Opens a watch on the lease and waits for the server's first message:
/// the server subscribes to changes before it sends that, so once it
/// arrives no later change can be missed. Tries each endpoint once, from
/// `endpoint` on, and leaves `endpoint` at the one that answered.
async fn open_watch(
    client: &Client,
    endpoint: &mut usize,
    lease: &Holder,
) -> Option<Streaming<pb::WatchEvent>> {
    let n = client.endpoints().len().max(1);
    for _ in 0..n {
        let req = pb::WatchRequest {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            progress_notify: true,
            progress_interval_ms: 10_000,
            ..Default::default()
        };
        let idx = *endpoint;
        let attempt = async {
            let mut s = client.watch_on(idx, req).await.ok()?;
            match s.message().await {
                Ok(Some(_)) => Some(s),
                _ => None,
            }
        };
        if let Ok(Some(s)) = tokio::time::timeout(WATCH_OPEN_TIMEOUT, attempt).await {
            return Some(s);
        }
        *endpoint = (*endpoint + 1) % n;
    }
    None
}

/// Whether a watch event means the lease may have become free: it was
/// deleted or expired, or it changed to no holder (a release) or to an
/// expired one.
fn may_be_free(e: &pb::WatchEvent) -> bool {
    use pb::watch_event::Type;
    match Type::try_from(e.r#type) {
        Ok(Type::Deleted) | Ok(Type::Expired) => true,
        Ok(Type::Added) | Ok(Type::Modified) => {
            let Some(l) = e.lease.as_ref() else {
                return true;
            };
            let holder = l.spec.as_ref().map_or("", |s| s.holder_identity.as_str());
            holder.is_empty() || l.status.as_ref().is_some_and(|s| s.expired)
        }
        _ => false,
    }
}

/// Waits until the watch reports that the lease may be free, or `until`.
/// Without a (working) watch, waits at most [`FALLBACK_POLL`]; a watch that
/// breaks is dropped, and the next attempt opens another.
async fn wait_free(watch: &mut Option<Streaming<pb::WatchEvent>>, until: Instant) {
    loop {
        let Some(stream) = watch.as_mut() else {
            let t = until.min(Instant::now() + FALLBACK_POLL);
            tokio::time::sleep_until(t.into()).await;
            return;
        };
        match tokio::time::timeout_at(until.into(), stream.message()).await {
            Err(_) => return,
            Ok(Ok(Some(e))) => {
                if may_be_free(&e) {
                    return;
                }
            }
            Ok(_) => *watch = None,
        }
    }
}

/// A held lock: the tenure an acquire returned. Dropping it without
/// [`Lock::release`] leaves the lease to lapse after its duration.
pub struct Lock {
    client: Arc<Client>,
    holder: Holder,
    duration: Duration,
    grace: Duration,
    token: u64,
    acquired_at: Instant,
    /// Send time of the last successful acquire or renew.
    last_ok: Mutex<Instant>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("lease", &self.holder.to_string())
            .field("holder", &self.holder.identity)
            .field("fencing_token", &self.token)
            .field("last_renewed", &self.last_renewed())
            .finish_non_exhaustive()
    }
}

impl Lock {
    fn new(session: &LockSession, token: u64, sent: Instant) -> Self {
        Lock {
            client: session.client.clone(),
            holder: session.holder.clone(),
            duration: session.config.duration,
            grace: session.config.grace,
            token,
            acquired_at: sent,
            last_ok: Mutex::new(sent),
        }
    }

    /// The tenure's fencing token: pass it with every write to the
    /// protected resource.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The send time of the successful acquire.
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    /// The send time of the last successful acquire or renew.
    pub fn last_renewed(&self) -> Instant {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when the holder may act on the lock: the validity deadline of
    /// the last successful acquire or renew (see
    /// [`validity_deadline`]).
    pub fn valid_until(&self) -> Instant {
        validity_deadline(self.last_renewed(), self.duration)
    }

    /// Renews until the lock is lost, and says how (see the module
    /// documentation for the timings). Never returns while the lock holds:
    /// run it beside the work (`tokio::select!`) and drop it when the work
    /// is done. It can be called again after being dropped; it continues
    /// from the last successful renew.
    pub async fn keep(&self) -> Loss {
        let d = self.duration;
        let last_ok = self.last_renewed();
        let renewal = renewal(d, self.grace);
        let ended = tenure::keep(
            &self.client,
            &self.holder,
            self.token,
            last_ok,
            last_ok + renewal.every,
            renewal,
            |t| *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = t,
        )
        .await;
        let now = Instant::now();
        let (reason, stop_by) = match ended {
            Ok(Ended::Refused(e)) | Err(e) => (LossReason::Refused(e), now + self.grace),
            Ok(Ended::GaveUp { last_ok, at }) => (
                LossReason::Unrenewed {
                    since_renew: now.saturating_duration_since(last_ok),
                    valid_for: validity_deadline(last_ok, d) - last_ok,
                },
                at + self.grace,
            ),
        };
        Loss {
            reason,
            at: now,
            stop_by,
            valid_until: self.valid_until(),
        }
    }

    /// Releases the lock, so a waiting session takes over at once.
    /// `Ok(false)` when there was nothing left to release (the tenure had
    /// ended or the lease was deleted). Bounded by the client's call
    /// deadline; on an error the lease lapses after its duration.
    pub async fn release(self) -> Result<bool, LeaseClientError> {
        self.holder.release(&self.client, self.token).await
    }
}

/// Why a lock was lost.
#[derive(Debug, Clone)]
pub enum LossReason {
    /// A renew was refused: the tenure is over
    /// ([`LeaseClientError::Lost`], with the server's `lostReason`) or the
    /// lease was deleted ([`LeaseClientError::NotFound`]); or, which a
    /// renew of a tenure the server granted should never meet,
    /// [`LeaseClientError::Invalid`]. Another holder may hold the lease
    /// already: stop at once.
    Refused(LeaseClientError),
    /// No renew succeeded for `since_renew`; the lease is valid for
    /// `valid_for` after the last one, and the work needs the grace left.
    Unrenewed {
        /// Time since the send time of the last successful renew.
        since_renew: Duration,
        /// How long the lease stays valid after that send time:
        /// d × (1 − ρ).
        valid_for: Duration,
    },
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::Refused(e) => write!(f, "{e}"),
            LossReason::Unrenewed {
                since_renew,
                valid_for,
            } => write!(
                f,
                "no successful renew for {:.1} s (the lease is valid until {:.1} s after the last one)",
                since_renew.as_secs_f64(),
                valid_for.as_secs_f64()
            ),
        }
    }
}

/// A lost lock: why, and until when the work may still run.
#[derive(Debug, Clone)]
pub struct Loss {
    /// Why the lock was lost.
    pub reason: LossReason,
    /// When [`Lock::keep`] reported it.
    pub at: Instant,
    /// When the work must have stopped: the grace after the loss was due.
    /// After a refusal that is only a courtesy to the work (the fencing
    /// token protects the resource); after failed renews it is no later
    /// than the validity deadline unless the grace exceeds half the
    /// duration.
    pub stop_by: Instant,
    /// The validity deadline of the last successful acquire or renew.
    pub valid_until: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::watch_event::Type;

    fn event(kind: Type, holder: &str, expired: bool) -> pb::WatchEvent {
        pb::WatchEvent {
            r#type: kind as i32,
            lease: Some(pb::Lease {
                spec: Some(pb::LeaseSpec {
                    holder_identity: holder.into(),
                    ..Default::default()
                }),
                status: Some(pb::LeaseStatus {
                    expired,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_release_expiry_or_delete_may_free_the_lease() {
        assert!(may_be_free(&event(Type::Deleted, "a", false)));
        assert!(may_be_free(&event(Type::Expired, "a", true)));
        assert!(may_be_free(&event(Type::Modified, "", false)), "released");
        assert!(may_be_free(&event(Type::Modified, "a", true)), "expired");
        assert!(may_be_free(&event(Type::Added, "", false)));
    }

    #[test]
    fn a_held_lease_or_a_progress_note_keeps_the_wait() {
        assert!(!may_be_free(&event(Type::Modified, "a", false)), "renewed");
        assert!(!may_be_free(&event(Type::Added, "a", false)), "acquired");
        assert!(!may_be_free(&event(Type::Progress, "", false)));
        assert!(!may_be_free(&pb::WatchEvent {
            r#type: 99,
            ..Default::default()
        }));
    }

    #[test]
    fn a_wait_ends_just_after_the_lapse_but_not_much_later_than_a_minute() {
        assert_eq!(
            wait_bound(Duration::from_secs(2)),
            Duration::from_millis(2_020)
        );
        assert_eq!(wait_bound(Duration::ZERO), AFTER_LAPSE);
        assert_eq!(wait_bound(Duration::from_secs(3_600)), MAX_WAIT);
    }

    #[test]
    fn renewal_gives_up_grace_before_the_validity_deadline() {
        // The defaults: valid 14.85 s after a renew; give up 5 s before.
        let r = renewal(Duration::from_secs(15), Duration::from_secs(5));
        assert_eq!(r.every, Duration::from_secs(5));
        assert_eq!(r.retry, MAX_RETRY);
        assert_eq!(r.give_up_after, Duration::from_millis(9_850));
        // A grace longer than half the duration: still not before d/2.
        let r = renewal(Duration::from_secs(3), Duration::from_secs(5));
        assert_eq!(r.give_up_after, Duration::from_millis(1_500));
        assert_eq!(r.retry, MAX_RETRY);
        // No grace: at the validity deadline.
        let r = renewal(Duration::from_secs(1), Duration::ZERO);
        assert_eq!(r.give_up_after, Duration::from_millis(990));
        assert!(r.retry < MAX_RETRY, "retries at least every d/3");
    }

    #[test]
    fn config_needs_whole_positive_seconds() {
        let mut c = LockConfig::new("ns", "a", "me");
        assert_eq!(c.duration, Duration::from_secs(15));
        assert_eq!(c.grace, Duration::from_secs(5));
        c.validate().unwrap();
        for bad in [
            Duration::ZERO,
            Duration::from_millis(1_500),
            Duration::from_secs(i32::MAX as u64 + 1),
        ] {
            c.duration = bad;
            assert!(matches!(
                c.validate(),
                Err(LeaseClientError::Invalid { field, .. }) if field == "duration"
            ));
        }
    }

    #[test]
    fn loss_reasons_say_what_happened() {
        let lost = LossReason::Refused(LeaseClientError::Lost {
            reason: "EXPIRED".into(),
        });
        assert_eq!(lost.to_string(), "lease lost (EXPIRED)");
        let late = LossReason::Unrenewed {
            since_renew: Duration::from_millis(9_870),
            valid_for: Duration::from_millis(14_850),
        };
        assert_eq!(
            late.to_string(),
            "no successful renew for 9.9 s (the lease is valid until 14.8 s after the last one)"
        );
    }

    #[tokio::test]
    async fn a_session_checks_its_config() {
        let client = Arc::new(Client::new(vec!["127.0.0.1:1".into()]).unwrap());
        let mut c = LockConfig::new("ns", "a", "me");
        c.duration = Duration::ZERO;
        assert!(LockSession::new(client.clone(), c).is_err());
        let s = LockSession::new(client, LockConfig::new("ns", "a", "me")).unwrap();
        assert_eq!(s.config().holder, "me");
        // A session's futures can run on a spawned task.
        fn send<T: Send>(_: &T) {}
        send(&s.acquire());
        send(&s.release_if_ours());
        let sent = Instant::now();
        let lock = Lock::new(&s, 7, sent);
        send(&lock.keep());
        assert_eq!(lock.fencing_token(), 7);
        assert_eq!(lock.last_renewed(), sent);
        assert_eq!(lock.valid_until(), sent + Duration::from_millis(14_850));
    }
}
