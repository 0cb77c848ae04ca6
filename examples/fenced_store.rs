//! A toy store guarded by fencing tokens: a writer that pauses past its
//! lease is rejected when it wakes up, because a newer holder has written.
//!
//! Needs a running Leasehold cluster, reached at `--endpoints
//! HOST:PORT,...`, else `LEASEHOLD_ENDPOINTS`, else `127.0.0.1:7070`:
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run --example fenced_store
//! ```
//!
//! 1. writer-a acquires `examples/fenced-store` (2 s) and writes;
//! 2. writer-a "pauses" (stops renewing, as in a long GC pause or SIGSTOP);
//! 3. writer-b waits until the lease is granted to it, then writes;
//! 4. writer-a wakes up and writes with its old token: the store refuses.

#[path = "support/mod.rs"]
mod support;
use leasehold::client::errors::LeaseClientError;
use leasehold::client::fence::{validity_deadline, Fence, Stale};
use leasehold::client::Client;
use leasehold::proto::v1 as pb;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::endpoints;

const NS: &str = "examples";
const NAME: &str = "fenced-store";
const SECONDS: i32 = 2;

/// The protected resource: it checks the token of every write.
#[derive(Default)]
struct Store {
    fence: Fence,
    rows: Mutex<Vec<String>>,
}

impl Store {
    fn write(&self, token: u64, row: &str) -> Result<(), Stale> {
        // Hold the fence while writing, so a newer holder cannot slip in
        // between the check and the write.
        let _admitted = self.fence.enter(token)?;
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{row} (token {token})"));
        Ok(())
    }
}

/// Acquires the lease for `holder`, waiting while someone else holds it.
/// Returns the token and the send time of the successful call.
async fn acquire(client: &Client, holder: &str) -> Result<(u64, Instant), LeaseClientError> {
    loop {
        let sent = Instant::now();
        let r = client
            .acquire(pb::AcquireRequest {
                namespace: NS.into(),
                name: NAME.into(),
                holder: holder.into(),
                lease_duration_seconds: SECONDS,
                ..Default::default()
            })
            .await;
        match r.map_err(LeaseClientError::from) {
            Ok(r) => return Ok((r.fencing_token, sent)),
            Err(LeaseClientError::Held {
                holder: other,
                remaining,
            }) => {
                println!(
                    "{holder}: held by {other}; retrying in {} ms",
                    remaining.as_millis()
                );
                tokio::time::sleep(remaining + Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = endpoints();
    println!("fenced_store: cluster at {}", endpoints.join(","));
    let client = Client::new(endpoints)?;
    let store = Store::default();
    let d = Duration::from_secs(SECONDS as u64);

    let (token_a, sent_a) = acquire(&client, "writer-a").await?;
    store.write(token_a, "a: first write")?;
    println!("writer-a: acquired with token {token_a} and wrote");

    println!("writer-a: pausing (no renewals) ...");
    let (token_b, _) = acquire(&client, "writer-b").await?;
    store.write(token_b, "b: took over")?;
    println!("writer-b: acquired with token {token_b} and wrote");

    // writer-a wakes up. Had it checked its validity deadline it would
    // know better; the store does not rely on that.
    println!(
        "writer-a: wakes up; its lease was valid until {} ms ago",
        Instant::now()
            .saturating_duration_since(validity_deadline(sent_a, d))
            .as_millis()
    );
    match store.write(token_a, "a: late write") {
        Ok(()) => println!("writer-a: late write ACCEPTED (this must not happen)"),
        Err(e) => println!("writer-a: late write rejected: {e}"),
    }

    client
        .release(pb::ReleaseRequest {
            namespace: NS.into(),
            name: NAME.into(),
            holder: "writer-b".into(),
            fencing_token: token_b,
            ..Default::default()
        })
        .await?;
    println!("store contents:");
    for row in store.rows.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  {row}");
    }
    Ok(())
}
