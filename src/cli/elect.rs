//! `leasehold elect`: run a command only while leader.
//!
//! The election is the client's [`LeaderElector`] (client-go's timings; it
//! steps down at its renew deadline, before the lease can pass on). This
//! command starts CMD ([`super::job`]) on `StartedLeading` with the
//! tenure's fencing token, stops it on `StoppedLeading` (SIGTERM, SIGKILL
//! after `--grace`, by default the time the lease stays valid after the
//! step-down), and campaigns again; a new tenure's CMD starts only once the
//! previous one has exited. When CMD ends on its own, or on SIGINT/SIGTERM
//! once CMD has exited, the elector is cancelled and releases the lease.

use super::job::{self, FlattenCode, Job, Signals, Stop};
use super::{connect, fail, invalid, lease_duration, seconds, split_lease, Target};
use super::{EXIT_OK, EXIT_REFUSED};
use crate::client::elector::{ElectorConfig, LeaderElector, LeaderEvent};
use crate::client::fence::validity_deadline;
use clap::Args;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `leasehold elect` flags.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// NAMESPACE/NAME of the election lease.
    pub lease: String,
    /// This candidate's identity, unique among the candidates.
    #[arg(long)]
    pub identity: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    pub duration: i32,
    /// Seconds without a successful renew after which the leader steps down
    /// (default: two thirds of the duration).
    #[arg(long)]
    pub renew_deadline: Option<f64>,
    /// Seconds between acquire attempts and between renewals (default: a
    /// fifth of the renew deadline).
    #[arg(long)]
    pub retry_period: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when CMD must stop (default: the
    /// time the lease stays valid after the leader steps down,
    /// duration × 0.99 − renew deadline).
    #[arg(long)]
    pub grace: Option<f64>,
    /// The command to run while leader, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `leasehold elect`.
pub async fn elect(target: &Target, args: ElectArgs) -> i32 {
    let (namespace, name) = match split_lease(&args.lease) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    let d = match lease_duration(args.duration) {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let flag = |name: &str, v: Option<f64>, default: Duration| match v {
        Some(s) => seconds(name, s),
        None => Ok(default),
    };
    let renew_deadline = match flag("renew-deadline", args.renew_deadline, d * 2 / 3) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    let retry_period = match flag("retry-period", args.retry_period, renew_deadline / 5) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    // The leader steps down at its renew deadline; the lease stays valid
    // until d·(1 − ρ) after the last successful renew was sent.
    let now = Instant::now();
    let default_grace = (validity_deadline(now, d) - now).saturating_sub(renew_deadline);
    let grace = match flag("grace", args.grace, default_grace) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    let mut config = ElectorConfig::new(namespace, name, args.identity.clone());
    config.lease_duration = d;
    config.renew_deadline = renew_deadline;
    config.retry_period = retry_period;
    let lease = format!("{}/{}", config.namespace, config.name);
    let client = match connect(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (elector, mut events) = match LeaderElector::new(client, config) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    let elector_task = tokio::spawn(elector.run(async {
        let _ = cancel_rx.await;
    }));
    let mut cancel_tx = Some(cancel_tx);
    let mut signals = Signals::new();
    let mut job: Option<Job> = None;
    // The token to start CMD with once the previous CMD has exited.
    let mut pending: Option<u64> = None;
    let mut interrupted: Option<Stop> = None;
    let mut result: Option<i32> = None;

    let code = loop {
        let kill_due = {
            let (at, killed) = job
                .as_ref()
                .map_or((None, false), |j| (j.kill_at, j.killed));
            Job::kill_due(at, killed)
        };
        let job_wait = async {
            match job.as_mut() {
                Some(j) => Some(j.child.wait().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(LeaderEvent::NewLeader { identity }) => {
                    eprintln!("{lease}: leader is {identity:?}");
                }
                Some(LeaderEvent::StartedLeading { fencing_token, .. }) => {
                    eprintln!("{lease}: {} is the leader (token {fencing_token}); starting the command", args.identity);
                    if job.is_some() {
                        pending = Some(fencing_token);
                    } else {
                        job = start(&args, fencing_token, &lease, &mut result, &mut cancel_tx);
                    }
                }
                Some(LeaderEvent::StoppedLeading { reason, .. }) => {
                    pending = None;
                    if let Some(j) = job.as_mut() {
                        eprintln!("{lease}: stopped leading ({reason}); stopping the command");
                        j.stop("TERM", grace).await;
                    }
                }
                None => {
                    // The elector ended (cancelled, or an unrecoverable error).
                    if let Some(mut j) = job.take() {
                        j.stop("TERM", grace).await;
                        let status = job::wait_stopped(&mut j).await;
                        result.get_or_insert(status);
                    }
                    let code = match elector_task.await {
                        Ok(Ok(())) => result.unwrap_or(EXIT_OK),
                        Ok(Err(e)) => fail(&e),
                        Err(e) => {
                            eprintln!("error: the elector failed: {e}");
                            EXIT_REFUSED
                        }
                    };
                    break code;
                }
            },
            status = job_wait => {
                let code = status.flatten_code();
                let stopping = job.as_ref().is_some_and(|j| j.kill_at.is_some());
                job = None;
                if interrupted.is_some() || !stopping {
                    // CMD ended on its own while leading (its work is done
                    // or it failed), or we are shutting down: give up the
                    // leadership and end with its exit code.
                    result.get_or_insert(code);
                    cancel(&mut cancel_tx);
                } else if let Some(token) = pending.take() {
                    job = start(&args, token, &lease, &mut result, &mut cancel_tx);
                }
            }
            sig = signals.recv() => {
                if interrupted.is_some() {
                    if let Some(j) = job.as_mut() {
                        j.kill().await;
                    }
                } else {
                    interrupted = Some(sig);
                    pending = None;
                    match job.as_mut() {
                        // The elector is cancelled once CMD has exited, so
                        // the lease stays ours while CMD shuts down.
                        Some(j) => j.stop(sig.signal(), grace).await,
                        None => {
                            result.get_or_insert(sig.exit_code());
                            cancel(&mut cancel_tx);
                        }
                    }
                }
            }
            _ = kill_due => {
                if let Some(j) = job.as_mut() {
                    j.kill().await;
                }
            }
        }
    };
    code
}

/// Cancels the elector (once): it steps down and releases the lease.
fn cancel(tx: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = tx.take() {
        let _ = tx.send(());
    }
}

/// Starts CMD for the tenure with `token`; if CMD cannot run, ends `elect`
/// with the exit code a shell would give.
fn start(
    args: &ElectArgs,
    token: u64,
    lease: &str,
    result: &mut Option<i32>,
    cancel_tx: &mut Option<oneshot::Sender<()>>,
) -> Option<Job> {
    match job::start(&args.command, token, &args.identity, lease) {
        Ok(j) => Some(j),
        Err(code) => {
            *result = Some(code);
            cancel(cancel_tx);
            None
        }
    }
}
