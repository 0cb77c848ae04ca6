//! End-to-end tests of server identity leases (`leasehold::identity`) and of
//! the leader's garbage collection (`lease::gc`) on a real cluster.

use crate::common;

use common::{assert_status, cli, lease_of, Cluster, Deadline, Options};
use leasehold::client::Client;
use leasehold::identity::{lease_name, HOSTNAME_LABEL, NAMESPACE, NODE_ID_LABEL};
use leasehold::lease::gc::{GC_AFTER_EXPIRY_LABEL, IDENTITY_LABEL};
use leasehold::proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::Code;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the nodes may take to publish their identity leases.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

fn opts(args: &[&str]) -> Options {
    Options {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// The identity leases, by name (one List page; there are few).
async fn identity_leases(client: &Client) -> BTreeMap<String, pb::Lease> {
    let r = client
        .list(pb::ListRequest {
            namespace: NAMESPACE.into(),
            label_selector: IDENTITY_LABEL.into(),
            limit: 0,
            continue_token: String::new(),
            stale: false,
        })
        .await
        .expect("list identity leases");
    assert!(r.continue_token.is_empty(), "one page: {r:?}");
    r.items
        .into_iter()
        .map(|l| (l.metadata.clone().expect("metadata").name, l))
        .collect()
}

/// Waits until exactly `n` identity leases exist; panics if more ever do.
async fn wait_identity_leases(client: &Client, n: usize) -> BTreeMap<String, pb::Lease> {
    let d = Deadline::new(format!("{n} identity leases"), PUBLISH_TIMEOUT);
    loop {
        let leases = identity_leases(client).await;
        assert!(
            leases.len() <= n,
            "more identity leases than nodes: {:?}",
            leases.keys()
        );
        if leases.len() == n {
            return leases;
        }
        d.check(leases.keys().collect::<Vec<_>>()).await;
    }
}

/// The identity lease name of node `id` (the harness passes `--hostname node-<id>`).
fn name_of(id: u64) -> String {
    lease_name(&format!("node-{id}"))
}

fn holder(l: &pb::Lease) -> String {
    l.spec.as_ref().expect("spec").holder_identity.clone()
}

fn meta(l: &pb::Lease) -> pb::ObjectMeta {
    l.metadata.clone().expect("metadata")
}

/// The uuid part of an identity holder `<lease name>_<uuid>`.
fn holder_uuid(name: &str, holder: &str) -> uuid::Uuid {
    let rest = holder
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or_else(|| panic!("holder {holder:?} is not {name}_<uuid>"));
    uuid::Uuid::parse_str(rest).unwrap_or_else(|e| panic!("holder {holder:?}: not a uuid: {e}"))
}

async fn get(client: &Client, ns: &str, name: &str) -> Result<pb::Lease, tonic::Status> {
    client
        .get(pb::GetRequest {
            namespace: ns.into(),
            name: name.into(),
            stale: false,
        })
        .await
        .map(|r| lease_of(r.lease))
}

fn parse_time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// 1. Every node publishes one identity lease: named from its hostname,
/// held by `<name>_<uuid>`, labelled with hostname and node id, lasting the
/// configured duration; the CLI lists them.
#[tokio::test(flavor = "multi_thread")]
async fn every_node_publishes_its_identity_lease() {
    let c = Cluster::start_with(3, opts(&["--identity-lease-seconds", "120"])).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    let leases = wait_identity_leases(&client, 3).await;
    let want: Vec<String> = c.ids().into_iter().map(name_of).collect();
    assert_eq!(
        leases.keys().cloned().collect::<Vec<_>>(),
        {
            let mut w = want.clone();
            w.sort();
            w
        },
        "one lease per node, named after its hostname"
    );
    let mut uuids = Vec::new();
    for id in c.ids() {
        let name = name_of(id);
        let l = &leases[&name];
        let m = meta(l);
        assert_eq!(m.namespace, NAMESPACE);
        uuids.push(holder_uuid(&name, &holder(l)));
        let labels: BTreeMap<_, _> = m.labels.iter().collect();
        assert_eq!(
            m.labels.get(HOSTNAME_LABEL).map(String::as_str),
            Some(format!("node-{id}").as_str()),
            "{labels:?}"
        );
        assert_eq!(
            m.labels.get(NODE_ID_LABEL).map(String::as_str),
            Some(id.to_string().as_str()),
            "{labels:?}"
        );
        assert!(m.labels.contains_key(IDENTITY_LABEL), "{labels:?}");
        let spec = l.spec.clone().unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(120), "{l:?}");
        let st = l.status.clone().unwrap();
        assert!(st.fencing_token > 0 && !st.expired, "{l:?}");
    }
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 3, "every node has its own holder uuid");

    // The CLI: a header and one row per node, with its holder.
    let out = cli(
        &c.endpoints().join(","),
        &["get", "-n", NAMESPACE, "-l", IDENTITY_LABEL],
    )
    .await;
    assert_eq!(out.code, 0, "leasehold get: {out:?}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 4, "header + 3 rows: {}", out.stdout);
    assert!(lines[0].starts_with("NAME"), "{}", out.stdout);
    for name in &want {
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(name.as_str()))
            .collect();
        assert_eq!(rows.len(), 1, "one row for {name}: {}", out.stdout);
        assert!(rows[0].contains(&holder(&leases[name])), "{}", out.stdout);
    }
}

