//! `leasehold lock`: run a command while holding a lease.
//!
//! The lease session (wait for the lease, keep it, learn of its loss in
//! time, release it) is the client's [`LockSession`]; this command ties it
//! to CMD's lifetime ([`super::job`]): CMD starts once the lease is ours,
//! gets SIGTERM when the session reports a loss and SIGKILL at the loss's
//! `stop_by` (with the defaults, the validity deadline), and the lease is
//! released once CMD has exited, so a waiting `leasehold lock` starts at
//! once.

use super::job::{self, Job, Signals, Stop};
use super::{connect, fail, invalid, lease_duration, seconds, split_lease, Target, EXIT_REFUSED};
use crate::client::errors::LeaseClientError;
use crate::client::lock::{LockConfig, LockSession};
use clap::Args;
use std::future::Future;
use std::time::{Duration, Instant};

/// Bound on each step of giving the lease up (looking it up, releasing).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// `leasehold lock` flags.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// NAMESPACE/NAME of the lease.
    pub lease: String,
    /// Lease duration in seconds; the lease is renewed every third of it.
    #[arg(long, default_value_t = 15)]
    pub duration: i32,
    /// Holder identity (default: HOSTNAME-PID).
    #[arg(long)]
    pub holder: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when CMD must stop.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// The command to run while holding the lease, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The default holder: `HOSTNAME-PID`.
fn default_holder() -> String {
    format!(
        "{}-{}",
        crate::identity::system_hostname(),
        std::process::id()
    )
}

/// Waits (boundedly) for a release and says if it failed: the lease then
/// lapses after its duration instead of passing on at once.
async fn release(lease: &str, release: impl Future<Output = Result<bool, LeaseClientError>>) {
    match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
        Ok(Ok(true)) => tracing::info!(%lease, "released"),
        // The tenure had ended already: nothing to give up.
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            eprintln!("warning: could not release {lease}: {e}; it lapses after its duration")
        }
        Err(_) => eprintln!("warning: release of {lease} timed out; it lapses after its duration"),
    }
}

/// `leasehold lock`.
pub async fn lock(target: &Target, args: LockArgs) -> i32 {
    let (namespace, name) = match split_lease(&args.lease) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    let lease = format!("{namespace}/{name}");
    let grace = match seconds("grace", args.grace) {
        Ok(g) => g,
        Err(m) => return invalid(m),
    };
    let d = match lease_duration(args.duration) {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let holder = args.holder.clone().unwrap_or_else(default_holder);
    let client = match connect(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut config = LockConfig::new(namespace, name, holder.clone());
    config.duration = d;
    config.grace = grace;
    let session = match LockSession::new(client, config) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut signals = Signals::new();

    let mut told = false;
    let waiting = session.acquire_with(None, |other, remaining| {
        if !told {
            eprintln!(
                "waiting for {lease}: held by {other:?} (free in {} ms at the earliest)",
                remaining.as_millis()
            );
            told = true;
        }
    });
    let acquired = tokio::select! {
        r = waiting => r,
        sig = signals.recv() => {
            // An acquire may have been in flight.
            let held = tokio::time::timeout(RELEASE_TIMEOUT, session.held_token()).await;
            if let Ok(Ok(Some(token))) = held {
                release(&lease, session.release(token)).await;
            }
            return sig.exit_code();
        }
    };
    let lock = match acquired {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let token = lock.fencing_token();
    tracing::info!(%lease, %holder, token, "acquired");

    let mut job = match job::start(&args.command, token, &holder, &lease) {
        Ok(j) => j,
        Err(code) => {
            release(&lease, lock.release()).await;
            return code;
        }
    };

    let (status, lost) = {
        let keeper = lock.keep();
        tokio::pin!(keeper);
        let mut lost = false;
        let mut interrupted: Option<Stop> = None;
        let status = loop {
            tokio::select! {
                status = job.child.wait() => break status,
                loss = &mut keeper, if !lost => {
                    lost = true;
                    eprintln!("error: lost {lease}: {}; stopping the command", loss.reason);
                    job.stop("TERM", loss.stop_by.saturating_duration_since(Instant::now())).await;
                }
                sig = signals.recv() => {
                    if interrupted.is_some() {
                        // Asked twice: do not wait any longer.
                        job.kill().await;
                    } else {
                        interrupted = Some(sig);
                        job.stop(sig.signal(), grace).await;
                    }
                }
                _ = Job::kill_due(job.kill_at, job.killed) => job.kill().await,
            }
        };
        (status, lost)
    };
    if lost {
        // Whatever CMD left running in its group must not go on either.
        job.kill().await;
        return EXIT_REFUSED;
    }
    // Keep the lease until CMD is gone, then hand it on at once.
    release(&lease, lock.release()).await;
    match status {
        Ok(s) => job::exit_code_of(s),
        Err(e) => {
            eprintln!("error: cannot wait for the command: {e}");
            EXIT_REFUSED
        }
    }
}
