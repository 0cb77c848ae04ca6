//! Conversions between the protobuf API types and the domain types.
//!
//! Parsing client input lives here (times, continue tokens); every failure is
//! a `LeaseError::Invalid` naming the field in Kubernetes' camelCase path.

use crate::lease::{Lease, LeaseDraft, LeaseError, LeaseKey, LeaseSpec, Timestamp};
use crate::proto::v1 as pb;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn opt_time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_micro_time()).unwrap_or_default()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A stored lease as the API returns it.
pub fn lease_to_proto(l: &Lease) -> pb::Lease {
    pb::Lease {
        metadata: Some(pb::ObjectMeta {
            namespace: l.key.namespace.clone(),
            name: l.key.name.clone(),
            uid: l.uid.clone(),
            resource_version: l.resource_version,
            creation_timestamp: l.creation_timestamp.to_rfc3339_seconds(),
            labels: l.labels.clone().into_iter().collect(),
            annotations: l.annotations.clone().into_iter().collect(),
        }),
        spec: Some(pb::LeaseSpec {
            holder_identity: l.spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: l.spec.lease_duration_seconds,
            acquire_time: opt_time(l.spec.acquire_time),
            renew_time: opt_time(l.spec.renew_time),
            lease_transitions: l.spec.lease_transitions,
            strategy: l.spec.strategy.clone().unwrap_or_default(),
            preferred_holder: l.spec.preferred_holder.clone().unwrap_or_default(),
        }),
        status: Some(pb::LeaseStatus {
            fencing_token: l.fencing_token,
            expire_time: opt_time(l.expire_time()),
            expired: l.expired,
        }),
    }
}

fn parse_time(field: &str, s: &str) -> Result<Option<Timestamp>, LeaseError> {
    if s.is_empty() {
        return Ok(None);
    }
    let t = Timestamp::parse_rfc3339(s).map_err(|e| LeaseError::invalid(field, e))?;
    // Keep times inside chrono's printable range and away from overflow.
    const YEAR_10000: i64 = 253_402_300_800_000_000;
    if !(0..YEAR_10000).contains(&t.as_micros()) {
        return Err(LeaseError::invalid(field, "must be between 1970 and 9999"));
    }
    Ok(Some(t))
}

/// The draft of a Put.
pub fn draft_from_proto(l: pb::Lease) -> Result<LeaseDraft, LeaseError> {
    let meta = l
        .metadata
        .ok_or_else(|| LeaseError::invalid("metadata", "is required"))?;
    let spec = l.spec.unwrap_or_default();
    Ok(LeaseDraft {
        key: LeaseKey::new(meta.namespace, meta.name),
        resource_version: meta.resource_version,
        uid: non_empty(&meta.uid),
        labels: meta.labels.into_iter().collect(),
        annotations: meta.annotations.into_iter().collect(),
        spec: LeaseSpec {
            holder_identity: non_empty(&spec.holder_identity),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: parse_time("spec.acquireTime", &spec.acquire_time)?,
            renew_time: parse_time("spec.renewTime", &spec.renew_time)?,
            lease_transitions: spec.lease_transitions,
            strategy: non_empty(&spec.strategy),
            preferred_holder: non_empty(&spec.preferred_holder),
        },
    })
}

/// The opaque continue token that resumes a List after `key`.
pub fn encode_continue(key: &LeaseKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\0{}", key.namespace, key.name))
}

/// Decodes a continue token.
pub fn decode_continue(token: &str) -> Result<Option<LeaseKey>, LeaseError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || LeaseError::invalid("continueToken", "is not a token returned by List");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('\0').ok_or_else(bad)?;
    Ok(Some(LeaseKey::new(ns, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_round_trips_and_rejects_garbage() {
        let k = LeaseKey::new("kube-node-lease", "node-1");
        assert_eq!(decode_continue(&encode_continue(&k)).unwrap(), Some(k));
        assert_eq!(decode_continue("").unwrap(), None);
        let e = decode_continue("!!!").unwrap_err();
        assert!(matches!(e, LeaseError::Invalid { ref field, .. } if field == "continueToken"));
    }

    #[test]
    fn draft_rejects_bad_times_naming_the_field() {
        let l = pb::Lease {
            metadata: Some(pb::ObjectMeta {
                namespace: "ns".into(),
                name: "a".into(),
                ..Default::default()
            }),
            spec: Some(pb::LeaseSpec {
                renew_time: "tomorrow".into(),
                ..Default::default()
            }),
            status: None,
        };
        let e = draft_from_proto(l).unwrap_err();
        assert!(matches!(e, LeaseError::Invalid { ref field, .. } if field == "spec.renewTime"));
        let no_meta = pb::Lease::default();
        assert!(
            matches!(draft_from_proto(no_meta), Err(LeaseError::Invalid { ref field, .. }) if field == "metadata")
        );
    }
}
