//! Leader election on one lease, with client-go's semantics and Leasehold's
//! timing guarantee.
//!
//! Every candidate runs a [`LeaderElector`] with its own identity on the same
//! lease. The elector
//! - *campaigns*: tries `Acquire` every `retry_period` (times a random factor
//!   in `[1, jitter_factor)`, so candidates do not call in lockstep) until it
//!   gets the lease; each refusal names the current holder, which is reported
//!   as [`LeaderEvent::NewLeader`] when it changes;
//! - *leads*: renews (with its fencing token) every `retry_period`. It stops
//!   leading, and says so with [`LeaderEvent::StoppedLeading`], when a renew
//!   is refused (`LEASE_LOST`: the tenure is over) or when no renew has
//!   succeeded for `renew_deadline` since the *send time* of the last one
//!   that did. Validation insists on `renew_deadline < lease_duration·(1−ρ)`,
//!   so the elector steps down before the lease could be granted to anyone
//!   else (see [`validity_deadline`]);
//! - campaigns again after stepping down (client-go's `Run` returns instead;
//!   a program that wants that can stop on the first `StoppedLeading`);
//! - on cancellation, stops leading and (with `release_on_cancel`) releases
//!   the lease so a successor takes over at its next retry instead of
//!   waiting a whole lease duration.
//!
//! Events are delivered asynchronously on an unbounded channel, so a busy
//! consumer may see `StoppedLeading` a little after the elector decided.
//! Code that acts on the protected resource should therefore check
//! [`ElectorHandle::is_leader`] (which also compares the validity deadline
//! with the clock at the moment of the call) and pass
//! [`ElectorHandle::fencing_token`] along with every write, so the resource
//! can refuse a former leader ([`super::fence::Fence`]). Stop your own work
//! before cancelling the elector: the release lets a successor start at once.

use super::errors::LeaseClientError;
use super::fence::validity_deadline;
use super::tenure::{self, Ended, Holder, Renewal};
use super::Client;
use leasehold_proto::CLOCK_RATE_BOUND_PPM;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// How an elector behaves. Start from [`ElectorConfig::new`] (client-go's
/// defaults) and change fields as needed; [`ElectorConfig::validate`] says
/// what is wrong with a combination.
#[derive(Debug, Clone)]
pub struct ElectorConfig {
    /// Namespace of the election lease.
    pub namespace: String,
    /// Name of the election lease.
    pub name: String,
    /// This candidate's identity; unique among candidates (hostname plus a
    /// process id or uuid). It becomes the lease's holder.
    pub identity: String,
    /// Lease duration: how long after a leader's last successful renew
    /// the others must wait before one of them can take over when it stops
    /// renewing. Whole seconds (the server stores seconds). Default 15 s.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renew,
    /// counted from the send time of the last successful one. Default 10 s.
    pub renew_deadline: Duration,
    /// Time between acquire attempts while campaigning and between renewals
    /// while leading. Default 2 s.
    pub retry_period: Duration,
    /// Campaign attempts wait `retry_period × (1 + r × (jitter_factor − 1))`,
    /// r uniform in [0, 1). Default 1.2.
    pub jitter_factor: f64,
    /// Release the lease on cancellation so a successor need not wait for
    /// it to lapse. Default true.
    pub release_on_cancel: bool,
}