/// 2. A restarted node keeps its identity lease: its holder is tied to its
/// data directory, so after a restart it renews its own tenure (same holder,
/// token, object). A node whose data directory was replaced is a new holder:
/// it takes the lease over, with a new tenure and token, once the old tenure
/// lapsed (identity leases obey the lease rules like any other).
#[tokio::test(flavor = "multi_thread")]
async fn restarted_node_renews_its_lease_and_a_replaced_node_takes_it_over() {
    let mut c = Cluster::start_with(
        3,
        opts(&[
            "--identity-lease-seconds",
            "3",
            "--identity-renew-seconds",
            "0.5",
        ]),
    )
    .await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    let before_all = wait_identity_leases(&client, 3).await;
    let name = name_of(2);
    let before = before_all[&name].clone();
    let old_holder = holder(&before);
    let inc = c.status(2).await.expect("status").incarnation;
    assert_eq!(
        holder_uuid(&name, &old_holder),
        uuid::Uuid::parse_str(&inc).unwrap()
    );
    let transitions = |l: &pb::Lease| l.spec.as_ref().unwrap().lease_transitions.unwrap_or(0);
    let token = |l: &pb::Lease| l.status.as_ref().unwrap().fencing_token;

    c.kill(2);
    c.restart(2).await;
    let restarted_at = meta(&get(&client, NAMESPACE, &name).await.expect("get")).resource_version;
    let d = Deadline::new("node 2 to renew its lease after a restart", PUBLISH_TIMEOUT);
    let renewed = loop {
        let l = get(&client, NAMESPACE, &name).await.expect("get");
        if meta(&l).resource_version > restarted_at && !l.status.as_ref().unwrap().expired {
            break l;
        }
        d.check(meta(&l).resource_version).await;
    };
    assert_eq!(
        holder(&renewed),
        old_holder,
        "the same holder after a restart"
    );
    assert_eq!(token(&renewed), token(&before), "the same tenure");
    assert_eq!(transitions(&renewed), transitions(&before));
    assert_eq!(meta(&renewed).uid, meta(&before).uid);

    // The data directory is lost and the node put back: a new holder, which
    // must wait for the old tenure to lapse.
    c.kill(2);
    c.wipe(2);
    c.restart_wiped(2).await;
    c.replace(2).await.expect("member replace");
    let new_inc = c.status(2).await.expect("status").incarnation;
    assert_ne!(new_inc, inc);
    let d = Deadline::new(
        "the replaced node to take its identity lease over",
        PUBLISH_TIMEOUT,
    );
    let after = loop {
        let l = get(&client, NAMESPACE, &name).await;
        if let Ok(l) = &l {
            if holder(l) != old_holder {
                break l.clone();
            }
        }
        d.check(l.map(|l| holder(&l))).await;
    };
    assert_eq!(
        holder_uuid(&name, &holder(&after)),
        uuid::Uuid::parse_str(&new_inc).unwrap()
    );
    let (mb, ma) = (meta(&before), meta(&after));
    assert_eq!(
        ma.uid, mb.uid,
        "the same lease object is taken over, not re-created"
    );
    assert_eq!(transitions(&after), transitions(&before) + 1);
    assert!(
        token(&after) > token(&before),
        "a new tenure has a new token"
    );

    // Still exactly three, the others untouched.
    let now = identity_leases(&client).await;
    assert_eq!(now.len(), 3, "{:?}", now.keys());
    for id in [1, 3] {
        let n = name_of(id);
        assert_eq!(holder(&now[&n]), holder(&before_all[&n]), "{n}");
    }
    c.assert_no_crashes();
}

