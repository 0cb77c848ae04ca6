//! The `leasehold-bench` command line: flags of the load generator, turned
//! into a [`LoadConfig`]; the output of a run as text, JSON or YAML; and the
//! `table` and `plot` helpers that read JSON reports.
//!
//! It was `leasehold bench`: the subcommands, their flags, the global
//! `--endpoints`, `--timeout` and `-o` (with the same environment
//! variables) and the exit codes are unchanged, so scripts only swap
//! `leasehold bench` for `leasehold-bench`.
//!
//! Defaults differ per workload where the scenarios differ: renew
//! and friends use 10,000 leases of 40 s (node leases), acquire contends for
//! 10 leases of 15 s (client-go's election lease), scale loads 1,000,000
//! leases of one hour (so none expires while loading).

use crate::config::{
    parse_server_pids, FailoverOptions, RestartOptions, ScaleOptions, ScanOptions, WatchOptions,
};
use crate::{BenchError, LoadConfig, TargetKind, Workload};
use clap::{Args, Parser, Subcommand};
use leasehold_client::{ConnectArgs, ConnectOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Exit code: the report (or table, or charts) was written.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run started but failed.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: invalid flags or reports.
pub const EXIT_INVALID: i32 = 2;
/// Exit code: the cluster could not be reached or did not serve the setup.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// Load generator: renew, acquire, mixed, watch, failover, keepalive and
/// scale workloads against Leasehold (or etcd); `table` and `plot` read the
/// JSON reports. See docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "leasehold-bench", version)]
pub struct Cli {
    /// Cluster endpoints, HOST:PORT, comma-separated.
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_ENDPOINTS",
        default_value = "127.0.0.1:7070",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Output format of a run's report: `table` prints it as text, `json`
    /// is what `table` and `plot` read back.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// Deadline of each call, in seconds.
    #[arg(long, global = true, env = "LEASEHOLD_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
    /// TLS and bearer token of the Leasehold clients (the same flags and
    /// environment variables as `leasehold`'s).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Workload or helper.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// How a report is printed. The names are the `leasehold` CLI's `-o`
/// values, so the flag reads the same in both tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The report as text.
    Table,
    /// The report as JSON.
    Json,
    /// The report as YAML.
    Yaml,
}

/// `leasehold-bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Each client keeps its own leases renewed (node heartbeats).
    Renew {
        /// Load flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Background clients that list every lease in every namespace,
        /// page after page, with --scan-selector, while renewals are
        /// measured (shows whether long scans stall writes).
        #[arg(long, default_value_t = 0)]
        scanners: usize,
        /// Label selector of the scanners (default: one that matches
        /// nothing, so every scan examines every lease).
        #[arg(long, default_value = "leasehold.io/bench-scan=none")]
        scan_selector: String,
    },
    /// Candidates contend for a few leases: acquire, release when granted.
    Acquire(LoadArgs),
    /// 80% renew, 10% acquire/release, 8% get, 2% list.
    Mixed(LoadArgs),
    /// Watchers on the namespace while renewals run; delay from a renewal's
    /// acknowledgement to its event's delivery.
    Watch {
        /// Load flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Watch streams on the namespace (spread over the endpoints).
        #[arg(long, default_value_t = 4)]
        watchers: usize,
    },
    /// Renewals while the leader is SIGKILLed (needs --server-pids ID=PID).
    Failover {
        /// Load flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Seconds into the measured window at which the leader is killed.
        #[arg(long, default_value_t = 5.0)]
        kill_after: f64,
    },
    /// Renewals through a rolling restart: every server is stopped with
    /// SIGTERM and started again in turn, followers first, the leader last
    /// (needs --server-pids ID=PID and --restart-cmd).
    Restart {
        /// Load flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Command that starts a stopped server again (`{id}`: its id), run
        /// with `sh -c`.
        #[arg(long)]
        restart_cmd: Option<String>,
        /// Seconds into the measured window at which the first server is
        /// stopped.
        #[arg(long, default_value_t = 3.0)]
        first_after: f64,
        /// Seconds each server stays down before it is started again.
        #[arg(long, default_value_t = 1.0)]
        down: f64,
        /// Seconds to wait after a server serves again before the next stop.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
    },
    /// Each client renews its own leases over a stream (Leasehold's
    /// RenewStream, replicated; etcd's LeaseKeepAlive, leader-local).
    /// Default: one lease per client.
    Keepalive(LoadArgs),
    /// Load many leases; memory, disk, disk after renewals, restart time.
    Scale {
        /// Load flags.
        #[command(flatten)]
        load: LoadArgs,
        /// Data directories to measure (one per node), comma-separated.
        #[arg(long, value_delimiter = ',')]
        data_dirs: Vec<PathBuf>,
        /// Minutes of renewals after loading.
        #[arg(long, default_value_t = 10.0)]
        renew_minutes: f64,
        /// Command that starts a killed node again (`{id}`: its id), run
        /// with `sh -c`; use `exec` so its pid is the server's. Without it,
        /// no restart is measured.
        #[arg(long)]
        restart_cmd: Option<String>,
        /// Node to kill and restart (default: a follower).
        #[arg(long)]
        restart_node: Option<u64>,
        /// Acquisitions in flight while loading.
        #[arg(long, default_value_t = 512)]
        load_concurrency: usize,
    },
    /// Print the side-by-side table (ours / etcd) of JSON reports.
    Table {
        /// Report files, or directories of `*.json` reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
    /// Draw SVG charts from JSON reports (needs the `plots` feature):
    /// latency against throughput per system, and latency over time
    /// through a failover.
    Plot {
        /// Report files, or directories of `*.json` reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Directory for the SVG files.
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
    },
}

/// Flags shared by the load workloads.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// System under load (`etcd` needs the `etcd` feature).
    #[arg(long, value_enum, default_value = "leasehold")]
    pub target: TargetKind,
    /// Concurrent clients, each with one operation in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Client connections shared by the clients (default: clients, at most 8).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Leases (default: 10,000; acquire 10; scale 1,000,000).
    #[arg(long)]
    pub leases: Option<usize>,
    /// Measured run time, seconds (default 10; failover 15; restart 40).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Untimed load before measuring, seconds (default 2; failover, restart
    /// and scale 0).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Lease duration, seconds (default 40; acquire 15; scale 3600).
    #[arg(long)]
    pub lease_seconds: Option<i32>,
    /// Open loop: total operations per second, sent on schedule whatever
    /// the latency; latency counts from the scheduled time. Default: closed
    /// loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Server processes to sample for CPU and memory, `ID=PID,...` (ID: node
    /// id; for etcd the position in --endpoints) or `PID,...`.
    #[arg(long, default_value = "")]
    pub server_pids: String,
    /// Namespace of the bench's leases.
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    /// Width of a latency-series bucket, ms (default 1000; failover and
    /// restart 100).
    #[arg(long)]
    pub series_ms: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} must be a non-negative number"))
}

