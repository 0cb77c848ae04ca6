//! `watch`: M watchers on the namespace while the renew workload runs.
//! Measures, for every renewal acknowledged in the measured window and every
//! watcher, the delay from the acknowledgement reaching the renewing client
//! to the event reaching the watcher. Both instants are taken by this
//! process on one monotonic clock, so no clock offset enters the figure.
//!
//! Events are matched to renewals by revision (Leasehold: the lease's
//! resourceVersion in the Renew response; etcd: the txn's header revision,
//! which is the key's new mod_revision). Deliveries are collected during the
//! run and matched afterwards, so matching costs nothing while measuring.

use super::{renew_round_robin, renewal_setup, Harness};
use crate::config::LoadConfig;
use crate::recorder::{self, Recorder};
use crate::report::{Percentiles, Report, RunInfo, WatchReport, WatcherDelay};
use crate::systems::{OpError, Target};
use crate::BenchError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long watchers keep listening after the last renewal was sent, for
/// the events of renewals still in flight at the end.
const GRACE: Duration = Duration::from_secs(2);

/// What one watcher saw.
struct Seen {
    deliveries: Vec<(u64, Instant)>,
    error: Option<OpError>,
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    if cfg.watch.watchers == 0 {
        return Err(BenchError::Invalid("--watchers must be at least 1".into()));
    }
    let target = Arc::new(target);
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let mut streams = Vec::with_capacity(cfg.watch.watchers);
    for w in 0..cfg.watch.watchers {
        streams.push(
            target
                .watch(w)
                .await
                .map_err(|e| BenchError::Unavailable(format!("cannot open watch {w}: {e}")))?,
        );
    }
    let h = Harness::start(cfg, "watch", Recorder::keep_revisions);
    let listen_until = h.rec.measure_until() + GRACE;
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let rec = h.rec.clone();
            tokio::spawn(async move {
                let mut seen = Seen {
                    deliveries: Vec::new(),
                    error: None,
                };
                loop {
                    match tokio::time::timeout_at(listen_until.into(), s.next()).await {
                        Err(_) | Ok(Ok(None)) => break,
                        Ok(Ok(Some((at, revisions)))) => {
                            rec.events(revisions.len() as u64);
                            seen.deliveries
                                .extend(revisions.into_iter().map(|r| (r, at)));
                        }
                        Ok(Err(e)) => {
                            seen.error = Some(e);
                            break;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    renew_round_robin(&h, cfg, &target, owned).await?;
    let (measure_from, measure_until) = (h.rec.measure_from(), h.rec.measure_until());
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    let mut seen = Vec::with_capacity(watchers.len());
    for w in watchers {
        seen.push(
            w.await
                .map_err(|e| BenchError::Failed(format!("a watcher task failed: {e}")))?,
        );
    }

    // Renewals acknowledged in the measured window, by revision.
    let acks: HashMap<u64, Instant> = totals
        .revisions
        .iter()
        .filter(|(_, at)| *at >= measure_from && *at < measure_until)
        .copied()
        .collect();
    let mut delay = recorder::histogram();
    let (mut delivered, mut before_ack) = (0u64, 0u64);
    let mut per_watcher = Vec::with_capacity(seen.len());
    for (w, s) in seen.iter().enumerate() {
        let mut mine = recorder::histogram();
        for (rev, at) in &s.deliveries {
            if let Some(ack) = acks.get(rev) {
                delivered += 1;
                if at < ack {
                    before_ack += 1;
                }
                let d = at.saturating_duration_since(*ack);
                recorder::record_duration(&mut delay, d);
                recorder::record_duration(&mut mine, d);
            }
        }
        per_watcher.push(WatcherDelay {
            watcher: w,
            endpoint: cfg.endpoints[w % cfg.endpoints.len()].clone(),
            delay_ms: Percentiles::of(&mine),
        });
    }
    let mut report = Report::new(
        RunInfo {
            workload: "watch",
            cfg,
            started_at,
            host,
            mix: Some(format!(
                "renew as in `renew`, with {} watchers on the namespace",
                cfg.watch.watchers
            )),
            setup: Some(setup),
            servers,
        },
        &totals,
    );
    for e in seen.iter().filter_map(|s| s.error.as_ref()) {
        let kind = format!("WATCH/{}", e.kind);
        *report.errors.entry(kind.clone()).or_insert(0) += 1;
        report
            .error_examples
            .entry(kind)
            .or_insert(e.message.clone());
        report.errors_total += 1;
    }
    report.watch = Some(WatchReport {
        watchers: cfg.watch.watchers,
        renewals: acks.len() as u64,
        delivered,
        expected: acks.len() as u64 * cfg.watch.watchers as u64,
        before_ack,
        delay_ms: Percentiles::of(&delay),
        per_watcher,
    });
    Ok(report)
}
