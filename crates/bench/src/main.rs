//! The `leasehold-bench` binary: the load generator's command line (see
//! [`leasehold_bench::cli`]).

use clap::Parser;
use leasehold_bench::cli::{self, Cli};
use std::io::IsTerminal;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Warnings only by default (the client's endpoint failovers): progress
    // and reports have their own output; `RUST_LOG` can ask for more.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Exit at once with the run's code: tasks still open (watch streams,
    // channels) have nothing left to report.
    std::process::exit(cli::run(cli).await);
}
