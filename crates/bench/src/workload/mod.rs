//! The workloads, and what they share: lease names, the untimed setup that
//! acquires every lease first, and the harness that runs clients on their
//! pacers with a recorder, a progress line and server sampling.

pub mod acquire;
pub mod failover;
pub mod keepalive;
pub mod mixed;
pub mod renew;
pub mod restart;
pub mod scale;
pub mod watch;

use super::config::LoadConfig;
use super::pace::Pacer;
use super::procstat::{self, Host, ServerUsage};
use super::recorder::{self, Recorder, Timing, Totals};
use super::report::Setup;
use super::systems::{Acquired, OpError, Target};
use super::BenchError;
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Name of owned lease `i` (renew, mixed, watch, failover): like a node
/// lease, held by a holder of the same name.
pub fn owned_name(i: usize) -> String {
    format!("node-{i:07}")
}

/// Name of contended lease `i` (acquire, mixed).
pub fn contended_name(i: usize) -> String {
    format!("contended-{i:04}")
}

/// How many setup acquisitions run at once.
const SETUP_CONCURRENCY: usize = 64;

/// Acquires every lease in `names` for a holder of the same name, `par` at a
/// time, and returns each lease's version. A lease found held by someone
/// else stops the run: a previous run with other holders is still within its
/// lease duration, and renewing would only produce errors.
pub async fn acquire_all(
    target: &Target,
    cfg: &LoadConfig,
    names: &[String],
    par: usize,
) -> Result<(Vec<u64>, Setup), BenchError> {
    let t0 = Instant::now();
    let results: Vec<(usize, Result<Acquired, OpError>)> = futures::stream::iter(
        names.iter().enumerate(),
    )
    .map(|(i, name)| async move { (i, target.acquire(i, name, name, cfg.lease_seconds).await) })
    .buffer_unordered(par.max(1))
    .collect()
    .await;
    let mut versions = vec![0u64; names.len()];
    for (i, r) in results {
        match r {
            Ok(Acquired::Granted { version }) => versions[i] = version,
            Ok(Acquired::Held) => {
                return Err(BenchError::Failed(format!(
                    "setup: lease {} is held by another holder (an earlier run with \
                     different holders?); wait for it to expire or use another --namespace",
                    names[i]
                )))
            }
            Err(e) => {
                return Err(BenchError::Unavailable(format!(
                    "setup: cannot acquire {}: {e}",
                    names[i]
                )))
            }
        }
    }
    Ok((
        versions,
        Setup {
            leases: names.len(),
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}

/// Whether a renew error means the tenure is gone (expired, taken, or the
/// etcd key changed), so the client should acquire again.
pub fn is_lost(e: &OpError) -> bool {
    e.kind.ends_with("LEASE_LOST") || e.kind == "CONFLICT" || e.kind.ends_with("NOT_FOUND")
}

/// Runs `f` and times it against `intended`.
pub async fn timed<T>(intended: Instant, f: impl Future<Output = T>) -> (Timing, T) {
    let sent = Instant::now();
    let out = f.await;
    (
        Timing {
            intended,
            sent,
            done: Instant::now(),
        },
        out,
    )
}

/// After a failed operation in closed loop, wait a little so that a server
/// refusing at once does not turn the client into a busy loop. Open loop
/// keeps its schedule instead.
pub async fn after_error(cfg: &LoadConfig) {
    if cfg.rate.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running measurement: recorder, progress printer, server monitor.
pub struct Harness {
    /// The shared recorder.
    pub rec: Arc<Recorder>,
    /// Wall-clock start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The machine.
    pub host: Host,
    monitor: JoinHandle<Vec<ServerUsage>>,
    progress: Option<JoinHandle<()>>,
}

impl Harness {
    /// Starts the clock now; `keep` turns on the recorder's optional logs.
    pub fn start(cfg: &LoadConfig, label: &str, keep: impl FnOnce(Recorder) -> Recorder) -> Self {
        let host = procstat::host();
        let start = Instant::now();
        let rec = Arc::new(keep(Recorder::new(
            start,
            cfg.warmup,
            cfg.duration,
            cfg.series_interval,
        )));
        let monitor = tokio::spawn(procstat::monitor(
            cfg.servers.clone(),
            rec.measure_from(),
            rec.measure_until(),
        ));
        let progress = cfg.progress.then(|| {
            tokio::spawn(recorder::progress(
                rec.clone(),
                format!("{label} {}", cfg.target.as_str()),
                rec.measure_until(),
            ))
        });
        Harness {
            rec,
            started_at: chrono::Utc::now(),
            host,
            monitor,
            progress,
        }
    }

    /// Client `i`'s pacer.
    pub fn pacer(&self, cfg: &LoadConfig, i: usize) -> Pacer {
        Pacer::for_client(
            cfg.rate,
            i,
            cfg.clients,
            self.rec.start(),
            self.rec.measure_until(),
        )
    }

    /// Waits for the monitor, stops the progress line, returns the totals.
    pub async fn finish(self) -> (Totals, Vec<ServerUsage>) {
        let servers = self.monitor.await.unwrap_or_default();
        if let Some(p) = self.progress {
            p.abort();
        }
        (self.rec.finish(), servers)
    }
}

/// Spawns one task per client and waits for all; a client that panicked is
/// reported as a failure rather than taking the process down.
pub async fn run_clients<S, F, Fut>(states: Vec<S>, f: F) -> Result<Vec<S>, BenchError>
where
    S: Send + 'static,
    F: Fn(usize, S) -> Fut,
    Fut: Future<Output = S> + Send + 'static,
{
    let tasks: Vec<JoinHandle<S>> = states
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(f(i, s)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| BenchError::Failed(format!("a client task failed: {e}")))?,
        );
    }
    Ok(out)
}

/// The leases client `c` of `clients` owns: every `clients`-th, from `c`.
pub fn owned_by(c: usize, clients: usize, leases: usize) -> Vec<usize> {
    (c..leases).step_by(clients.max(1)).collect()
}

/// The untimed setup every renewal workload starts with: acquire all owned
/// leases, then hand each client its own (name, version) pairs.
pub async fn renewal_setup(
    target: &Target,
    cfg: &LoadConfig,
) -> Result<(Vec<Vec<(String, u64)>>, Setup), BenchError> {
    if cfg.leases < cfg.clients {
        return Err(BenchError::Invalid(format!(
            "--leases ({}) must be at least --clients ({}): each client renews its own leases",
            cfg.leases, cfg.clients
        )));
    }
    let names: Vec<String> = (0..cfg.leases).map(owned_name).collect();
    if cfg.progress {
        eprintln!("setup: acquiring {} leases", names.len());
    }
    let (versions, setup) = acquire_all(target, cfg, &names, SETUP_CONCURRENCY).await?;
    let per_client = (0..cfg.clients)
        .map(|c| {
            owned_by(c, cfg.clients, cfg.leases)
                .into_iter()
                .map(|l| (names[l].clone(), versions[l]))
                .collect()
        })
        .collect();
    Ok((per_client, setup))
}

/// One renewal of `lease` (its holder is its name) by client `c`, recorded;
/// on a lost tenure the lease is acquired again (recorded as `acquire`).
/// Each client renews its own leases round robin, paced by `h`, until the
/// run ends: the load of `renew`, and the background load of `watch` and
/// `failover`.
pub async fn renew_round_robin(
    h: &Harness,
    cfg: &LoadConfig,
    target: &Arc<Target>,
    owned: Vec<Vec<(String, u64)>>,
) -> Result<(), BenchError> {
    run_clients(owned, |c, mut leases| {
        let (target, rec, cfg) = (target.clone(), h.rec.clone(), cfg.clone());
        let mut pacer = h.pacer(&cfg, c);
        async move {
            let mut k = 0usize;
            while let Some(intended) = pacer.next().await {
                let n = leases.len();
                renew_one(&target, &rec, &cfg, c, intended, &mut leases[k % n]).await;
                k += 1;
            }
            leases
        }
    })
    .await
    .map(|_| ())
}

pub async fn renew_one(
    target: &Target,
    rec: &Recorder,
    cfg: &LoadConfig,
    c: usize,
    intended: Instant,
    lease: &mut (String, u64),
) {
    let (t, r) = timed(
        intended,
        target.renew(c, &lease.0, &lease.0, cfg.lease_seconds, lease.1),
    )
    .await;
    match r {
        Ok(rn) => {
            lease.1 = rn.version;
            rec.ok("renew", t, None, true);
            rec.revision(rn.revision, t.done);
        }
        Err(e) => {
            rec.err(t, &e);
            if is_lost(&e) {
                let (t, r) = timed(
                    Instant::now(),
                    target.acquire(c, &lease.0, &lease.0, cfg.lease_seconds),
                )
                .await;
                match r {
                    Ok(Acquired::Granted { version }) => {
                        lease.1 = version;
                        rec.ok("acquire", t, Some("reacquired"), true);
                    }
                    Ok(Acquired::Held) => rec.ok("acquire", t, Some("held"), false),
                    Err(e) => rec.err(t, &e),
                }
            }
            after_error(cfg).await;
        }
    }
}
