//! Clock offsets: libfaketime, preloaded into the nodes by
//! `docker-compose.chaos.yml`, reads each node's offset from a spec file on
//! the host. This holds how the backend finds that setup (the image label,
//! the preload, the spec files' mounts), how a spec is written (atomically:
//! libfaketime exits on a half-written one) and how an offset is verified
//! (the wall clock a fresh process in the container sees). Separate from the
//! compose runner because it works through files on the host and has its
//! own verification.

use super::{env_of, last_chars, mount_to, str_at, DockerBackend};
use crate::backend::NodeId;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The image label `cluster/build-image.sh` sets to the path of libfaketime
/// inside the image, or to nothing when it could not include it.
pub const FAKETIME_LABEL: &str = "leasehold.faketime";

/// The binary inside the image (there is no shell).
const BINARY_IN_IMAGE: &str = "/leasehold";

/// How clock offsets reach the nodes, when they can.
#[derive(Debug, Clone)]
pub(super) struct ClockSetup {
    /// The spec file of each node, on the host.
    pub(super) spec_files: BTreeMap<NodeId, PathBuf>,
    /// How long a running process may keep using the previous spec
    /// (`FAKETIME_CACHE_DURATION`).
    pub(super) cache: Duration,
}

impl DockerBackend {
    /// Decides whether clock offsets work, and where each node's spec file
    /// is on the host.
    pub(super) async fn clock_setup(
        &self,
        inspected: &BTreeMap<NodeId, Value>,
    ) -> Result<ClockSetup, String> {
        let first = inspected
            .values()
            .next()
            .ok_or_else(|| "no containers".to_string())?;
        let image = str_at(first, &["Image"]);
        let out = self
            .docker(&["image", "inspect", "-f", "{{json .Config.Labels}}", &image])
            .await?;
        let labels: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        let lib = labels
            .get(FAKETIME_LABEL)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if lib.is_empty() {
            return Err(format!(
                "the image has no libfaketime (label {FAKETIME_LABEL} is empty or missing): \
                 cluster/build-image.sh ran with --no-faketime, or found none on the host and \
                 could not install it"
            ));
        }
        let mut spec_files = BTreeMap::new();
        let mut cache = Duration::from_secs(10); // libfaketime's default
        for (id, c) in inspected {
            let name = self.container(*id)?;
            let env = env_of(c);
            let preload = env.get("LD_PRELOAD").map(String::as_str).unwrap_or("");
            if !preload.split([':', ' ']).any(|p| p == lib) {
                return Err(format!(
                    "{name} does not preload {lib} (LD_PRELOAD={preload:?}): it was not started \
                     with docker-compose.chaos.yml"
                ));
            }
            let spec = env
                .get("FAKETIME_TIMESTAMP_FILE")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{name} has no FAKETIME_TIMESTAMP_FILE"))?;
            let spec = Path::new(spec);
            let (dir, file) = match (spec.parent(), spec.file_name()) {
                (Some(d), Some(f)) => (d, f),
                _ => return Err(format!("{name}: bad FAKETIME_TIMESTAMP_FILE {spec:?}")),
            };
            let dir = dir.to_string_lossy();
            let source = mount_to(c, &dir)
                .filter(|m| m.get("Type").and_then(Value::as_str) == Some("bind"))
                .and_then(|m| m.get("Source").and_then(Value::as_str))
                .ok_or_else(|| format!("{name} has no bind mount at {dir}"))?;
            let host_dir = PathBuf::from(source);
            if let Some(want) = &self.opts.faketime_dir {
                let want = want.join(&self.info(*id)?.node.service);
                if !same_path(&want, &host_dir) {
                    return Err(format!(
                        "{name} mounts {} at {dir}, not {}",
                        host_dir.display(),
                        want.display()
                    ));
                }
            }
            spec_files.insert(*id, host_dir.join(file));
            if env.get("FAKETIME_NO_CACHE").is_some_and(|v| v == "1") {
                cache = Duration::ZERO;
            } else if let Some(secs) = env.get("FAKETIME_CACHE_DURATION") {
                cache = secs
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("{name}: bad FAKETIME_CACHE_DURATION {secs:?}"))?;
            }
        }
        Ok(ClockSetup { spec_files, cache })
    }

    /// The wall-clock time a fresh process in node `id` sees, against the
    /// host's: runs the client with trace logging (libfaketime applies to it
    /// as to the server: same environment, same spec file) and reads the
    /// timestamp of its first log line. Returns (host before, seen, host
    /// after).
    pub(super) async fn wall_clock_in(
        &self,
        id: NodeId,
    ) -> Result<(SystemTime, SystemTime, SystemTime), String> {
        let info = self.info(id)?;
        let endpoint = format!("127.0.0.1:{}", info.node.port);
        let before = SystemTime::now();
        // The health check's result does not matter, only its log lines.
        let out = self
            .exec_env(
                id,
                &["RUST_LOG=trace"],
                &[
                    BINARY_IN_IMAGE,
                    "--endpoints",
                    &endpoint,
                    "--timeout",
                    "1",
                    "health",
                ],
            )
            .await?;
        let after = SystemTime::now();
        let seen = first_log_timestamp(&out.stderr).ok_or_else(|| {
            format!(
                "node {id}: no timestamped log line from `{}`: {}",
                out.what,
                last_chars(&out.stderr, 500)
            )
        })?;
        Ok((before, seen, after))
    }
}

