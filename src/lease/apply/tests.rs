//! Unit tests of `apply`: every rule of the lease semantics, with exact
//! assertions on the returned effects and errors.

use super::*;
use crate::lease::time::MICROS_PER_SEC;
use std::collections::HashMap;

/// 2024-05-01T12:00:00Z, the start of every test's timeline.
const T0: i64 = 1_714_564_800_000_000;
const SEC: i64 = MICROS_PER_SEC;
const NS: &str = "default";

/// `T0 + micros`.
fn t(micros: i64) -> Timestamp {
    Timestamp::from_micros(T0 + micros)
}

/// A context at `revision` and `T0 + now_micros`, in an epoch that started at
/// `T0` (before every lease in these tests, so it never matters unless a test
/// says so).
fn ctx(revision: u64, now_micros: i64) -> ApplyContext {
    ApplyContext {
        revision,
        now: t(now_micros),
        epoch_start: t(0),
    }
}

/// Like [`ctx`], with an explicit epoch start.
fn ctx_epoch(revision: u64, now_micros: i64, epoch_micros: i64) -> ApplyContext {
    ApplyContext {
        revision,
        now: t(now_micros),
        epoch_start: t(epoch_micros),
    }
}

fn key(name: &str) -> LeaseKey {
    LeaseKey::new(NS, name)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn acquire_cmd(name: &str, holder: &str, duration_seconds: i32) -> Command {
    Command::Acquire {
        key: key(name),
        holder: holder.to_string(),
        duration_seconds,
        labels: labels(&[("app", "web")]),
    }
}

fn renew_cmd(name: &str, holder: &str, fencing_token: u64) -> Command {
    Command::Renew {
        key: key(name),
        holder: holder.to_string(),
        fencing_token,
    }
}

fn release_cmd(name: &str, holder: &str, fencing_token: u64) -> Command {
    Command::Release {
        key: key(name),
        holder: holder.to_string(),
        fencing_token,
    }
}

fn delete_cmd(name: &str, resource_version: Option<u64>) -> Command {
    Command::Delete {
        key: key(name),
        resource_version,
        uid: None,
    }
}

fn draft(name: &str, resource_version: u64, holder: Option<&str>) -> LeaseDraft {
    LeaseDraft {
        key: key(name),
        resource_version,
        uid: None,
        labels: labels(&[("tier", "db")]),
        annotations: labels(&[("note", "free text")]),
        spec: LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            acquire_time: Some(t(0)),
            renew_time: Some(t(0)),
            lease_transitions: Some(3),
            strategy: None,
            preferred_holder: None,
        },
    }
}

fn put_cmd(d: LeaseDraft) -> Command {
    Command::Put { draft: d }
}

/// The written lease and the (created, newly_acquired) flags; panics on any
/// other outcome.
fn write(cmd: &Command, current: Option<&Lease>, c: &ApplyContext) -> (Lease, bool, bool) {
    match apply(cmd, current, None, c) {
        Ok(Effect::Write {
            lease,
            created,
            newly_acquired,
            ..
        }) => (lease, created, newly_acquired),
        other => panic!("expected Effect::Write for {cmd:?}, got {other:?}"),
    }
}

/// The refusal; panics if the command succeeded.
fn refused(cmd: &Command, current: Option<&Lease>, c: &ApplyContext) -> LeaseError {
    match apply(cmd, current, None, c) {
        Err(e) => e,
        Ok(effect) => panic!("expected a refusal for {cmd:?}, got {effect:?}"),
    }
}

/// A lease acquired by `holder` for `d` seconds at revision `rev`, time
/// `T0 + at_micros`, starting from nothing.
fn acquired(name: &str, holder: &str, d: i32, rev: u64, at_micros: i64) -> Lease {
    let (lease, created, newly) = write(&acquire_cmd(name, holder, d), None, &ctx(rev, at_micros));
    assert!(created && newly);
    lease
}

fn lost_reason(e: LeaseError) -> LostReason {
    match e {
        LeaseError::Lost { key: k, reason } => {
            assert_eq!(k, key("l"));
            reason
        }
        other => panic!("expected LeaseError::Lost, got {other:?}"),
    }
}

/// The margin ρ·d for a duration of `d` seconds, in microseconds.
fn margin(d: i64) -> i64 {
    d * SEC * CLOCK_RATE_BOUND_PPM / 1_000_000
}

// ---------------------------------------------------------------- acquire

#[test]
fn acquire_creates_a_missing_lease() {
    let c = ctx(7, 0);
    let (lease, created, newly) = write(&acquire_cmd("l", "a", 10), None, &c);
    assert!(created);
    assert!(newly);
    assert_eq!(lease.key, key("l"));
    assert_eq!(lease.fencing_token, 7);
    assert_eq!(lease.resource_version, 7);
    assert_eq!(lease.creation_timestamp, t(0));
    assert_eq!(lease.labels, labels(&[("app", "web")]));
    assert!(lease.annotations.is_empty());
    assert_eq!(
        lease.spec,
        LeaseSpec {
            holder_identity: Some("a".to_string()),
            lease_duration_seconds: Some(10),
            acquire_time: Some(t(0)),
            renew_time: Some(t(0)),
            lease_transitions: Some(0),
            strategy: None,
            preferred_holder: None,
        }
    );
    assert_eq!(lease.holder(), Some("a"));
    assert_eq!(lease.expire_time(), Some(t(10 * SEC)));

    // The uid is derived from key and revision: deterministic, shaped like a
    // UUID, and different for another revision or another key.
    assert_eq!(lease.uid, derive_uid(&key("l"), 7));
    let again = write(&acquire_cmd("l", "a", 10), None, &c).0;
    assert_eq!(again.uid, lease.uid);
    assert_eq!(lease.uid.len(), 36);
    for (i, ch) in lease.uid.chars().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(ch, '-', "uid {}", lease.uid);
        } else {
            assert!(
                ch.is_ascii_digit() || ('a'..='f').contains(&ch),
                "uid {}",
                lease.uid
            );
        }
    }
    let recreated = write(&acquire_cmd("l", "a", 10), None, &ctx(8, 0)).0;
    assert_ne!(recreated.uid, lease.uid);
    assert_ne!(derive_uid(&key("other"), 7), lease.uid);
    // Length-prefixed: ("ab", "c") and ("a", "bc") do not collide.
    assert_ne!(
        derive_uid(&LeaseKey::new("ab", "c"), 1),
        derive_uid(&LeaseKey::new("a", "bc"), 1)
    );
}

