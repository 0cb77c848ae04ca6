//! Node heartbeats: three heartbeats (`node-a`, `node-b`, `node-c`) keep
//! their leases in `kube-node-lease` alive while a monitor prints which nodes
//! are alive. After a few seconds node-c's heartbeat stops, and the monitor
//! reports node-c as expired once the cluster records the expiry.
//!
//! Needs a running Leasehold cluster, reached at `--endpoints
//! HOST:PORT,...`, else `LEASEHOLD_ENDPOINTS`, else `127.0.0.1:7070`:
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run --example node_heartbeats
//! ```
//!
//! The leases here last 4 s and are renewed every second so the demo is
//! quick; real node leases use the defaults (40 s, renewed every 10 s).

#[path = "support/mod.rs"]
mod support;
use leasehold::client::heartbeat::{Heartbeat, HeartbeatConfig, NodeMonitor, NODE_LEASE_NAMESPACE};
use leasehold::client::Client;
use std::sync::Arc;
use std::time::Duration;
use support::endpoints;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = endpoints();
    println!("node_heartbeats: cluster at {}", endpoints.join(","));
    let client = Arc::new(Client::new(endpoints)?);

    let monitor = NodeMonitor::new(client.clone(), NODE_LEASE_NAMESPACE);
    let mut view = monitor.subscribe();
    let monitor_task = tokio::spawn(monitor.run(std::future::pending()));

    let mut beats = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let mut c = HeartbeatConfig::new(node);
        c.duration = Duration::from_secs(4);
        c.renew_interval = Duration::from_secs(1);
        let hb = Heartbeat::new(client.clone(), c)?;
        beats.push((node, tokio::spawn(hb.run(std::future::pending()))));
    }

    let stop_c = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(stop_c);
    let give_up = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(give_up);
    let mut stopped = false;
    let mut last = String::new();
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = view.borrow_and_update().clone();
                if !s.synced {
                    continue;
                }
                let line = format!("alive: {:?}  gone: {:?}", s.alive(), s.gone());
                if line != last {
                    println!("revision {}: {line}", s.revision);
                    last = line;
                }
                if stopped && s.nodes.get("node-c").is_some_and(|n| n.expired) {
                    println!("node-c expired (its holder {:?} stopped renewing)", s.nodes["node-c"].holder);
                    break;
                }
            }
            _ = &mut stop_c, if !stopped => {
                println!("stopping node-c's heartbeat");
                if let Some((_, task)) = beats.iter().find(|(n, _)| *n == "node-c") {
                    task.abort();
                }
                stopped = true;
            }
            _ = &mut give_up => {
                println!("node-c was not reported expired within 30 s");
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for (_, task) in beats {
        task.abort();
    }
    monitor_task.abort();
    Ok(())
}
