//! Which leases are garbage-collected, and when.
//!
//! Two kinds of lease are deleted by the leader once they have been expired
//! long enough:
//! - server identity leases (label [`IDENTITY_LABEL`]), after a configured
//!   age (default one hour, as Kubernetes does for its API servers);
//! - any lease that opts in with the label [`GC_AFTER_EXPIRY_LABEL`], whose
//!   value is a duration such as `3600s`, `30m` or `1h`, after that long.
//!
//! "Expired" here is `renewTime + leaseDurationSeconds`, whether or not a
//! holder is still recorded. Pure: the caller supplies the identity age.

use super::apply::grantable_at;
use super::model::Lease;
use super::time::{Timestamp, MICROS_PER_SEC};

/// Label carried by server identity leases.
pub const IDENTITY_LABEL: &str = "leasehold.io/identity";
/// Opt-in label: delete the lease this long after it expired.
pub const GC_AFTER_EXPIRY_LABEL: &str = "leasehold.io/gc-after-expiry";

/// Parses a duration like `90s`, `15m`, `2h` or `1d` (a positive integer
/// and one unit) into microseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(unit_at);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(MICROS_PER_SEC)
}

/// When `lease` becomes garbage, if it is collectable at all.
pub fn collect_at(lease: &Lease, identity_age_micros: i64) -> Option<Timestamp> {
    let after = match lease
        .labels
        .get(GC_AFTER_EXPIRY_LABEL)
        .and_then(|v| parse_duration(v))
    {
        Some(age) => age,
        None if lease.labels.contains_key(IDENTITY_LABEL) => identity_age_micros,
        None => return None,
    };
    Some(
        lease
            .last_renewal()
            .plus_micros(lease.duration_micros())
            .plus_micros(after),
    )
}

/// When the collector's `Delete` of `lease` will be accepted: its
/// collection time, but not before a held lease could be granted to
/// another holder in the epoch that starts at `epoch_start` (`Delete` of a
/// held lease is refused until then, see `lease::apply`). Proposing earlier
/// would only add refused entries to the log, sweep after sweep.
pub fn deletable_at(
    lease: &Lease,
    identity_age_micros: i64,
    epoch_start: Timestamp,
) -> Option<Timestamp> {
    let at = collect_at(lease, identity_age_micros)?;
    Some(match grantable_at(lease, epoch_start) {
        Some(free) => at.max(free),
        None => at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{LeaseKey, LeaseSpec};
    use std::collections::BTreeMap;

    fn lease(labels: &[(&str, &str)]) -> Lease {
        Lease {
            key: LeaseKey::new("ns", "a"),
            uid: String::new(),
            resource_version: 1,
            creation_timestamp: Timestamp::from_micros(0),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            annotations: BTreeMap::new(),
            spec: LeaseSpec {
                holder_identity: Some("h".into()),
                lease_duration_seconds: Some(10),
                renew_time: Some(Timestamp::from_micros(5 * MICROS_PER_SEC)),
                ..Default::default()
            },
            fencing_token: 1,
            expired: false,
        }
    }

    #[test]
    fn a_held_lease_is_deletable_only_once_it_could_change_hands() {
        // Renewed at 5 s for 10 s, collectable 1 s after expiry (16 s); a
        // new epoch at 20 s makes the holder's tenure run to 30 s, and the
        // lease grantable at 30.1 s: the Delete waits for that.
        let l = lease(&[(GC_AFTER_EXPIRY_LABEL, "1s")]);
        let at = |s: f64| Timestamp::from_micros((s * MICROS_PER_SEC as f64) as i64);
        assert_eq!(deletable_at(&l, 0, at(0.0)), Some(at(16.0)));
        assert_eq!(deletable_at(&l, 0, at(20.0)), Some(at(30.1)));
        let mut free = l.clone();
        free.spec.holder_identity = None;
        assert_eq!(deletable_at(&free, 0, at(20.0)), Some(at(16.0)));
        assert_eq!(deletable_at(&lease(&[]), 0, at(0.0)), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Some(90 * MICROS_PER_SEC));
        assert_eq!(parse_duration("15m"), Some(900 * MICROS_PER_SEC));
        assert_eq!(parse_duration("2h"), Some(7200 * MICROS_PER_SEC));
        assert_eq!(parse_duration("1d"), Some(86_400 * MICROS_PER_SEC));
        for bad in ["", "s", "10", "0s", "-1s", "1.5h", "10x", "1h30m"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn identity_and_opt_in_leases_are_collected_after_their_age() {
        let hour = 3600 * MICROS_PER_SEC;
        // renewed at 5 s, duration 10 s: expired at 15 s.
        let id = lease(&[(IDENTITY_LABEL, "leasehold")]);
        assert_eq!(
            collect_at(&id, hour),
            Some(Timestamp::from_micros(15 * MICROS_PER_SEC + hour))
        );
        let opt = lease(&[(GC_AFTER_EXPIRY_LABEL, "30s")]);
        assert_eq!(
            collect_at(&opt, hour),
            Some(Timestamp::from_micros(45 * MICROS_PER_SEC))
        );
        // The explicit label wins over the identity default.
        let both = lease(&[(IDENTITY_LABEL, "x"), (GC_AFTER_EXPIRY_LABEL, "1m")]);
        assert_eq!(
            collect_at(&both, hour),
            Some(Timestamp::from_micros(75 * MICROS_PER_SEC))
        );
        assert_eq!(collect_at(&lease(&[]), hour), None);
        assert_eq!(
            collect_at(&lease(&[(GC_AFTER_EXPIRY_LABEL, "soon")]), hour),
            None
        );
    }
}
