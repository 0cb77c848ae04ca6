//! `leasehold lock` against a real cluster (mutual exclusion of two jobs,
//! exit codes, stopping the job when renewals fail), and mutual exclusion of
//! plain acquires while the client retries across a killed node.

use crate::common;

use common::*;
use leasehold::client::fence::validity_deadline;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts and ends of each holder's job, from the lines the job appended:
/// `start HOLDER TOKEN NANOS` and `end HOLDER NANOS`.
fn job_intervals(path: &Path) -> Vec<(String, u64, u128, u128)> {
    let text = std::fs::read_to_string(path).expect("job log");
    let mut starts: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["start", holder, token, t] => {
                starts.insert(
                    holder.to_string(),
                    (token.parse().expect("token"), t.parse().expect("time")),
                );
            }
            ["end", holder, t] => {
                let (token, start) = starts
                    .remove(holder)
                    .unwrap_or_else(|| panic!("end without start in {text}"));
                out.push((holder.to_string(), token, start, t.parse().expect("time")));
            }
            _ => panic!("unexpected line {line:?} in {text}"),
        }
    }
    assert!(starts.is_empty(), "a job never ended: {text}");
    out.sort_by_key(|(_, _, start, _)| *start);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_locked_jobs_never_overlap_and_lock_exits_with_the_job_code() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("jobs.log");
    let script = format!(
        "echo \"start $LEASEHOLD_HOLDER $LEASEHOLD_FENCING_TOKEN $(date +%s%N)\" >> {f}; \
         sleep 1; echo \"end $LEASEHOLD_HOLDER $(date +%s%N)\" >> {f}; exit 7",
        f = log.display()
    );
    let run = |holder: &'static str| {
        let (eps, script) = (eps.clone(), script.clone());
        async move {
            cli(
                &eps,
                &[
                    "lock",
                    "jobs/nightly",
                    "--holder",
                    holder,
                    "--duration",
                    "3",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
            )
            .await
        }
    };
    let (a, b) = tokio::join!(run("job-a"), run("job-b"));
    for r in [&a, &b] {
        assert_eq!(r.code, 7, "lock must exit with the job's code: {r:?}");
    }
    let jobs = job_intervals(&log);
    assert_eq!(jobs.len(), 2, "both jobs ran once: {jobs:?}");
    let (first, second) = (&jobs[0], &jobs[1]);
    assert_ne!(first.0, second.0);
    assert!(
        first.3 <= second.2,
        "jobs overlapped: {} ran until {} ns, {} started at {} ns",
        first.0,
        first.3,
        second.0,
        second.2
    );
    assert!(second.1 > first.1, "tokens increase: {jobs:?}");
    // The waiting lock learned of the release from its watch: it did not
    // wait for the lease to lapse (3 s) or poll slowly.
    let gap_ms = (second.2 - first.3) / 1_000_000;
    assert!(
        gap_ms < 1_500,
        "the second job started {gap_ms} ms after the first ended"
    );
    // The lease was released at the end.
    let l = cluster
        .client()
        .get(leasehold::proto::v1::GetRequest {
            namespace: "jobs".into(),
            name: "nightly".into(),
            ..Default::default()
        })
        .await
        .expect("get");
    let holder = l
        .lease
        .and_then(|l| l.spec)
        .map(|s| s.holder_identity)
        .unwrap_or_default();
    assert_eq!(holder, "", "lock releases the lease when the job ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_stops_the_job_and_exits_1_when_renewals_fail() {
    let mut cluster = Cluster::start(3).await;
    let eps = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("pid");
    // The job ignores SIGTERM (and so does everything it starts), so only
    // the SIGKILL after the grace period stops it.
    let script = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; trap '' TERM; while true; do sleep 0.1; done",
        p = pidfile.display()
    );
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "--endpoints",
        &eps,
        "lock",
        "jobs/fragile",
        "--holder",
        "job-a",
        "--duration",
        "3",
        "--grace",
        "1",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEASEHOLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start leasehold lock");

    let d = Deadline::new("the job to start", Duration::from_secs(10));
    let pid: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        d.check(&pidfile).await;
    };
    // Let a renewal or two succeed, then make every renewal fail.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let t_kill = Instant::now();
    cluster.kill_all();

    // The last successful renew was sent before t_kill, so the lease is
    // valid until at most t_kill + 2.97 s; SIGKILL follows 1 s (the grace)
    // after the SIGTERM, which lock sends no later than the validity deadline.
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("lock exits once the lease is lost")
        .expect("wait for lock");
    let took = t_kill.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 when the lease is lost; stderr: {stderr}"
    );
    assert!(stderr.contains("lost"), "says the lease was lost: {stderr}");
    assert!(
        took < Duration::from_millis(2_970 + 1_000 + 700),
        "the job was stopped {took:?} after the cluster went away; the bound is validity + grace"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the job (pid {pid}) is still running"
    );
}

