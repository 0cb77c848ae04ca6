//! `restart`: the renew workload (with failover's probes) through a rolling
//! restart of every server, as an operator upgrades a cluster: each server
//! is stopped with SIGTERM (what `systemctl stop`, `docker stop` and the
//! kubelet send), started again with `--restart-cmd`, and the next one
//! waits until it serves again. Followers first, the leader of the moment
//! last, as the README tells operators to do.
//!
//! Like `failover`, the bench does not start servers: it is given their
//! process ids (`--server-pids ID=PID,...`) and a shell command that starts
//! server `{id}` again (`cluster/bench-vs-etcd.sh` passes both, for
//! Leasehold and for etcd, which also hands leadership over when it is
//! stopped).
//!
//! Figures, per restart:
//! - *exit*: from SIGTERM to the process being gone (a stopping Leasehold
//!   leader hands leadership over first; open streams end);
//! - *first write after the stop*: from SIGTERM to the first
//!   acknowledgement of a write (client or probe) sent after it;
//! - *longest gap*: the longest time between two consecutive
//!   acknowledgements (any client or probe) whose second one falls between
//!   the SIGTERM and the end of the settle time after the server is back:
//!   how long nothing at all was written around this restart. For a leader
//!   restart this is the unavailability the issue bounds by one election;
//! - *ready*: from the restart command to the server serving again
//!   (Leasehold: its Status names a leader and it has applied what the
//!   leader had committed at the SIGTERM; etcd: its port accepts and the
//!   cluster names a leader);
//! - errors of the workload in that window.
//!
//! Over the whole run, errors by kind are in the report as for every
//! workload; a renewal refused as `LEASE_LOST` would mean a tenure was
//! lost across a restart, which must not happen with leases of 40 s.

use super::failover::{probe, signal, start_detached, Probe, PROBE_EVERY};
use super::scale::{authorization, channel};
use super::{renew_round_robin, renewal_setup, Harness};
use crate::config::{LoadConfig, ServerPid};
use crate::procstat;
use crate::recorder::Recorder;
use crate::report::{Report, RestartReport, RestartStep, RunInfo};
use crate::systems::Target;
use crate::BenchError;
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::cluster_client::ClusterClient;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a SIGTERMed server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a restarted server may take to serve again.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One restart as it happened.
struct Done {
    id: u64,
    pid: u32,
    new_pid: u32,
    was_leader: bool,
    stop_at: Instant,
    exited_at: Instant,
    started_at: Instant,
    ready_at: Instant,
    settled_at: Instant,
}

/// Sends SIGTERM to each server in turn (followers first, the leader
/// last), waits for it to exit, waits `down`, runs the restart command,
/// waits until it serves and then `settle` more, and goes on with the next.
async fn roll(target: Arc<Target>, cfg: LoadConfig, from: Instant) -> Result<Vec<Done>, String> {
    let opts = cfg.restart.clone();
    let cmd = opts
        .restart_cmd
        .clone()
        .ok_or("restart needs --restart-cmd")?;
    tokio::time::sleep_until(from.into()).await;
    let leader = target
        .leader()
        .await
        .map_err(|e| format!("cannot find the leader: {e}"))?;
    let mut order: Vec<ServerPid> = cfg.servers.clone();
    order.sort_by_key(|s| (s.id == leader, s.id));
    let mut done = Vec::new();
    for s in order {
        let was_leader = target.leader().await.ok() == Some(s.id);
        // Leasehold: where the server answers, and what it must have
        // applied before it counts as back.
        let lh = match target.leasehold() {
            Some(lh) => {
                let addr = lh
                    .address_of(s.id)
                    .await
                    .map_err(|e| format!("the address of node {}: {e}", s.id))?;
                let commit = lh
                    .status()
                    .await
                    .map_err(|e| format!("status: {e}"))?
                    .commit_index;
                Some((addr, commit))
            }
            None => None,
        };
        let stop_at = Instant::now();
        signal(s.pid, "TERM").await?;
        while procstat::alive(s.pid) {
            if stop_at.elapsed() > EXIT_TIMEOUT {
                return Err(format!(
                    "server {} (pid {}) did not exit within {} s of SIGTERM",
                    s.id,
                    s.pid,
                    EXIT_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let exited_at = Instant::now();
        if cfg.progress {
            eprintln!(
                "restart: stopped server {}{} (pid {}) in {} ms",
                s.id,
                if was_leader { ", the leader," } else { "" },
                s.pid,
                exited_at.duration_since(stop_at).as_millis()
            );
        }
        tokio::time::sleep(opts.down).await;
        let line = cmd.replace("{id}", &s.id.to_string());
        let started_at = Instant::now();
        let mut child = start_detached(&line)?;
        let new_pid = child.id();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the restart command exited with {status} before server {} served: {line}",
                    s.id
                ));
            }
            if started_at.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "server {} did not serve within {} s of {line:?}",
                    s.id,
                    READY_TIMEOUT.as_secs()
                ));
            }
            if serves(&target, &cfg, s.id, lh.as_ref()).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready_at = Instant::now();
        tokio::time::sleep(opts.settle).await;
        done.push(Done {
            id: s.id,
            pid: s.pid,
            new_pid,
            was_leader,
            stop_at,
            exited_at,
            started_at,
            ready_at,
            settled_at: Instant::now(),
        });
    }
    Ok(done)
}

