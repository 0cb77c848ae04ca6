//! `leasehold-bench` against a real one-node cluster: a short renew and a
//! short acquire run, their JSON reports checked for consistency (no timing
//! assertions: the machine may be busy), and the side-by-side table read
//! back from them.
//!
//! The node is the server package's `leasehold` binary, which `cargo test`
//! builds with the rest of the workspace; this crate cannot depend on the
//! server package (the bench must not link it), so the binary is found in
//! the target directory (`leasehold_testkit::node::workspace_binary`).

use leasehold_client::Client;
use leasehold_testkit::node::{free_ports, workspace_binary, NodeProcess, NodeSpec};
use serde_json::Value;
use std::time::{Duration, Instant};

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// One `leasehold serve` process (`leasehold_testkit::node`, the process
/// code of the server's test harness and the chaos suite) on a free
/// loopback port with its own data directory; killed and reaped on drop.
/// On a panic its log is printed first, so a failing run shows what the
/// node said.
struct Node {
    proc: NodeProcess,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node that bootstraps a cluster of itself, and waits until it
    /// answers Status as the leader.
    async fn start() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-bench-it-")
            .tempdir()
            .expect("create temp dir");
        // Free a moment ago; another process could take it before the node
        // binds it, which the wait below reports with the node's log.
        let port = free_ports(1).expect("a free port on 127.0.0.1")[0];
        let proc = NodeProcess::new(NodeSpec {
            bin: workspace_binary("leasehold"),
            id: 1,
            port,
            root: dir.path().join("node-1"),
            hostname: "bench-node-1".into(),
            heartbeat_ms: 50,
            election_timeout_ms: (300, 600),
            membership_args: vec!["--peers".into(), format!("1=127.0.0.1:{port}")],
            extra_args: Vec::new(),
            env: Vec::new(),
        });
        proc.spawn(&[]).expect("start leasehold serve");
        let node = Node { proc, _dir: dir };
        node.wait_for_leader().await;
        node
    }

    fn endpoint(&self) -> String {
        self.proc.addr()
    }

    /// Waits until Status, through the Rust client, names this node the
    /// leader: the bench's setup writes leases at once.
    async fn wait_for_leader(&self) {
        let client = Client::new(vec![self.endpoint()])
            .expect("valid endpoint")
            .with_timeout(Duration::from_secs(2));
        let until = Instant::now() + LEADER_TIMEOUT;
        loop {
            self.assert_running();
            let last = match client.status().await {
                Ok(s) if s.state == "LEADER" => return,
                Ok(s) => format!("state {} leader {}", s.state, s.leader_id),
                Err(e) => format!("{:?}: {}", e.code(), e.message()),
            };
            assert!(
                Instant::now() < until,
                "the node did not lead within {LEADER_TIMEOUT:?}; last Status: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics if the node exited on its own (a crash, or a refusal to start).
    fn assert_running(&self) {
        if let Some(status) = self.proc.exited() {
            panic!("the node exited without being killed by the test: {status}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== node log =====\n{}", self.proc.log_tail(200));
        }
        // Dropping `proc` kills and reaps the process.
    }
}

/// How long one bench run may take (each measures about 2.5 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one `leasehold-bench` run printed, and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    /// Read only without the `etcd` feature, where `--target etcd` must
    /// say what is missing.
    #[cfg_attr(feature = "etcd", allow(dead_code))]
    stderr: String,
}

/// Runs `leasehold-bench --endpoints <endpoints> <args...>` in an empty
/// environment, so that no `LEASEHOLD_*` variable or `RUST_LOG` of the
/// caller changes its flags or its output.
async fn bench(endpoints: &str, args: &[&str]) -> Run {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasehold-bench"))
        .env_clear()
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .kill_on_drop(true)
        .output();
    let Ok(out) = tokio::time::timeout(RUN_TIMEOUT, run).await else {
        panic!("leasehold-bench {args:?} did not finish within {RUN_TIMEOUT:?}");
    };
    let out = out.expect("run leasehold-bench");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Run {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

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
    let node = Node::start().await;
    let eps = node.endpoint();
    let common = ["--duration", "2", "--warmup", "0.5", "--quiet"];

    let mut args = vec!["-o", "json", "renew", "--clients", "4", "--leases", "20"];
    args.extend(common);
    let renew = json("renew", &bench(&eps, &args).await);
    assert_consistent("renew", &renew);
    assert_eq!(renew["workload"], "renew");
    assert_eq!(renew["target"], "leasehold");
    assert_eq!(
        num(&renew, &["setup", "leases"]),
        20.0,
        "setup acquired every lease"
    );

    let mut args = vec!["-o", "json", "acquire", "--clients", "4", "--leases", "2"];
    args.extend(common);
    let acquire = json("acquire", &bench(&eps, &args).await);
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
    let table = bench(&eps, &["table", &dir.path().display().to_string()]).await;
    assert_eq!(table.code, 0, "table: {table:#?}");
    assert!(
        table.stdout.contains("| renew | 4 |") && table.stdout.contains("| acquire | 4 |"),
        "table rows: {}",
        table.stdout
    );
    node.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bench_flags_are_invalid_input() {
    let r = bench("127.0.0.1:1", &["renew", "--clients", "0"]).await;
    assert_eq!(r.code, 2, "{r:#?}");
    let r = bench("127.0.0.1:1", &["failover", "--duration", "3"]).await;
    assert_eq!(r.code, 2, "failover without --server-pids: {r:#?}");
    let r = bench("127.0.0.1:1", &["restart", "--server-pids", "1=1"]).await;
    assert_eq!(r.code, 2, "restart without --restart-cmd: {r:#?}");
    let r = bench(
        "127.0.0.1:1",
        &["restart", "--duration", "5", "--first-after", "6"],
    )
    .await;
    assert_eq!(r.code, 2, "restart after the end of the run: {r:#?}");
    #[cfg(not(feature = "etcd"))]
    {
        let r = bench("127.0.0.1:1", &["renew", "--target", "etcd"]).await;
        assert_eq!(r.code, 2, "{r:#?}");
        assert!(r.stderr.contains("`etcd` feature"), "{r:#?}");
    }
}

/// `restart` against a one-node cluster: the bench stops the node with
/// SIGTERM, starts it again with `--restart-cmd`, and reports the step; the
/// restarted node serves the leases the run renewed (a tenure lost across
/// the restart would show as `lost_tenures`). No timing is asserted.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_run_stops_and_starts_the_server_again() {
    let node = Node::start().await;
    let eps = node.endpoint();
    let pid = node.proc.pid().expect("the node's pid");
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("restarted.pid");
    let s = node.proc.spec();
    // The node's own command line (`NodeProcess::spawn`), run by `sh -c`.
    let cmd = format!(
        "echo $$ >'{pid_file}'; exec '{bin}' serve --id 1 --listen {eps} --data-dir '{data}' \
         --hostname {host} --heartbeat-ms 50 --election-timeout-min-ms 300 \
         --election-timeout-max-ms 600 --peers 1={eps} >>'{log}' 2>&1",
        pid_file = pid_file.display(),
        bin = s.bin.display(),
        data = node.proc.data_dir().display(),
        host = s.hostname,
        log = dir.path().join("restarted.log").display(),
    );
    let server_pids = format!("1={pid}");
    let args = [
        "-o",
        "json",
        "restart",
        "--clients",
        "2",
        "--leases",
        "10",
        "--duration",
        "8",
        "--first-after",
        "1",
        "--down",
        "0.2",
        "--settle",
        "0.5",
        "--server-pids",
        &server_pids,
        "--restart-cmd",
        &cmd,
        "--quiet",
    ];
    let run = bench(&eps, &args).await;
    // Whatever happened, the restarted server goes at the end.
    let restarted: Option<u32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let report = json("restart", &run);
    let new_pid = restarted.expect("the restart command ran and wrote its pid");
    let steps = report["restart"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "one server, one restart: {report:#}");
    let st = &steps[0];
    assert_eq!(st["id"], 1);
    assert_eq!(st["pid"], pid);
    assert_eq!(st["new_pid"], new_pid);
    assert_eq!(st["was_leader"], true);
    assert!(num(st, &["exit_ms"]) > 0.0 && num(st, &["ready_ms"]) > 0.0);
    assert!(
        num(st, &["longest_gap_ms"]) > 0.0,
        "a one-node cluster cannot write while its node is down: {st:#}"
    );
    assert!(
        !st["first_write_after_stop_ms"].is_null(),
        "writes resumed after the restart: {st:#}"
    );
    assert_eq!(
        num(&report, &["restart", "lost_tenures"]),
        0.0,
        "{report:#}"
    );
    assert!(num(&report, &["ops"]) > 0.0);
    // The restarted process is the server, and it serves.
    let client = Client::new(vec![eps.clone()])
        .expect("valid endpoint")
        .with_timeout(Duration::from_secs(5));
    let status = client.status().await;
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(new_pid.to_string())
        .status();
    let status = status.expect("the restarted node answers Status");
    assert_eq!(status.node_id, 1);
    let table_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(table_dir.path().join("restart.json"), report.to_string()).expect("write");
    let table = bench(&eps, &["table", &table_dir.path().display().to_string()]).await;
    assert!(
        table.stdout.contains("| rolling restart |")
            && table.stdout.contains("| leasehold | 2 | 1 | yes |"),
        "table: {}",
        table.stdout
    );
}