impl ElectorConfig {
    /// A configuration with client-go's defaults: lease duration 15 s, renew
    /// deadline 10 s, retry period 2 s, jitter 1.2, release on cancel.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        ElectorConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            jitter_factor: 1.2,
            release_on_cancel: true,
        }
    }

    /// Checks the configuration as client-go does (every duration positive,
    /// `lease_duration > renew_deadline > jitter_factor × retry_period`,
    /// identity set), plus what Leasehold needs: a whole number of seconds
    /// for the lease, and `renew_deadline < lease_duration × (1 − ρ)` so the
    /// leader steps down before its validity deadline.
    pub fn validate(&self) -> Result<(), LeaseClientError> {
        let invalid = |field: &str, reason: String| {
            Err(LeaseClientError::Invalid {
                field: field.to_string(),
                reason,
            })
        };
        if self.namespace.is_empty() {
            return invalid("namespace", "must not be empty".into());
        }
        if self.name.is_empty() {
            return invalid("name", "must not be empty".into());
        }
        if self.identity.is_empty() {
            return invalid(
                "identity",
                "must not be empty; use something unique per candidate, e.g. hostname-pid".into(),
            );
        }
        for (field, d) in [
            ("leaseDuration", self.lease_duration),
            ("renewDeadline", self.renew_deadline),
            ("retryPeriod", self.retry_period),
        ] {
            if d.is_zero() {
                return invalid(field, "must be greater than zero".into());
            }
        }
        if self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.as_secs() > i32::MAX as u64
        {
            return invalid(
                "leaseDuration",
                format!(
                    "{:?} is not a whole number of seconds (between 1 and {}); the server stores lease durations in seconds",
                    self.lease_duration,
                    i32::MAX
                ),
            );
        }
        if !self.jitter_factor.is_finite() || self.jitter_factor < 1.0 {
            return invalid(
                "jitterFactor",
                format!("{} must be a number >= 1.0", self.jitter_factor),
            );
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid(
                "leaseDuration",
                format!(
                    "{:?} must be greater than renewDeadline ({:?})",
                    self.lease_duration, self.renew_deadline
                ),
            );
        }
        let now = Instant::now();
        let valid_for = validity_deadline(now, self.lease_duration) - now;
        if self.renew_deadline >= valid_for {
            return invalid(
                "renewDeadline",
                format!(
                    "{:?} must be less than leaseDuration × (1 − {}) = {:?}, or the leader could still act after its lease was granted to another",
                    self.renew_deadline,
                    CLOCK_RATE_BOUND_PPM as f64 / 1e6,
                    valid_for
                ),
            );
        }
        let max_retry = self.retry_period.mul_f64(self.jitter_factor);
        if self.renew_deadline <= max_retry {
            return invalid(
                "renewDeadline",
                format!(
                    "{:?} must be greater than retryPeriod × jitterFactor ({:?}), or a leader could miss its deadline between two attempts",
                    self.renew_deadline, max_retry
                ),
            );
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Why an elector stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A renew was refused: the tenure is over (`lostReason` from the
    /// server: `EXPIRED`, `OTHER_HOLDER`, `STALE_TOKEN`, `NO_HOLDER`).
    Lost(String),
    /// The lease was deleted.
    Deleted,
    /// No renew succeeded within `renew_deadline` (cluster unreachable or
    /// too slow); the leader steps down before its lease can be granted to
    /// another candidate.
    RenewDeadline,
    /// The elector was cancelled.
    Cancelled,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Lost(r) => write!(f, "lease lost ({r})"),
            StopReason::Deleted => write!(f, "lease deleted"),
            StopReason::RenewDeadline => write!(f, "no successful renew within the renew deadline"),
            StopReason::Cancelled => write!(f, "cancelled"),
        }
    }
}

/// What an elector reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderEvent {
    /// This candidate leads. Attach `fencing_token` to every write to the
    /// protected resource.
    StartedLeading {
        /// The tenure's fencing token.
        fencing_token: u64,
        /// When the elector started leading (its monotonic clock).
        at: Instant,
        /// Validity deadline of the acquire; later renewals extend it (see
        /// [`ElectorHandle::valid_until`]).
        valid_until: Instant,
    },
    /// This candidate no longer leads: stop acting as leader now.
    StoppedLeading {
        /// Why.
        reason: StopReason,
        /// When the elector stopped treating itself as leader.
        at: Instant,
    },
    /// The holder of the lease changed, as observed by this candidate
    /// (including when it becomes the leader itself).
    NewLeader {
        /// The new leader's identity.
        identity: String,
    },
}

/// The current tenure of a leading elector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    /// The tenure's fencing token.
    pub fencing_token: u64,
    /// When the elector started leading.
    pub since: Instant,
    /// Send time of the last successful acquire or renew + d·(1 − ρ).
    pub valid_until: Instant,
}

#[derive(Debug, Default)]
struct State {
    tenure: Option<Tenure>,
    leader: Option<String>,
}

