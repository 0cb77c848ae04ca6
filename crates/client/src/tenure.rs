//! What every holder of a lease does, whatever it holds the lease for: the
//! requests it sends, keeping a tenure renewed, looking up whether it holds
//! the lease, and giving it up.
//!
//! [`LeaderElector`](super::elector::LeaderElector),
//! [`Heartbeat`](super::heartbeat::Heartbeat) and
//! [`LockSession`](super::lock::LockSession) differ in *when* they acquire
//! and what they do on a loss; the renew loop and the release below are the
//! same for all three, so they live here once.

use super::errors::LeaseClientError;
use super::Client;
use leasehold_proto::v1 as pb;
use std::time::{Duration, Instant};

/// One holder identity on one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub namespace: String,
    pub name: String,
    /// The holder identity sent with every call.
    pub identity: String,
}

impl std::fmt::Display for Holder {
    /// `NAMESPACE/NAME`, as logs and messages name a lease.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Holder {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Holder {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// An acquire for `duration_seconds` (no request id: the client adds
    /// one per call).
    pub fn acquire_request(&self, duration_seconds: i32) -> pb::AcquireRequest {
        pb::AcquireRequest {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            holder: self.identity.clone(),
            lease_duration_seconds: duration_seconds,
            ..Default::default()
        }
    }

    /// A renew of the tenure with `token`.
    pub fn renew_request(&self, token: u64) -> pb::RenewRequest {
        pb::RenewRequest {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            holder: self.identity.clone(),
            fencing_token: token,
            ..Default::default()
        }
    }

    /// A release of the tenure with `token`.
    pub fn release_request(&self, token: u64) -> pb::ReleaseRequest {
        pb::ReleaseRequest {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            holder: self.identity.clone(),
            fencing_token: token,
            ..Default::default()
        }
    }

    /// The fencing token of this holder's tenure, if it holds the lease
    /// now. For a holder that may have acquired without learning it (the
    /// answer was lost, or the call was cancelled in flight).
    pub async fn held_token(&self, client: &Client) -> Result<Option<u64>, LeaseClientError> {
        let r = client
            .get(pb::GetRequest {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                ..Default::default()
            })
            .await?;
        Ok(held_by(r.lease.as_ref(), &self.identity))
    }

    /// Releases the tenure with `token`. `Ok(false)` when there was nothing
    /// to give up any more (the tenure ended, or the lease was deleted):
    /// either way the holder no longer holds it.
    pub async fn release(&self, client: &Client, token: u64) -> Result<bool, LeaseClientError> {
        match client.release(self.release_request(token)).await {
            Ok(_) => Ok(true),
            Err(s) => match LeaseClientError::from(s) {
                LeaseClientError::Lost { .. } | LeaseClientError::NotFound => Ok(false),
                e => Err(e),
            },
        }
    }
}

/// The fencing token of `identity`'s tenure of `lease`, if it holds it.
pub(crate) fn held_by(lease: Option<&pb::Lease>, identity: &str) -> Option<u64> {
    let l = lease?;
    let holder = l.spec.as_ref().map(|s| s.holder_identity.as_str())?;
    if holder.is_empty() || holder != identity {
        return None;
    }
    // Token 0 is what a lease without a holder carries: never a tenure.
    l.status
        .as_ref()
        .map(|s| s.fencing_token)
        .filter(|t| *t > 0)
}

/// When a holder renews.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal {
    /// Time between two renewals after a success, counted from the send
    /// time of the successful one.
    pub every: Duration,
    /// Time before the next attempt after a failure that may pass,
    /// counted from the send time of the failed one.
    pub retry: Duration,
    /// The holder gives up when no renew has succeeded for this long since
    /// the send time of the last one that did (the acquire, at first).
    pub give_up_after: Duration,
}

/// How keeping a tenure ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// A renew was refused: `Lost` (the tenure is over) or `NotFound` (the
    /// lease was deleted).
    Refused(LeaseClientError),
    /// No renew succeeded within [`Renewal::give_up_after`].
    GaveUp {
        /// The send time of the last successful acquire or renew.
        last_ok: Instant,
        /// When the holder gave up: `last_ok + give_up_after`.
        at: Instant,
    },
}

/// Renews the tenure with `token` from `first` on, as `renewal` says,
/// until a renew is refused or the holder must give up; `renewed` hears the
/// send time of every successful renew. `last_ok` is the send time of the
/// acquire (or of the last successful renew).
///
/// A renew in flight is cut short when the give-up time comes: a late
/// success could not be trusted by then anyway. Failures that may pass
/// (the cluster unreachable, slow, electing) are retried; an invalid
/// request is returned as an error, since retrying cannot fix it.
pub(crate) async fn keep(
    client: &Client,
    holder: &Holder,
    token: u64,
    mut last_ok: Instant,
    first: Instant,
    renewal: Renewal,
    mut renewed: impl FnMut(Instant),
) -> Result<Ended, LeaseClientError> {
    let mut next = first;
    loop {
        let give_up = last_ok + renewal.give_up_after;
        tokio::time::sleep_until(next.min(give_up).into()).await;
        let now = Instant::now();
        if now >= give_up {
            return Ok(Ended::GaveUp {
                last_ok,
                at: give_up,
            });
        }
        let call = client.renew(holder.renew_request(token));
        match tokio::time::timeout_at(give_up.into(), call).await {
            // The loop gives up at the top.
            Err(_) => next = give_up,
            Ok(Ok(_)) => {
                last_ok = now;
                next = now + renewal.every;
                renewed(now);
            }
            Ok(Err(s)) => match LeaseClientError::from(s) {
                e @ (LeaseClientError::Lost { .. } | LeaseClientError::NotFound) => {
                    return Ok(Ended::Refused(e))
                }
                e @ LeaseClientError::Invalid { .. } => return Err(e),
                e => {
                    tracing::warn!(lease = %holder, "renew failed, will retry until {:?} after the last successful one: {e}", renewal.give_up_after);
                    next = now + renewal.retry;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, token: u64) -> pb::Lease {
        pb::Lease {
            spec: Some(pb::LeaseSpec {
                holder_identity: holder.into(),
                ..Default::default()
            }),
            status: Some(pb::LeaseStatus {
                fencing_token: token,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn held_by_names_only_the_holders_own_tenure() {
        assert_eq!(held_by(Some(&lease("me", 7)), "me"), Some(7));
        assert_eq!(held_by(Some(&lease("other", 7)), "me"), None);
        assert_eq!(held_by(Some(&lease("", 0)), ""), None);
        assert_eq!(held_by(Some(&lease("me", 0)), "me"), None);
        assert_eq!(held_by(Some(&pb::Lease::default()), "me"), None);
        assert_eq!(held_by(None, "me"), None);
    }

    #[test]
    fn requests_carry_the_holder_and_the_token() {
        let h = Holder::new("ns", "a", "me");
        assert_eq!(h.to_string(), "ns/a");
        let a = h.acquire_request(15);
        assert_eq!(
            (a.namespace.as_str(), a.name.as_str(), a.holder.as_str()),
            ("ns", "a", "me")
        );
        assert_eq!(a.lease_duration_seconds, 15);
        assert!(a.request_id.is_empty(), "the client chooses the request id");
        assert_eq!(h.renew_request(9).fencing_token, 9);
        assert_eq!(h.release_request(9).fencing_token, 9);
    }
}
