//! A small closed-loop renewal load: C clients each keep L leases renewed as
//! fast as they can for S seconds, then print throughput and latency.
//!
//! ```sh
//! cargo run --release --example renew_load -- 127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073 16 10 10
//! #                                            endpoints                                    C  S  L
//! ```
//!
//! It is a quick check, not the benchmark suite: latencies are measured on
//! this process's clock around each call, on the same machine as the servers.

use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let endpoints: Vec<String> = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("127.0.0.1:7070")
        .split(',')
        .map(String::from)
        .collect();
    let clients: usize = arg(&args, 2, 1);
    let secs: u64 = arg(&args, 3, 5);
    let per_client: usize = arg(&args, 4, 10).max(1);
    let client = Arc::new(Client::new(endpoints)?);
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let holder = format!("load-{c}");
            let mut tokens = Vec::new();
            for l in 0..per_client {
                let r = client
                    .acquire(pb::AcquireRequest {
                        namespace: "load".into(),
                        name: format!("c{c}-l{l}"),
                        holder: holder.clone(),
                        lease_duration_seconds: 60,
                        ..Default::default()
                    })
                    .await?;
                tokens.push(r.fencing_token);
            }
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while Instant::now() < stop {
                let l = n % per_client;
                let t = Instant::now();
                client
                    .renew(pb::RenewRequest {
                        namespace: "load".into(),
                        name: format!("c{c}-l{l}"),
                        holder: holder.clone(),
                        fencing_token: tokens[l],
                        ..Default::default()
                    })
                    .await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    if all.is_empty() {
        println!("no renewals completed");
        return Ok(());
    }
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{clients} clients x {per_client} leases, {secs} s: {} renewals, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        all.len() as f64 / secs as f64,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}
