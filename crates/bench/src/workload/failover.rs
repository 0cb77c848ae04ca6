//! `failover`: the renew workload, and at `--kill-after` seconds into the
//! measured window the current leader is SIGKILLed.
//!
//! The bench does not start servers: it is given their process ids
//! (`--server-pids ID=PID,...`, ID being the Leasehold node id, or for etcd
//! the member's position in `--endpoints`), asks the cluster which node
//! leads just before the kill, and kills that pid with the system's `kill`.
//! `cluster/bench-vs-etcd.sh` starts the clusters and passes the pids.
//!
//! Figures:
//! - *first success after the kill*: from the kill to the first
//!   acknowledgement of a write sent after it. Writes sent before the kill
//!   are excluded, so that answers already on their way from the old leader
//!   cannot count. In closed loop this adds at most one operation's latency
//!   to the true figure, since a client sends its next write as soon as its
//!   stalled one (retried by the client) succeeds.
//! - *longest gap*: the longest time between two consecutive
//!   acknowledgements of any client in the measured window: how long
//!   nothing at all was written.
//! - *probes*: every 20 ms, on a fixed schedule, one more write (an
//!   acquire of one of 1,000 probe leases by the holder `probe`, which
//!   renews it) is started without waiting for the earlier ones. A closed
//!   set of clients can all be stuck in calls made just before the kill (etcd
//!   holds a write a follower forwarded to the dead leader until its request
//!   timeout, 7 s); the first probe acknowledged after the kill says when the
//!   cluster took writes again.
//! - a latency series (100 ms buckets by default) for the plot.

use super::{renew_round_robin, renewal_setup, Harness};
use crate::config::LoadConfig;
use crate::recorder::Recorder;
use crate::report::{FailoverReport, Report, RunInfo};
use crate::systems::{Acquired, Target};
use crate::BenchError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Interval between probe writes.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Probe leases, used in turn.
const PROBE_LEASES: usize = 1000;

/// One probe write: when it was sent and, if it succeeded, acknowledged.
pub(super) struct Probe {
    pub(super) sent: Instant,
    pub(super) acked: Option<Instant>,
}

/// Sends a probe write every [`PROBE_EVERY`] from `from` to `until`, each in
/// its own task, and returns them all once every call has ended.
pub(super) async fn probe(
    target: Arc<Target>,
    seconds: i32,
    from: Instant,
    until: Instant,
) -> Vec<Probe> {
    let mut tick = tokio::time::interval_at(from.into(), PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut calls = Vec::new();
    for k in 0usize.. {
        if tick.tick().await.into_std() >= until {
            break;
        }
        let target = target.clone();
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let name = format!("probe-{:04}", k % PROBE_LEASES);
            let r = target.acquire(k, &name, "probe", seconds).await;
            Probe {
                sent,
                acked: matches!(r, Ok(Acquired::Granted { .. })).then(Instant::now),
            }
        }));
    }
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        if let Ok(p) = c.await {
            out.push(p);
        }
    }
    out
}

/// SIGKILLs `pid` with the system's `kill` (as `leasehold lock` does: no
/// libc binding needed).
pub async fn kill9(pid: u32) -> Result<(), String> {
    signal(pid, "KILL").await
}

