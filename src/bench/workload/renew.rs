//! `renew`: each client keeps its own leases renewed, round robin, the way
//! kubelets keep their node leases (one holder per lease, renewals only).
//! The setup acquires every lease first and is not timed.

use super::{renew_round_robin, renewal_setup, Harness};
use crate::bench::config::LoadConfig;
use crate::bench::report::{Report, RunInfo};
use crate::bench::systems::Target;
use crate::bench::BenchError;
use std::sync::Arc;

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    let target = Arc::new(target);
    let (owned, setup) = renewal_setup(&target, cfg).await?;
    let h = Harness::start(cfg, "renew", |r| r);
    renew_round_robin(&h, cfg, &target, owned).await?;
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    Ok(Report::new(
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
    ))
}
