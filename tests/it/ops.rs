//! `/metrics`, `/healthz` and `/readyz` on a real three-node cluster, and
//! the alert rules in docs/alerts against a live scrape.

use crate::common::{acquire_req, release_req, Cluster, Deadline};
use crate::kube::{leader_and_follower, Http};
use leasehold::proto::v1 as pb;
use std::collections::BTreeMap;
use std::time::Duration;

/// One scrape: `name{labels}` -> value, and the metric families announced.
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: Vec<String>,
    text: String,
}

impl Scrape {
    async fn of(cluster: &Cluster, id: u64) -> Scrape {
        let mut http = Http::open(&cluster.endpoint(id)).await;
        let r = http.request("GET", "/metrics", None).await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        let ct = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let text = String::from_utf8(r.body).expect("UTF-8 metrics");
        let mut samples = BTreeMap::new();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.extend(rest.split_whitespace().next().map(str::to_string));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            samples.insert(series.to_string(), value);
        }
        Scrape {
            samples,
            families,
            text,
        }
    }

    /// The value of `series` (exactly as exposed, labels in order).
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{}", self.text))
    }
}

async fn probe(cluster: &Cluster, id: u64, path: &str) -> (u16, String) {
    let mut http = Http::open(&cluster.endpoint(id)).await;
    let r = http.request("GET", path, None).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn metrics_health_and_readiness_of_a_three_node_cluster() {
    let mut cluster = Cluster::start(3).await;
    let (leader, follower) = leader_and_follower(&cluster).await;
    let client = cluster.client();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let a = client
            .acquire(acquire_req("ops-a", &format!("l{i}"), "h", 60))
            .await
            .expect("acquire");
        tokens.push(a.fencing_token);
    }
    client
        .release(release_req("ops-a", "l3", "h", tokens[3]))
        .await
        .expect("release");
    // A retried write is remembered by its request id; a one-second
    // tenure in ops-b lapses and the leader's sweep records its expiry.
    let mut with_id = acquire_req("ops-b", "short", "h", 1);
    with_id.request_id = "ops-test-1".into();
    client.acquire(with_id).await.expect("acquire with an id");
    let d = Deadline::new(
        "the short tenure to be recorded expired",
        Duration::from_secs(15),
    );
    loop {
        let l = client
            .get(pb::GetRequest {
                namespace: "ops-b".into(),
                name: "short".into(),
                stale: false,
            })
            .await
            .expect("get");
        let status = l.lease.as_ref().and_then(|l| l.status.as_ref());
        if status.is_some_and(|s| s.expired) {
            break;
        }
        d.check(format!("{l:?}")).await;
    }

    // Every node is healthy and ready.
    for id in cluster.ids() {
        let d = Deadline::new(format!("node {id} to be ready"), Duration::from_secs(10));
        loop {
            let (code, body) = probe(&cluster, id, "/readyz?verbose").await;
            if code == 200 {
                assert!(body.starts_with("ok: leader"), "{body}");
                break;
            }
            d.check(body).await;
        }
        assert_eq!(probe(&cluster, id, "/healthz").await.0, 200);
    }

    let s = Scrape::of(&cluster, leader).await;
    let f = Scrape::of(&cluster, follower).await;
    assert!(s.get("leasehold_raft_term") >= 1.0);
    assert_eq!(s.get("leasehold_raft_is_leader"), 1.0);
    assert_eq!(f.get("leasehold_raft_is_leader"), 0.0);
    for x in [&s, &f] {
        assert_eq!(x.get("leasehold_raft_has_leader"), 1.0);
        assert_eq!(x.get("leasehold_raft_leader_id"), leader as f64);
        assert_eq!(x.get("leasehold_ready"), 1.0);
        assert!(x.get("leasehold_raft_applied_index") >= 1.0);
        assert!(
            x.get("leasehold_raft_commit_index") >= x.get("leasehold_raft_applied_index") - 0.5
        );
        assert!(x.get("leasehold_raft_last_log_index") >= x.get("leasehold_raft_commit_index"));
        assert!(x.get("leasehold_wal_fsync_duration_seconds_count") >= 1.0);
        assert!(x.get("leasehold_process_resident_memory_bytes") > 1e6);
        assert!(x.get("leasehold_process_open_fds") >= 3.0);
        assert!(x.get("leasehold_process_max_fds") >= x.get("leasehold_process_open_fds"));
        assert!(x.get("leasehold_raft_leader_changes_total") >= 1.0);
    }
    // The leases by namespace: three held and one released in ops-a; the
    // lapsed one in ops-b is expired, not held.
    for (ns, state, want) in [
        ("ops-a", "held", 3.0),
        ("ops-a", "free", 1.0),
        ("ops-b", "expired", 1.0),
        ("ops-b", "held", 0.0),
    ] {
        let series = format!(r#"leasehold_namespace_leases{{namespace="{ns}",state="{state}"}}"#);
        assert_eq!(s.get(&series), want, "{series}");
    }
    for x in [&s, &f] {
        // Every node applied the one expiry; it was recorded after the
        // tenure lapsed (delay >= 0) and well within the sweep's period
        // plus a commit on this machine.
        assert!(x.get("leasehold_lease_expirations_total") >= 1.0);
        let n = x.get("leasehold_lease_expiry_delay_seconds_count");
        assert!(n >= 1.0, "{n}");
        let sum = x.get("leasehold_lease_expiry_delay_seconds_sum");
        assert!((0.0..10.0 * n).contains(&sum), "delay sum {sum} over {n}");
    }
    // The id-carrying acquire is remembered (the leader's writer state).
    assert!(s.get("leasehold_dedup_records") >= 1.0);
    assert!(s.get("leasehold_leases") >= 5.0);
    assert!(s.get("leasehold_leases_held") >= 3.0);
    assert!(s.get("leasehold_revision") >= 5.0);
    // The leader proposed the writes and replicates to both followers.
    assert!(s.get("leasehold_proposal_ops_count") >= 5.0);
    for id in cluster.ids().into_iter().filter(|i| *i != leader) {
        let lag = s.get(&format!(
            "leasehold_raft_replication_lag_entries{{follower=\"{id}\"}}"
        ));
        assert!(lag >= 0.0);
    }
    assert!(
        !f.text.contains("leasehold_raft_replication_lag_entries{"),
        "only the leader reports replication"
    );
    // The acquires were counted on the nodes that served them.
    let mut acquires = 0.0;
    for id in cluster.ids() {
        let x = Scrape::of(&cluster, id).await;
        acquires += x
            .samples
            .get(
                r#"leasehold_grpc_requests_total{code="Ok",method="/leasehold.v1.Leases/Acquire"}"#,
            )
            .copied()
            .unwrap_or(0.0);
    }
    assert!(acquires >= 4.0, "{acquires}");
    assert!(s.get(r#"leasehold_http_requests_total{code="200",route="/readyz"}"#) >= 1.0);

    // Without its followers the leader stays healthy but is not ready.
    let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    for id in others {
        cluster.kill(id);
    }
    let d = Deadline::new("the lone leader to be not ready", Duration::from_secs(10));
    loop {
        let (code, body) = probe(&cluster, leader, "/readyz").await;
        if code == 503 {
            assert!(body.starts_with("not ready:"), "{body}");
            break;
        }
        d.check(body).await;
    }
    assert_eq!(probe(&cluster, leader, "/healthz").await.0, 200);
    assert_eq!(
        Scrape::of(&cluster, leader).await.get("leasehold_ready"),
        0.0
    );
}

/// Metric names in a PromQL expression (`leasehold_...`).
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leasehold_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn the_alert_rules_name_series_a_node_exposes() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts/leasehold.rules.yml");
    let text = std::fs::read_to_string(&path).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules YAML");
    // Three nodes: per-follower series exist only on a leader with followers.
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let scrape = Scrape::of(&cluster, leader).await;
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                rule["alert"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("Leasehold")),
                "{rule:?}"
            );
            assert!(
                rule["annotations"]["description"].as_str().is_some(),
                "{rule:?}"
            );
            let names = names_in(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    scrape.families.iter().any(|f| f == family),
                    "alert expression {expr:?} names {name}, which a node does not expose"
                );
            }
            alerts += 1;
        }
    }
    assert!(alerts >= 8, "{alerts} alerts");
    // promtool, when installed, checks the syntax and the PromQL.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "promtool check rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And the exposition itself: names, units, help texts.
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(scrape.text.as_bytes())
            .expect("write the scrape");
        let out = child.wait_with_output().expect("promtool check metrics");
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool not installed: checked the series names only");
    }
}