/// One successful acquire: who, which tenure, when sent, when answered.
#[derive(Debug, Clone)]
struct Grant {
    holder: &'static str,
    token: u64,
    sent: Instant,
    answered: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_across_killed_nodes_never_grant_a_held_lease_twice() {
    const D: i32 = 2;
    let mut cluster = Cluster::start(3).await;
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();
    // Each holder calls Acquire every 100 ms while it is active. A leader
    // change makes the cluster wait a full duration from the new leader's
    // first command before it hands a held lease on (ARCHITECTURE.md, Time),
    // so the phases below wait for grants instead of following a clock.
    let active: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(true), AtomicBool::new(false)]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, holder, order) in [(0, "holder-x", [1, 2, 3]), (1, "holder-y", [3, 2, 1])] {
        let client = cluster.client_for(&order);
        let (grants, active, stop) = (grants.clone(), active.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if active[i].load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    if let Ok(r) = client.acquire(acquire_req("race", "one", holder, D)).await {
                        grants.lock().unwrap().push(Grant {
                            holder,
                            token: r.fencing_token,
                            sent,
                            answered: Instant::now(),
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let granted_to = |holder: &str, after: u64| {
        grants
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.holder == holder && g.token > after)
    };
    let d = Deadline::new("holder-x to get the lease", Duration::from_secs(10));
    while !granted_to("holder-x", 0) {
        d.check("no grant yet").await;
    }
    // y competes; the Raft leader is killed while x holds the lease, so x's
    // and y's calls are retried on other nodes; then it comes back.
    active[1].store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    active[0].store(false, Ordering::SeqCst);
    cluster.restart(leader).await;
    let d = Deadline::new("holder-y to take over", Duration::from_secs(15));
    while !granted_to("holder-y", 0) {
        d.check("y not granted yet").await;
    }
    let y_token = grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.holder == "holder-y")
        .map(|g| g.token)
        .max()
        .unwrap_or(0);
    // Now the leader dies while y holds it; y stops a moment later and x
    // tries again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    active[1].store(false, Ordering::SeqCst);
    active[0].store(true, Ordering::SeqCst);
    let d = Deadline::new("holder-x to take the lease back", Duration::from_secs(15));
    while !granted_to("holder-x", y_token) {
        d.check("x not granted again yet").await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("acquire task");
    }
    cluster.assert_no_crashes();

    let grants = grants.lock().unwrap().clone();
    // Group by tenure (token).
    let mut tenures: BTreeMap<u64, Vec<Grant>> = BTreeMap::new();
    for g in &grants {
        tenures.entry(g.token).or_default().push(g.clone());
    }
    for (token, gs) in &tenures {
        assert!(
            gs.iter().all(|g| g.holder == gs[0].holder),
            "token {token} was granted to two holders: {gs:?}"
        );
    }
    let holders: Vec<&str> = tenures.values().map(|gs| gs[0].holder).collect();
    assert!(
        holders.contains(&"holder-x") && holders.contains(&"holder-y"),
        "the lease changed hands as scheduled: {holders:?}"
    );
    // No grant to a new tenure while the previous one was valid: the next
    // tenure's first answer comes after the previous tenure's last
    // acknowledged acquire was sent + d·(1 − ρ).
    let d = Duration::from_secs(D as u64);
    let list: Vec<(&u64, &Vec<Grant>)> = tenures.iter().collect();
    for w in list.windows(2) {
        let (prev_token, prev) = w[0];
        let (next_token, next) = w[1];
        let last_sent = prev.iter().map(|g| g.sent).max().expect("grants");
        let first_answer = next.iter().map(|g| g.answered).min().expect("grants");
        assert!(
            first_answer >= validity_deadline(last_sent, d),
            "token {next_token} ({}) was granted {:?} before token {prev_token} ({}) could lapse",
            next[0].holder,
            validity_deadline(last_sent, d).duration_since(first_answer),
            prev[0].holder
        );
    }
}

/// Starts `leasehold --endpoints EPS ARGS...` in the background.
fn spawn_cli(eps: &str, args: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--endpoints").arg(eps).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEASEHOLD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("start leasehold")
}

/// A shell job that appends `pid HOLDER PID` to `LOG.pids`, `start HOLDER
/// TOKEN NANOS` to `LOG` when it starts, and `end HOLDER NANOS` when it is
/// stopped with SIGTERM.
fn recording_job(log: &Path) -> String {
    format!(
        "echo \"pid $LEASEHOLD_HOLDER $$\" >> {f}.pids; \
         echo \"start $LEASEHOLD_HOLDER $LEASEHOLD_FENCING_TOKEN $(date +%s%N)\" >> {f}; \
         trap 'echo \"end $LEASEHOLD_HOLDER $(date +%s%N)\" >> {f}; exit 0' TERM; \
         while true; do sleep 0.1; done",
        f = log.display()
    )
}

/// Starts `leasehold elect LEASE --identity ID --duration 3 -- sh -c SCRIPT`.
fn spawn_elect(eps: &str, lease: &str, id: &str, script: &str) -> tokio::process::Child {
    spawn_cli(
        eps,
        &[
            "elect",
            lease,
            "--identity",
            id,
            "--duration",
            "3",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
}

/// Sends SIGTERM to `child` with the system's `kill`.
fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elect_runs_the_command_only_while_leader_and_hands_over_on_sigterm() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("leaders.log");
    let script = recording_job(&log);
    let elect = |id: &str| spawn_elect(&eps, "jobs/leader", id, &script);
    let mut a = elect("elect-a");
    let mut b = elect("elect-b");
    let started = |n: usize| {
        let log = log.clone();
        async move {
            let d = Deadline::new(format!("{n} leader start(s)"), Duration::from_secs(10));
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let starts: Vec<String> = text
                    .lines()
                    .filter(|l| l.starts_with("start "))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
                    .collect();
                if starts.len() >= n {
                    return starts;
                }
                d.check(&text).await;
            }
        }
    };
    let first = started(1).await[0].clone();
    // Only one command runs: the other candidate waits.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(started(1).await.len(), 1, "two commands started");

    let (leader, follower) = if first == "elect-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    sigterm(leader);
    let out = tokio::time::timeout(Duration::from_secs(10), leader.wait())
        .await
        .expect("the leader's elect exits after SIGTERM")
        .expect("wait");
    assert_eq!(out.code(), Some(0), "elect exits with the command's code");
    let second = started(2).await[1].clone();
    assert_ne!(second, first);

    sigterm(follower);
    let out = tokio::time::timeout(Duration::from_secs(10), follower.wait())
        .await
        .expect("the second elect exits after SIGTERM")
        .expect("wait");
    assert_eq!(out.code(), Some(0));

    let jobs = job_intervals(&log);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let (j1, j2) = (&jobs[0], &jobs[1]);
    assert!(j1.3 <= j2.2, "commands overlapped: {jobs:?}");
    assert!(j2.1 > j1.1, "tokens increase: {jobs:?}");
    // The stopped leader released the lease: the successor did not wait
    // for it to lapse (3 s).
    let gap_ms = (j2.2 - j1.3) / 1_000_000;
    assert!(
        gap_ms < 1_500,
        "the successor started {gap_ms} ms after the leader stopped"
    );
}

/// Sends `signal` to a process (`pid`) or, for a negative id, a process group.
fn signal(sig: &str, id: i64) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), "--".to_string(), id.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {id}");
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// The whole leading instance (its `elect` and its command) is paused with
/// SIGSTOP for longer than the lease: leadership moves to the other
/// candidate, and when the paused instance resumes it learns at once that it
/// lost and stops its command, without starting it again while the other
/// leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_loses_and_stops_its_command_when_resumed() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("leaders.log");
    let script = recording_job(&log);
    let elect = |id: &str| spawn_elect(&eps, "jobs/paused", id, &script);
    let mut a = elect("elect-a");
    let starts = |log: std::path::PathBuf| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("start "))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let d = Deadline::new("elect-a leads", Duration::from_secs(10));
    while starts(log.clone()).is_empty() {
        d.check(&starts(log.clone())).await;
    }
    let mut b = elect("elect-b");
    let pids = std::fs::read_to_string(format!("{}.pids", log.display())).expect("pids");
    let child: i64 = pids
        .lines()
        .find_map(|l| l.strip_prefix("pid elect-a "))
        .and_then(|p| p.trim().parse().ok())
        .expect("elect-a's command pid");
    let elect_a = i64::from(a.id().expect("elect-a running"));

    // Pause the whole instance for well over the 3 s lease.
    signal("STOP", elect_a);
    signal("STOP", -child);
    let d = Deadline::new(
        "elect-b takes over while elect-a is paused",
        Duration::from_secs(15),
    );
    while starts(log.clone()).len() < 2 {
        d.check(&starts(log.clone())).await;
    }
    assert_eq!(starts(log.clone()), vec!["elect-a", "elect-b"]);
    let resumed_at = now_nanos();
    signal("CONT", -child);
    signal("CONT", elect_a);

    // The resumed instance stops its command promptly ...
    let d = Deadline::new(
        "elect-a stops its command after resuming",
        Duration::from_secs(5),
    );
    let ended_at = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(t) = text
            .lines()
            .find_map(|l| l.strip_prefix("end elect-a "))
            .and_then(|t| t.trim().parse::<u128>().ok())
        {
            break t;
        }
        d.check(&text).await;
    };
    let stop_ms = ended_at.saturating_sub(resumed_at) / 1_000_000;
    assert!(
        stop_ms < 3_000,
        "elect-a stopped its command {stop_ms} ms after resuming"
    );
    // ... and does not start it again while elect-b leads.
    tokio::time::timeout(Duration::from_millis(1_500), a.wait())
        .await
        .ok();
    assert_eq!(
        starts(log.clone()),
        vec!["elect-a", "elect-b"],
        "only one command at a time after the pause"
    );

    sigterm(&b);
    let _ = tokio::time::timeout(Duration::from_secs(10), b.wait()).await;
    sigterm(&a);
    let _ = tokio::time::timeout(Duration::from_secs(10), a.wait()).await;
    let jobs = job_intervals(&log);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs[1].1 > jobs[0].1,
        "the new leader's token is greater: {jobs:?}"
    );
}