#[test]
fn acquire_by_the_holder_before_expiry_is_a_renewal() {
    let lease = acquired("l", "a", 10, 1, 0);
    let (next, created, newly) = write(&acquire_cmd("l", "a", 20), Some(&lease), &ctx(4, 3 * SEC));
    assert!(!created);
    assert!(!newly);
    assert_eq!(next.fencing_token, 1, "same tenure, same token");
    assert_eq!(next.resource_version, 4);
    assert_eq!(next.spec.renew_time, Some(t(3 * SEC)));
    assert_eq!(next.spec.acquire_time, Some(t(0)));
    assert_eq!(next.spec.lease_transitions, Some(0));
    assert_eq!(
        next.spec.lease_duration_seconds,
        Some(20),
        "duration updated"
    );
    assert_eq!(next.uid, lease.uid);
    assert_eq!(next.creation_timestamp, lease.creation_timestamp);
    // Just before expiry is still a renewal.
    let (next, _, newly) = write(
        &acquire_cmd("l", "a", 10),
        Some(&lease),
        &ctx(5, 10 * SEC - 1),
    );
    assert!(!newly);
    assert_eq!(next.fencing_token, 1);
}

#[test]
fn acquire_by_another_holder_before_expiry_is_held() {
    let lease = acquired("l", "a", 10, 1, 0);
    let grantable = 10 * SEC + margin(10);
    assert_eq!(grantable, 10_100_000, "1 % of 10 s is 100 ms");
    assert_eq!(grantable_at(&lease, t(0)), Some(t(grantable)));

    let e = refused(&acquire_cmd("l", "b", 10), Some(&lease), &ctx(2, 3 * SEC));
    assert_eq!(
        e,
        LeaseError::Held {
            key: key("l"),
            holder: "a".to_string(),
            expire_time: t(10 * SEC),
            remaining_millis: 7_100,
        }
    );
    // Remaining time is rounded up to whole milliseconds.
    match refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx(2, 3 * SEC + 1),
    ) {
        LeaseError::Held {
            remaining_millis, ..
        } => assert_eq!(remaining_millis, 7_100),
        other => panic!("{other:?}"),
    }
    match refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx(2, 3 * SEC + 1_000),
    ) {
        LeaseError::Held {
            remaining_millis, ..
        } => assert_eq!(remaining_millis, 7_099),
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_holder_waits_for_the_clock_rate_margin() {
    let lease = acquired("l", "a", 10, 1, 0);
    let grantable = 10 * SEC + margin(10);
    // At renewTime + d the holder's claim has lapsed, but the margin has not
    // passed: still held.
    let e = refused(&acquire_cmd("l", "b", 10), Some(&lease), &ctx(2, 10 * SEC));
    assert_eq!(
        e,
        LeaseError::Held {
            key: key("l"),
            holder: "a".to_string(),
            expire_time: t(10 * SEC),
            remaining_millis: 100,
        }
    );
    let e = refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx(2, grantable - 1),
    );
    assert!(
        matches!(
            e,
            LeaseError::Held {
                remaining_millis: 1,
                ..
            }
        ),
        "{e:?}"
    );

    // From grantable_at on, another holder gets it.
    let (next, created, newly) =
        write(&acquire_cmd("l", "b", 30), Some(&lease), &ctx(9, grantable));
    assert!(!created);
    assert!(newly);
    assert_eq!(next.holder(), Some("b"));
    assert_eq!(next.fencing_token, 9);
    assert_eq!(next.resource_version, 9);
    assert_eq!(next.spec.lease_transitions, Some(1));
    assert_eq!(next.spec.acquire_time, Some(t(grantable)));
    assert_eq!(next.spec.renew_time, Some(t(grantable)));
    assert_eq!(next.spec.lease_duration_seconds, Some(30));
    assert_eq!(next.uid, lease.uid);
    assert_eq!(next.creation_timestamp, t(0));
    // Labels of an existing lease are not touched by Acquire.
    assert_eq!(next.labels, lease.labels);

    // And the next transition counts on.
    let (third, _, newly) = write(
        &acquire_cmd("l", "c", 10),
        Some(&next),
        &ctx(20, grantable + 30 * SEC + margin(30)),
    );
    assert!(newly);
    assert_eq!(third.spec.lease_transitions, Some(2));
    assert_eq!(third.fencing_token, 20);
}

#[test]
fn margin_scales_with_the_duration() {
    let lease = acquired("l", "a", 3600, 1, 0);
    let grantable = 3600 * SEC + 36 * SEC;
    assert_eq!(grantable_at(&lease, t(0)), Some(t(grantable)));
    let e = refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx(2, 3600 * SEC),
    );
    assert!(
        matches!(
            e,
            LeaseError::Held {
                remaining_millis: 36_000,
                ..
            }
        ),
        "{e:?}"
    );
    let (next, _, _) = write(&acquire_cmd("l", "b", 10), Some(&lease), &ctx(3, grantable));
    assert_eq!(next.holder(), Some("b"));
}

#[test]
fn epoch_rule_makes_a_new_leader_wait_a_full_duration() {
    // Renewed at T = T0 + 1 s by the old leader; d = 10 s.
    let lease = acquired("l", "a", 10, 1, 0);
    let lease = write(&renew_cmd("l", "a", 1), Some(&lease), &ctx(2, SEC)).0;
    assert_eq!(lease.spec.renew_time, Some(t(SEC)));
    // A new leader's epoch started at E = T0 + 8 s > T.
    let e = 8 * SEC;
    let free = e + 10 * SEC + margin(10);
    assert_eq!(grantable_at(&lease, t(e)), Some(t(free)));
    assert_eq!(grantable_at(&lease, t(0)), Some(t(11 * SEC + margin(10))));

    // T + d·(1+ρ) has passed, E + d·(1+ρ) has not: refused, and the refusal
    // tells the real remaining time while expire_time stays renewTime + d.
    let now = 15 * SEC;
    let err = refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx_epoch(5, now, e),
    );
    assert_eq!(
        err,
        LeaseError::Held {
            key: key("l"),
            holder: "a".to_string(),
            expire_time: t(11 * SEC),
            remaining_millis: 3_100,
        }
    );
    // The same command in the old epoch would have been granted.
    let (in_old_epoch, _, _) = write(&acquire_cmd("l", "b", 10), Some(&lease), &ctx(5, now));
    assert_eq!(in_old_epoch.holder(), Some("b"));

    let err = refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx_epoch(5, free - 1, e),
    );
    assert!(matches!(err, LeaseError::Held { .. }), "{err:?}");

    let (next, _, newly) = write(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx_epoch(6, free, e),
    );
    assert!(newly);
    assert_eq!(next.holder(), Some("b"));
    assert_eq!(next.fencing_token, 6);
    assert_eq!(next.spec.lease_transitions, Some(1));
}