/// Sends `sig` (a name `kill(1)` knows: KILL, TERM...) to `pid`.
pub async fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -{sig} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `line` with `sh -c` in a process group of its own, detached from
/// the bench's stdio: the restarted server must outlive the bench and must
/// not get the terminal's signals (ctrl-c on the bench stops only the
/// bench). Used by `restart` and `scale` to start a server again.
pub(super) fn start_detached(line: &str) -> Result<std::process::Child, String> {
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(line)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .spawn()
        .map_err(|e| format!("cannot run {line:?}: {e}"))
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    if cfg.servers.is_empty() {
        return Err(BenchError::Invalid(
            "failover needs --server-pids ID=PID,... to find and kill the leader".into(),
        ));
    }
    if cfg.failover.kill_after >= cfg.duration {
        return Err(BenchError::Invalid(format!(
            "--kill-after ({:.1} s) must be less than --duration ({:.1} s)",
            cfg.failover.kill_after.as_secs_f64(),
            cfg.duration.as_secs_f64()
        )));
    }
    let target = Arc::new(target);
    let leader = target
        .leader()
        .await
        .map_err(|e| BenchError::Unavailable(format!("cannot find the leader: {e}")))?;
    if !cfg.servers.iter().any(|s| s.id == leader) {
        return Err(BenchError::Invalid(format!(
            "the leader is {leader}, which --server-pids does not name"
        )));
    }
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let h = Harness::start(cfg, "failover", Recorder::keep_acks);
    let kill_at = h.rec.measure_from() + cfg.failover.kill_after;
    let prober = tokio::spawn(probe(
        target.clone(),
        cfg.lease_seconds,
        h.rec.measure_from(),
        h.rec.measure_until(),
    ));
    let killer = {
        let (target, servers, progress) = (target.clone(), cfg.servers.clone(), cfg.progress);
        tokio::spawn(async move {
            tokio::time::sleep_until(kill_at.into()).await;
            let leader = target
                .leader()
                .await
                .map_err(|e| format!("cannot find the leader to kill: {e}"))?;
            let pid = servers
                .iter()
                .find(|s| s.id == leader)
                .map(|s| s.pid)
                .ok_or_else(|| {
                    format!("the leader is {leader}, which --server-pids does not name")
                })?;
            // Taken before the signal: the figures may be a little worse
            // than the truth, never better.
            let at = Instant::now();
            kill9(pid).await?;
            if progress {
                eprintln!("killed the leader, node {leader} (pid {pid})");
            }
            Ok::<_, String>((leader, pid, at))
        })
    };
    renew_round_robin(&h, cfg, &target, owned).await?;
    let (start, measure_from, measure_until) =
        (h.rec.start(), h.rec.measure_from(), h.rec.measure_until());
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    let (killed_id, killed_pid, killed_at) = killer
        .await
        .map_err(|e| BenchError::Failed(format!("the kill task failed: {e}")))?
        .map_err(BenchError::Failed)?;
    let new_leader_id = target.leader().await.ok();
    let probes = prober
        .await
        .map_err(|e| BenchError::Failed(format!("the probe task failed: {e}")))?;
    let probe_first_success_ms = probes
        .iter()
        .filter(|p| p.sent >= killed_at)
        .filter_map(|p| p.acked)
        .min()
        .map(|t| t.duration_since(killed_at).as_secs_f64() * 1e3);

    let first_success = totals
        .acks
        .iter()
        .filter(|a| a.sent >= killed_at)
        .map(|a| a.acked)
        .min()
        .map(|t| t.duration_since(killed_at).as_secs_f64() * 1e3);
    let mut acked: Vec<Instant> = totals
        .acks
        .iter()
        .map(|a| a.acked)
        .filter(|t| *t >= measure_from && *t <= measure_until)
        .collect();
    acked.sort();
    let (gap, gap_at) = acked
        .windows(2)
        .map(|w| (w[1].duration_since(w[0]), w[0]))
        .max_by_key(|(d, _)| *d)
        .unwrap_or((Duration::ZERO, measure_from));
    let interval = cfg.series_interval.as_secs_f64();
    let kill_bucket = (killed_at.duration_since(start).as_secs_f64() / interval) as usize;
    let errors_after_kill = totals
        .series
        .iter()
        .skip(kill_bucket)
        .map(|b| b.errors)
        .sum();

    let mut report = Report::new(
        RunInfo {
            workload: "failover",
            cfg,
            started_at,
            host,
            mix: Some(format!(
                "renew as in `renew`; the leader is SIGKILLed {:.1} s into the measured window",
                cfg.failover.kill_after.as_secs_f64()
            )),
            setup: Some(setup),
            servers,
        },
        &totals,
    );
    report.failover = Some(FailoverReport {
        killed_id,
        killed_pid,
        kill_at_s: killed_at.duration_since(start).as_secs_f64(),
        first_success_after_kill_ms: first_success,
        longest_gap_ms: gap.as_secs_f64() * 1e3,
        longest_gap_at_s: gap_at.duration_since(start).as_secs_f64(),
        errors_after_kill,
        new_leader_id,
        probe_every_ms: PROBE_EVERY.as_millis() as u64,
        probes_sent: probes.len() as u64,
        probes_failed: probes.iter().filter(|p| p.acked.is_none()).count() as u64,
        probe_first_success_ms,
    });
    Ok(report)
}
