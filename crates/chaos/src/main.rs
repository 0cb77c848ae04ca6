//! `leasehold-chaos`: runs the chaos suite against a three-node cluster and
//! checks the recorded history. See ARCHITECTURE.md ("Chaos suite").
//!
//! Exit codes: 0 the checker found no anomaly (with `--expect-anomalies`:
//! it found some, as the negative control must), 1 the opposite, 2 the run
//! could not be set up.

use clap::{Parser, Subcommand, ValueEnum};
use leasehold_chaos::backend::Backend;
use leasehold_chaos::faults::FaultKind;
use leasehold_chaos::lazydisk::find_beside;
use leasehold_chaos::local::{find_faketime, LocalBackend, LocalOptions};
use leasehold_chaos::run::{run, RunConfig};
use leasehold_client::ConnectArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "leasehold-chaos",
    version,
    about = "Chaos tests for a Leasehold cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the workload with faults, then check the history.
    Run(Box<RunArgs>),
    /// List the fault kinds.
    Faults,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    /// Start three `leasehold serve` processes on loopback.
    Local,
    /// Use the docker-compose cluster (cluster/chaos.sh starts it).
    Docker,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where the nodes run.
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendKind,
    /// Seconds of faults (the workload runs on while the last one heals).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Comma-separated fault kinds (default: all; see `leasehold-chaos faults`).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Let the register accept stale tokens: the negative control.
    #[arg(long)]
    no_fencing: bool,
    /// Succeed only if the checker finds anomalies (for the negative control).
    #[arg(long)]
    expect_anomalies: bool,
    /// Seed of the workload's and the scheduler's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent lease-API workers (acquire, renew, release).
    #[arg(long, default_value_t = RunConfig::DEFAULT_WORKERS)]
    workers: u32,
    /// Concurrent Kubernetes-style workers (compare-and-swap Put, as
    /// client-go's LeaseLock).
    #[arg(long, default_value_t = RunConfig::DEFAULT_KUBE_WORKERS)]
    kube_workers: u32,
    /// Clock offsets of the Kubernetes-style workers, ms, comma-separated,
    /// assigned in turn (negative: behind).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true,
          default_values_t = RunConfig::DEFAULT_KUBE_SKEWS_MS)]
    kube_skews_ms: Vec<i64>,
    /// Concurrent deleters.
    #[arg(long, default_value_t = RunConfig::DEFAULT_DELETERS)]
    deleters: u32,
    /// Watchers (0 to 4).
    #[arg(long, default_value_t = RunConfig::DEFAULT_WATCHERS)]
    watchers: u32,
    /// Leases they contend for.
    #[arg(long, default_value_t = RunConfig::DEFAULT_LEASES)]
    leases: u32,
    /// Lease duration, seconds.
    #[arg(long, default_value_t = RunConfig::DEFAULT_LEASE_SECONDS)]
    lease_seconds: i32,
    /// Minimum successful operations per second.
    #[arg(long, default_value_t = RunConfig::DEFAULT_MIN_RATE)]
    min_rate: f64,
    /// One more argument for every `leasehold serve` of the local backend
    /// (repeat for several), e.g. `--node-arg=--fault-put-trusts-client-times`
    /// with a debug build for the Put negative control.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
    /// Output directory (default target/chaos/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `leasehold` binary for the local backend (default: next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The `leasehold-lazyfs` binary (crates/lazyfs): the local nodes' data
    /// directories become lazy-filesystem mounts, for the power-loss faults.
    /// Default: next to the `leasehold` binary, if it was built there (`cargo
    /// build --release --workspace`).
    #[arg(long)]
    lazyfs: Option<PathBuf>,
    /// The docker cluster runs with TLS (`cluster/chaos.sh --tls`): add
    /// cluster/docker-compose.tls.yml to the compose files, and connect with
    /// the CA and the `chaos` client certificate of $LEASEHOLD_TLS_DIR
    /// (default cluster/.tls) unless --cacert, --cert and --key say
    /// otherwise.
    #[arg(long)]
    tls: bool,
    /// TLS and bearer token of the suite's clients. The local backend's
    /// nodes serve plaintext unless --node-arg gives them TLS flags.
    #[command(flatten)]
    connect: ConnectArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber_init();
    match cli.cmd {
        Cmd::Faults => {
            for k in FaultKind::ALL {
                println!("{k}");
            }
            ExitCode::SUCCESS
        }
        Cmd::Run(args) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("leasehold-chaos: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(run_cmd(*args))
        }
    }
}