/// A cheap, cloneable view of an elector's state, usable from any thread
/// while the elector runs (and after it stopped).
#[derive(Debug, Clone)]
pub struct ElectorHandle {
    state: Arc<Mutex<State>>,
    identity: String,
}

impl ElectorHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this candidate leads right now: it has not stepped down and
    /// its validity deadline has not passed. The second condition makes the
    /// answer safe even if the elector's task is stalled or was aborted.
    pub fn is_leader(&self) -> bool {
        self.tenure().is_some()
    }

    /// The current tenure, if [`ElectorHandle::is_leader`].
    pub fn tenure(&self) -> Option<Tenure> {
        self.lock()
            .tenure
            .filter(|t| Instant::now() < t.valid_until)
    }

    /// The fencing token of the current tenure, if leading.
    pub fn fencing_token(&self) -> Option<u64> {
        self.tenure().map(|t| t.fencing_token)
    }

    /// Until when this candidate may act as leader, if leading.
    pub fn valid_until(&self) -> Option<Instant> {
        self.tenure().map(|t| t.valid_until)
    }

    /// The last leader this candidate observed (itself while leading).
    pub fn leader(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// A candidate in a leader election. See the module documentation.
pub struct LeaderElector {
    client: Arc<Client>,
    config: ElectorConfig,
    /// The lease and identity of `config`, which sends the requests.
    holder: Holder,
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedSender<LeaderEvent>,
    /// The token while leading (also after a cancellation interrupted the
    /// renew loop, until released).
    token: Option<u64>,
    /// An acquire may have succeeded without us learning it (it timed out,
    /// the cluster was unavailable, or it was cancelled in flight).
    maybe_held: bool,
}

/// Renews within a tenure are sent no earlier than this after each other,
/// whatever the configuration, so a tiny retry period cannot flood the
/// cluster.
const MIN_RETRY: Duration = Duration::from_millis(10);

/// Bound on the release sent on cancellation.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

impl LeaderElector {
    /// An elector for `config` (validated) and the receiver of its events.
    pub fn new(
        client: Arc<Client>,
        config: ElectorConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LeaderEvent>), LeaseClientError> {
        config.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let holder = Holder::new(&config.namespace, &config.name, &config.identity);
        Ok((
            LeaderElector {
                client,
                config,
                holder,
                state: Arc::default(),
                events: tx,
                token: None,
                maybe_held: false,
            },
            rx,
        ))
    }

    /// A handle to query the elector's state.
    pub fn handle(&self) -> ElectorHandle {
        ElectorHandle {
            state: self.state.clone(),
            identity: self.config.identity.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ElectorConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, e: LeaderEvent) {
        // Nobody listening is fine: the handle still tells the state.
        let _ = self.events.send(e);
    }

    fn observe(&self, holder: &str) {
        let changed = {
            let mut s = self.lock();
            if s.leader.as_deref() != Some(holder) && !holder.is_empty() {
                s.leader = Some(holder.to_string());
                true
            } else {
                false
            }
        };
        if changed {
            tracing::info!(lease = %self.holder, leader = %holder, "new leader observed");
            self.emit(LeaderEvent::NewLeader {
                identity: holder.to_string(),
            });
        }
    }

    /// Campaigns, leads, steps down and campaigns again until `cancel`
    /// resolves; then steps down and releases (see `release_on_cancel`).
    /// Returns an error only for what retrying cannot fix (an invalid lease
    /// name, say); every other failure is logged and retried.
    pub async fn run<F>(mut self, cancel: F) -> Result<(), LeaseClientError>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(cancel);
        let result = loop {
            let won = tokio::select! {
                biased;
                _ = &mut cancel => break Ok(()),
                r = self.campaign() => r,
            };
            let (token, sent) = match won {
                Ok(w) => w,
                Err(e) => break Err(e),
            };
            let outcome = tokio::select! {
                biased;
                _ = &mut cancel => None,
                r = self.lead(token, sent) => Some(r),
            };
            match outcome {
                None => break Ok(()),
                Some(Ok(reason)) => {
                    self.step_down(reason);
                    // Campaign again right away: if the lease is still ours
                    // (the cluster was only slow), the next acquire renews it
                    // and we lead again with the same token.
                }
                Some(Err(e)) => {
                    self.step_down(StopReason::Lost(e.to_string()));
                    break Err(e);
                }
            }
        };
        if self.lock().tenure.is_some() {
            self.step_down(StopReason::Cancelled);
        }
        if self.config.release_on_cancel {
            self.release().await;
        }
        result
    }

    /// Tries to acquire until it succeeds; returns the token and the send
    /// time of the successful call.
    async fn campaign(&mut self) -> Result<(u64, Instant), LeaseClientError> {
        loop {
            let req = self.holder.acquire_request(self.config.duration_seconds());
            let sent = Instant::now();
            self.maybe_held = true;
            // Bounded by the renew deadline, so a success always leaves time
            // to lead before the first renew is due.
            match tokio::time::timeout(self.config.renew_deadline, self.client.acquire(req)).await {
                Ok(Ok(r)) => {
                    self.token = Some(r.fencing_token);
                    return Ok((r.fencing_token, sent));
                }
                Ok(Err(s)) => match LeaseClientError::from(s) {
                    LeaseClientError::Held { holder, .. } => {
                        self.maybe_held = false;
                        self.observe(&holder);
                    }
                    e @ LeaseClientError::Invalid { .. } => {
                        self.maybe_held = false;
                        return Err(e);
                    }
                    e => {
                        tracing::debug!(lease = %self.holder, "acquire failed, will retry: {e}")
                    }
                },
                Err(_) => {
                    tracing::debug!(lease = %self.holder, "acquire timed out, will retry")
                }
            }
            let wait = jittered(
                self.config.retry_period,
                self.config.jitter_factor,
                &self.config.identity,
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Leads until the tenure ends; returns why.
    async fn lead(&mut self, token: u64, sent: Instant) -> Result<StopReason, LeaseClientError> {
        let d = self.config.lease_duration;
        let started = Instant::now();
        let valid_until = validity_deadline(sent, d);
        self.lock().tenure = Some(Tenure {
            fencing_token: token,
            since: started,
            valid_until,
        });
        self.observe(&self.config.identity.clone());
        tracing::info!(lease = %self.holder, identity = %self.config.identity, token, "started leading");
        self.emit(LeaderEvent::StartedLeading {
            fencing_token: token,
            at: started,
            valid_until,
        });
        let every = self.config.retry_period.max(MIN_RETRY);
        let renewal = Renewal {
            every,
            retry: every,
            give_up_after: self.config.renew_deadline,
        };
        let first = Instant::now() + every;
        let ended = tenure::keep(
            &self.client,
            &self.holder,
            token,
            sent,
            first,
            renewal,
            |t| {
                if let Some(tenure) = self.lock().tenure.as_mut() {
                    tenure.valid_until = validity_deadline(t, d);
                }
            },
        )
        .await?;
        match ended {
            Ended::GaveUp { .. } => Ok(StopReason::RenewDeadline),
            Ended::Refused(e) => {
                self.token = None;
                self.maybe_held = false;
                Ok(match e {
                    LeaseClientError::Lost { reason } => StopReason::Lost(reason),
                    _ => StopReason::Deleted,
                })
            }
        }
    }

    fn step_down(&self, reason: StopReason) {
        let at = Instant::now();
        let was = self.lock().tenure.take();
        if was.is_some() {
            tracing::info!(lease = %self.holder, identity = %self.config.identity, %reason, "stopped leading");
            self.emit(LeaderEvent::StoppedLeading { reason, at });
        }
    }

    /// Gives the lease up if we hold it (or may hold it), so a successor
    /// need not wait for it to lapse. Best effort: failures are logged.
    async fn release(&mut self) {
        let timeout = self.config.renew_deadline.min(RELEASE_TIMEOUT);
        let token = match self.token {
            Some(t) => Some(t),
            // An acquire may have gone through unseen: look.
            None if self.maybe_held => {
                let held = self.holder.held_token(&self.client);
                tokio::time::timeout(timeout, held)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
            None => None,
        };
        let Some(token) = token else { return };
        let release = self.holder.release(&self.client, token);
        match tokio::time::timeout(timeout, release).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.holder, identity = %self.config.identity, "released")
            }
            // Nothing left to give up.
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.holder, "release failed; successors wait for the lease to lapse: {e}")
            }
            Err(_) => {
                tracing::warn!(lease = %self.holder, "release timed out; successors wait for the lease to lapse")
            }
        }
        self.token = None;
        self.maybe_held = false;
    }
}