/// Whether server `id` serves again (see the module doc).
async fn serves(target: &Target, cfg: &LoadConfig, id: u64, lh: Option<&(String, u64)>) -> bool {
    match lh {
        Some((addr, commit)) => {
            let (Some(ch), Ok(auth)) = (channel(addr, &cfg.connect).await, authorization(cfg))
            else {
                return false;
            };
            match ClusterClient::with_interceptor(ch, auth)
                .status(pb::StatusRequest {})
                .await
            {
                Ok(s) => {
                    let s = s.into_inner();
                    s.leader_id != 0 && s.applied_index >= *commit
                }
                Err(_) => false,
            }
        }
        None => {
            let Some(addr) = usize::try_from(id)
                .ok()
                .and_then(|i| cfg.endpoints.get(i.wrapping_sub(1)))
            else {
                return false;
            };
            tokio::net::TcpStream::connect(addr).await.is_ok() && target.leader().await.is_ok()
        }
    }
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    if cfg.servers.is_empty() {
        return Err(BenchError::Invalid(
            "restart needs --server-pids ID=PID,... to stop the servers".into(),
        ));
    }
    if cfg.restart.restart_cmd.is_none() {
        return Err(BenchError::Invalid(
            "restart needs --restart-cmd (a shell command starting server {id} again)".into(),
        ));
    }
    let target = Arc::new(target);
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let h = Harness::start(cfg, "restart", Recorder::keep_acks);
    let prober = tokio::spawn(probe(
        target.clone(),
        cfg.lease_seconds,
        h.rec.measure_from(),
        h.rec.measure_until(),
    ));
    let roller = tokio::spawn(roll(
        target.clone(),
        cfg.clone(),
        h.rec.measure_from() + cfg.restart.first_after,
    ));
    renew_round_robin(&h, cfg, &target, owned).await?;
    let (start, measure_until) = (h.rec.start(), h.rec.measure_until());
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    let done = roller
        .await
        .map_err(|e| BenchError::Failed(format!("the restart task failed: {e}")))?
        .map_err(|e| BenchError::Failed(format!("rolling restart: {e}")))?;
    if let Some(last) = done.last() {
        if last.settled_at > measure_until {
            return Err(BenchError::Failed(format!(
                "the rolling restart ended {:.1} s after the measured window; raise --duration",
                last.settled_at.duration_since(measure_until).as_secs_f64()
            )));
        }
    }
    let probes: Vec<Probe> = prober
        .await
        .map_err(|e| BenchError::Failed(format!("the probe task failed: {e}")))?;
    // Every acknowledged write, clients' and probes', in order.
    let mut acks: Vec<(Instant, Instant)> = totals.acks.iter().map(|a| (a.sent, a.acked)).collect();
    acks.extend(probes.iter().filter_map(|p| p.acked.map(|a| (p.sent, a))));
    let mut acked: Vec<Instant> = acks.iter().map(|a| a.1).collect();
    acked.sort();
    let interval = cfg.series_interval.as_secs_f64();
    let bucket = |t: Instant| (t.duration_since(start).as_secs_f64() / interval) as usize;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let steps = done
        .iter()
        .map(|d| {
            let first = acks
                .iter()
                .filter(|(sent, _)| *sent >= d.stop_at)
                .map(|(_, acked)| *acked)
                .min()
                .map(|t| ms(t.duration_since(d.stop_at)));
            let gap = acked
                .windows(2)
                .filter(|w| w[1] > d.stop_at && w[1] <= d.settled_at)
                .map(|w| w[1].duration_since(w[0]))
                .max()
                .unwrap_or(Duration::ZERO);
            let errors = totals
                .series
                .iter()
                .skip(bucket(d.stop_at))
                .take(bucket(d.settled_at).saturating_sub(bucket(d.stop_at)) + 1)
                .map(|b| b.errors)
                .sum();
            RestartStep {
                id: d.id,
                pid: d.pid,
                new_pid: d.new_pid,
                was_leader: d.was_leader,
                stop_at_s: d.stop_at.duration_since(start).as_secs_f64(),
                exit_ms: ms(d.exited_at.duration_since(d.stop_at)),
                ready_ms: ms(d.ready_at.duration_since(d.started_at)),
                first_write_after_stop_ms: first,
                longest_gap_ms: ms(gap),
                errors,
            }
        })
        .collect();
    let mut report = Report::new(
        RunInfo {
            workload: "restart",
            cfg,
            started_at,
            host,
            mix: Some(format!(
                "renew as in `renew`; from {:.1} s into the measured window every server is \
                 stopped with SIGTERM and started again in turn, followers first, the leader last \
                 ({} ms down, {} ms settle after each is back)",
                cfg.restart.first_after.as_secs_f64(),
                cfg.restart.down.as_millis(),
                cfg.restart.settle.as_millis()
            )),
            setup: Some(setup),
            servers,
        },
        &totals,
    );
    report.restart = Some(RestartReport {
        steps,
        probe_every_ms: PROBE_EVERY.as_millis() as u64,
        probes_sent: probes.len() as u64,
        probes_failed: probes.iter().filter(|p| p.acked.is_none()).count() as u64,
        lost_tenures: totals
            .errors
            .iter()
            .filter(|(k, _)| k.ends_with("LEASE_LOST") || k.as_str() == "CONFLICT")
            .map(|(_, n)| *n)
            .sum(),
    });
    Ok(report)
}