/// The run configuration for `workload` from the flags.
pub fn config(
    workload: Workload,
    a: &LoadArgs,
    endpoints: &[String],
    timeout: f64,
) -> Result<LoadConfig, String> {
    let (leases, lease_seconds, duration, warmup, series_ms) = match workload {
        Workload::Acquire => (10, 15, 10.0, 2.0, 1000),
        Workload::Failover => (10_000, 40, 15.0, 0.0, 100),
        Workload::Restart => (10_000, 40, 40.0, 0.0, 100),
        Workload::Scale => (1_000_000, 3600, 10.0, 0.0, 1000),
        Workload::Keepalive => (a.clients, 40, 10.0, 2.0, 1000),
        _ => (10_000, 40, 10.0, 2.0, 1000),
    };
    let cfg = LoadConfig {
        target: a.target,
        endpoints: endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        clients: a.clients,
        connections: a.connections.unwrap_or(a.clients.clamp(1, 8)),
        leases: a.leases.unwrap_or(leases),
        duration: secs("duration", a.duration.unwrap_or(duration))?,
        warmup: secs("warmup", a.warmup.unwrap_or(warmup))?,
        lease_seconds: a.lease_seconds.unwrap_or(lease_seconds),
        rate: a.rate,
        namespace: a.namespace.clone(),
        servers: parse_server_pids(&a.server_pids)?,
        timeout: secs("timeout", timeout)?,
        progress: !a.quiet,
        series_interval: Duration::from_millis(a.series_ms.unwrap_or(series_ms)),
        watch: WatchOptions { watchers: 0 },
        scan: ScanOptions::default(),
        failover: FailoverOptions {
            kill_after: Duration::ZERO,
        },
        scale: ScaleOptions {
            data_dirs: Vec::new(),
            renew_for: Duration::ZERO,
            restart_cmd: None,
            restart_node: None,
            load_concurrency: 512,
        },
        restart: RestartOptions {
            restart_cmd: None,
            first_after: Duration::ZERO,
            down: Duration::ZERO,
            settle: Duration::ZERO,
        },
        connect: ConnectOptions::default(),
    };
    cfg.validate()?;
    Ok(cfg)
}

fn exit_code(e: &BenchError) -> i32 {
    match e {
        BenchError::Invalid(_) => EXIT_INVALID,
        BenchError::Unavailable(_) => EXIT_UNAVAILABLE,
        BenchError::Failed(_) => EXIT_REFUSED,
    }
}