/// A number in [0, 1) that differs between calls, processes and identities.
///
/// Only spreads retries out; not for anything security-related. Uses std
/// only: `RandomState` is seeded randomly per process and changes with each
/// instance, and the time, `seed` and a counter are mixed in.
pub(crate) fn random_fraction(seed: &str) -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `period × (1 + r × (factor − 1))`, r uniform in [0, 1).
pub(crate) fn jittered(period: Duration, factor: f64, seed: &str) -> Duration {
    let spread = if factor.is_finite() {
        (factor - 1.0).max(0.0)
    } else {
        0.0
    };
    period.mul_f64(1.0 + random_fraction(seed) * spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ElectorConfig {
        ElectorConfig::new("ns", "lead", "me")
    }

    fn field(r: Result<(), LeaseClientError>) -> String {
        match r {
            Err(LeaseClientError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_client_go_and_valid() {
        let c = cfg();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.jitter_factor, 1.2);
        assert!(c.release_on_cancel);
        c.validate().unwrap();
    }

    #[test]
    fn validation_follows_client_go() {
        let mut c = cfg();
        c.identity.clear();
        assert_eq!(field(c.validate()), "identity");

        let mut c = cfg();
        c.renew_deadline = Duration::from_secs(15);
        assert_eq!(field(c.validate()), "leaseDuration");

        let mut c = cfg();
        c.retry_period = Duration::from_secs(9);
        // 9 s × 1.2 > 10 s
        assert_eq!(field(c.validate()), "renewDeadline");

        let mut c = cfg();
        c.retry_period = Duration::ZERO;
        assert_eq!(field(c.validate()), "retryPeriod");

        let mut c = cfg();
        c.lease_duration = Duration::from_millis(15_500);
        assert_eq!(field(c.validate()), "leaseDuration");

        let mut c = cfg();
        c.jitter_factor = 0.5;
        assert_eq!(field(c.validate()), "jitterFactor");
    }

    #[test]
    fn renew_deadline_must_end_before_the_validity_deadline() {
        let mut c = cfg();
        c.lease_duration = Duration::from_secs(10);
        c.renew_deadline = Duration::from_millis(9_950);
        c.retry_period = Duration::from_secs(1);
        assert_eq!(field(c.validate()), "renewDeadline");
        c.renew_deadline = Duration::from_millis(9_800);
        c.validate().unwrap();
        // The short timings the tests use.
        let mut c = cfg();
        c.lease_duration = Duration::from_secs(3);
        c.renew_deadline = Duration::from_secs(2);
        c.retry_period = Duration::from_millis(500);
        c.validate().unwrap();
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let p = Duration::from_secs(2);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(p, 1.2, "me")).collect();
        assert!(samples
            .iter()
            .all(|d| *d >= p && *d < Duration::from_millis(2_400)));
        let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter barely varies: {distinct:?}");
        assert_eq!(jittered(p, 1.0, "me"), p);
    }

    #[tokio::test]
    async fn handle_reports_no_leadership_after_the_validity_deadline() {
        let (e, _rx) = LeaderElector::new(
            Arc::new(Client::new(vec!["127.0.0.1:1".into()]).unwrap()),
            cfg(),
        )
        .unwrap();
        let h = e.handle();
        assert!(!h.is_leader());
        let now = Instant::now();
        e.lock().tenure = Some(Tenure {
            fencing_token: 7,
            since: now,
            valid_until: now + Duration::from_millis(50),
        });
        assert!(h.is_leader());
        assert_eq!(h.fencing_token(), Some(7));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !h.is_leader(),
            "a stalled elector must not look like a leader"
        );
        assert_eq!(h.fencing_token(), None);
    }
}
