//! `mixed`: what a cluster of node heartbeats, leader elections and
//! controllers looks like from the store's side: 80 % renewals of the
//! client's own leases, 10 % acquire (and release when granted) of a few
//! contended leases, 8 % linearizable gets of a random lease, 2 % lists of
//! the namespace's first page.

use super::acquire::acquire_release;
use super::{after_error, owned_name, renew_one, renewal_setup, run_clients, timed, Harness};
use crate::config::LoadConfig;
use crate::report::{Report, RunInfo};
use crate::systems::{Target, LIST_PAGE};
use crate::BenchError;
use leasehold_rng::Rng;
use std::sync::Arc;

/// Contended leases in the mix.
const CONTENDED: usize = 16;

/// The mix, as stated in every report.
pub fn mix() -> String {
    format!(
        "renew 80% (own leases), acquire+release 10% ({CONTENDED} contended leases; the release \
         of a granted lease is an extra operation), get 8% (random lease, linearizable), \
         list 2% (first page of {LIST_PAGE})"
    )
}

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    let target = Arc::new(target);
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let h = Harness::start(cfg, "mixed", |r| r);
    let seed = u64::from(h.started_at.timestamp_subsec_nanos());
    run_clients(owned, |c, mut leases| {
        let (target, rec, cfg) = (target.clone(), h.rec.clone(), cfg.clone());
        let mut pacer = h.pacer(&cfg, c);
        let mut rng = Rng::new(seed ^ ((c as u64) << 1));
        async move {
            let mut k = 0usize;
            while let Some(intended) = pacer.next().await {
                match rng.index(100) {
                    0..80 => {
                        let n = leases.len();
                        renew_one(&target, &rec, &cfg, c, intended, &mut leases[k % n]).await;
                        k += 1;
                    }
                    80..90 => {
                        acquire_release(&target, &rec, &cfg, c, intended, CONTENDED, &mut rng).await
                    }
                    90..98 => {
                        let name = owned_name(rng.index(cfg.leases));
                        let (t, r) = timed(intended, target.get(c, &name)).await;
                        match r {
                            Ok(()) => rec.ok("get", t, None, false),
                            Err(e) => {
                                rec.err(t, &e);
                                after_error(&cfg).await;
                            }
                        }
                    }
                    _ => {
                        let (t, r) = timed(intended, target.list(c)).await;
                        match r {
                            Ok(_) => rec.ok("list", t, None, false),
                            Err(e) => {
                                rec.err(t, &e);
                                after_error(&cfg).await;
                            }
                        }
                    }
                }
            }
            leases
        }
    })
    .await?;
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    Ok(Report::new(
        RunInfo {
            workload: "mixed",
            cfg,
            started_at,
            host,
            mix: Some(mix()),
            setup: Some(setup),
            servers,
        },
        &totals,
    ))
}
