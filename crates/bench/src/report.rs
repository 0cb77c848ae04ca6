//! The result of one bench run: what was asked, what came out, and the
//! series for plots. Serialised as JSON (`-o json`) for the side-by-side
//! table and the plots, or printed as text.

use super::config::TargetKind;
use super::procstat::{Host, ServerUsage};
use super::recorder::{Bucket, Totals};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1e3,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {} ms  p95 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
            fmt_ms(self.p50),
            fmt_ms(self.p95),
            fmt_ms(self.p99),
            fmt_ms(self.p999),
            fmt_ms(self.max)
        )
    }
}

/// A latency in ms with precision that suits its size.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// One bucket of the series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Start of the bucket, seconds from the start of the run.
    pub t_s: f64,
    /// Successful operations intended in this bucket.
    pub ok: u64,
    /// Failed ones.
    pub errors: u64,
    /// Median latency of the successful ones, ms (0 when none).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// Latency of one kind of operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpStats {
    /// Latency percentiles (including the count).
    pub latency_ms: Percentiles,
}

/// Untimed preparation before the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Setup {
    /// Leases acquired (or found held by their holder).
    pub leases: usize,
    /// How long that took, seconds.
    pub seconds: f64,
}

/// Background scanners of the `renew` workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanReport {
    /// Concurrent scanners.
    pub scanners: usize,
    /// Their selector.
    pub selector: String,
    /// Full scans completed in the measured window.
    pub passes: u64,
    /// List pages answered in the measured window.
    pub pages: u64,
    /// Latency of one page.
    pub page_ms: Percentiles,
    /// Failed pages.
    pub errors: u64,
}

/// Figures of the `watch` workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatchReport {
    /// Watch streams.
    pub watchers: usize,
    /// Renewals acknowledged in the measured window.
    pub renewals: u64,
    /// Events for those renewals delivered, over all watchers.
    pub delivered: u64,
    /// Events expected (renewals × watchers); the difference was still in
    /// flight when the run stopped, or was lost.
    pub expected: u64,
    /// Events delivered before the renewal's acknowledgement reached the
    /// client (counted as 0 ms in the histogram).
    pub before_ack: u64,
    /// Delay from the renewal's acknowledgement (client side) to delivery
    /// of its event to a watcher, same clock.
    pub delay_ms: Percentiles,
    /// The same per watcher, with the endpoint it watched (which shows
    /// whether followers deliver later than the leader).
    #[serde(default)]
    pub per_watcher: Vec<WatcherDelay>,
}

/// One watcher's delivery delays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatcherDelay {
    /// Watcher number.
    pub watcher: usize,
    /// The endpoint it watched.
    pub endpoint: String,
    /// Delay percentiles (count = events matched).
    pub delay_ms: Percentiles,
}

/// Figures of the `failover` workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverReport {
    /// Id of the killed leader (see `ServerPid`).
    pub killed_id: u64,
    /// Its process id.
    pub killed_pid: u32,
    /// When it was killed, seconds from the start of the run.
    pub kill_at_s: f64,
    /// From the kill to the first acknowledgement of a write sent after
    /// the kill, ms; `None` if none succeeded before the end.
    pub first_success_after_kill_ms: Option<f64>,
    /// Longest time between two consecutive acknowledgements (any client)
    /// in the measured window, ms.
    pub longest_gap_ms: f64,
    /// Where that gap started, seconds from the start of the run.
    pub longest_gap_at_s: f64,
    /// Failed operations from the kill to the end.
    pub errors_after_kill: u64,
    /// Leader after the failover (if one was found before the report).
    pub new_leader_id: Option<u64>,
    /// Interval between probe writes, ms. Probes are sent on a fixed
    /// schedule, each without waiting for earlier ones, so they measure when
    /// the cluster takes writes again even while every workload client is
    /// stuck in a call made before the kill.
    #[serde(default)]
    pub probe_every_ms: u64,
    /// Probe writes sent in the measured window.
    #[serde(default)]
    pub probes_sent: u64,
    /// Probe writes that failed (after the client's retries).
    #[serde(default)]
    pub probes_failed: u64,
    /// From the kill to the first acknowledgement of a probe sent after the
    /// kill, ms.
    #[serde(default)]
    pub probe_first_success_ms: Option<f64>,
}

