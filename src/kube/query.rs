//! Query strings, bounded and typed.
//!
//! The apiserver decodes a query string into its options structs and
//! ignores keys it does not know; so does this module (clients add
//! `timeout`, `pretty` and more as they please). Every parameter an
//! endpoint does know is checked here, and a bad one is a 400 naming it:
//! - the whole query string is at most [`MAX_QUERY_BYTES`] (the largest
//!   label selector, 8 KiB, fits with room to spare), and holds at most
//!   [`MAX_PARAMS`] parameters;
//! - a known parameter given twice is refused (Go would take the first
//!   silently; a client that sends two label selectors has a bug);
//! - values must be UTF-8 after percent-decoding;
//! - booleans are Go's `strconv.ParseBool` (`1`, `t`, `true`, `TRUE`,
//!   `True` and the `0`/`f`/`false` family); integers are decimal;
//!   durations are Go's `time.ParseDuration` (`32s`, `1m0s`, `500ms`).

use super::status::KubeError;
use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Most parameters in one query string.
pub const MAX_PARAMS: usize = 64;

/// The parameters of one request that its endpoint knows, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    known: BTreeMap<&'static str, String>,
}

impl Query {
    /// Decodes `raw` (without the `?`), keeping the parameters in `known`.
    pub fn parse(raw: Option<&str>, known: &[&'static str]) -> Result<Query, KubeError> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        if raw.len() > MAX_QUERY_BYTES {
            return Err(KubeError::bad_param(
                "query string",
                format!(
                    "it is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
                    raw.len()
                ),
            ));
        }
        for (n, pair) in raw.split('&').filter(|p| !p.is_empty()).enumerate() {
            if n >= MAX_PARAMS {
                return Err(KubeError::bad_param(
                    "query string",
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k).map_err(|e| KubeError::bad_param("query string", e))?;
            let Some(name) = known.iter().copied().find(|n| *n == key) else {
                continue;
            };
            let value = decode(v).map_err(|e| KubeError::bad_param(name, e))?;
            if q.known.insert(name, value).is_some() {
                return Err(KubeError::bad_param(name, "given more than once"));
            }
        }
        Ok(q)
    }

    /// The value of `name`, if given (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.known.get(name).map(String::as_str)
    }

    /// The value of `name`, at most `max` bytes; `""` when absent.
    pub fn string(&self, name: &str, max: usize) -> Result<&str, KubeError> {
        let v = self.get(name).unwrap_or("");
        if v.len() > max {
            return Err(KubeError::bad_param(
                name,
                format!("it is {} bytes long; at most {max} are accepted", v.len()),
            ));
        }
        Ok(v)
    }

    /// A boolean parameter (absent or empty: `None`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, KubeError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| KubeError::bad_param(name, format!("{v:?} is not a boolean"))),
        }
    }

    /// An integer parameter (absent or empty: `None`).
    pub fn int(&self, name: &str) -> Result<Option<i64>, KubeError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| KubeError::bad_param(name, format!("{} is not an integer", short(v)))),
        }
    }

    /// A Go duration parameter (absent or empty: `None`).
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, KubeError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => parse_go_duration(v)
                .map(Some)
                .map_err(|e| KubeError::bad_param(name, e)),
        }
    }
}

/// A value quoted for an error message, cut short.
fn short(v: &str) -> String {
    const KEEP: usize = 40;
    if v.chars().count() <= KEEP {
        format!("{v:?}")
    } else {
        let head: String = v.chars().take(KEEP).collect();
        format!("{head:?}... ({} bytes)", v.len())
    }
}

/// Form decoding: `+` is a space, then percent-decoding to UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "not UTF-8 after percent-decoding".to_string())
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations: a sequence of
/// decimal numbers, each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), or a bare `0`. At most 32 bytes.
pub fn parse_go_duration(v: &str) -> Result<Duration, String> {
    const MAX: usize = 32;
    let bad = || format!("{} is not a duration such as 30s or 1m0s", short(v));
    if v.len() > MAX {
        return Err(bad());
    }
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = v;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    // Beyond a day is certainly not a request timeout; it also keeps the
    // float conversion far from overflow.
    if !total.is_finite() || total > 86_400.0 {
        return Err(format!("{} is longer than a day", short(v)));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const KNOWN: &[&str] = &["labelSelector", "limit", "watch", "timeout", "continue"];

    fn field_of(e: &KubeError) -> String {
        let v = serde_json::to_value(&e.status).expect("serializes");
        v["details"]["causes"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn decodes_known_parameters_and_ignores_the_rest() {
        let q = Query::parse(
            Some("labelSelector=app%3Da%2Ctier+in+(x)&limit=500&pretty=true&x"),
            KNOWN,
        )
        .unwrap();
        assert_eq!(q.get("labelSelector"), Some("app=a,tier in (x)"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
        assert_eq!(q.get("pretty"), None);
        assert_eq!(Query::parse(None, KNOWN).unwrap(), Query::default());
        assert_eq!(Query::parse(Some(""), KNOWN).unwrap(), Query::default());
    }

    #[test]
    fn refuses_duplicates_oversize_and_bad_encoding_naming_the_parameter() {
        let e = Query::parse(Some("limit=1&limit=2"), KNOWN).unwrap_err();
        assert_eq!(field_of(&e), "limit");
        let e = Query::parse(Some(&"a=b&".repeat(5000)), KNOWN).unwrap_err();
        assert_eq!(field_of(&e), "query string");
        let e = Query::parse(Some(&"a&".repeat(MAX_PARAMS + 1)), KNOWN).unwrap_err();
        assert_eq!(field_of(&e), "query string");
        let e = Query::parse(Some("labelSelector=%ff"), KNOWN).unwrap_err();
        assert_eq!(field_of(&e), "labelSelector");
        // An unknown key with bad encoding is still refused: it cannot be
        // told apart from a known one.
        assert!(Query::parse(Some("%ff=1"), KNOWN).is_err());
    }

    #[test]
    fn typed_values() {
        let q = Query::parse(Some("watch=True&limit=abc&timeout=1m30s"), KNOWN).unwrap();
        assert_eq!(q.bool("watch").unwrap(), Some(true));
        let e = q.int("limit").unwrap_err();
        assert_eq!(field_of(&e), "limit");
        let v: Value = serde_json::to_value(&e.status).unwrap();
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("\"abc\" is not an integer"));
        assert_eq!(
            q.duration("timeout").unwrap(),
            Some(Duration::from_secs(90))
        );
        let q = Query::parse(Some("watch=yes"), KNOWN).unwrap();
        assert_eq!(field_of(&q.bool("watch").unwrap_err()), "watch");
        let q = Query::parse(Some("continue=abcdef"), KNOWN).unwrap();
        assert_eq!(field_of(&q.string("continue", 3).unwrap_err()), "continue");
        assert_eq!(q.string("labelSelector", 3).unwrap(), "");
    }

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["", "yes", "tRUE", "2"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("32s"), Duration::from_secs(32));
        assert_eq!(ok("1m0s"), Duration::from_secs(60));
        assert_eq!(ok("1h2m3s"), Duration::from_secs(3723));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        for bad in [
            "",
            "s",
            "10",
            "-1s",
            "1d",
            "1x",
            "1.2.3s",
            "5s5",
            "25h",
            &"1s".repeat(20),
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
