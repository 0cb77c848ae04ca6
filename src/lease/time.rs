//! Timestamps as the lease domain sees them.
//!
//! The domain never reads a clock: every `Timestamp` it handles was stamped by
//! the Raft leader into a log entry (see `command::Proposal`) or came from a
//! client. A timestamp is whole microseconds since the Unix epoch, UTC, which
//! is exactly the precision of Kubernetes' `MicroTime`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Microseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

/// Microseconds in one second.
pub const MICROS_PER_SEC: i64 = 1_000_000;

impl Timestamp {
    /// From whole microseconds since the epoch.
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// Whole microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// From a chrono time, truncated to microseconds.
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        Timestamp(t.timestamp_micros())
    }

    /// This time plus `us` microseconds, saturating.
    pub fn plus_micros(self, us: i64) -> Self {
        Timestamp(self.0.saturating_add(us))
    }

    /// Microseconds from `earlier` to `self`; negative when `earlier` is later.
    pub fn micros_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// As a chrono time (the epoch if out of chrono's range, which a
    /// validated timestamp never is).
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0).single().unwrap_or_default()
    }

    /// Kubernetes `MicroTime`: RFC 3339, UTC, exactly six fractional digits.
    pub fn to_micro_time(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Kubernetes `Time` (creationTimestamp): RFC 3339, UTC, whole seconds.
    pub fn to_rfc3339_seconds(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Parses RFC 3339 (any offset, any fractional precision; sub-microsecond
    /// digits are truncated). Returns a description of the problem on failure.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let t = DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
        Ok(Timestamp(t.with_timezone(&Utc).timestamp_micros()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_micro_time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_fraction_digits_and_z() {
        let t = Timestamp::from_micros(1_714_564_800_123_456);
        assert_eq!(t.to_micro_time(), "2024-05-01T12:00:00.123456Z");
        assert_eq!(t.to_rfc3339_seconds(), "2024-05-01T12:00:00Z");
        let zero_frac = Timestamp::from_micros(1_714_564_800_000_000);
        assert_eq!(zero_frac.to_micro_time(), "2024-05-01T12:00:00.000000Z");
    }

    #[test]
    fn parse_round_trips_and_normalises_offsets() {
        let t = Timestamp::parse_rfc3339("2024-05-01T12:00:00.123456Z").unwrap();
        assert_eq!(t.as_micros(), 1_714_564_800_123_456);
        let off = Timestamp::parse_rfc3339("2024-05-01T14:00:00.123456+02:00").unwrap();
        assert_eq!(off, t);
        let nanos = Timestamp::parse_rfc3339("2024-05-01T12:00:00.123456789Z").unwrap();
        assert_eq!(nanos, t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("2024-05-01 12:00:00").is_err());
    }
}
