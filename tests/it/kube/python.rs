//! The Python `kubernetes` client (PyPI, 37.x: the first with `LeaseLock`)
//! against a real three-node cluster, through a kubeconfig that points at a
//! follower: the scripts in `tests/python/`.
//!
//! - `crud_watch.py`: every `CoordinationV1Api` lease call and a
//!   `watch.Watch().stream`, each checked by the script itself.
//! - `elect.py`: one candidate of the client's `leaderelection` with
//!   `LeaseLock`. Two of them elect one leader; SIGKILL of the leading
//!   candidate hands the lease to the other once it could have lapsed, not
//!   before; SIGKILL of the Leasehold Raft leader does not interrupt the
//!   candidate's leadership.
//!
//! Which Python: `LEASEHOLD_PYTHON` when set (it must be able to import the
//! client: the test fails otherwise), else `python3` if it can; else the
//! tests print `SKIPPED` and pass, as the kubectl test does. `.ci/run`
//! installs the client in `target/py` and sets `LEASEHOLD_PYTHON`.

use super::{leader_and_follower, write_kubeconfig};
use crate::common::Cluster;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// `elect.py`'s lease parameters, s.
const LEASE_DURATION: f64 = 6.0;
const RETRY_PERIOD: f64 = 1.0;

/// The module whose import shows that the client is there and new enough.
const PROBE: &str = "import kubernetes.leaderelection.resourcelock.leaselock";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Whether `python` can import the client.
async fn has_client(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The Python to run the scripts with, or `None` to skip.
pub(crate) async fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEASEHOLD_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            has_client(&p).await,
            "LEASEHOLD_PYTHON={} cannot `{PROBE}`: install kubernetes>=37,<38 into it (see .ci/run)",
            p.display()
        );
        return Some(p);
    }
    let p = PathBuf::from("python3");
    has_client(&p).await.then_some(p)
}

pub(crate) const SKIPPED: &str =
    "SKIPPED: the Python kubernetes client is not installed (see .ci/run)";

/// A command running `python` on `script` with `args`: no bytecode
/// written into the source tree, unbuffered, no KUBECONFIG from outside.
fn python_cmd(python: &Path, script: &Path, args: &[OsString]) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Seconds since the Unix epoch on this machine's clock: the scripts print
/// the same clock.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_crud_and_watch() {
    let Some(py) = python().await else {
        eprintln!("{SKIPPED}");
        return;
    };
    let c = Cluster::start(3).await;
    let (_, follower) = leader_and_follower(&c).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_kubeconfig(tmp.path(), &c.endpoint(follower));
    crud_watch(&py, &c, &config, "py-crud", &format!("follower {follower}")).await;
}

/// Runs `crud_watch.py` with kubeconfig `config` in namespace `ns`;
/// panics with its output (and the nodes' logs) if it fails.
pub(crate) async fn crud_watch(py: &Path, c: &Cluster, config: &Path, ns: &str, what: &str) {
    let start = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        python_cmd(py, &script("crud_watch.py"), &[config.into(), ns.into()]).output(),
    )
    .await
    .expect("crud_watch.py did not finish within 120 s")
    .expect("run crud_watch.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        c.dump_logs();
    }
    assert!(
        out.status.success(),
        "crud_watch.py against {what} exited with {}:\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    eprintln!(
        "{} ({:.1} s with the interpreter's start)",
        stdout.trim(),
        start.elapsed().as_secs_f64()
    );
    c.assert_no_crashes();
}

// ---------------------------------------------------------------------------
// Leader election
// ---------------------------------------------------------------------------

/// One line of `elect.py`: `KIND ID UNIX_TIME`.
#[derive(Debug, Clone)]
struct Event {
    kind: String,
    who: String,
    t: f64,
}

/// What the candidates' readers send: a parsed line, or the end of a
/// candidate's stdout.
enum Msg {
    Line(Event),
    Eof(String),
}

/// The candidates' processes and everything they printed.
struct Election {
    start: f64,
    children: HashMap<String, Child>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    events: Vec<Event>,
    ended: Vec<String>,
    stderr: Arc<Mutex<HashMap<String, String>>>,
}

impl Election {
    fn new() -> Election {
        let (tx, rx) = mpsc::unbounded_channel();
        Election {
            start: unix_now(),
            children: HashMap::new(),
            tx,
            rx,
            events: Vec::new(),
            ended: Vec::new(),
            stderr: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Starts candidate `id` with `config`; its stdout and stderr are read
    /// concurrently from now on.
    fn spawn(&mut self, py: &Path, config: &Path, ns: &str, lease: &str, id: &str) {
        let mut child = python_cmd(
            py,
            &script("elect.py"),
            &[config.into(), ns.into(), lease.into(), id.into()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start elect.py {id}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, who) = (self.tx.clone(), id.to_string());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(Msg::Line(parse(&who, &line)));
            }
            let _ = tx.send(Msg::Eof(who));
        });
        tokio::spawn(collect(stderr, id.to_string(), self.stderr.clone()));
        self.children.insert(id.to_string(), child);
    }

