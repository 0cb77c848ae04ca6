//! `renew`: each client keeps its own leases renewed, round robin, the way
//! kubelets keep their node leases (one holder per lease, renewals only).
//! The setup acquires every lease first and is not timed.
//!
//! With `--scanners N`, N more clients list every lease of every namespace
//! with a label selector, page after page, for the whole run: the renewal
//! latency then shows whether long scans stall writes.

use super::{renew_round_robin, renewal_setup, Harness};
use crate::config::LoadConfig;
use crate::recorder;
use crate::report::{Percentiles, Report, RunInfo, ScanReport};
use crate::systems::Target;
use crate::BenchError;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the scanners saw in the measured window.
#[derive(Default)]
struct ScanTally {
    passes: u64,
    pages: u64,
    errors: u64,
    page: Option<hdrhistogram::Histogram<u64>>,
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    let target = Arc::new(target);
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let h = Harness::start(cfg, "renew", |r| r);
    let tally = Arc::new(Mutex::new(ScanTally {
        page: Some(recorder::histogram()),
        ..Default::default()
    }));
    let (from, until) = (h.rec.measure_from(), h.rec.measure_until());
    let scanners: Vec<_> = (0..cfg.scan.scanners)
        .map(|i| {
            let (target, tally, selector) =
                (target.clone(), tally.clone(), cfg.scan.selector.clone());
            let conn = i % cfg.connections.max(1);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let r = target
                        .scan(conn, &selector, |d| {
                            let now = Instant::now();
                            if now >= from && now < until {
                                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                                t.pages += 1;
                                if let Some(hist) = t.page.as_mut() {
                                    recorder::record_duration(hist, d);
                                }
                            }
                        })
                        .await;
                    let now = Instant::now();
                    let failed = {
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        match r {
                            Ok(_) if now >= from && now < until => t.passes += 1,
                            Ok(_) => {}
                            Err(_) => t.errors += 1,
                        }
                        r.is_err()
                    };
                    if failed {
                        // Back off instead of spinning on a cluster that
                        // refuses (an election, say).
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    renew_round_robin(&h, cfg, &target, owned).await?;
    for s in scanners {
        s.abort();
    }
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    let scan = (cfg.scan.scanners > 0).then(|| {
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        ScanReport {
            scanners: cfg.scan.scanners,
            selector: cfg.scan.selector.clone(),
            passes: t.passes,
            pages: t.pages,
            page_ms: t.page.as_ref().map(Percentiles::of).unwrap_or_default(),
            errors: t.errors,
        }
    });
    let mut report = Report::new(
        RunInfo {
            workload: "renew",
            cfg,
            started_at,
            host,
            mix: None,
            setup: Some(setup),
            servers,
        },
        &totals,
    );
    report.scan = scan;
    Ok(report)
}
