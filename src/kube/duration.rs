//! The AGE column: apimachinery's `duration.HumanDuration`, digit for digit.
//!
//! kubectl prints the cells of a server-side Table as the server wrote them,
//! so the age of a lease looks exactly as it would against a real API
//! server only if this function is upstream's
//! (`k8s.io/apimachinery/pkg/util/duration/duration.go`, v0.32): about two
//! or three significant figures, coarser as the age grows.
//!
//! | age            | printed       |
//! |----------------|---------------|
//! | < -1 s         | `<invalid>`   |
//! | -1 s .. 0 s    | `0s` (clock skew between client and server) |
//! | < 2 min        | `Ns`          |
//! | < 10 min       | `NmSs` (`Nm` when S is 0) |
//! | < 3 h          | `Nm`          |
//! | < 8 h          | `NhMm` (`Nh` when M is 0) |
//! | < 48 h         | `Nh`          |
//! | < 8 d          | `NdHh` (`Nd` when H is 0) |
//! | < 2 y (730 d)  | `Nd`          |
//! | < 8 y          | `NyDd` (`Ny` when D is 0; a year is 365 days) |
//! | otherwise      | `Ny`          |
//!
//! Go truncates toward zero when it turns the duration into whole seconds,
//! minutes or hours; so does Rust's integer division, and the arithmetic
//! below is on microseconds (Leasehold's time unit) for the same result.

use crate::lease::Timestamp;

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

/// `HumanDuration` of a duration given in microseconds.
pub fn human_duration(micros: i64) -> String {
    let seconds = micros / SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = micros / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = micros / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The printers' `translateTimestampSince`: the age of `created` at `now`,
/// or `<unknown>` when there is no creation time (Go's zero time).
pub fn age(created: Option<Timestamp>, now: Timestamp) -> String {
    match created {
        None => "<unknown>".into(),
        Some(t) => human_duration(now.micros_since(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human_duration(s * SECOND)
    }

    const M: i64 = 60;
    const H: i64 = 3600;
    const D: i64 = 24 * H;
    const Y: i64 = 365 * D;

    #[test]
    fn clock_skew_and_invalid() {
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(-SECOND), "0s");
        // -1.999999 s truncates to -1 s: still "almost now".
        assert_eq!(human_duration(-2 * SECOND + 1), "0s");
        assert_eq!(human_duration(-2 * SECOND), "<invalid>");
        assert_eq!(secs(-3600), "<invalid>");
    }

    #[test]
    fn seconds_up_to_two_minutes() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(999_999), "0s");
        assert_eq!(secs(1), "1s");
        assert_eq!(secs(59), "59s");
        assert_eq!(secs(60), "60s");
        assert_eq!(secs(119), "119s");
        assert_eq!(human_duration(120 * SECOND - 1), "119s");
    }

    #[test]
    fn minutes_and_seconds_below_ten_minutes() {
        assert_eq!(secs(2 * M), "2m");
        assert_eq!(secs(2 * M + 1), "2m1s");
        assert_eq!(secs(5 * M + 30), "5m30s");
        assert_eq!(secs(9 * M + 59), "9m59s");
        assert_eq!(secs(10 * M), "10m");
        assert_eq!(secs(10 * M + 59), "10m");
    }

    #[test]
    fn minutes_below_three_hours() {
        assert_eq!(secs(59 * M), "59m");
        assert_eq!(secs(60 * M), "60m");
        assert_eq!(secs(2 * H + 59 * M + 59), "179m");
    }

    #[test]
    fn hours_and_minutes_below_eight_hours() {
        assert_eq!(secs(3 * H), "3h");
        assert_eq!(secs(3 * H + M), "3h1m");
        assert_eq!(secs(3 * H + 59), "3h");
        assert_eq!(secs(7 * H + 59 * M + 59), "7h59m");
    }

    #[test]
    fn hours_below_two_days() {
        assert_eq!(secs(8 * H), "8h");
        assert_eq!(secs(8 * H + 30 * M), "8h");
        assert_eq!(secs(47 * H + 59 * M), "47h");
    }

    #[test]
    fn days_and_hours_below_eight_days() {
        assert_eq!(secs(2 * D), "2d");
        assert_eq!(secs(2 * D + H), "2d1h");
        assert_eq!(secs(2 * D + 59 * M), "2d");
        assert_eq!(secs(7 * D + 23 * H), "7d23h");
    }

    #[test]
    fn days_below_two_years() {
        assert_eq!(secs(8 * D), "8d");
        assert_eq!(secs(8 * D + 23 * H), "8d");
        assert_eq!(secs(364 * D), "364d");
        assert_eq!(secs(729 * D + 23 * H), "729d");
    }

    #[test]
    fn years_and_days_below_eight_years() {
        assert_eq!(secs(2 * Y), "2y");
        assert_eq!(secs(2 * Y + D), "2y1d");
        assert_eq!(secs(7 * Y + 364 * D), "7y364d");
    }

    #[test]
    fn years_from_eight() {
        assert_eq!(secs(8 * Y), "8y");
        assert_eq!(secs(8 * Y + 200 * D), "8y");
        assert_eq!(secs(100 * Y), "100y");
        // No overflow at the far end of the range.
        assert_eq!(
            human_duration(i64::MAX),
            format!("{}y", i64::MAX / HOUR / 24 / 365)
        );
    }

    #[test]
    fn age_of_a_timestamp() {
        let created = Timestamp::from_micros(1_700_000_000 * SECOND);
        assert_eq!(age(Some(created), created.plus_micros(12 * SECOND)), "12s");
        assert_eq!(age(Some(created), created.plus_micros(-SECOND)), "0s");
        assert_eq!(age(None, created), "<unknown>");
    }
}