#[test]
fn epoch_before_the_renewal_changes_nothing() {
    let lease = acquired("l", "a", 10, 1, 5 * SEC);
    let free = 15 * SEC + margin(10);
    assert_eq!(grantable_at(&lease, t(2 * SEC)), Some(t(free)));
    let err = refused(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx_epoch(2, free - 1, 2 * SEC),
    );
    assert!(matches!(err, LeaseError::Held { .. }), "{err:?}");
    let (next, _, _) = write(
        &acquire_cmd("l", "b", 10),
        Some(&lease),
        &ctx_epoch(2, free, 2 * SEC),
    );
    assert_eq!(next.holder(), Some("b"));
}

#[test]
fn holder_can_renew_through_acquire_in_a_new_epoch() {
    // The epoch rule delays other holders only; the holder itself renews.
    let lease = acquired("l", "a", 10, 1, 0);
    let (next, _, newly) = write(
        &acquire_cmd("l", "a", 10),
        Some(&lease),
        &ctx_epoch(3, 9 * SEC, 8 * SEC),
    );
    assert!(!newly);
    assert_eq!(next.fencing_token, 1);
    assert_eq!(next.spec.renew_time, Some(t(9 * SEC)));
}

#[test]
fn same_holder_after_its_own_expiry_starts_a_new_tenure() {
    let lease = acquired("l", "a", 10, 1, 0);
    // Exactly at expiry the old tenure is over.
    for now in [10 * SEC, 60 * SEC] {
        let (next, created, newly) = write(&acquire_cmd("l", "a", 10), Some(&lease), &ctx(5, now));
        assert!(!created);
        assert!(newly, "a lapsed tenure is not revived");
        assert_eq!(next.fencing_token, 5);
        assert_eq!(next.resource_version, 5);
        assert_eq!(
            next.spec.lease_transitions,
            Some(0),
            "holder did not change"
        );
        assert_eq!(next.spec.acquire_time, Some(t(now)));
        assert_eq!(next.spec.renew_time, Some(t(now)));
        assert_eq!(next.holder(), Some("a"));
    }
}

// ------------------------------------------------------------------ renew

#[test]
fn renew_keeps_the_token_and_moves_renew_time() {
    let lease = acquired("l", "a", 10, 1, 0);
    let (next, created, newly) = write(&renew_cmd("l", "a", 1), Some(&lease), &ctx(3, 4 * SEC));
    assert!(!created);
    assert!(!newly);
    assert_eq!(next.fencing_token, 1);
    assert_eq!(next.resource_version, 3);
    assert_eq!(next.spec.renew_time, Some(t(4 * SEC)));
    assert_eq!(next.spec.acquire_time, Some(t(0)));
    assert_eq!(next.spec.lease_transitions, Some(0));
    assert_eq!(next.spec.lease_duration_seconds, Some(10));
    assert_eq!(next.expire_time(), Some(t(14 * SEC)));
    // Everything but the renew time and the resource version is unchanged.
    let mut expected = lease.clone();
    expected.spec.renew_time = Some(t(4 * SEC));
    expected.resource_version = 3;
    assert_eq!(next, expected);

    // The renewal extends the lease: a renewal after the original expiry,
    // but before the extended one, succeeds.
    let (again, _, _) = write(&renew_cmd("l", "a", 1), Some(&next), &ctx(4, 13 * SEC));
    assert_eq!(again.spec.renew_time, Some(t(13 * SEC)));
    assert_eq!(again.fencing_token, 1);
}

#[test]
fn renew_refusals() {
    let lease = acquired("l", "a", 10, 1, 0);

    // Missing lease.
    assert_eq!(
        refused(&renew_cmd("l", "a", 1), None, &ctx(2, SEC)),
        LeaseError::NotFound { key: key("l") }
    );

    // Another holder.
    assert_eq!(
        lost_reason(refused(&renew_cmd("l", "b", 1), Some(&lease), &ctx(2, SEC))),
        LostReason::OtherHolder {
            holder: "a".to_string()
        }
    );

    // Expired: now >= renewTime + d, even though nobody took it.
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 1),
            Some(&lease),
            &ctx(2, 10 * SEC)
        )),
        LostReason::Expired {
            expired_at: t(10 * SEC)
        }
    );
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 1),
            Some(&lease),
            &ctx(2, 100 * SEC)
        )),
        LostReason::Expired {
            expired_at: t(10 * SEC)
        }
    );
    // One microsecond earlier is fine.
    write(&renew_cmd("l", "a", 1), Some(&lease), &ctx(2, 10 * SEC - 1));

    // Stale token: the holder's tenure lapsed and it re-acquired.
    let reacquired = write(&acquire_cmd("l", "a", 10), Some(&lease), &ctx(5, 20 * SEC)).0;
    assert_eq!(reacquired.fencing_token, 5);
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 1),
            Some(&reacquired),
            &ctx(6, 21 * SEC)
        )),
        LostReason::StaleToken {
            sent: 1,
            current: 5
        }
    );
    // A made-up token is stale too.
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 6),
            Some(&reacquired),
            &ctx(6, 21 * SEC)
        )),
        LostReason::StaleToken {
            sent: 6,
            current: 5
        }
    );
    write(
        &renew_cmd("l", "a", 5),
        Some(&reacquired),
        &ctx(6, 21 * SEC),
    );

    // No holder after a release.
    let released = write(
        &release_cmd("l", "a", 5),
        Some(&reacquired),
        &ctx(7, 22 * SEC),
    )
    .0;
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 5),
            Some(&released),
            &ctx(8, 22 * SEC)
        )),
        LostReason::NoHolder
    );
}

#[test]
fn renew_checks_the_holder_before_the_token_and_the_token_before_expiry() {
    let lease = acquired("l", "a", 10, 1, 0);
    // Wrong holder and wrong token: OtherHolder.
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "b", 99),
            Some(&lease),
            &ctx(2, 60 * SEC)
        )),
        LostReason::OtherHolder {
            holder: "a".to_string()
        }
    );
    // Wrong token and expired: StaleToken.
    assert_eq!(
        lost_reason(refused(
            &renew_cmd("l", "a", 99),
            Some(&lease),
            &ctx(2, 60 * SEC)
        )),
        LostReason::StaleToken {
            sent: 99,
            current: 1
        }
    );
}

