//! `leasehold lock`, `leasehold elect` and `leasehold heartbeat`: run a
//! command while holding a lease, run it only while leader, keep a node
//! lease alive.
//!
//! The command (CMD) runs in its own process group, so that stopping it also
//! stops whatever it started (a `sh -c` wrapper's children, say). It is
//! stopped with SIGTERM and, after `--grace` seconds, SIGKILL, sent with the
//! system's `kill` command (no libc binding needed). CMD gets the fencing
//! token in `LEASEHOLD_FENCING_TOKEN` and should pass it to every write to
//! the protected resource: that is what keeps it safe if it outlives the
//! lease (a pause, a slow shutdown). Because CMD is not in the terminal's
//! foreground process group, ctrl-c reaches it through `leasehold`, which
//! forwards SIGINT and SIGTERM to the group; for the same reason CMD cannot
//! read from the terminal (these commands are meant for jobs and services,
//! not interactive programs).

use super::split_lease;
use super::{EXIT_INVALID, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE};
use crate::client::elector::{ElectorConfig, LeaderElector, LeaderEvent};
use crate::client::errors::LeaseClientError;
use crate::client::fence::validity_deadline;
use crate::client::heartbeat::{Heartbeat, HeartbeatConfig, NODE_LEASE_NAMESPACE};
use crate::client::Client;
use crate::proto::v1 as pb;
use clap::Args;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Streaming;

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

/// `leasehold heartbeat` flags.
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// The node's name (the lease name and holder).
    pub node: String,
    /// Namespace of the node leases.
    #[arg(long, default_value = NODE_LEASE_NAMESPACE)]
    pub namespace: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 40)]
    pub duration: i32,
    /// Seconds between renewals (default: a quarter of the duration).
    #[arg(long)]
    pub renew_every: Option<f64>,
    /// Release the lease on exit, so monitors see the node leave at once.
    #[arg(long)]
    pub release_on_exit: bool,
}

/// The default holder: `HOSTNAME-PID`.
fn default_holder() -> String {
    format!(
        "{}-{}",
        crate::identity::system_hostname(),
        std::process::id()
    )
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    if (0.0..1e9).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "--{flag} {s} must be a non-negative number of seconds"
        ))
    }
}

fn client(endpoints: &[String], timeout: f64) -> Result<Arc<Client>, i32> {
    match Client::new(endpoints.to_vec()) {
        Ok(c) => Ok(Arc::new(
            c.with_timeout(Duration::from_secs_f64(timeout.clamp(0.001, 1e9))),
        )),
        Err(s) => {
            eprintln!("error: {}", s.message());
            Err(EXIT_INVALID)
        }
    }
}

/// Prints `e` and returns its exit code: 2 invalid, 3 unavailable, 1 any
/// other refusal.
fn fail(e: &LeaseClientError) -> i32 {
    eprintln!("error: {e}");
    match e {
        LeaseClientError::Invalid { .. } => EXIT_INVALID,
        LeaseClientError::Unavailable(_) | LeaseClientError::OutcomeUnknown(_) => EXIT_UNAVAILABLE,
        LeaseClientError::Other(s) => super::exit_code(s.code()),
        _ => EXIT_REFUSED,
    }
}

/// Which signal asked `leasehold` to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    fn exit_code(self) -> i32 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }

    fn signal(self) -> &'static str {
        match self {
            Stop::Interrupt => "INT",
            Stop::Terminate => "TERM",
        }
    }
}

/// SIGINT (ctrl-c) and SIGTERM, as a stream: a second signal escalates.
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) -> Stop {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.int) => Stop::Interrupt,
                _ = next(&mut self.term) => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}

/// CMD, running in its own process group.
struct Job {
    child: tokio::process::Child,
    pid: Option<u32>,
    /// When SIGKILL is due (set once CMD was asked to stop).
    kill_at: Option<Instant>,
    killed: bool,
}