/// Figures of the `restart` workload: one step per server restarted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestartReport {
    /// The restarts, in the order they happened.
    pub steps: Vec<RestartStep>,
    /// Interval between probe writes, ms (see [`FailoverReport`]).
    pub probe_every_ms: u64,
    /// Probe writes sent in the measured window.
    pub probes_sent: u64,
    /// Probe writes that failed (after the client's retries).
    pub probes_failed: u64,
    /// Renewals refused because the tenure was gone (`LEASE_LOST`,
    /// `CONFLICT`): must be 0, leases outlive every restart.
    pub lost_tenures: u64,
}

/// One server's restart in the `restart` workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestartStep {
    /// Id of the server (see `ServerPid`).
    pub id: u64,
    /// Its process id before the restart.
    pub pid: u32,
    /// The restart command's process id.
    pub new_pid: u32,
    /// Whether it led when it was stopped.
    pub was_leader: bool,
    /// When it got SIGTERM, seconds from the start of the run.
    pub stop_at_s: f64,
    /// From SIGTERM to the process being gone, ms.
    pub exit_ms: f64,
    /// From the restart command to the server serving again, ms.
    pub ready_ms: f64,
    /// From SIGTERM to the first acknowledgement of a write sent after it,
    /// ms.
    pub first_write_after_stop_ms: Option<f64>,
    /// Longest time between two consecutive acknowledgements ending between
    /// the SIGTERM and the end of the settle time, ms.
    pub longest_gap_ms: f64,
    /// Failed operations sent in that window.
    pub errors: u64,
}

/// Figures of the `scale` workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ScaleReport {
    /// Leases loaded.
    pub leases: usize,
    /// Time to load them, seconds.
    pub load_seconds: f64,
    /// Acquisitions per second while loading.
    pub load_rate: f64,
    /// RSS per server after loading, MiB (id, MiB).
    pub rss_mib_after_load: Vec<(u64, Option<f64>)>,
    /// Data directory sizes after loading, MiB (path, MiB).
    pub disk_mib_after_load: Vec<(String, f64)>,
    /// Renewals done in the renew phase.
    pub renewals: u64,
    /// Length of the renew phase, seconds.
    pub renew_seconds: f64,
    /// RSS per server after the renew phase, MiB.
    pub rss_mib_after_renew: Vec<(u64, Option<f64>)>,
    /// Data directory sizes after the renew phase, MiB.
    pub disk_mib_after_renew: Vec<(String, f64)>,
    /// The restarted node, if the restart step ran.
    pub restarted_id: Option<u64>,
    /// Process id of the restarted node (the `sh -c` that runs the
    /// command; `exec` in the command makes it the server's).
    pub restarted_pid: Option<u32>,
    /// From starting the command to the node answering Status, ms.
    pub restart_to_status_ms: Option<f64>,
    /// From starting the command to the node serving a local read of a
    /// loaded lease with everything committed before the kill applied, ms.
    pub restart_to_serving_ms: Option<f64>,
    /// RSS of the restarted node once serving, MiB.
    pub rss_mib_after_restart: Option<f64>,
    /// Snapshot builds seen (on any node) during the renew phase.
    #[serde(default)]
    pub snapshots_seen: u64,
    /// Latency of the renewals sent or answered while a snapshot was being
    /// written on some node.
    #[serde(default)]
    pub renew_during_snapshot_ms: Percentiles,
    /// Per data directory after the renew phase: (path, WAL MiB, snapshot
    /// MiB). The snapshot is the live data; the WAL is what a restart
    /// replays on top of it.
    #[serde(default)]
    pub disk_parts_mib_after_renew: Vec<(String, f64, f64)>,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// System under load.
    pub target: TargetKind,
    /// `leasehold` version that ran the bench.
    pub version: String,
    /// When the run started, RFC 3339.
    pub started_at: String,
    /// The machine.
    pub host: Host,
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// Whether the clients used TLS (it costs CPU on both sides, so runs
    /// with and without it do not compare). Left out of plaintext reports,
    /// which therefore read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// "closed" or "open".
    pub mode: String,
    /// Open-loop total rate, operations per second.
    pub rate: Option<f64>,
    /// Concurrent clients.
    pub clients: usize,
    /// Client connections.
    pub connections: usize,
    /// Leases.
    pub leases: usize,
    /// Lease duration, seconds.
    pub lease_seconds: i32,
    /// Measured run time, seconds.
    pub duration_s: f64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// The operation mix, when there is one.
    pub mix: Option<String>,
    /// Untimed setup.
    pub setup: Option<Setup>,
    /// Successful operations in the measured window.
    pub ops: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency from the intended send time.
    pub latency_ms: Percentiles,
    /// Latency from the actual send (differs from `latency_ms` in open
    /// loop, when the client fell behind its schedule).
    pub service_ms: Percentiles,
    /// Latency per operation.
    pub per_op: BTreeMap<String, OpStats>,
    /// Outcome counts (e.g. granted vs held).
    pub outcomes: BTreeMap<String, u64>,
    /// Failed operations in the measured window.
    pub errors_total: u64,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
    /// An example message per error kind.
    pub error_examples: BTreeMap<String, String>,
    /// Server CPU and memory over the measured window.
    pub servers: Vec<ServerUsage>,
    /// Width of a series bucket, ms.
    pub series_interval_ms: u64,
    /// Latency over time, whole run.
    pub series: Vec<SeriesPoint>,
    /// `watch` figures.
    pub watch: Option<WatchReport>,
    /// `renew` with background scanners.
    #[serde(default)]
    pub scan: Option<ScanReport>,
    /// `failover` figures.
    pub failover: Option<FailoverReport>,
    /// `scale` figures.
    pub scale: Option<ScaleReport>,
    /// `restart` figures.
    #[serde(default)]
    pub restart: Option<RestartReport>,
}

