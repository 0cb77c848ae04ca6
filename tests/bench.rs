//! `leasehold bench` against a real one-node cluster: a short renew and a
//! short acquire run, their JSON reports checked for consistency (no timing
//! assertions: the machine may be busy), and the side-by-side table read
//! back from them.

mod common;

use common::{cli, Cluster, Run};
use serde_json::Value;
use std::time::Duration;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

fn json(what: &str, r: &Run) -> Value {
    assert_eq!(r.code, 0, "{what}: exit code; output: {r:#?}");
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {r:#?}"))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

/// Counts agree with each other and percentiles are ordered.
fn assert_consistent(what: &str, r: &Value) {
    let ops = num(r, &["ops"]);
    assert!(ops > 0.0, "{what}: no operations: {r:#}");
    assert_eq!(
        num(r, &["errors_total"]),
        0.0,
        "{what}: errors: {}",
        r["errors"]
    );
    assert_eq!(
        num(r, &["latency_ms", "count"]),
        ops,
        "{what}: histogram count"
    );
    assert!(num(r, &["ops_per_sec"]) > 0.0, "{what}: ops/s");
    let p: Vec<f64> = ["p50", "p95", "p99", "p999", "max"]
        .iter()
        .map(|k| num(r, &["latency_ms", k]))
        .collect();
    assert!(p[0] > 0.0, "{what}: p50 is zero");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "{what}: percentiles out of order: {p:?}"
    );
    let per_op: f64 = r["per_op"]
        .as_object()
        .expect("per_op")
        .values()
        .map(|s| num(s, &["latency_ms", "count"]))
        .sum();
    assert_eq!(per_op, ops, "{what}: per-operation counts add up to ops");
    let series_ok: f64 = r["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|b| num(b, &["ok"]))
        .sum();
    assert!(
        series_ok >= ops,
        "{what}: the series covers the measured ops"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_and_acquire_runs_report_consistent_counts() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let eps = c.endpoints().join(",");
    let common = ["--duration", "2", "--warmup", "0.5", "--quiet"];

    let mut args = vec![
        "-o",
        "json",
        "bench",
        "renew",
        "--clients",
        "4",
        "--leases",
        "20",
    ];
    args.extend(common);
    let renew = json("renew", &cli(&eps, &args).await);
    assert_consistent("renew", &renew);
    assert_eq!(renew["workload"], "renew");
    assert_eq!(renew["target"], "leasehold");
    assert_eq!(
        num(&renew, &["setup", "leases"]),
        20.0,
        "setup acquired every lease"
    );

    let mut args = vec![
        "-o",
        "json",
        "bench",
        "acquire",
        "--clients",
        "4",
        "--leases",
        "2",
    ];
    args.extend(common);
    let acquire = json("acquire", &cli(&eps, &args).await);
    assert_consistent("acquire", &acquire);
    // Every measured acquire is either a grant or a LEASE_HELD answer, and
    // HELD is an outcome, not an error.
    let attempts = num(&acquire, &["per_op", "acquire", "latency_ms", "count"]);
    let granted = acquire["outcomes"]["granted"].as_f64().unwrap_or(0.0);
    let held = acquire["outcomes"]["held"].as_f64().unwrap_or(0.0);
    assert!(granted > 0.0, "no grants: {acquire:#}");
    assert_eq!(granted + held, attempts, "grants + held = acquires");
    let releases = acquire["per_op"]["release"]["latency_ms"]["count"]
        .as_f64()
        .unwrap_or(0.0);
    // Each of the 4 clients may release, inside the measured window, a
    // lease it was granted just before the window opened.
    assert!(
        releases <= granted + 4.0,
        "a release follows each grant: {releases} releases, {granted} grants"
    );

    // The table reads the reports back.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("renew.json"), renew.to_string()).expect("write");
    std::fs::write(dir.path().join("acquire.json"), acquire.to_string()).expect("write");
    let table = cli(&eps, &["bench", "table", &dir.path().display().to_string()]).await;
    assert_eq!(table.code, 0, "table: {table:#?}");
    assert!(
        table.stdout.contains("| renew | 4 |") && table.stdout.contains("| acquire | 4 |"),
        "table rows: {}",
        table.stdout
    );
    c.assert_no_crashes();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bench_flags_are_invalid_input() {
    let r = cli("127.0.0.1:1", &["bench", "renew", "--clients", "0"]).await;
    assert_eq!(r.code, 2, "{r:#?}");
    let r = cli("127.0.0.1:1", &["bench", "failover", "--duration", "3"]).await;
    assert_eq!(r.code, 2, "failover without --server-pids: {r:#?}");
    #[cfg(not(feature = "etcd"))]
    {
        let r = cli("127.0.0.1:1", &["bench", "renew", "--target", "etcd"]).await;
        assert_eq!(r.code, 2, "{r:#?}");
        assert!(r.stderr.contains("`etcd` feature"), "{r:#?}");
    }
}