impl Job {
    fn spawn(command: &[String], env: &[(&str, String)]) -> Result<Job, String> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| "no command given after --".to_string())?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program:?}: {e}"))?;
        Ok(Job {
            pid: child.id(),
            child,
            kill_at: None,
            killed: false,
        })
    }

    /// Sends `sig` to CMD's process group.
    async fn signal(&mut self, sig: &str) {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            // `kill -SIG -- -PGID` signals the whole group CMD leads.
            let sent = tokio::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg("--")
                .arg(format!("-{pid}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if sent || sig != "KILL" {
                return;
            }
        }
        if sig == "KILL" {
            // No `kill` command (or not Unix): SIGKILL at least CMD itself.
            let _ = self.child.start_kill();
        }
    }

    /// Asks CMD to stop with `sig`; SIGKILL follows `grace` later unless an
    /// earlier SIGKILL is already due.
    async fn stop(&mut self, sig: &str, grace: Duration) {
        self.signal(sig).await;
        let at = Instant::now() + grace;
        self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
    }

    async fn kill(&mut self) {
        self.killed = true;
        self.signal("KILL").await;
    }

    /// Resolves when SIGKILL is due (never if CMD was not asked to stop).
    async fn kill_due(kill_at: Option<Instant>, killed: bool) {
        match kill_at {
            Some(at) if !killed => tokio::time::sleep_until(at.into()).await,
            _ => std::future::pending().await,
        }
    }
}

/// The exit code a shell would report for CMD.
fn exit_code_of(status: ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    EXIT_REFUSED
}

fn spawn_failure_code(msg: &str) -> i32 {
    // As shells do: 127 command not found, 126 found but not runnable.
    if msg.contains("No such file") || msg.contains("not found") {
        127
    } else {
        126
    }
}

/// One lease, named.
struct LeaseRef {
    namespace: String,
    name: String,
}

impl std::fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Longest wait between two acquire attempts while the lease is held:
/// the watch normally ends the wait much earlier.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Wait between acquire attempts when no watch could be opened.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long opening a watch on one endpoint may take.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a watch on the lease and waits for the server's first message:
/// the server subscribes to changes before it sends that, so once it
/// arrives no later change can be missed. Tries each endpoint once.
async fn open_watch(
    client: &Client,
    endpoint: &mut usize,
    lease: &LeaseRef,
) -> Option<Streaming<pb::WatchEvent>> {
    let n = client.endpoints().len().max(1);
    for _ in 0..n {
        let req = pb::WatchRequest {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            progress_notify: true,
            progress_interval_ms: 10_000,
            ..Default::default()
        };
        let idx = *endpoint;
        let attempt = async {
            let mut s = client.watch_on(idx, req).await.ok()?;
            match s.message().await {
                Ok(Some(_)) => Some(s),
                _ => None,
            }
        };
        if let Ok(Some(s)) = tokio::time::timeout(WATCH_OPEN_TIMEOUT, attempt).await {
            return Some(s);
        }
        *endpoint = (*endpoint + 1) % n;
    }
    None
}

/// Whether a watch event means the lease may have become free.
fn may_be_free(e: &pb::WatchEvent) -> bool {
    use pb::watch_event::Type;
    match Type::try_from(e.r#type) {
        Ok(Type::Deleted) | Ok(Type::Expired) => true,
        Ok(Type::Added) | Ok(Type::Modified) => {
            let l = e.lease.clone().unwrap_or_default();
            let holder = l.spec.map(|s| s.holder_identity).unwrap_or_default();
            holder.is_empty() || l.status.is_some_and(|s| s.expired)
        }
        _ => false,
    }
}