// ---------------------------------------------------------------- release

#[test]
fn release_clears_the_holder_and_frees_the_lease_at_once() {
    let lease = acquired("l", "a", 10, 1, 0);
    let (released, created, newly) =
        write(&release_cmd("l", "a", 1), Some(&lease), &ctx(2, 2 * SEC));
    assert!(!created);
    assert!(!newly);
    assert_eq!(released.holder(), None);
    assert_eq!(released.spec.holder_identity, None);
    assert_eq!(released.fencing_token, 0);
    assert_eq!(released.resource_version, 2);
    assert_eq!(released.spec.renew_time, Some(t(2 * SEC)));
    assert_eq!(released.spec.lease_transitions, Some(0));
    assert_eq!(released.expire_time(), None);
    assert_eq!(grantable_at(&released, t(0)), None);
    assert_eq!(released.uid, lease.uid);

    // Another holder acquires at the same instant.
    let (next, created, newly) = write(
        &acquire_cmd("l", "b", 10),
        Some(&released),
        &ctx(3, 2 * SEC),
    );
    assert!(!created);
    assert!(newly);
    assert_eq!(next.holder(), Some("b"));
    assert_eq!(next.fencing_token, 3);
    assert_eq!(next.spec.lease_transitions, Some(1));
    assert_eq!(next.spec.acquire_time, Some(t(2 * SEC)));
    assert_eq!(next.spec.renew_time, Some(t(2 * SEC)));

    // Even in a fresh epoch, a released lease is free at once.
    let (next, _, _) = write(
        &acquire_cmd("l", "b", 10),
        Some(&released),
        &ctx_epoch(3, 2 * SEC, 2 * SEC),
    );
    assert_eq!(next.holder(), Some("b"));
}

#[test]
fn release_refusals_and_release_after_expiry() {
    let lease = acquired("l", "a", 10, 1, 0);
    assert_eq!(
        refused(&release_cmd("l", "a", 1), None, &ctx(2, SEC)),
        LeaseError::NotFound { key: key("l") }
    );
    assert_eq!(
        lost_reason(refused(
            &release_cmd("l", "a", 2),
            Some(&lease),
            &ctx(2, SEC)
        )),
        LostReason::StaleToken {
            sent: 2,
            current: 1
        }
    );
    assert_eq!(
        lost_reason(refused(
            &release_cmd("l", "b", 1),
            Some(&lease),
            &ctx(2, SEC)
        )),
        LostReason::OtherHolder {
            holder: "a".to_string()
        }
    );

    // Long after expiry, nobody else took it: the holder may still release.
    let (released, _, _) = write(&release_cmd("l", "a", 1), Some(&lease), &ctx(9, 600 * SEC));
    assert_eq!(released.holder(), None);
    assert_eq!(released.fencing_token, 0);
    assert_eq!(released.resource_version, 9);

    // Releasing twice: NoHolder.
    assert_eq!(
        lost_reason(refused(
            &release_cmd("l", "a", 1),
            Some(&released),
            &ctx(10, 600 * SEC)
        )),
        LostReason::NoHolder
    );

    // After another holder took over, the old token cannot release it.
    let taken = write(&acquire_cmd("l", "b", 10), Some(&lease), &ctx(11, 60 * SEC)).0;
    assert_eq!(
        lost_reason(refused(
            &release_cmd("l", "a", 1),
            Some(&taken),
            &ctx(12, 60 * SEC)
        )),
        LostReason::OtherHolder {
            holder: "b".to_string()
        }
    );
}

// ----------------------------------------------------------------- tokens

/// A tiny state machine over `apply`: one revision per command, time moving
/// forward by `step` seconds, refusals leave the state alone.
struct Sim {
    leases: HashMap<LeaseKey, Lease>,
    tombstones: HashMap<LeaseKey, Lease>,
    revision: u64,
    now: i64,
    grants: Vec<(LeaseKey, u64)>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            leases: HashMap::new(),
            tombstones: HashMap::new(),
            revision: 0,
            now: 0,
            grants: Vec::new(),
        }
    }

    fn run(&mut self, cmd: Command, step_secs: i64) -> Result<Effect, LeaseError> {
        self.revision += 1;
        self.now += step_secs * SEC;
        let c = ctx(self.revision, self.now);
        let k = cmd.key().clone();
        let result = apply(&cmd, self.leases.get(&k), self.tombstones.get(&k), &c);
        match &result {
            Ok(Effect::Write {
                lease,
                newly_acquired,
                ..
            }) => {
                if *newly_acquired {
                    assert_eq!(lease.fencing_token, self.revision);
                    self.grants.push((k.clone(), lease.fencing_token));
                }
                self.leases.insert(k, lease.clone());
            }
            Ok(Effect::Delete { lease, tombstone }) => {
                self.leases.remove(&k);
                if *tombstone {
                    self.tombstones.insert(k, lease.clone());
                }
            }
            Err(_) => {}
        }
        result
    }

    fn token(&self, name: &str) -> u64 {
        self.leases[&key(name)].fencing_token
    }
}

#[test]
fn tokens_strictly_increase_across_leases_and_tenures() {
    let mut s = Sim::new();
    s.run(acquire_cmd("x", "a", 10), 0).unwrap();
    s.run(acquire_cmd("y", "b", 10), 1).unwrap();
    let tx = s.token("x");
    s.run(renew_cmd("x", "a", tx), 1).unwrap();
    assert_eq!(s.token("x"), tx, "renewal keeps the token");
    s.run(acquire_cmd("x", "c", 10), 1).unwrap_err(); // held
    s.run(release_cmd("x", "a", tx), 1).unwrap();
    s.run(acquire_cmd("x", "c", 10), 0).unwrap();
    // y expires; d takes it after the margin.
    s.run(acquire_cmd("y", "d", 10), 20).unwrap();
    let ty = s.token("y");
    // Put changes x's holder: a new tenure.
    let rv = s.leases[&key("x")].resource_version;
    let mut d = draft("x", rv, Some("e"));
    d.spec.renew_time = None;
    s.run(put_cmd(d), 1).unwrap();
    // y's holder lapses and re-acquires: a new tenure for the same holder.
    s.run(acquire_cmd("y", "d", 10), 30).unwrap();
    assert!(s.token("y") > ty);
    // Delete y while held: nobody re-creates it before the deleted tenure
    // could have lapsed, then f does.
    let rv = s.leases[&key("y")].resource_version;
    s.run(delete_cmd("y", Some(rv)), 1).unwrap();
    s.run(acquire_cmd("y", "f", 10), 1).unwrap_err();
    s.run(acquire_cmd("y", "f", 10), 10).unwrap();
    s.run(put_cmd(draft("z", 0, Some("g"))), 1).unwrap();

    let tokens: Vec<u64> = s.grants.iter().map(|(_, t)| *t).collect();
    assert_eq!(tokens.len(), 8, "{:?}", s.grants);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase: {tokens:?}"
    );
    // Per lease, too, and no token is ever handed out twice.
    for name in ["x", "y"] {
        let per: Vec<u64> = s
            .grants
            .iter()
            .filter(|(k, _)| *k == key(name))
            .map(|(_, t)| *t)
            .collect();
        assert!(per.len() >= 2);
        assert!(per.windows(2).all(|w| w[0] < w[1]), "{name}: {per:?}");
    }
}

