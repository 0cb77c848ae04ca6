//! `keepalive`: each client renews its own leases over one stream, round
//! robin, one renewal in flight: Leasehold's `RenewStream` (every renewal
//! replicated and synced on a majority before it is answered) against
//! etcd's `LeaseKeepAlive` (answered by the leader from memory, not
//! replicated: the comparison is of a durable renewal with etcd's fastest
//! one). The setup (acquiring or granting the leases, opening the streams)
//! is not timed.

use super::{after_error, run_clients, timed, Harness};
use crate::config::LoadConfig;
use crate::report::{Report, RunInfo};
use crate::systems::Target;
use crate::BenchError;

/// Runs the workload.
pub async fn run(cfg: &LoadConfig, target: Target) -> Result<Report, BenchError> {
    if cfg.leases < cfg.clients {
        return Err(BenchError::Invalid(format!(
            "--leases ({}) must be at least --clients ({})",
            cfg.leases, cfg.clients
        )));
    }
    let (streams, setup) = target.keepalive_setup(cfg).await?;
    let h = Harness::start(cfg, "keepalive", |r| r);
    run_clients(streams, |c, mut stream| {
        let (rec, cfg) = (h.rec.clone(), cfg.clone());
        let mut pacer = h.pacer(&cfg, c);
        async move {
            let mut k = 0usize;
            while let Some(intended) = pacer.next().await {
                let (t, r) = timed(intended, stream.renew(k)).await;
                k += 1;
                match r {
                    Ok(()) => rec.ok("keepalive", t, None, true),
                    Err(e) => {
                        rec.err(t, &e);
                        after_error(&cfg).await;
                    }
                }
            }
            stream
        }
    })
    .await?;
    let (started_at, host) = (h.started_at, h.host.clone());
    let (totals, servers) = h.finish().await;
    Ok(Report::new(
        RunInfo {
            workload: "keepalive",
            cfg,
            started_at,
            host,
            mix: Some(match target.kind() {
                crate::TargetKind::Leasehold => "RenewStream: replicated, synced renewals".into(),
                crate::TargetKind::Etcd => "LeaseKeepAlive: leader-local, not replicated".into(),
            }),
            setup: Some(setup),
            servers,
        },
        &totals,
    ))
}