/// Waits until the watch reports that the lease may be free, or `until`.
/// Without a (working) watch, waits at most [`FALLBACK_POLL`].
async fn wait_free(watch: &mut Option<Streaming<pb::WatchEvent>>, until: Instant) {
    loop {
        let Some(stream) = watch.as_mut() else {
            let t = until.min(Instant::now() + FALLBACK_POLL);
            tokio::time::sleep_until(t.into()).await;
            return;
        };
        match tokio::time::timeout_at(until.into(), stream.message()).await {
            Err(_) => return,
            Ok(Ok(Some(e))) => {
                if may_be_free(&e) {
                    return;
                }
            }
            Ok(_) => *watch = None,
        }
    }
}

/// Acquires the lease, waiting while someone else holds it. Returns the
/// token and the send time of the successful acquire.
async fn acquire_waiting(
    client: &Client,
    lease: &LeaseRef,
    holder: &str,
    duration: i32,
) -> Result<(u64, Instant), LeaseClientError> {
    let mut endpoint = 0usize;
    let mut watch: Option<Streaming<pb::WatchEvent>> = None;
    let mut told = false;
    loop {
        if watch.is_none() {
            watch = open_watch(client, &mut endpoint, lease).await;
        }
        let sent = Instant::now();
        let r = client
            .acquire(pb::AcquireRequest {
                namespace: lease.namespace.clone(),
                name: lease.name.clone(),
                holder: holder.to_string(),
                lease_duration_seconds: duration,
                ..Default::default()
            })
            .await
            .map_err(LeaseClientError::from);
        match r {
            Ok(r) => return Ok((r.fencing_token, sent)),
            Err(LeaseClientError::Held {
                holder: other,
                remaining,
            }) => {
                if !told {
                    eprintln!(
                        "waiting for {lease}: held by {other:?} (free in {} ms at the earliest)",
                        remaining.as_millis()
                    );
                    told = true;
                }
                // The watch ends the wait on a release, expiry or delete;
                // `remaining` bounds it if the holder simply stops renewing.
                let until = Instant::now() + (remaining + Duration::from_millis(20)).min(MAX_WAIT);
                wait_free(&mut watch, until).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Releases the lease if `holder` holds it with `token`.
async fn release(client: &Client, lease: &LeaseRef, holder: &str, token: u64) {
    let req = pb::ReleaseRequest {
        namespace: lease.namespace.clone(),
        name: lease.name.clone(),
        holder: holder.to_string(),
        fencing_token: token,
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_secs(5), client.release(req)).await {
        Ok(Ok(_)) => tracing::info!(%lease, "released"),
        Ok(Err(s)) => match LeaseClientError::from(s) {
            LeaseClientError::Lost { .. } | LeaseClientError::NotFound => {}
            e => eprintln!("warning: could not release {lease}: {e}; it lapses after its duration"),
        },
        Err(_) => eprintln!("warning: release of {lease} timed out; it lapses after its duration"),
    }
}

/// Releases the lease if an acquire whose outcome we did not see made
/// `holder` its holder.
async fn release_if_ours(client: &Client, lease: &LeaseRef, holder: &str) {
    let get = pb::GetRequest {
        namespace: lease.namespace.clone(),
        name: lease.name.clone(),
        ..Default::default()
    };
    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), client.get(get)).await {
        let l = r.lease.unwrap_or_default();
        if l.spec.is_some_and(|s| s.holder_identity == holder) {
            let token = l.status.map(|s| s.fencing_token).unwrap_or(0);
            release(client, lease, holder, token).await;
        }
    }
}

/// Why CMD must stop.
struct Loss {
    reason: String,
    /// When SIGKILL is due.
    kill_at: Instant,
}

/// Renews every `d/3` until the lease is lost; returns how.
///
/// CMD gets SIGTERM when a renew is refused, or when no renew has succeeded
/// for so long that only `grace` is left before the validity deadline (but
/// never before half the duration, so one failed renewal does not stop
/// CMD). With the defaults (15 s, grace 5 s) SIGKILL then comes exactly at
/// the validity deadline, `send time of the last successful renew + d ×
/// 0.99`: CMD has stopped before anyone else can hold the lease. Renewals
/// that fail for a transient reason are retried every second.
async fn keep_lease(
    client: &Client,
    lease: &LeaseRef,
    holder: &str,
    token: u64,
    sent: Instant,
    d: Duration,
    grace: Duration,
) -> Loss {
    let period = d / 3;
    let retry = period.min(Duration::from_secs(1));
    let mut last_ok = sent;
    let mut next = sent + period;
    loop {
        let valid = validity_deadline(last_ok, d);
        let term_at = valid
            .checked_sub(grace)
            .unwrap_or(last_ok)
            .max(last_ok + d / 2)
            .min(valid);
        tokio::time::sleep_until(next.min(term_at).into()).await;
        let now = Instant::now();
        if now >= term_at {
            return Loss {
                reason: format!(
                    "no successful renew for {:.1} s (the lease is valid until {:.1} s after the last one)",
                    now.duration_since(last_ok).as_secs_f64(),
                    valid.duration_since(last_ok).as_secs_f64()
                ),
                kill_at: term_at + grace,
            };
        }
        let req = pb::RenewRequest {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            holder: holder.to_string(),
            fencing_token: token,
            ..Default::default()
        };
        match tokio::time::timeout_at(term_at.into(), client.renew(req)).await {
            Ok(Ok(_)) => {
                last_ok = now;
                next = now + period;
            }
            Ok(Err(s)) => match LeaseClientError::from(s) {
                e @ (LeaseClientError::Lost { .. } | LeaseClientError::NotFound) => {
                    return Loss {
                        reason: e.to_string(),
                        kill_at: Instant::now() + grace,
                    }
                }
                e => {
                    tracing::warn!(%lease, "renew failed, retrying: {e}");
                    next = Instant::now() + retry;
                }
            },
            // The loop notices that the deadline passed.
            Err(_) => next = term_at,
        }
    }
}

/// `leasehold lock`.
pub async fn lock(endpoints: &[String], timeout: f64, args: LockArgs) -> i32 {
    let (namespace, name) = match split_lease(&args.lease) {
        Ok(v) => v,
        Err(m) => return invalid(m),
    };
    let lease = LeaseRef { namespace, name };
    let grace = match seconds("grace", args.grace) {
        Ok(g) => g,
        Err(m) => return invalid(m),
    };
    let d = match lease_duration(args.duration) {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let holder = args.holder.clone().unwrap_or_else(default_holder);
    let client = match client(endpoints, timeout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut signals = Signals::new();

    let acquired = tokio::select! {
        r = acquire_waiting(&client, &lease, &holder, args.duration) => r,
        sig = signals.recv() => {
            // An acquire may have been in flight.
            release_if_ours(&client, &lease, &holder).await;
            return sig.exit_code();
        }
    };
    let (token, sent) = match acquired {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    tracing::info!(%lease, %holder, token, "acquired");

    let env = [
        ("LEASEHOLD_FENCING_TOKEN", token.to_string()),
        ("LEASEHOLD_HOLDER", holder.clone()),
        ("LEASEHOLD_LEASE", lease.to_string()),
    ];
    let mut job = match Job::spawn(&args.command, &env) {
        Ok(j) => j,
        Err(m) => {
            eprintln!("error: {m}");
            release(&client, &lease, &holder, token).await;
            return spawn_failure_code(&m);
        }
    };

    let keeper = keep_lease(&client, &lease, &holder, token, sent, d, grace);
    tokio::pin!(keeper);
    let mut lost = false;
    let mut interrupted: Option<Stop> = None;
    let status = loop {
        tokio::select! {
            status = job.child.wait() => break status,
            loss = &mut keeper, if !lost => {
                lost = true;
                eprintln!("error: lost {lease}: {}; stopping the command", loss.reason);
                job.stop("TERM", loss.kill_at.saturating_duration_since(Instant::now())).await;
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
    if lost {
        // Whatever CMD left running in its group must not go on either.
        job.kill().await;
        return EXIT_REFUSED;
    }
    // Keep the lease until CMD is gone, then hand it on at once.
    release(&client, &lease, &holder, token).await;
    match status {
        Ok(s) => exit_code_of(s),
        Err(e) => {
            eprintln!("error: cannot wait for the command: {e}");
            EXIT_REFUSED
        }
    }
}

/// `leasehold elect`.
pub async fn elect(endpoints: &[String], timeout: f64, args: ElectArgs) -> i32 {
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
    let client = match client(endpoints, timeout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (elector, mut events) = match LeaderElector::new(client, config) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
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
                        match start(&args, fencing_token, &lease) {
                            Ok(j) => job = Some(j),
                            Err(code) => {
                                result = Some(code);
                                if let Some(tx) = cancel_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
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
                        let status = wait_stopped(&mut j).await;
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
                    if let Some(tx) = cancel_tx.take() {
                        let _ = tx.send(());
                    }
                } else if let Some(token) = pending.take() {
                    match start(&args, token, &lease) {
                        Ok(j) => job = Some(j),
                        Err(code) => {
                            result = Some(code);
                            if let Some(tx) = cancel_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
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
                            if let Some(tx) = cancel_tx.take() {
                                let _ = tx.send(());
                            }
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

trait FlattenCode {
    fn flatten_code(self) -> i32;
}

impl FlattenCode for Option<std::io::Result<ExitStatus>> {
    fn flatten_code(self) -> i32 {
        match self {
            Some(Ok(s)) => exit_code_of(s),
            _ => EXIT_REFUSED,
        }
    }
}

fn start(args: &ElectArgs, token: u64, lease: &str) -> Result<Job, i32> {
    let env = [
        ("LEASEHOLD_FENCING_TOKEN", token.to_string()),
        ("LEASEHOLD_HOLDER", args.identity.clone()),
        ("LEASEHOLD_LEASE", lease.to_string()),
    ];
    Job::spawn(&args.command, &env).map_err(|m| {
        eprintln!("error: {m}");
        spawn_failure_code(&m)
    })
}

/// Waits for a job that was asked to stop, sending SIGKILL when due.
async fn wait_stopped(job: &mut Job) -> i32 {
    loop {
        tokio::select! {
            s = job.child.wait() => return Some(s).flatten_code(),
            _ = Job::kill_due(job.kill_at, job.killed) => job.kill().await,
        }
    }
}

/// `leasehold heartbeat`.
pub async fn heartbeat(endpoints: &[String], timeout: f64, args: HeartbeatArgs) -> i32 {
    let d = match lease_duration(args.duration) {
        Ok(d) => d,
        Err(m) => return invalid(m),
    };
    let renew_every = match args.renew_every {
        Some(s) => match seconds("renew-every", s) {
            Ok(v) => v,
            Err(m) => return invalid(m),
        },
        None => d / 4,
    };
    let mut config = HeartbeatConfig::new(args.node.clone());
    config.namespace = args.namespace.clone();
    config.duration = d;
    config.renew_interval = renew_every;
    config.release_on_stop = args.release_on_exit;
    let client = match client(endpoints, timeout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let hb = match Heartbeat::new(client, config) {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    eprintln!(
        "heartbeat {}/{}: duration {} s, renewed every {:.1} s until interrupted",
        args.namespace,
        args.node,
        args.duration,
        renew_every.as_secs_f64()
    );
    let mut signals = Signals::new();
    match hb
        .run(async {
            signals.recv().await;
        })
        .await
    {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&e),
    }
}

/// Reports invalid input and returns its exit code.
fn invalid(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    EXIT_INVALID
}

/// `--duration` as a `Duration`; it must be a positive number of seconds.
fn lease_duration(seconds: i32) -> Result<Duration, String> {
    if seconds <= 0 {
        return Err(format!(
            "--duration {seconds} must be a positive number of seconds"
        ));
    }
    Ok(Duration::from_secs(seconds.unsigned_abs().into()))
}