/// 3. The leader collects garbage: the identity lease of a node that stays
/// down expires after its duration and is deleted the GC age later; a user
/// lease that opts in with `leasehold.io/gc-after-expiry=1s` is deleted
/// after it expired, one without the label is kept.
#[tokio::test(flavor = "multi_thread")]
async fn leader_collects_expired_identity_and_opt_in_leases() {
    let mut c = Cluster::start_with(
        3,
        opts(&[
            "--identity-lease-seconds",
            "2",
            "--identity-renew-seconds",
            "0.5",
            "--identity-gc-age-seconds",
            "2",
        ]),
    )
    .await;
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await;
    let victim = *c.ids().iter().find(|id| **id != leader).unwrap();
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != victim).collect();
    let client = c.client_for(&survivors);
    let before = wait_identity_leases(&client, 3).await;

    // User leases, 1 s, never renewed.
    let acquire = |name: &str, labels: HashMap<String, String>| pb::AcquireRequest {
        namespace: "gc".into(),
        name: name.into(),
        holder: "someone".into(),
        lease_duration_seconds: 1,
        labels,
        request_id: String::new(),
    };
    let sent = Instant::now();
    client
        .acquire(acquire(
            "opt-in",
            HashMap::from([(GC_AFTER_EXPIRY_LABEL.to_string(), "1s".to_string())]),
        ))
        .await
        .expect("acquire opt-in");
    client
        .acquire(acquire("plain", HashMap::new()))
        .await
        .expect("acquire plain");

    c.kill(victim);
    let name = name_of(victim);
    let d = Deadline::new(
        format!("node {victim}'s identity lease to be marked expired"),
        Duration::from_secs(10),
    );
    let expired = loop {
        let l = get(&client, NAMESPACE, &name)
            .await
            .expect("identity lease");
        if l.status.as_ref().unwrap().expired {
            break l;
        }
        d.check(l.status).await;
    };
    let seen_expired = chrono::Utc::now();
    let renewed = parse_time(&expired.spec.as_ref().unwrap().renew_time);
    assert!(
        seen_expired >= renewed + chrono::Duration::seconds(2),
        "marked expired before renewTime + 2 s: {expired:?}"
    );
    assert_eq!(
        holder(&expired),
        holder(&before[&name]),
        "the expired lease still names its holder"
    );

    let d = Deadline::new(
        format!("node {victim}'s identity lease to be deleted"),
        Duration::from_secs(15),
    );
    loop {
        match get(&client, NAMESPACE, &name).await {
            Err(s) if s.code() == Code::NotFound => break,
            other => d.check(other.map(|l| l.status)).await,
        }
    }
    assert!(
        chrono::Utc::now() >= renewed + chrono::Duration::seconds(4),
        "deleted before expiry + the 2 s GC age (renewTime {renewed})"
    );
    let left = identity_leases(&client).await;
    let mut want: Vec<String> = survivors.iter().map(|id| name_of(*id)).collect();
    want.sort();
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        want,
        "the running nodes' identity leases remain"
    );
    for n in &want {
        assert_eq!(holder(&left[n]), holder(&before[n]), "{n}");
    }

    // The opt-in user lease is gone (collected 1 s after it expired); the
    // plain one is still there, expired.
    let d = Deadline::new("the opt-in lease to be deleted", Duration::from_secs(10));
    loop {
        match get(&client, "gc", "opt-in").await {
            Err(s) if s.code() == Code::NotFound => {
                assert_status("get opt-in", &s, Code::NotFound, "NOT_FOUND");
                break;
            }
            other => d.check(other.map(|l| l.status)).await,
        }
    }
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "the opt-in lease was deleted before expiry + 1 s ({:?})",
        sent.elapsed()
    );
    let plain = get(&client, "gc", "plain")
        .await
        .expect("the lease without the label is not collected");
    assert!(plain.status.as_ref().unwrap().expired, "{plain:?}");
    assert_eq!(holder(&plain), "someone");
}