    /// Takes what the readers sent until `done` holds of what was seen, or
    /// `within` has passed; whether `done` held.
    async fn until(&mut self, within: Duration, mut done: impl FnMut(&Election) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Msg::Line(e))) => self.events.push(e),
                Ok(Some(Msg::Eof(who))) => self.ended.push(who),
                Ok(None) => unreachable!("the election keeps a sender of its own"),
                Err(_) => return done(self),
            }
        }
    }

    /// Takes what the readers sent for `d`.
    async fn watch_for(&mut self, d: Duration) {
        self.until(d, |_| false).await;
    }

    fn of<'a>(&'a self, kind: &'a str, who: Option<&'a str>) -> impl Iterator<Item = &'a Event> {
        self.events
            .iter()
            .filter(move |e| e.kind == kind && who.is_none_or(|w| e.who == w))
    }

    /// SIGKILLs candidate `id` (at the returned Unix time), reaps it, and
    /// takes its remaining output.
    async fn kill(&mut self, id: &str) -> f64 {
        let child = self.children.get_mut(id).expect("a candidate");
        let at = unix_now();
        child.start_kill().expect("SIGKILL a candidate");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("a killed candidate is reaped within 10 s")
            .expect("wait for a candidate");
        assert!(!status.success(), "{id} exited with {status} after SIGKILL");
        let who = id.to_string();
        let eof = self
            .until(Duration::from_secs(10), |e| e.ended.contains(&who))
            .await;
        assert!(eof, "the stdout of killed {id} did not end");
        at
    }

    /// Everything printed so far, times relative to the start, and the tail
    /// of each candidate's stderr: for failure messages.
    fn transcript(&self) -> String {
        let mut s = String::from("candidates' stdout (s since start):\n");
        for e in &self.events {
            let _ = writeln!(s, "  {:>8.3} {} {}", e.t - self.start, e.kind, e.who);
        }
        for (who, err) in self.stderr.lock().expect("stderr lock").iter() {
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            let _ = writeln!(s, "--- stderr of {who} (last 40 lines):");
            for l in tail.iter().rev() {
                let _ = writeln!(s, "  {l}");
            }
        }
        s
    }
}

/// A line of `elect.py`'s stdout; anything else is kept as an `OTHER`
/// event with the line as its `who` (and fails the test).
fn parse(who: &str, line: &str) -> Event {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if let [kind @ ("STARTED" | "RENEWED" | "STOPPED"), id, t] = parts[..] {
        if let (true, Ok(t)) = (id == who, t.parse()) {
            return Event {
                kind: kind.to_string(),
                who: id.to_string(),
                t,
            };
        }
    }
    Event {
        kind: "OTHER".to_string(),
        who: format!("{who}: {line:?}"),
        t: unix_now(),
    }
}

