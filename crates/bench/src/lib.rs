//! `leasehold-bench`: a load generator for Leasehold (and, with the `etcd`
//! feature, for etcd driven the way Kubernetes drives it), so that both are
//! measured by the same code on the same machine.
//!
//! A crate of its own, beside the server rather than in it: it reaches a
//! cluster only through the wire contract (`leasehold-proto`) and the Rust
//! client (`leasehold-client`), so it measures what an application sees,
//! the server does not link its histograms, etcd client or plotting, and an
//! edit to it rebuilds no server code.
//!
//! # Layout
//! - [`cli`]: the `leasehold-bench` command line (flags into a
//!   [`LoadConfig`], exit codes, the report as text, JSON or YAML).
//! - [`config`]: the options every workload shares (clients, rate, run time,
//!   which server processes to watch).
//! - [`systems`]: the operations a workload issues (acquire, renew, release,
//!   get, list, watch), implemented for Leasehold and for etcd.
//! - [`pace`]: closed loop or open loop; in open loop every operation has an
//!   intended send time and latency is measured from it, so a stalled server
//!   cannot hide its stall (no coordinated omission).
//! - [`recorder`]: HDR histograms, errors by kind, outcomes, a latency series
//!   over time, and the progress line printed every second.
//! - [`procstat`]: CPU and resident memory of the server processes, from
//!   `/proc`, and sizes of data directories.
//! - [`workload`]: `renew`, `acquire`, `mixed`, `watch`, `failover`,
//!   `keepalive`, `scale`.
//! - [`report`]: the result of one run, as text or JSON.
//! - [`table`]: the side-by-side table (ours / etcd) from JSON reports.
//! - `plot` (feature `plots`): SVG charts from JSON reports.
//!
//! docs/BENCHMARKS.md says how the numbers in the repository were made.

pub mod cli;
pub mod config;
pub mod pace;
#[cfg(feature = "plots")]
pub mod plot;
pub mod procstat;
pub mod recorder;
pub mod report;
pub mod systems;
pub mod table;
pub mod workload;

pub use config::{LoadConfig, ServerPid, TargetKind, Workload};
pub use report::Report;

/// Why a bench run could not produce a report. Each kind maps to one of the
/// CLI's exit codes (the `leasehold` CLI's), so scripts can tell a typo
/// from a cluster that is down.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad flags or a combination the workload cannot run (exit code 2).
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not be reached or did not serve the setup (exit 3).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else that stopped the run (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Runs one workload and returns its report.
pub async fn run(workload: Workload, cfg: LoadConfig) -> Result<Report, BenchError> {
    let target = systems::Target::connect(&cfg).await?;
    match workload {
        Workload::Renew => workload::renew::run(&cfg, target).await,
        Workload::Acquire => workload::acquire::run(&cfg, target).await,
        Workload::Mixed => workload::mixed::run(&cfg, target).await,
        Workload::Watch => workload::watch::run(&cfg, target).await,
        Workload::Failover => workload::failover::run(&cfg, target).await,
        Workload::Scale => workload::scale::run(&cfg, target).await,
        Workload::Keepalive => workload::keepalive::run(&cfg, target).await,
        Workload::Restart => workload::restart::run(&cfg, target).await,
    }
}