// -------------------------------------------------------------------- put

#[test]
fn put_creates_with_resource_version_zero_and_times_from_the_stamp() {
    let d = draft("l", 0, Some("a"));
    let (lease, created, newly) = write(&put_cmd(d.clone()), None, &ctx(4, 2 * SEC));
    assert!(created);
    assert!(newly);
    assert_eq!(
        lease,
        Lease {
            key: key("l"),
            uid: derive_uid(&key("l"), 4),
            resource_version: 4,
            creation_timestamp: t(2 * SEC),
            labels: d.labels.clone(),
            annotations: d.annotations.clone(),
            spec: LeaseSpec {
                // The client sent T0 for both: the stored times are the
                // stamp.
                acquire_time: Some(t(2 * SEC)),
                renew_time: Some(t(2 * SEC)),
                ..d.spec.clone()
            },
            fencing_token: 4,
            expired: false,
        }
    );

    // Without a holder (None or the empty string): no token, no times.
    for holder in [None, Some("")] {
        let (lease, created, newly) =
            write(&put_cmd(draft("l", 0, holder)), None, &ctx(5, 2 * SEC));
        assert!(created);
        assert!(!newly);
        assert_eq!(lease.fencing_token, 0);
        assert_eq!(
            lease.spec.holder_identity, None,
            "empty holder is stored as none"
        );
        assert_eq!(lease.spec.renew_time, None);
        assert_eq!(lease.spec.acquire_time, None);
        assert_eq!(lease.resource_version, 5);
    }
}

#[test]
fn put_refusals() {
    let lease = write(&put_cmd(draft("l", 0, Some("a"))), None, &ctx(4, 0)).0;
    assert_eq!(
        refused(&put_cmd(draft("l", 0, Some("a"))), Some(&lease), &ctx(5, 0)),
        LeaseError::AlreadyExists { key: key("l") }
    );
    assert_eq!(
        refused(&put_cmd(draft("l", 3, Some("a"))), Some(&lease), &ctx(5, 0)),
        LeaseError::Conflict {
            key: key("l"),
            expected: 3,
            actual: 4,
        }
    );
    assert_eq!(
        refused(&put_cmd(draft("l", 9, Some("a"))), Some(&lease), &ctx(9, 0)),
        LeaseError::Conflict {
            key: key("l"),
            expected: 9,
            actual: 4,
        }
    );
    assert_eq!(
        refused(&put_cmd(draft("l", 4, Some("a"))), None, &ctx(5, 0)),
        LeaseError::NotFound { key: key("l") }
    );
}

/// A draft of `current` as a Kubernetes client would send it: the stored
/// object with `holder`, and its own clock's times.
fn k8s_update(current: &Lease, holder: Option<&str>, client_time: Timestamp) -> LeaseDraft {
    LeaseDraft {
        key: current.key.clone(),
        resource_version: current.resource_version,
        uid: Some(current.uid.clone()),
        labels: current.labels.clone(),
        annotations: current.annotations.clone(),
        spec: LeaseSpec {
            holder_identity: holder.map(str::to_string),
            acquire_time: Some(client_time),
            renew_time: Some(client_time),
            ..current.spec.clone()
        },
    }
}

#[test]
fn put_renewal_keeps_the_token_and_takes_the_time_from_the_stamp() {
    let original = write(&put_cmd(draft("l", 0, Some("a"))), None, &ctx(4, 0)).0;
    assert_eq!(original.fencing_token, 4);

    // Same holder, live tenure: a renewal. Token and acquireTime stay;
    // labels, annotations, duration and transitions are the client's.
    let mut d = k8s_update(&original, Some("a"), t(-60 * SEC));
    d.labels = labels(&[("tier", "cache")]);
    d.annotations = BTreeMap::new();
    d.spec.lease_duration_seconds = Some(40);
    let (same, created, newly) = write(&put_cmd(d.clone()), Some(&original), &ctx(6, 5 * SEC));
    assert!(!created);
    assert!(!newly);
    assert_eq!(
        same,
        Lease {
            key: key("l"),
            uid: original.uid.clone(),
            resource_version: 6,
            creation_timestamp: original.creation_timestamp,
            labels: d.labels.clone(),
            annotations: BTreeMap::new(),
            spec: LeaseSpec {
                acquire_time: original.spec.acquire_time,
                renew_time: Some(t(5 * SEC)),
                ..d.spec.clone()
            },
            fencing_token: 4,
            expired: false,
        }
    );
}

/// Regression (issue 10): a Put at the current resourceVersion that kept
/// holder A but set renewTime 60 s in the past let B's Acquire in at once.
#[test]
fn a_put_with_an_old_renew_time_does_not_let_another_holder_in() {
    let a = acquired("l", "a", 10, 3, 0);
    let backdated = k8s_update(&a, Some("a"), t(-60 * SEC));
    let renewed = write(&put_cmd(backdated), Some(&a), &ctx(4, 2 * SEC)).0;
    assert_eq!(renewed.spec.renew_time, Some(t(2 * SEC)));
    // B right after, and just before A's renewal plus the grant margin.
    for at in [2 * SEC + 1, 12 * SEC + margin(10) - 1] {
        assert!(matches!(
            refused(&acquire_cmd("l", "b", 10), Some(&renewed), &ctx(5, at)),
            LeaseError::Held { ref holder, .. } if holder == "a"
        ));
    }
    let (b, _, newly) = write(
        &acquire_cmd("l", "b", 10),
        Some(&renewed),
        &ctx(5, 12 * SEC + margin(10)),
    );
    assert!(newly);
    assert_eq!(b.fencing_token, 5);
}

