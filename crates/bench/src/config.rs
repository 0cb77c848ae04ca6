//! What a bench run was asked to do, as plain values: the CLI parses flags
//! into a [`LoadConfig`] once, so the workloads never see clap.

use leasehold_client::ConnectOptions;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The system under load.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Leasehold cluster (gRPC API).
    Leasehold,
    /// An etcd cluster, used as Kubernetes uses it for Leases (needs the
    /// `etcd` cargo feature).
    Etcd,
}

impl TargetKind {
    /// The name used in reports and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Leasehold => "leasehold",
            TargetKind::Etcd => "etcd",
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Each client keeps its own leases renewed (node heartbeats).
    Renew,
    /// Candidates contend for a few leases, acquiring and releasing.
    Acquire,
    /// 80 % renew, 10 % acquire/release, 8 % get, 2 % list.
    Mixed,
    /// Watchers on the namespace while renewals run.
    Watch,
    /// Renewals while the leader is SIGKILLed.
    Failover,
    /// Many leases: load, memory, disk, restart.
    Scale,
    /// Each client renews its leases over a stream: Leasehold's
    /// `RenewStream` (replicated, durable) against etcd's `LeaseKeepAlive`
    /// (leader-local, not replicated).
    Keepalive,
    /// Renewals through a rolling restart (SIGTERM, start again) of every
    /// server.
    Restart,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Renew => "renew",
            Workload::Acquire => "acquire",
            Workload::Mixed => "mixed",
            Workload::Watch => "watch",
            Workload::Failover => "failover",
            Workload::Scale => "scale",
            Workload::Keepalive => "keepalive",
            Workload::Restart => "restart",
        }
    }
}

/// A server process whose CPU and memory are sampled during the run, and
/// which failover and scale may kill. `id` is the Leasehold node id; for
/// etcd, the member's 1-based position in `--endpoints` (etcd's own member
/// ids are hashes nobody types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPid {
    /// Node id (Leasehold) or endpoint position (etcd).
    pub id: u64,
    /// Process id.
    pub pid: u32,
}

/// Parses `--server-pids`: `ID=PID,...`, or plain `PID,...` (ids 1, 2, ...
/// in the order given).
pub fn parse_server_pids(s: &str) -> Result<Vec<ServerPid>, String> {
    let mut out: Vec<ServerPid> = Vec::new();
    for (i, part) in s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let (id, pid) = match part.split_once('=') {
            Some((id, pid)) => (
                id.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|i| *i > 0)
                    .ok_or_else(|| format!("--server-pids entry {part:?}: bad id"))?,
                pid.trim(),
            ),
            None => (i as u64 + 1, part),
        };
        let pid: u32 = pid
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("--server-pids entry {part:?}: bad pid"))?;
        if out.iter().any(|s| s.id == id) {
            return Err(format!("--server-pids names id {id} twice"));
        }
        out.push(ServerPid { id, pid });
    }
    Ok(out)
}

/// Options of the `watch` workload.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Number of watch streams on the namespace.
    pub watchers: usize,
}

/// Background scanners of the `renew` workload: clients that list every
/// lease, page after page, with a selector, while the renewals are measured
/// (a cluster-wide selector list matching nothing is the worst scan).
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Concurrent scanners (0: none).
    pub scanners: usize,
    /// Their label selector.
    pub selector: String,
}

/// Options of the `failover` workload.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// When to SIGKILL the leader, counted from the start of measurement.
    pub kill_after: Duration,
}

/// Options of the `restart` workload.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Shell command that starts a stopped server again; `{id}` is replaced
    /// by its id.
    pub restart_cmd: Option<String>,
    /// When the first server is stopped, from the start of measurement.
    pub first_after: Duration,
    /// How long each server stays down before the restart command runs.
    pub down: Duration,
    /// How long to wait after a server serves again before the next stop.
    pub settle: Duration,
}

/// Options of the `scale` workload.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Data directories whose size is reported (one per node).
    pub data_dirs: Vec<PathBuf>,
    /// How long to renew after loading, before measuring disk again.
    pub renew_for: Duration,
    /// Shell command that starts the killed node again; `{id}` is replaced
    /// by its id. Without it, the restart step is skipped.
    pub restart_cmd: Option<String>,
    /// Which node to restart (default: a follower).
    pub restart_node: Option<u64>,
    /// Acquisitions in flight while loading.
    pub load_concurrency: usize,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The system under load.
    pub target: TargetKind,
    /// `HOST:PORT` of each server.
    pub endpoints: Vec<String>,
    /// Concurrent clients (each one operation at a time).
    pub clients: usize,
    /// Client connections (separate gRPC clients); client `i` uses
    /// connection `i % connections`.
    pub connections: usize,
    /// Number of leases (meaning per workload: owned leases for renew,
    /// contended leases for acquire, leases to load for scale).
    pub leases: usize,
    /// Measured run time.
    pub duration: Duration,
    /// Load before measurement starts (not counted).
    pub warmup: Duration,
    /// Lease duration of acquired leases, seconds.
    pub lease_seconds: i32,
    /// Open loop: total operations per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Namespace of the bench's leases (etcd: `/registry/leases/<ns>/`).
    pub namespace: String,
    /// Server processes to sample.
    pub servers: Vec<ServerPid>,
    /// Deadline of one operation, including the client's retries.
    pub timeout: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Width of a latency-series bucket.
    pub series_interval: Duration,
    /// `watch` options.
    pub watch: WatchOptions,
    /// `renew`: background scanners.
    pub scan: ScanOptions,
    /// `failover` options.
    pub failover: FailoverOptions,
    /// `scale` options.
    pub scale: ScaleOptions,
    /// `restart` options.
    pub restart: RestartOptions,
    /// TLS and bearer token of every Leasehold client (the etcd target
    /// ignores them).
    pub connect: ConnectOptions,
}

impl LoadConfig {
    /// "open" or "closed".
    pub fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// The per-client open-loop rate, if any.
    pub fn per_client_rate(&self) -> Option<f64> {
        self.rate.map(|r| r / self.clients.max(1) as f64)
    }

    /// Checks what every workload relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("--endpoints: at least one HOST:PORT is required".into());
        }
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.leases == 0 {
            return Err("--leases must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if self.lease_seconds <= 0 {
            return Err("--lease-seconds must be positive".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number of operations per second".into());
            }
        }
        if self.series_interval.is_zero() {
            return Err("--series-ms must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_pids_parse_pairs_and_plain_lists() {
        let p = parse_server_pids("1=100, 3=300").unwrap();
        assert_eq!(
            p,
            vec![ServerPid { id: 1, pid: 100 }, ServerPid { id: 3, pid: 300 }]
        );
        let p = parse_server_pids("7,8").unwrap();
        assert_eq!(p[1], ServerPid { id: 2, pid: 8 });
        assert!(parse_server_pids("").unwrap().is_empty());
        assert!(parse_server_pids("1=x").is_err());
        assert!(parse_server_pids("0=5").is_err());
        assert!(parse_server_pids("1=5,1=6").unwrap_err().contains("twice"));
    }
}