/// What a workload knows about its run, to build a [`Report`] with.
pub struct RunInfo<'a> {
    /// Workload name.
    pub workload: &'static str,
    /// The run's configuration.
    pub cfg: &'a super::config::LoadConfig,
    /// When the run started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The machine, described before the load started.
    pub host: Host,
    /// The mix, if any.
    pub mix: Option<String>,
    /// Setup figures.
    pub setup: Option<Setup>,
    /// Server usage.
    pub servers: Vec<ServerUsage>,
}

fn series(buckets: &[Bucket], interval_ms: u64) -> Vec<SeriesPoint> {
    buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = Percentiles::of(&b.latency);
            SeriesPoint {
                t_s: (i as u64 * interval_ms) as f64 / 1e3,
                ok: b.ok,
                errors: b.errors,
                p50_ms: p.p50,
                p99_ms: p.p99,
                max_ms: p.max,
            }
        })
        .collect()
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(info: RunInfo<'_>, totals: &Totals) -> Report {
        let cfg = info.cfg;
        let duration_s = cfg.duration.as_secs_f64();
        let interval_ms = u64::try_from(cfg.series_interval.as_millis()).unwrap_or(1000);
        Report {
            workload: info.workload.to_string(),
            target: cfg.target,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: info
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: info.host,
            endpoints: cfg.endpoints.clone(),
            tls: cfg.target == super::config::TargetKind::Leasehold && cfg.connect.tls.is_some(),
            mode: cfg.mode().to_string(),
            rate: cfg.rate,
            clients: cfg.clients,
            connections: cfg.connections,
            leases: cfg.leases,
            lease_seconds: cfg.lease_seconds,
            duration_s,
            warmup_s: cfg.warmup.as_secs_f64(),
            mix: info.mix,
            setup: info.setup,
            ops: totals.latency.len(),
            ops_per_sec: totals.latency.len() as f64 / duration_s.max(1e-9),
            latency_ms: Percentiles::of(&totals.latency),
            service_ms: Percentiles::of(&totals.service),
            per_op: totals
                .per_op
                .iter()
                .map(|(k, h)| {
                    (
                        k.to_string(),
                        OpStats {
                            latency_ms: Percentiles::of(h),
                        },
                    )
                })
                .collect(),
            outcomes: totals
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            errors_total: totals.errors.values().sum(),
            errors: totals.errors.clone(),
            error_examples: totals.first_errors.clone(),
            servers: info.servers,
            series_interval_ms: interval_ms,
            series: series(&totals.series, interval_ms),
            watch: None,
            scan: None,
            failover: None,
            scale: None,
            restart: None,
        }
    }

    /// The report as human-readable text.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let rate = match self.rate {
            Some(r) => format!("open loop at {r:.0} ops/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            o,
            "{} against {}: {rate}, {} clients over {} connections, {} leases, {:.1} s measured after {:.1} s warmup",
            self.workload,
            self.target.as_str(),
            self.clients,
            self.connections,
            self.leases,
            self.duration_s,
            self.warmup_s
        );
        if self.tls {
            let _ = writeln!(o, "  tls        on");
        }
        if let Some(m) = &self.mix {
            let _ = writeln!(o, "  mix        {m}");
        }
        if let Some(s) = &self.setup {
            let _ = writeln!(
                o,
                "  setup      {} leases acquired in {:.1} s (not timed)",
                s.leases, s.seconds
            );
        }
        let _ = writeln!(
            o,
            "  ops        {} ({:.1}/s), errors {}",
            self.ops, self.ops_per_sec, self.errors_total
        );
        let _ = writeln!(o, "  latency    {}", self.latency_ms.line());
        if self.rate.is_some() {
            let _ = writeln!(o, "  service    {}", self.service_ms.line());
        }
        if self.per_op.len() > 1 {
            for (op, s) in &self.per_op {
                let _ = writeln!(
                    o,
                    "  {op:<10} {} ops: {}",
                    s.latency_ms.count,
                    s.latency_ms.line()
                );
            }
        }
        if !self.outcomes.is_empty() {
            let list: Vec<String> = self
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "  outcomes   {}", list.join(", "));
        }
        for (kind, n) in &self.errors {
            let example = self.error_examples.get(kind).cloned().unwrap_or_default();
            let _ = writeln!(o, "  error      {kind}: {n} (e.g. {example})");
        }
        for s in &self.servers {
            let f = |v: Option<f64>, unit: &str| match v {
                Some(v) => format!("{v:.1}{unit}"),
                None => "-".to_string(),
            };
            let _ = writeln!(
                o,
                "  server     {} (pid {}): cpu {} of one core, rss {} (max {})",
                s.id,
                s.pid,
                f(s.cpu_percent, "%"),
                f(s.rss_mib_end, " MiB"),
                f(s.rss_mib_max, " MiB")
            );
        }
        if let Some(sc) = &self.scan {
            let _ = writeln!(
                o,
                "  scans      {} scanners ({:?}): {} full scans, {} pages, {} errors",
                sc.scanners, sc.selector, sc.passes, sc.pages, sc.errors
            );
            let _ = writeln!(o, "  page       {}", sc.page_ms.line());
        }
        if let Some(w) = &self.watch {
            let _ = writeln!(
                o,
                "  watch      {} watchers, {} renewals, {}/{} events delivered ({} before the ack)",
                w.watchers, w.renewals, w.delivered, w.expected, w.before_ack
            );
            let _ = writeln!(o, "  delay      {}", w.delay_ms.line());
            for d in &w.per_watcher {
                let _ = writeln!(
                    o,
                    "  watcher {:<2} {}: p50 {} ms  p99 {} ms  max {} ms",
                    d.watcher,
                    d.endpoint,
                    fmt_ms(d.delay_ms.p50),
                    fmt_ms(d.delay_ms.p99),
                    fmt_ms(d.delay_ms.max)
                );
            }
        }
        if let Some(r) = &self.restart {
            for st in &r.steps {
                let _ = writeln!(
                    o,
                    "  restart    server {}{}: SIGTERM at {:.2} s, exited in {:.0} ms; first write \
                     after it {}; longest gap between writes {:.0} ms; back in {:.0} ms; {} errors",
                    st.id,
                    if st.was_leader { " (leader)" } else { "" },
                    st.stop_at_s,
                    st.exit_ms,
                    st.first_write_after_stop_ms
                        .map_or("none".into(), |v| format!("{v:.0} ms")),
                    st.longest_gap_ms,
                    st.ready_ms,
                    st.errors
                );
            }
            let _ = writeln!(
                o,
                "  probes     every {} ms: {} sent, {} failed; tenures lost: {}",
                r.probe_every_ms, r.probes_sent, r.probes_failed, r.lost_tenures
            );
        }
        if let Some(f) = &self.failover {
            let first = f
                .first_success_after_kill_ms
                .map_or("none".to_string(), |v| format!("{v:.0} ms"));
            let _ = writeln!(
                o,
                "  failover   killed node {} (pid {}) at {:.2} s; first write after it {first}; \
                 longest gap between writes {:.0} ms (at {:.2} s); {} errors after the kill; new leader {}",
                f.killed_id,
                f.killed_pid,
                f.kill_at_s,
                f.longest_gap_ms,
                f.longest_gap_at_s,
                f.errors_after_kill,
                f.new_leader_id.map_or("unknown".into(), |l| l.to_string())
            );
            let _ = writeln!(
                o,
                "  probes     every {} ms: {} sent, {} failed; first probe acknowledged {} after the kill",
                f.probe_every_ms,
                f.probes_sent,
                f.probes_failed,
                f.probe_first_success_ms
                    .map_or("never".into(), |v| format!("{v:.0} ms"))
            );
        }
        if let Some(s) = &self.scale {
            let rss = |v: &[(u64, Option<f64>)]| {
                v.iter()
                    .map(|(id, m)| match m {
                        Some(m) => format!("{id}: {m:.0} MiB"),
                        None => format!("{id}: -"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let disk = |v: &[(String, f64)]| {
                v.iter()
                    .map(|(p, m)| format!("{p}: {m:.1} MiB"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                o,
                "  scale      {} leases loaded in {:.1} s ({:.0}/s)",
                s.leases, s.load_seconds, s.load_rate
            );
            let _ = writeln!(o, "  rss        after load: {}", rss(&s.rss_mib_after_load));
            let _ = writeln!(
                o,
                "  disk       after load: {}",
                disk(&s.disk_mib_after_load)
            );
            let _ = writeln!(
                o,
                "  renew      {} renewals in {:.0} s; rss after: {}; disk after: {}",
                s.renewals,
                s.renew_seconds,
                rss(&s.rss_mib_after_renew),
                disk(&s.disk_mib_after_renew)
            );
            let _ = writeln!(
                o,
                "  snapshots  {} seen while renewing; renewals meanwhile: {}",
                s.snapshots_seen,
                s.renew_during_snapshot_ms.line()
            );
            for (p, wal, snap) in &s.disk_parts_mib_after_renew {
                let _ = writeln!(
                    o,
                    "  disk parts {p}: wal {wal:.1} MiB, snapshot {snap:.1} MiB"
                );
            }
            if let Some(id) = s.restarted_id {
                let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
                let _ = writeln!(
                    o,
                    "  restart    node {id}: answering Status after {}, serving after {}, rss {}",
                    ms(s.restart_to_status_ms),
                    ms(s.restart_to_serving_ms),
                    s.rss_mib_after_restart
                        .map_or("-".into(), |m| format!("{m:.0} MiB"))
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_ms() {
        let mut h = crate::recorder::histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!(p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.p50 - 5.0).abs() < 0.05, "{p:?}");
        assert_eq!(Percentiles::of(&crate::recorder::histogram()).count, 0);
    }
}