/// Appends everything `r` yields to `into[who]`.
async fn collect(
    r: impl AsyncRead + Unpin,
    who: String,
    into: Arc<Mutex<HashMap<String, String>>>,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut m = into.lock().expect("stderr lock");
        let s = m.entry(who.clone()).or_default();
        s.push_str(&line);
        s.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_leader_election_fails_over_and_survives_a_leasehold_leader_crash() {
    let Some(py) = python().await else {
        eprintln!("{SKIPPED}");
        return;
    };
    let mut c = Cluster::start(3).await;
    let (raft_leader, _) = leader_and_follower(&c).await;
    let followers: Vec<u64> = c
        .ids()
        .into_iter()
        .filter(|id| *id != raft_leader)
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ns, lease) = ("py-elect", "py-leader");
    let mut el = Election::new();
    // Each candidate through its own follower: killing the Raft leader
    // later leaves both candidates' nodes running.
    let mut node_of = HashMap::new();
    for (id, node) in ["A", "B"].into_iter().zip(&followers) {
        let dir = tmp.path().join(id);
        std::fs::create_dir(&dir).expect("mkdir");
        let config = write_kubeconfig(&dir, &c.endpoint(*node));
        el.spawn(&py, &config, ns, lease, id);
        node_of.insert(id.to_string(), *node);
    }

    // One of them leads within 10 s, and renews; the other does not start.
    let started = el
        .until(Duration::from_secs(10), |e| {
            e.of("STARTED", None).count() > 0
        })
        .await;
    assert!(
        started,
        "no candidate started leading within 10 s\n{}",
        el.transcript()
    );
    let first = el.of("STARTED", None).next().expect("a STARTED").clone();
    let (leading, other) = if first.who == "A" {
        ("A", "B")
    } else {
        ("B", "A")
    };
    let renewed = el
        .until(Duration::from_secs(10), |e| {
            e.of("RENEWED", Some(leading)).count() >= 2
        })
        .await;
    assert!(
        renewed,
        "{leading} did not renew twice within 10 s\n{}",
        el.transcript()
    );
    assert_eq!(
        el.of("STARTED", None).count(),
        1,
        "two leaders at once\n{}",
        el.transcript()
    );
    assert_eq!(el.of("STOPPED", None).count(), 0, "{}", el.transcript());
    assert_eq!(el.of("OTHER", None).count(), 0, "{}", el.transcript());

    // SIGKILL the leading candidate: it never releases the lease, so the
    // other takes it over once lease_duration has passed on its own clock
    // since it last saw the record change, at its next retry.
    let killed_at = el.kill(leading).await;
    let last_renewal = el
        .of("RENEWED", Some(leading))
        .map(|e| e.t)
        .fold(f64::MIN, f64::max);
    // Liveness: the last record changed at most a moment after the kill (a
    // renewal in flight), the survivor sees that within a retry period,
    // waits lease_duration (its clock may run 1% apart), then takes over at
    // its next retry.
    let bound = LEASE_DURATION * 1.01 + 2.0 * RETRY_PERIOD + 2.0;
    let took_over = el
        .until(Duration::from_secs_f64(bound + 10.0), |e| {
            e.of("STARTED", Some(other)).count() > 0
        })
        .await;
    assert!(
        took_over,
        "{other} did not take over within {:.1} s of killing {leading}\n{}",
        bound + 10.0,
        el.transcript()
    );
    let takeover = el.of("STARTED", Some(other)).next().expect("STARTED").t;
    let gap = takeover - killed_at;
    eprintln!(
        "takeover: {other} started leading {gap:.3} s after {leading} was killed \
         ({:.3} s after {leading}'s last renewal was sent; bound {bound:.2} s)",
        takeover - last_renewal
    );
    assert!(
        gap <= bound,
        "takeover took {gap:.3} s, more than lease_duration*1.01 + 2*retry_period + 2 s = {bound:.2} s\n{}",
        el.transcript()
    );
    // Safety: the survivor's winning write was sent only after the killed
    // leader's last renewal could have lapsed. Both times are sent-times on
    // this machine's clock, and a renewal is written after it is sent, so
    // an earlier start would be two leaders at once.
    assert!(
        takeover >= last_renewal + LEASE_DURATION,
        "{other} started at {:.3} s, before {leading}'s last renewal (sent at {:.3} s) + lease_duration {LEASE_DURATION} s\n{}",
        takeover - el.start,
        last_renewal - el.start,
        el.transcript()
    );

    // While the survivor leads, SIGKILL the Leasehold Raft leader. Its
    // requests meet the Raft election (a 503 with Retry-After, which the
    // client's urllib3 retries, or a retry at the next period), and it must
    // renew within renew_deadline all the same.
    let renewed = el
        .until(Duration::from_secs(10), |e| {
            e.of("RENEWED", Some(other)).count() >= 2
        })
        .await;
    assert!(
        renewed,
        "{other} did not renew twice within 10 s of leading\n{}",
        el.transcript()
    );
    let raft_leader = c.wait_for_leader(Duration::from_secs(15)).await;
    assert_ne!(
        Some(&raft_leader),
        node_of.get(other),
        "the Raft leader moved to {other}'s node: killing it would kill {other}'s server"
    );
    let crashed_at = unix_now();
    c.kill(raft_leader);
    el.watch_for(Duration::from_secs_f64(LEASE_DURATION + 2.0))
        .await;
    let new_raft_leader = c.wait_for_leader(Duration::from_secs(15)).await;
    assert_ne!(new_raft_leader, raft_leader);
    assert_eq!(
        el.of("STOPPED", None).count(),
        0,
        "a candidate stopped leading\n{}",
        el.transcript()
    );
    assert_eq!(el.of("STARTED", None).count(), 2, "{}", el.transcript());
    let after: Vec<f64> = el
        .of("RENEWED", Some(other))
        .map(|e| e.t)
        .filter(|t| *t > crashed_at)
        .collect();
    assert!(
        !after.is_empty(),
        "{other} printed no renewal sent after the Raft leader (node {raft_leader}) was killed\n{}",
        el.transcript()
    );
    // Still renewing at the end, not just once right after the crash.
    let end = unix_now();
    let last = after.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        end - last <= 2.0 * RETRY_PERIOD + 2.0,
        "{other}'s last renewal was sent {:.1} s before the end\n{}",
        end - last,
        el.transcript()
    );
    // The longest wait between renewals across the crash (for the log).
    let mut ts: Vec<f64> = el.of("RENEWED", Some(other)).map(|e| e.t).collect();
    ts.retain(|t| *t > crashed_at - 3.0);
    let longest = ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!(
        "raft leader {raft_leader} killed: {other} kept leading ({} renewals in {:.1} s after, \
         longest interval between renewals {longest:.2} s; node {new_raft_leader} leads Raft)",
        after.len(),
        end - crashed_at
    );
    assert_eq!(el.of("OTHER", None).count(), 0, "{}", el.transcript());
    c.assert_no_crashes();
}
