//! `acquire`: K candidates contend for L leases. Each picks a lease at
//! random and acquires it; on success it releases it at once. A LEASE_HELD
//! answer is a correct, successful operation (counted as outcome `held`),
//! not an error: that is what contention looks like.

use super::{after_error, contended_name, run_clients, timed, Harness};
use crate::config::LoadConfig;
use crate::recorder::Recorder;
use crate::report::{Report, RunInfo};
use crate::systems::{Acquired, Target};
use crate::BenchError;
use leasehold_rng::Rng;
use std::sync::Arc;
use std::time::Instant;

/// One acquire of a random contended lease by candidate `c`, and the
/// release if it was granted; both recorded.
pub async fn acquire_release(
    target: &Target,
    rec: &Recorder,
    cfg: &LoadConfig,
    c: usize,
    intended: Instant,
    leases: usize,
    rng: &mut Rng,
) {
    let name = contended_name(rng.index(leases));
    let holder = format!("candidate-{c}");
    let (t, r) = timed(
        intended,
        target.acquire(c, &name, &holder, cfg.lease_seconds),
    )
    .await;
    match r {
        Ok(Acquired::Granted { version }) => {
            rec.ok("acquire", t, Some("granted"), true);
            let (t, r) = timed(Instant::now(), target.release(c, &name, &holder, version)).await;
            match r {
                Ok(()) => rec.ok("release", t, None, true),
                Err(e) => {
                    rec.err(t, &e);
                    after_error(cfg).await;
                }
            }
        }
        Ok(Acquired::Held) => rec.ok("acquire", t, Some("held"), false),
        Err(e) => {
            rec.err(t, &e);
            after_error(cfg).await;
        }
    }
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    let target = Arc::new(target);
    let h = Harness::start(cfg, "acquire", |r| r);
    let seed = u64::from(h.started_at.timestamp_subsec_nanos());
    run_clients(vec![(); cfg.clients], |c, ()| {
        let (target, rec, cfg) = (target.clone(), h.rec.clone(), cfg.clone());
        let mut pacer = h.pacer(&cfg, c);
        let mut rng = Rng::new(seed ^ c as u64);
        async move {
            while let Some(intended) = pacer.next().await {
                acquire_release(&target, &rec, &cfg, c, intended, cfg.leases, &mut rng).await;
            }
        }
    })
    .await?;
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    Ok(Report::new(
        RunInfo {
            workload: "acquire",
            cfg,
            started_at,
            host,
            mix: Some(format!(
                "{} candidates over {} leases: acquire a random lease; release it if granted",
                cfg.clients, cfg.leases
            )),
            setup: None,
            servers,
        },
        &totals,
    ))
}
