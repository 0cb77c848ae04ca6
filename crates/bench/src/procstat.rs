//! What the servers cost while the load runs: CPU time and resident memory
//! of their processes, read from `/proc` (Linux), and the size of their data
//! directories. Read from outside the servers so that both systems are
//! measured the same way, with no help from either.

use super::config::ServerPid;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CPU and memory of one server process over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerUsage {
    /// Node id (Leasehold) or endpoint position (etcd).
    pub id: u64,
    /// Process id.
    pub pid: u32,
    /// Average CPU over the window, percent of one core; `None` when the
    /// process was not there at both ends of the window.
    pub cpu_percent: Option<f64>,
    /// Highest resident set size seen, MiB.
    pub rss_mib_max: Option<f64>,
    /// Resident set size at the end, MiB.
    pub rss_mib_end: Option<f64>,
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`,
/// 100 on every Linux this runs on; asked once, without a libc binding).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU time of `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces), in
    // parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

/// Resident set size of `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Samples `servers` from `from` to `until`: CPU time at both ends, RSS
/// every 500 ms.
pub async fn monitor(servers: Vec<ServerPid>, from: Instant, until: Instant) -> Vec<ServerUsage> {
    if servers.is_empty() {
        return Vec::new();
    }
    tokio::time::sleep_until(from.into()).await;
    let cpu0: Vec<Option<Duration>> = servers.iter().map(|s| cpu_time(s.pid)).collect();
    let t0 = Instant::now();
    let mut rss_max: Vec<Option<u64>> = servers.iter().map(|s| rss_bytes(s.pid)).collect();
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        for (m, s) in rss_max.iter_mut().zip(&servers) {
            if let Some(r) = rss_bytes(s.pid) {
                *m = Some(m.map_or(r, |m| m.max(r)));
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    servers
        .iter()
        .zip(cpu0)
        .zip(rss_max)
        .map(|((s, c0), rmax)| {
            let c1 = cpu_time(s.pid);
            ServerUsage {
                id: s.id,
                pid: s.pid,
                cpu_percent: match (c0, c1) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / wall * 100.0),
                    _ => None,
                },
                rss_mib_max: rmax.map(mib),
                rss_mib_end: rss_bytes(s.pid).map(mib),
            }
        })
        .collect()
}

/// Current RSS of each server, MiB.
pub fn rss_now(servers: &[ServerPid]) -> Vec<(u64, Option<f64>)> {
    servers
        .iter()
        .map(|s| (s.id, rss_bytes(s.pid).map(mib)))
        .collect()
}

/// Total size of the files under `path`, bytes (0 if it does not exist).
/// Files that vanish while walking (sled rewrites segments) are skipped.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// The machine the bench ran on, for reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_average: f64,
}

/// Describes this machine.
pub fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Host {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (mem_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(rss_bytes(me).is_some_and(|r| r > 0));
        assert!(cpu_time(me).is_some());
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn dir_size_adds_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 100]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b"), [0u8; 50]).unwrap();
        assert_eq!(dir_size(d.path()), 150);
        assert_eq!(dir_size(&d.path().join("missing")), 0);
    }
}
