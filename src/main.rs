//! The `leasehold` binary: a server (`leasehold serve`) and its CLI.

use clap::Parser;
use leasehold::cli::Cli;
use tracing_subscriber::EnvFilter;

fn main() {
    // ring is the one TLS provider (tonic's TLS clients take the process
    // default); see src/auth/tls.rs.
    leasehold::auth::tls::install_default_provider();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, leasehold::cli::Command::Serve(_)) {
        "info,openraft=warn"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(leasehold::cli::run(cli));
    // Do not wait for lingering background tasks (Raft timers, channels).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