/// Regression (issue 10): a client whose clock runs behind sends renewTime
/// in its past; the lease kept less than its duration and went to B early.
#[test]
fn a_put_renewal_from_a_slow_clock_keeps_the_full_duration() {
    let a = acquired("l", "a", 10, 3, 0);
    // At 8 s the client (5 s behind) renews with renewTime = 3 s.
    let renewed = write(
        &put_cmd(k8s_update(&a, Some("a"), t(3 * SEC))),
        Some(&a),
        &ctx(4, 8 * SEC),
    )
    .0;
    assert_eq!(renewed.expire_time(), Some(t(18 * SEC)));
    assert!(matches!(
        refused(
            &acquire_cmd("l", "b", 10),
            Some(&renewed),
            &ctx(5, 14 * SEC)
        ),
        LeaseError::Held { .. }
    ));
}

/// Regression (issue 10): after A's tenure lapsed and was recorded as
/// expired, a Put naming A revived A's old token, so a paused process still
/// carrying it was accepted again by the fenced resource.
#[test]
fn a_put_after_expiry_starts_a_new_tenure_with_a_new_token() {
    let a = acquired("l", "a", 10, 3, 0);
    let expire = Command::Expire {
        key: key("l"),
        holder: "a".into(),
        fencing_token: 3,
    };
    let marked = write(&expire, Some(&a), &ctx(4, 10 * SEC)).0;
    assert!(marked.expired);
    let (again, _, newly) = write(
        &put_cmd(k8s_update(&marked, Some("a"), t(0))),
        Some(&marked),
        &ctx(7, 11 * SEC),
    );
    assert!(newly, "a new tenure");
    assert_eq!(again.fencing_token, 7);
    assert!(!again.expired);
    assert_eq!(again.spec.acquire_time, Some(t(11 * SEC)));
    assert_eq!(again.spec.renew_time, Some(t(11 * SEC)));
    // The old token is refused.
    assert!(matches!(
        lost_reason(refused(
            &renew_cmd("l", "a", 3),
            Some(&again),
            &ctx(8, 12 * SEC)
        )),
        LostReason::StaleToken {
            sent: 3,
            current: 7
        }
    ));
    // Lapsed but not yet recorded: the same.
    let lapsed = write(
        &put_cmd(k8s_update(&a, Some("a"), t(0))),
        Some(&a),
        &ctx(9, 10 * SEC),
    );
    assert!(lapsed.2);
    assert_eq!(lapsed.0.fencing_token, 9);
}