/// Whether two paths name the same file (canonically, when both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// A libfaketime offset spec: signed seconds, e.g. `+30`, `-30`, `+0`.
pub(super) fn faketime_spec(offset_secs: i64) -> String {
    format!("{offset_secs:+}\n")
}

/// Whether `s` is an offset spec as [`faketime_spec`] writes them.
pub(super) fn is_offset_spec(s: &str) -> bool {
    let s = s.trim();
    s.strip_prefix(['+', '-'])
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `contents` to a temporary file next to `path` and renames it over
/// `path`, so that a reader sees the old or the new file, never a part.
pub(super) async fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no directory", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    ));
    tokio::fs::write(&tmp, contents)
        .await
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}

/// The timestamp of the first line of a tracing log (`2024-05-03T12:00:00.123456Z  TRACE ...`).
fn first_log_timestamp(log: &str) -> Option<SystemTime> {
    log.lines().find_map(|line| {
        let first = line.split_whitespace().next()?;
        let t = chrono::DateTime::parse_from_rfc3339(first).ok()?;
        Some(SystemTime::from(t.with_timezone(&chrono::Utc)))
    })
}

/// Checks that `seen`, read between the host times `before` and `after`, is
/// the host time shifted by `offset_secs`, give or take `slack`.
pub(super) fn check_offset(
    before: SystemTime,
    seen: SystemTime,
    after: SystemTime,
    offset_secs: i64,
    slack: Duration,
) -> Result<(), String> {
    let shift = |t: SystemTime, secs: i64| -> Option<SystemTime> {
        let d = Duration::from_secs(secs.unsigned_abs());
        if secs >= 0 {
            t.checked_add(d)
        } else {
            t.checked_sub(d)
        }
    };
    let lo = shift(before, offset_secs).and_then(|t| t.checked_sub(slack));
    let hi = shift(after, offset_secs).and_then(|t| t.checked_add(slack));
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo <= seen && seen <= hi => Ok(()),
        _ => {
            let diff = match seen.duration_since(before) {
                Ok(d) => format!("+{:.1}", d.as_secs_f64()),
                Err(e) => format!("-{:.1}", e.duration().as_secs_f64()),
            };
            Err(format!(
                "a process in the container sees the wall clock {diff} s from the host's, \
                 expected {offset_secs:+} s"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faketime_specs_are_signed_seconds() {
        assert_eq!(faketime_spec(30), "+30\n");
        assert_eq!(faketime_spec(-30), "-30\n");
        assert_eq!(faketime_spec(0), "+0\n");
        for ok in ["+30\n", "-30", "+0"] {
            assert!(is_offset_spec(ok), "{ok}");
        }
        for bad in ["30", "+", "+3d", "@2020-01-01 00:00:00", ""] {
            assert!(!is_offset_spec(bad), "{bad}");
        }
    }

    #[test]
    fn reads_the_first_log_timestamp_and_checks_the_offset() {
        let log = "ERROR: ld.so: something\n\
                   2026-11-22T06:09:26.822736Z TRACE tower::buffer::worker: polling\n\
                   2026-11-22T06:09:27.000000Z TRACE later\n";
        let seen = first_log_timestamp(log).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2026-11-22T06:09:26.822736Z").unwrap();
        assert_eq!(seen, SystemTime::from(want.with_timezone(&chrono::Utc)));
        assert_eq!(first_log_timestamp("no time here\n"), None);

        let host = seen - Duration::from_secs(30);
        let slack = Duration::from_secs(1);
        assert!(check_offset(host, seen, host + Duration::from_millis(300), 30, slack).is_ok());
        assert!(check_offset(host, seen, host, 0, slack).is_err());
        let host = seen + Duration::from_secs(45);
        assert!(check_offset(host, seen, host, -45, slack).is_ok());
        assert!(check_offset(host, seen, host, 45, slack).is_err());
    }
}
