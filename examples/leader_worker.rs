//! A leader-elected worker: every copy of this program campaigns for the
//! lease `examples/leader-worker`; the leader "works" (prints a line every
//! second with its fencing token) and the others wait.
//!
//! Needs a running Leasehold cluster, reached at `--endpoints
//! HOST:PORT,...`, else `LEASEHOLD_ENDPOINTS`, else `127.0.0.1:7070`:
//!
//! ```sh
//! cargo run --release -- serve &                       # a one-node cluster
//! cargo run --example leader_worker -- --identity w1   # in one terminal
//! cargo run --example leader_worker -- --identity w2   # in another
//! ```
//!
//! Stop the leader with ctrl-c: it releases the lease and the other copy
//! leads within about two seconds. Kill it with `kill -9` instead: the other
//! copy waits for the lease to lapse (about 15 s) before it leads.

#[path = "support/mod.rs"]
mod support;
use leasehold::client::elector::{ElectorConfig, LeaderElector, LeaderEvent};
use leasehold::client::Client;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::endpoints;

/// The value of `--NAME VALUE` on the command line.
fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = endpoints();
    let identity = flag("identity").unwrap_or_else(|| format!("worker-{}", std::process::id()));
    println!(
        "leader_worker {identity}: cluster at {}",
        endpoints.join(",")
    );
    let client = Arc::new(Client::new(endpoints)?);
    let config = ElectorConfig::new("examples", "leader-worker", identity.clone());
    let (elector, mut events) = LeaderElector::new(client, config)?;
    let handle = elector.handle();
    // Cancelled by ctrl-c: the elector steps down and releases.
    let mut run = tokio::spawn(elector.run(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(LeaderEvent::StartedLeading { fencing_token, .. }) => {
                    println!("{identity}: I lead now (fencing token {fencing_token})");
                }
                Some(LeaderEvent::StoppedLeading { reason, .. }) => {
                    println!("{identity}: I no longer lead: {reason}");
                }
                Some(LeaderEvent::NewLeader { identity: leader }) if leader != identity => {
                    println!("{identity}: {leader} leads; waiting");
                }
                Some(LeaderEvent::NewLeader { .. }) => {}
                None => break,
            },
            _ = tick.tick() => {
                // Check before every piece of work: the handle compares the
                // validity deadline with the clock right now.
                if let Some(t) = handle.tenure() {
                    println!(
                        "{identity}: working with token {} (lease valid for another {} ms)",
                        t.fencing_token,
                        t.valid_until.saturating_duration_since(Instant::now()).as_millis()
                    );
                }
            }
            r = &mut run => {
                r??;
                break;
            }
        }
    }
    println!("{identity}: stopped");
    Ok(())
}