/// `leasehold heartbeat NODE` keeps `kube-node-lease/NODE` renewed until
/// SIGTERM, then exits 0; once it stops, the leader records the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_command_renews_until_stopped() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints().join(",");
    let client = cluster.client();
    let mut hb = spawn_cli(
        &eps,
        &[
            "heartbeat",
            "node-x",
            "--duration",
            "2",
            "--renew-every",
            "0.5",
        ],
    );
    let get = || async {
        client
            .get(leasehold::proto::v1::GetRequest {
                namespace: "kube-node-lease".into(),
                name: "node-x".into(),
                stale: false,
            })
            .await
            .ok()
            .and_then(|r| r.lease)
    };
    // It appears, held by the node, and its renewTime advances.
    let d = Deadline::new("node-x lease appears", Duration::from_secs(10));
    let first = loop {
        if let Some(l) = get().await {
            break l;
        }
        d.check("no lease yet").await;
    };
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity, "node-x");
    assert_eq!(spec.lease_duration_seconds, Some(2));
    let d = Deadline::new("node-x renewed", Duration::from_secs(10));
    loop {
        let now = get()
            .await
            .and_then(|l| l.spec)
            .map(|s| s.renew_time)
            .unwrap_or_default();
        if now > spec.renew_time {
            break;
        }
        d.check(&now).await;
    }
    // Still live well past one duration: renewals keep it.
    let d = Deadline::new("node-x still live after 2.5 s", Duration::from_secs(10));
    let since = Instant::now();
    while since.elapsed() < Duration::from_millis(2_500) {
        let l = get().await.expect("lease");
        assert!(
            !l.status.expect("status").expired,
            "renewed lease marked expired"
        );
        d.check("live").await;
    }
    sigterm(&hb);
    let out = tokio::time::timeout(Duration::from_secs(10), hb.wait())
        .await
        .expect("heartbeat exits after SIGTERM")
        .expect("wait");
    assert_eq!(out.code(), Some(0));
    // Without renewals the lease lapses and the leader records it.
    let d = Deadline::new(
        "node-x expires after the heartbeat stopped",
        Duration::from_secs(15),
    );
    loop {
        let l = get().await;
        if l.as_ref()
            .and_then(|l| l.status.as_ref())
            .is_some_and(|s| s.expired)
        {
            break;
        }
        d.check(&l).await;
    }
}