fn tracing_subscriber_init() {
    // The library logs through `tracing`; without a subscriber nothing is
    // printed, which is what a report-producing tool wants. Set
    // LEASEHOLD_CHAOS_LOG=1 to see the scheduler's progress on stderr.
    if let Some(filter) = std::env::var_os("LEASEHOLD_CHAOS_LOG") {
        let filter = filter.to_string_lossy().to_string();
        let filter = if filter == "1" {
            "info".to_string()
        } else {
            filter
        };
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
}

async fn run_cmd(a: RunArgs) -> ExitCode {
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/chaos").join(chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string())
    });
    let mut cfg = RunConfig::new(Duration::from_secs(a.duration), out.clone());
    if !a.faults.is_empty() {
        cfg.faults = a.faults.clone();
    }
    cfg.fencing = !a.no_fencing;
    cfg.seed = a.seed;
    cfg.workers = a.workers;
    cfg.kube_workers = a.kube_workers;
    cfg.kube_skews_ms = a.kube_skews_ms.clone();
    cfg.deleters = a.deleters;
    cfg.watchers = a.watchers;
    cfg.leases = a.leases;
    cfg.lease_seconds = a.lease_seconds;
    cfg.min_rate = a.min_rate;
    if cfg.workers + cfg.kube_workers == 0 || cfg.leases == 0 || cfg.lease_seconds < 1 {
        eprintln!(
            "leasehold-chaos: --workers plus --kube-workers, --leases and --lease-seconds must be positive"
        );
        return ExitCode::from(2);
    }
    if !a.node_arg.is_empty() && matches!(a.backend, BackendKind::Docker) {
        eprintln!("leasehold-chaos: --node-arg is for the local backend only");
        return ExitCode::from(2);
    }
    if a.tls && matches!(a.backend, BackendKind::Local) {
        eprintln!(
            "leasehold-chaos: --tls is for the docker backend only (local nodes get TLS \
             through --node-arg, and the clients through --cacert, --cert and --key)"
        );
        return ExitCode::from(2);
    }
    let backend: Arc<dyn Backend> = match a.backend {
        BackendKind::Local => {
            let bin = match a.bin.clone().or_else(sibling_leasehold) {
                Some(b) => b,
                None => {
                    eprintln!("leasehold-chaos: cannot find the leasehold binary; pass --bin");
                    return ExitCode::from(2);
                }
            };
            let wants_power_loss = cfg.faults.iter().any(|k| k.is_power_loss());
            let lazyfs = a
                .lazyfs
                .clone()
                .or_else(|| find_beside(&bin).filter(|_| wants_power_loss));
            if lazyfs.is_none() && !a.faults.is_empty() && wants_power_loss {
                eprintln!(
                    "leasehold-chaos: power-loss faults need the lazy filesystem: build it with \
                     `cargo build --release -p leasehold-lazyfs` or pass --lazyfs"
                );
                return ExitCode::from(2);
            }
            cfg.connect = match a.connect.options() {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("leasehold-chaos: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = LocalOptions {
                lazyfs,
                bin,
                root: out.join("nodes"),
                nodes: 3,
                heartbeat_ms: 100,
                election_timeout_ms: (300, 600),
                faketime: find_faketime(),
                extra_args: a.node_arg.clone(),
            };
            let b = match LocalBackend::new(opts) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("leasehold-chaos: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = b.start_all().await {
                eprintln!("leasehold-chaos: {e}");
                return ExitCode::from(2);
            }
            Arc::new(b)
        }
        BackendKind::Docker => match docker_backend(a.tls, &a.connect).await {
            Ok((b, connect)) => {
                cfg.connect = connect;
                b
            }
            Err(e) => {
                eprintln!("leasehold-chaos: {e}");
                return ExitCode::from(2);
            }
        },
    };
    eprintln!(
        "leasehold-chaos: {} backend, {} s of faults, output in {}",
        backend.name(),
        a.duration,
        out.display()
    );
    let report = match run(&cfg, backend).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leasehold-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.summary());
    match (report.clean(), a.expect_anomalies) {
        (true, false) => ExitCode::SUCCESS,
        (false, true) => {
            println!("negative control: the checker found anomalies, as it must");
            ExitCode::SUCCESS
        }
        (true, true) => {
            println!("negative control FAILED: anomalies were expected and none was found");
            ExitCode::from(1)
        }
        (false, false) => {
            println!("FAILED: see {}", out.join("anomalies.txt").display());
            ExitCode::from(1)
        }
    }
}

fn sibling_leasehold() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let p = me.parent()?.join("leasehold");
    p.exists().then_some(p)
}

/// The docker backend, with TLS when `tls`, and how its clients connect.
async fn docker_backend(
    tls: bool,
    connect: &ConnectArgs,
) -> Result<(Arc<dyn Backend>, leasehold_client::ConnectOptions), String> {
    let mut opts = leasehold_chaos::docker::DockerOptions::default();
    if tls {
        opts = opts.with_tls(connect)?;
    } else {
        opts.connect = connect.options()?;
    }
    let clients = opts.connect.clone();
    let b = leasehold_chaos::docker::DockerBackend::new(opts).await?;
    Ok((Arc::new(b), clients))
}
