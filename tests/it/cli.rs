//! The `leasehold` command line against a real cluster: output formats and
//! exit codes (0 ok, 1 refused, 2 invalid input, 3 unavailable).

use crate::common;

use common::{cli, free_ports, Cluster, Run};
use serde_json::Value;
use std::time::Duration;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

fn expect_code(what: &str, r: &Run, code: i32) {
    assert_eq!(r.code, code, "{what}: exit code; output: {r:#?}");
}

/// The number after `token=` in an acquire/renew line.
fn token_in(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("token="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token=N in {line:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_against_a_cluster() {
    let c = Cluster::start(3).await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let eps = c.endpoints().join(",");
    let eps = eps.as_str();

    // Acquire prints the token; a second holder is refused with the holder
    // named; a bad namespace is invalid input.
    let r = cli(
        eps,
        &[
            "acquire",
            "ns/a",
            "--holder",
            "holder-one",
            "--duration",
            "30",
        ],
    )
    .await;
    expect_code("acquire", &r, 0);
    assert!(r.stdout.starts_with("acquired ns/a"), "{r:#?}");
    assert!(r.stdout.contains("holder=holder-one"), "{r:#?}");
    let token = token_in(&r.stdout);
    assert!(token > 0);

    let r = cli(
        eps,
        &[
            "acquire",
            "ns/a",
            "--holder",
            "holder-two",
            "--duration",
            "30",
        ],
    )
    .await;
    expect_code("acquire held lease", &r, 1);
    assert!(
        r.stderr.contains("holder-one"),
        "stderr names the holder: {r:#?}"
    );

    let r = cli(eps, &["acquire", "Bad/a", "--holder", "h"]).await;
    expect_code("acquire Bad/a", &r, 2);
    assert!(r.stderr.contains("namespace"), "{r:#?}");
    let r = cli(eps, &["acquire", "no-slash", "--holder", "h"]).await;
    expect_code("acquire without NAMESPACE/", &r, 2);
    let r = cli(eps, &["acquire", "ns/a"]).await;
    expect_code("acquire without --holder (clap usage error)", &r, 2);

    // Table.
    let r = cli(eps, &["get", "-n", "ns"]).await;
    expect_code("get -n ns", &r, 0);
    let mut lines = r.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "HOLDER", "AGE"], "{r:#?}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 1, "{r:#?}");
    assert_eq!(rows[0][..2], ["a", "holder-one"], "{r:#?}");
    assert!(rows[0][2].ends_with('s'), "age in seconds: {r:#?}");

    // JSON and YAML are Kubernetes-shaped.
    let r = cli(eps, &["get", "ns/a", "-o", "json"]).await;
    expect_code("get -o json", &r, 0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {r:#?}"));
    check_lease_doc(&v, "holder-one", token);

    let r = cli(eps, &["get", "ns/a", "-o", "yaml"]).await;
    expect_code("get -o yaml", &r, 0);
    let y: Value = serde_yaml::from_str(&r.stdout).unwrap_or_else(|e| panic!("YAML: {e}: {r:#?}"));
    check_lease_doc(&y, "holder-one", token);
    assert_eq!(y, v, "YAML and JSON describe the same object");

    // Status names the real leader.
    let r = cli(eps, &["status", "-o", "json"]).await;
    expect_code("status -o json", &r, 0);
    let s: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {r:#?}"));
    assert_eq!(s["leaderId"], leader, "{s}");
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3), "{s}");

    // Failover: a dead first endpoint is skipped.
    let with_dead = format!("127.0.0.1:1,{}", c.endpoint(leader));
    let r = cli(&with_dead, &["get", "ns/a", "-o", "json"]).await;
    expect_code("get with a dead first endpoint", &r, 0);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    check_lease_doc(&v, "holder-one", token);

    // Members.
    let r = cli(eps, &["member", "list"]).await;
    expect_code("member list", &r, 0);
    let mut lines = r.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["ID", "ADDRESS", "ROLE"], "{r:#?}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "{r:#?}");
    for id in 1..=3 {
        let row = rows
            .iter()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("member {id} listed: {r:#?}"));
        assert!(row.contains(&c.endpoint(id)), "{row}");
        assert!(row.contains("voter"), "{row}");
        assert_eq!(row.contains("leader"), id == leader, "{row}");
    }

    // Renew and release with the token; a second release is refused.
    let t = token.to_string();
    let r = cli(
        eps,
        &["renew", "ns/a", "--holder", "holder-one", "--token", &t],
    )
    .await;
    expect_code("renew", &r, 0);
    assert_eq!(
        token_in(&r.stdout),
        token,
        "renewal keeps the token: {r:#?}"
    );
    let r = cli(
        eps,
        &[
            "renew",
            "ns/a",
            "--holder",
            "holder-one",
            "--token",
            "999999",
        ],
    )
    .await;
    expect_code("renew with a wrong token", &r, 1);
    let r = cli(
        eps,
        &["release", "ns/a", "--holder", "holder-one", "--token", &t],
    )
    .await;
    expect_code("release", &r, 0);
    assert!(r.stdout.contains("released ns/a"), "{r:#?}");
    let r = cli(
        eps,
        &["release", "ns/a", "--holder", "holder-one", "--token", &t],
    )
    .await;
    expect_code("second release", &r, 1);

    // The other holder can take it now and gets a greater token.
    let r = cli(
        eps,
        &[
            "acquire",
            "ns/a",
            "--holder",
            "holder-two",
            "--duration",
            "30",
        ],
    )
    .await;
    expect_code("acquire after release", &r, 0);
    assert!(token_in(&r.stdout) > token, "{r:#?}");

    // A missing lease is a refusal.
    let r = cli(eps, &["get", "ns/missing"]).await;
    expect_code("get missing", &r, 1);
    c.assert_no_crashes();
}

fn check_lease_doc(v: &Value, holder: &str, token: u64) {
    assert_eq!(v["apiVersion"], "coordination.k8s.io/v1", "{v}");
    assert_eq!(v["kind"], "Lease", "{v}");
    assert_eq!(v["metadata"]["namespace"], "ns", "{v}");
    assert_eq!(v["metadata"]["name"], "a", "{v}");
    assert_eq!(v["spec"]["holderIdentity"], holder, "{v}");
    assert_eq!(v["spec"]["leaseDurationSeconds"], 30, "{v}");
    assert_eq!(v["status"]["fencingToken"], token, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exit_3_when_no_endpoint_answers() {
    // Nothing listens on port 1 or on a port that was just free.
    let dead = format!("127.0.0.1:1,127.0.0.1:{}", free_ports(1)[0]);
    for args in [
        &["get", "ns/a"][..],
        &["acquire", "ns/a", "--holder", "h"][..],
        &["status"][..],
    ] {
        let mut full = vec!["--timeout", "1"];
        full.extend_from_slice(args);
        let r = cli(&dead, &full).await;
        expect_code(&format!("{args:?} with only dead endpoints"), &r, 3);
        assert!(r.stderr.starts_with("error:"), "{r:#?}");
    }
}

/// `--version` names the data format version: builds of different format
/// versions do not mix in one cluster, so an operator must be able to tell
/// before a rolling upgrade (README, "Upgrades").
#[tokio::test(flavor = "multi_thread")]
async fn version_names_the_format_version() {
    let r = cli("127.0.0.1:1", &["--version"]).await;
    expect_code("--version", &r, 0);
    assert_eq!(
        r.stdout.trim(),
        format!(
            "leasehold {} (format version {})",
            env!("CARGO_PKG_VERSION"),
            leasehold::store::FORMAT_VERSION
        ),
        "{r:#?}"
    );
}