#[test]
fn a_put_naming_another_holder_waits_like_an_acquire() {
    let a = acquired("l", "a", 10, 3, 0);
    let takeover = |at: i64, rev: u64| {
        apply(
            &put_cmd(k8s_update(&a, Some("b"), t(0))),
            Some(&a),
            None,
            &ctx(rev, at),
        )
    };
    // Refused with the same details an Acquire gets.
    let as_acquire = refused(&acquire_cmd("l", "b", 10), Some(&a), &ctx(4, 5 * SEC));
    assert_eq!(takeover(5 * SEC, 4), Err(as_acquire));
    assert!(takeover(10 * SEC + margin(10) - 1, 4).is_err());
    let b = match takeover(10 * SEC + margin(10), 4) {
        Ok(Effect::Write {
            lease,
            newly_acquired: true,
            ..
        }) => lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(b.holder(), Some("b"));
    assert_eq!(b.fencing_token, 4);
    assert_eq!(b.spec.acquire_time, Some(t(10 * SEC + margin(10))));
    assert_eq!(
        b.spec.lease_transitions, a.spec.lease_transitions,
        "the client's value"
    );

    // After a leader change the new epoch's full wait applies to Put too.
    let late = ctx_epoch(5, 15 * SEC, 8 * SEC);
    assert!(matches!(
        apply(
            &put_cmd(k8s_update(&a, Some("b"), t(0))),
            Some(&a),
            None,
            &late
        ),
        Err(LeaseError::Held { .. })
    ));
    let free = ctx_epoch(5, 18 * SEC + margin(10), 8 * SEC);
    assert!(apply(
        &put_cmd(k8s_update(&a, Some("b"), t(0))),
        Some(&a),
        None,
        &free
    )
    .is_ok());
}

#[test]
fn a_live_tenure_is_never_shortened_by_put_or_acquire() {
    let a = acquired("l", "a", 30, 3, 0);
    // Renewing at 10 s for 5 s would free the lease at 15 s, before the
    // 30 s the tenure already promises.
    let mut shorter = k8s_update(&a, Some("a"), t(0));
    shorter.spec.lease_duration_seconds = Some(5);
    assert!(matches!(
        refused(&put_cmd(shorter.clone()), Some(&a), &ctx(4, 10 * SEC)),
        LeaseError::Held { ref holder, .. } if holder == "a"
    ));
    let mut none = shorter.clone();
    none.spec.lease_duration_seconds = None;
    assert!(matches!(
        refused(&put_cmd(none), Some(&a), &ctx(4, 10 * SEC)),
        LeaseError::Held { .. }
    ));
    assert!(matches!(
        refused(&acquire_cmd("l", "a", 5), Some(&a), &ctx(4, 10 * SEC)),
        LeaseError::Held { .. }
    ));
    // Late enough that the shorter duration still reaches as far: allowed.
    let (ok, _, newly) = write(&put_cmd(shorter), Some(&a), &ctx(4, 26 * SEC));
    assert!(!newly);
    assert_eq!(ok.fencing_token, 3);
    assert_eq!(ok.spec.lease_duration_seconds, Some(5));
    // Lengthening is always a renewal.
    let (longer, _, _) = write(&acquire_cmd("l", "a", 60), Some(&a), &ctx(4, 10 * SEC));
    assert_eq!(longer.spec.lease_duration_seconds, Some(60));
    assert_eq!(longer.fencing_token, 3);
}

#[test]
fn a_put_clearing_the_holder_releases_at_once() {
    let a = acquired("l", "a", 10, 3, 0);
    for holder in [None, Some("")] {
        let (cleared, _, newly) = write(
            &put_cmd(k8s_update(&a, holder, t(0))),
            Some(&a),
            &ctx(4, SEC),
        );
        assert!(!newly);
        assert_eq!(cleared.fencing_token, 0);
        assert_eq!(cleared.holder(), None);
        assert_eq!(cleared.spec.holder_identity, None);
        assert_eq!(cleared.spec.renew_time, Some(t(SEC)));
        assert_eq!(cleared.uid, a.uid);
        assert_eq!(cleared.resource_version, 4);
        // From no holder to a holder: a new tenure at once.
        let (b, _, newly) = write(
            &put_cmd(k8s_update(&cleared, Some("b"), t(0))),
            Some(&cleared),
            &ctx(5, SEC),
        );
        assert!(newly);
        assert_eq!(b.fencing_token, 5);
    }
}

// ----------------------------------------------------------------- delete

#[test]
fn delete_and_recreate() {
    let lease = acquired("l", "a", 10, 3, 0);
    assert_eq!(
        refused(&delete_cmd("l", None), None, &ctx(4, SEC)),
        LeaseError::NotFound { key: key("l") }
    );
    assert_eq!(
        refused(&delete_cmd("l", Some(2)), Some(&lease), &ctx(4, SEC)),
        LeaseError::Conflict {
            key: key("l"),
            expected: 2,
            actual: 3,
        }
    );
    // A held lease is deleted too, and leaves a tombstone while its tenure
    // could still be live (until another holder could be granted it).
    for at in [SEC, 10 * SEC, 10_100_000 - 1] {
        assert_eq!(
            apply(&delete_cmd("l", Some(3)), Some(&lease), None, &ctx(4, at)),
            Ok(Effect::Delete {
                lease: lease.clone(),
                tombstone: true,
            }),
            "at {at} µs"
        );
    }
    // None once the lease could be granted to someone else.
    assert_eq!(
        apply(
            &delete_cmd("l", Some(3)),
            Some(&lease),
            None,
            &ctx(4, 10_100_000)
        ),
        Ok(Effect::Delete {
            lease: lease.clone(),
            tombstone: false,
        })
    );
    // Nor after a release.
    let released = write(&release_cmd("l", "a", 3), Some(&lease), &ctx(4, SEC)).0;
    assert_eq!(
        apply(&delete_cmd("l", None), Some(&released), None, &ctx(5, SEC)),
        Ok(Effect::Delete {
            lease: released.clone(),
            tombstone: false,
        })
    );

    // Re-created by an acquire later: new uid, greater token, transitions
    // start over.
    let (again, created, newly) = write(&acquire_cmd("l", "b", 10), None, &ctx(5, 2 * SEC));
    assert!(created);
    assert!(newly);
    assert_ne!(again.uid, lease.uid);
    assert!(again.fencing_token > lease.fencing_token);
    assert_eq!(again.fencing_token, 5);
    assert_eq!(again.spec.lease_transitions, Some(0));
    assert_eq!(again.creation_timestamp, t(2 * SEC));
}

#[test]
fn a_tombstone_blocks_every_create_until_the_deleted_tenure_could_have_lapsed() {
    // a holds for 10 s from 0; deleted at 1 s. Grantable at 10.1 s.
    let dead = acquired("l", "a", 10, 3, 0);
    let creates = [
        acquire_cmd("l", "b", 10),
        acquire_cmd("l", "a", 10),
        put_cmd(draft("l", 0, Some("b"))),
        put_cmd(draft("l", 0, Some("a"))),
        put_cmd(draft("l", 0, None)),
    ];
    for cmd in &creates {
        let e = apply(cmd, None, Some(&dead), &ctx(5, 2 * SEC)).unwrap_err();
        assert_eq!(
            e,
            LeaseError::Tombstoned {
                key: key("l"),
                holder: "a".into(),
                expire_time: t(10 * SEC),
                remaining_millis: 8_100,
            },
            "{cmd:?}"
        );
        assert!(
            apply(cmd, None, Some(&dead), &ctx(5, 10_100_000 - 1)).is_err(),
            "{cmd:?} one microsecond early"
        );
        let Ok(Effect::Write { lease, created, .. }) =
            apply(cmd, None, Some(&dead), &ctx(5, 10_100_000))
        else {
            panic!("{cmd:?} once grantable");
        };
        assert!(created);
        if lease.holder().is_some() {
            assert!(lease.fencing_token > dead.fencing_token);
        }
    }
    // A new leader's epoch extends the tombstone as it extends a tenure.
    let new_epoch = ApplyContext {
        epoch_start: t(5 * SEC),
        ..ctx(5, 12 * SEC)
    };
    assert!(matches!(
        apply(&creates[0], None, Some(&dead), &new_epoch),
        Err(LeaseError::Tombstoned { .. })
    ));
    // A tombstone of a released lease (none is kept, but if one were)
    // blocks nothing.
    let released = write(&release_cmd("l", "a", 3), Some(&dead), &ctx(4, SEC)).0;
    assert!(apply(&creates[0], None, Some(&released), &ctx(5, 2 * SEC)).is_ok());
    // Updates of an existing lease never look at tombstones.
    let live = acquired("l", "b", 10, 7, 20 * SEC);
    assert!(apply(
        &renew_cmd("l", "b", 7),
        Some(&live),
        Some(&dead),
        &ctx(8, 21 * SEC)
    )
    .is_ok());
}

#[test]
fn uid_preconditions() {
    let lease = acquired("l", "a", 10, 3, 0);
    let mut d = k8s_update(&lease, Some("a"), t(0));
    assert!(apply(&put_cmd(d.clone()), Some(&lease), None, &ctx(4, SEC)).is_ok());
    d.uid = Some("another-incarnation".into());
    assert_eq!(
        apply(&put_cmd(d.clone()), Some(&lease), None, &ctx(4, SEC)),
        Err(LeaseError::UidMismatch {
            key: key("l"),
            expected: "another-incarnation".into(),
            actual: lease.uid.clone(),
        })
    );
    // An empty uid is no precondition.
    d.uid = Some(String::new());
    assert!(apply(&put_cmd(d), Some(&lease), None, &ctx(4, SEC)).is_ok());
    // A create naming a uid: nothing has it.
    let mut create = draft("m", 0, Some("a"));
    create.uid = Some("u".into());
    assert!(matches!(
        apply(&put_cmd(create), None, None, &ctx(4, SEC)),
        Err(LeaseError::UidMismatch { ref actual, .. }) if actual.is_empty()
    ));
    // Delete: the uid must match; a missing lease is still NotFound.
    let del = |uid: &str| Command::Delete {
        key: key("l"),
        resource_version: None,
        uid: Some(uid.into()),
    };
    assert!(matches!(
        apply(&del("x"), Some(&lease), None, &ctx(4, SEC)),
        Err(LeaseError::UidMismatch { .. })
    ));
    assert!(apply(&del(&lease.uid), Some(&lease), None, &ctx(4, SEC)).is_ok());
    assert_eq!(
        apply(&del("x"), None, None, &ctx(4, SEC)),
        Err(LeaseError::NotFound { key: key("l") })
    );
}

// ---------------------------------------------------------------- invalid

fn invalid_field(e: LeaseError) -> String {
    match e {
        LeaseError::Invalid { field, .. } => field,
        other => panic!("expected LeaseError::Invalid, got {other:?}"),
    }
}

/// Invalid commands are refused at the edge, naming the field; `apply`
/// itself does not validate (a rule changed in a later version must not
/// change what an old log means when it is replayed), and answers any
/// command without panicking, the same way every time.
#[test]
fn invalid_commands_are_refused_at_the_edge_and_apply_stays_total() {
    let lease = acquired("l", "a", 10, 1, 0);
    let c = ctx(2, SEC);

    let cases: Vec<(Command, Option<&Lease>, &str)> = vec![
        (
            acquire_cmd("l", "a", 0),
            Some(&lease),
            "leaseDurationSeconds",
        ),
        (acquire_cmd("l", "a", -5), None, "leaseDurationSeconds"),
        (
            acquire_cmd("l", "a", MAX_TEST_DURATION + 1),
            None,
            "leaseDurationSeconds",
        ),
        (acquire_cmd("Bad_Name", "a", 10), None, "metadata.name"),
        (acquire_cmd("l", "", 10), Some(&lease), "holder"),
        (
            Command::Acquire {
                key: LeaseKey::new("", "l"),
                holder: "a".to_string(),
                duration_seconds: 10,
                labels: BTreeMap::new(),
            },
            None,
            "metadata.namespace",
        ),
        (
            Command::Acquire {
                key: key("l"),
                holder: "a".to_string(),
                duration_seconds: 10,
                labels: labels(&[("app", "-x")]),
            },
            None,
            r#"labels["app"]"#,
        ),
        (renew_cmd("l", "a", 0), Some(&lease), "fencingToken"),
        (renew_cmd("l", "a", 0), None, "fencingToken"),
        (release_cmd("l", "a\n", 1), Some(&lease), "holder"),
        (delete_cmd("-l", None), Some(&lease), "metadata.name"),
        (
            put_cmd(LeaseDraft {
                spec: LeaseSpec {
                    lease_duration_seconds: Some(0),
                    ..draft("l", 1, Some("a")).spec
                },
                ..draft("l", 1, Some("a"))
            }),
            Some(&lease),
            "spec.leaseDurationSeconds",
        ),
        (
            put_cmd(LeaseDraft {
                spec: LeaseSpec {
                    lease_transitions: Some(-1),
                    ..draft("l", 0, Some("a")).spec
                },
                ..draft("l", 0, Some("a"))
            }),
            None,
            "spec.leaseTransitions",
        ),
    ];
    for (cmd, current, field) in cases {
        let e = crate::lease::validate::validate_command(&cmd).unwrap_err();
        assert_eq!(invalid_field(e), field, "{cmd:?}");
        assert_eq!(
            apply(&cmd, current, None, &c),
            apply(&cmd, current, None, &c),
            "{cmd:?}"
        );
    }
}

/// The longest duration validation accepts (one year).
const MAX_TEST_DURATION: i32 = crate::lease::validate::MAX_LEASE_DURATION_SECONDS;

#[test]
fn longest_valid_duration_is_accepted_and_does_not_overflow() {
    let lease = acquired("l", "a", MAX_TEST_DURATION, 1, 0);
    let d = i64::from(MAX_TEST_DURATION) * SEC;
    assert_eq!(lease.expire_time(), Some(t(d)));
    assert_eq!(grantable_at(&lease, t(0)), Some(t(d + d / 100)));
}

// ------------------------------------------------- tenure across an epoch

#[test]
fn a_new_epoch_extends_the_holders_tenure_to_a_full_duration() {
    // Renewed at 1 s for 10 s; a new leader's epoch starts at 8 s (its clock
    // may be ahead). The holder keeps the lease until 8 s + 10 s, not 11 s.
    let lease = acquired("l", "a", 10, 3, SEC);
    let renewed = write(
        &renew_cmd("l", "a", 3),
        Some(&lease),
        &ctx_epoch(5, 15 * SEC, 8 * SEC),
    )
    .0;
    assert_eq!(renewed.spec.renew_time, Some(t(15 * SEC)));
    assert_eq!(renewed.fencing_token, 3);
    // At 18 s it has lapsed for the holder ...
    let lapsed = refused(
        &renew_cmd("l", "a", 3),
        Some(&lease),
        &ctx_epoch(5, 18 * SEC, 8 * SEC),
    );
    assert!(
        matches!(lost_reason(lapsed), LostReason::Expired { expired_at } if expired_at == t(18 * SEC))
    );
    // ... and the expiry record is accepted exactly then, not before.
    let expire = Command::Expire {
        key: key("l"),
        holder: "a".into(),
        fencing_token: 3,
    };
    assert_eq!(
        refused(&expire, Some(&lease), &ctx_epoch(6, 17 * SEC, 8 * SEC)),
        LeaseError::NotExpired { key: key("l") }
    );
    let marked = write(&expire, Some(&lease), &ctx_epoch(6, 18 * SEC, 8 * SEC)).0;
    assert!(marked.expired);
    assert_eq!(
        marked.spec.holder_identity.as_deref(),
        Some("a"),
        "the holder stays visible"
    );
    // Once marked, a renewal is refused even by the right holder and token,
    // and a second record is refused.
    assert!(matches!(
        lost_reason(refused(
            &renew_cmd("l", "a", 3),
            Some(&marked),
            &ctx_epoch(7, 18 * SEC, 8 * SEC)
        )),
        LostReason::Expired { .. }
    ));
    assert_eq!(
        refused(&expire, Some(&marked), &ctx_epoch(7, 19 * SEC, 8 * SEC)),
        LeaseError::NotExpired { key: key("l") }
    );
    // The same holder re-acquiring after the record starts a new tenure.
    let (again, _, newly) = write(
        &acquire_cmd("l", "a", 10),
        Some(&marked),
        &ctx_epoch(8, 19 * SEC, 8 * SEC),
    );
    assert!(newly);
    assert!(!again.expired);
    assert_eq!(again.fencing_token, 8);
}