/// Runs `leasehold-bench ...`; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    let Cli {
        endpoints,
        output: format,
        timeout,
        connect,
        command: cmd,
    } = cli;
    let (workload, load) = match &cmd {
        BenchCommand::Renew { load, .. } => (Workload::Renew, load),
        BenchCommand::Acquire(l) => (Workload::Acquire, l),
        BenchCommand::Mixed(l) => (Workload::Mixed, l),
        BenchCommand::Keepalive(l) => (Workload::Keepalive, l),
        BenchCommand::Watch { load, .. } => (Workload::Watch, load),
        BenchCommand::Failover { load, .. } => (Workload::Failover, load),
        BenchCommand::Restart { load, .. } => (Workload::Restart, load),
        BenchCommand::Scale { load, .. } => (Workload::Scale, load),
        BenchCommand::Table { reports } => return table(reports),
        BenchCommand::Plot { reports, out_dir } => return plot(reports, out_dir),
    };
    let mut cfg = match config(workload, load, &endpoints, timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    match (cfg.target, connect.options()) {
        (TargetKind::Leasehold, Ok(o)) => cfg.connect = o,
        (TargetKind::Leasehold, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
        // A shell that exports LEASEHOLD_CACERT for the Leasehold runs must
        // not break the etcd runs of the same script: say so and go on.
        (TargetKind::Etcd, _) => {
            if connect.is_set() {
                eprintln!(
                    "note: --cacert, --cert, --key and the token apply to Leasehold only; \
                     etcd is reached in plaintext"
                );
            }
        }
    }
    match &cmd {
        BenchCommand::Watch { watchers, .. } => cfg.watch.watchers = *watchers,
        BenchCommand::Renew {
            scanners,
            scan_selector,
            ..
        } => {
            cfg.scan.scanners = *scanners;
            cfg.scan.selector = scan_selector.clone();
        }
        BenchCommand::Failover { kill_after, .. } => match secs("kill-after", *kill_after) {
            Ok(d) => cfg.failover.kill_after = d,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        },
        BenchCommand::Restart {
            restart_cmd,
            first_after,
            down,
            settle,
            ..
        } => {
            let parsed = (
                secs("first-after", *first_after),
                secs("down", *down),
                secs("settle", *settle),
            );
            match parsed {
                (Ok(first_after), Ok(down), Ok(settle)) => {
                    if first_after >= cfg.duration {
                        eprintln!("error: --first-after must be less than --duration");
                        return EXIT_INVALID;
                    }
                    cfg.restart = RestartOptions {
                        restart_cmd: restart_cmd.clone(),
                        first_after,
                        down,
                        settle,
                    }
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    eprintln!("error: {e}");
                    return EXIT_INVALID;
                }
            }
        }
        BenchCommand::Scale {
            data_dirs,
            renew_minutes,
            restart_cmd,
            restart_node,
            load_concurrency,
            ..
        } => {
            cfg.scale = ScaleOptions {
                data_dirs: data_dirs.clone(),
                renew_for: match secs("renew-minutes", renew_minutes * 60.0) {
                    Ok(d) if !d.is_zero() => d,
                    _ => {
                        eprintln!("error: --renew-minutes must be positive");
                        return EXIT_INVALID;
                    }
                },
                restart_cmd: restart_cmd.clone(),
                restart_node: *restart_node,
                load_concurrency: (*load_concurrency).max(1),
            }
        }
        _ => {}
    }
    match crate::run(workload, cfg).await {
        Ok(report) => match render(&report, format) {
            Ok(text) => {
                print!("{text}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: cannot render the report: {e}");
                EXIT_REFUSED
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

/// The report as `format` asks. JSON and YAML go through a
/// `serde_json::Value`, whose maps are sorted by key, so the keys come out
/// in the order `leasehold bench` printed them and old and new reports
/// diff cleanly.
fn render(report: &crate::Report, format: Format) -> Result<String, String> {
    if format == Format::Table {
        return Ok(report.text());
    }
    let value = serde_json::to_value(report).map_err(|e| e.to_string())?;
    if format == Format::Yaml {
        serde_yaml::to_string(&value).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&value)
            .map(|json| json + "\n")
            .map_err(|e| e.to_string())
    }
}

fn table(reports: &[PathBuf]) -> i32 {
    match crate::table::load(reports) {
        Ok(r) => {
            print!("{}", crate::table::render(&r));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}

#[cfg(feature = "plots")]
fn plot(reports: &[PathBuf], out_dir: &std::path::Path) -> i32 {
    let loaded = match crate::table::load(reports) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    match crate::plot::all(&loaded, out_dir) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_REFUSED
        }
    }
}

#[cfg(not(feature = "plots"))]
fn plot(_reports: &[PathBuf], _out_dir: &std::path::Path) -> i32 {
    eprintln!(
        "error: this binary was built without the `plots` feature: \
         cargo build --release -p leasehold-bench --features plots"
    );
    EXIT_INVALID
}
