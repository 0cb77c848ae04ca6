//! The `/ui` live view (`src/ops/ui.rs`): its routes over plain HTTP, and
//! the page itself in a real browser, headless Chromium from Debian's
//! packages (`chromium-headless-shell`, else `chromium`), when one is on
//! the PATH; without one the browser test says SKIPPED (`.ci/run`
//! installs it).
//!
//! The browser loads `/ui?once=1`, the page's test mode: it lists, replays
//! the recent changes through a watch bounded by `timeoutSeconds`,
//! renders, and sets `data-ready="1"` on the body. `--virtual-time-budget`
//! lets its timers run; every run is under a hard `timeout`.
//!
//! The live page (a streaming watch) cannot be dumped that way: Chromium's
//! virtual time does not wait for a stream. With Node 20.10+ on the PATH
//! (else SKIPPED), `ui_cdp.js` bridges this test to the open page over the
//! DevTools protocol: the test evaluates expressions in the page and
//! blocks its watch requests while it restarts the node.

use crate::common::{acquire_req, cli, Cluster, Deadline};
use crate::kube::Http;
use leasehold::lease::Timestamp;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// A header of a reply, or "".
fn header<'a>(r: &'a crate::kube::Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Asserts the headers every `/ui` answer carries.
fn assert_guarded(r: &crate::kube::Reply, path: &str, content_type: &str) {
    assert_eq!(
        r.status,
        200,
        "GET {path}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(header(r, "content-type"), content_type, "GET {path}");
    let csp = header(r, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'"),
        "GET {path}: CSP {csp:?}"
    );
    assert!(!csp.contains("unsafe-inline"), "GET {path}: CSP {csp:?}");
    assert_eq!(header(r, "cache-control"), "no-store", "GET {path}");
    assert_eq!(header(r, "x-content-type-options"), "nosniff", "GET {path}");
}

fn text(r: &crate::kube::Reply) -> String {
    String::from_utf8(r.body.clone()).expect("UTF-8 body")
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_answer_with_their_types_and_policy_and_a_markup_holder_stays_data() {
    let c = Cluster::start(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let markup = "<script>alert(\"held\")</script>";
    let a = c
        .client()
        .acquire(acquire_req("ui-markup", "l", markup, 60))
        .await
        .expect("acquire");
    let mut http = Http::open(&c.endpoint(1)).await;

    // The page: static, no inline script or style (the policy forbids
    // them), its script and style from this origin.
    let r = http.request("GET", "/ui", None).await;
    assert_guarded(&r, "/ui", "text/html; charset=utf-8");
    let page = text(&r);
    assert!(page.contains(r#"<script src="/ui/app.js""#), "{page}");
    assert!(page.contains(r#"href="/ui/style.css""#), "{page}");
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script src=\"/ui/").count(),
        "every script is a same-origin file: {page}"
    );
    assert!(!page.contains("<style"), "{page}");
    assert!(!page.contains(markup) && !page.contains("alert("), "{page}");

    // The script writes text only: nothing in it parses a string as HTML.
    let r = http.request("GET", "/ui/app.js", None).await;
    assert_guarded(&r, "/ui/app.js", "text/javascript; charset=utf-8");
    let js = text(&r);
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "DOMParser",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    assert!(js.contains("textContent"));

    let r = http.request("GET", "/ui/style.css", None).await;
    assert_guarded(&r, "/ui/style.css", "text/css; charset=utf-8");

    // The cluster view: this node leads a cluster of one.
    let r = http.request("GET", "/ui/api/cluster", None).await;
    assert_guarded(&r, "/ui/api/cluster", "application/json");
    let body = text(&r);
    assert!(!body.contains("<script>"), "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["node_id"], 1, "{v}");
    assert_eq!(v["leader_id"], 1, "{v}");
    assert_eq!(v["state"], "LEADER", "{v}");
    assert_eq!(v["leader_address"], c.endpoint(1), "{v}");
    assert!(v["term"].as_u64().is_some_and(|t| t >= 1), "{v}");
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{v}");
    assert_eq!(members[0]["id"], 1, "{v}");
    assert_eq!(members[0]["address"], c.endpoint(1), "{v}");
    assert_eq!(members[0]["role"], "voter", "{v}");
    let applied = v["applied_index"].as_u64().expect("applied_index");
    assert!(
        applied >= 1 && applied <= v["last_log_index"].as_u64().unwrap_or(0),
        "{v}"
    );
    assert!(v["commit_index"].as_u64().is_some_and(|c| c >= 1), "{v}");
    assert!(
        v["revision"].as_u64().is_some_and(|r| r >= a.fencing_token),
        "{v}"
    );
    // sm_now is state machine time: not before the acquire's stamp, and
    // (one process, one clock) within a minute of this machine's clock.
    let sm_now = Timestamp::parse_rfc3339(v["sm_now"].as_str().expect("sm_now")).expect("time");
    let lease = a.lease.expect("lease");
    let renewed = Timestamp::parse_rfc3339(&lease.spec.expect("spec").renew_time).expect("renew");
    assert!(
        sm_now >= renewed,
        "sm_now {sm_now} before the acquire at {renewed}"
    );
    let wall = Timestamp::from_datetime(chrono::Utc::now());
    assert!(
        sm_now.micros_since(wall).abs() < 60_000_000,
        "sm_now {sm_now}, this clock {wall}"
    );

    // The holder reaches the page only as a JSON string of the Lease API.
    let r = http
        .request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/ui-markup/leases/l",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-type"), "application/json");
    let l: Value = serde_json::from_slice(&r.body).expect("JSON lease");
    assert_eq!(l["spec"]["holderIdentity"], markup, "{l}");

    // Read-only: other methods are refused.
    for (method, path) in [
        ("POST", "/ui"),
        ("PUT", "/ui/app.js"),
        ("DELETE", "/ui/api/cluster"),
    ] {
        let r = http.request(method, path, None).await;
        assert_eq!(r.status, 405, "{method} {path}");
    }
}

// ---------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------

/// The browser on the PATH and whether it needs `--headless` (the full
/// `chromium` does, the headless shell is nothing else).
fn chromium() -> Option<(PathBuf, bool)> {
    let paths = std::env::var_os("PATH")?;
    for (name, flag) in [("chromium-headless-shell", false), ("chromium", true)] {
        if let Some(p) = std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
        {
            return Some((p, flag));
        }
    }
    None
}

/// The browser under a hard `timeout` of `limit_secs` (which kills its
/// whole process group), headless, sandbox off (tests may run as root),
/// with its own throw-away profile.
fn browser_command(
    browser: &(PathBuf, bool),
    limit_secs: u32,
    profile: &tempfile::TempDir,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("timeout");
    cmd.args(["-k", "5", &limit_secs.to_string()])
        .arg(&browser.0);
    if browser.1 {
        cmd.arg("--headless");
    }
    cmd.args([
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    cmd
}

/// Runs the browser on `url` with `args` under a hard 60 s `timeout` (which
/// kills its whole process group); returns what it printed.
async fn browse(browser: &(PathBuf, bool), args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = browser_command(browser, 60, &profile);
    cmd.args(["--hide-scrollbars", "--virtual-time-budget=5000"])
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within 90 s", browser.0.display()))
        .expect("run the browser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} {url}: {}\n{}",
        browser.0.display(),
        out.status,
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM after its test mode finished.
async fn dump(browser: &(PathBuf, bool), base: &str) -> String {
    let dom = browse(browser, &["--dump-dom"], &format!("{base}/ui?once=1")).await;
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page never got ready:\n{dom}"
    );
    dom
}

/// The start tag and the content of the first `<tag>` element whose start
/// tag contains `attr` (rows and list items do not nest).
fn element<'a>(dom: &'a str, tag: &str, attr: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut from = 0;
    while let Some(i) = dom[from..].find(&open) {
        let start = from + i;
        let head_end = start + dom[start..].find('>')?;
        let end = head_end + dom[head_end..].find(&close)?;
        if dom[start..=head_end].contains(attr) {
            return Some((&dom[start..=head_end], &dom[head_end + 1..end]));
        }
        from = head_end;
    }
    None
}

/// The row of lease `key`: its start tag and cells.
fn row<'a>(dom: &'a str, key: &str) -> (&'a str, &'a str) {
    element(dom, "tr", &format!(r#"data-lease="{key}""#))
        .unwrap_or_else(|| panic!("no row for {key} in:\n{dom}"))
}

/// Whether the change stream has a `kind` change of lease `key`.
fn has_change(dom: &str, kind: &str, key: &str) -> bool {
    let needle = format!(r#"data-kind="{kind}" data-lease="{key}""#);
    element(dom, "li", &needle).is_some()
}

/// Asserts `path` is a PNG of `width` x `height` (signature, then IHDR).
fn assert_png(path: &Path, width: u32, height: u32) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(png.len() > 33, "{} is {} bytes", path.display(), png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[8..12], &13u32.to_be_bytes(), "IHDR length");
    assert_eq!(&png[12..16], b"IHDR", "first chunk");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((be(16), be(20)), (width, height), "PNG size");
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_shows_a_lease_acquired_by_the_cli_its_token_and_its_expiry() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium-headless-shell or chromium on PATH \
             (apt-get install chromium-headless-shell); .ci/run installs it"
        );
        return;
    };
    let c = Cluster::start(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let ep = c.endpoint(1);
    let base = format!("http://{ep}");

    let acquire = |lease: &'static str, holder: &'static str, secs: &'static str| {
        let ep = ep.clone();
        async move {
            let r = cli(
                &ep,
                &[
                    "-o",
                    "json",
                    "acquire",
                    lease,
                    "--holder",
                    holder,
                    "--duration",
                    secs,
                ],
            )
            .await;
            assert_eq!(r.code, 0, "acquire {lease}: {}", r.stderr);
            let v: Value = serde_json::from_str(&r.stdout).expect("JSON lease");
            v["status"]["fencingToken"].as_u64().expect("fencingToken")
        }
    };
    let token = acquire("ui-demo/lock", "alice", "3").await;
    let steady = acquire("ui-demo/steady", "bob", "300").await;
    let markup = "<img src=x onerror=\"document.title='owned'\">";
    acquire("ui-markup/img", markup, "300").await;

    // Ready, with the holder and token of each lease.
    let dom = dump(&browser, &base).await;
    let (_, cells) = row(&dom, "ui-demo/lock");
    assert!(
        cells.contains(r#"<td class="holder">alice</td>"#),
        "{cells}"
    );
    assert!(
        cells.contains(&format!(r#"<td class="token">{token}</td>"#)),
        "{cells}"
    );
    let (head, cells) = row(&dom, "ui-demo/steady");
    assert!(head.contains(r#"data-state="held""#), "{head}");
    assert!(cells.contains(r#"<td class="holder">bob</td>"#), "{cells}");
    assert!(
        cells.contains(&format!(r#"<td class="token">{steady}</td>"#)),
        "{cells}"
    );
    // A countdown of a lease held for 300 s shows minutes left.
    let countdown = element(cells, "td", r#"class="countdown""#)
        .map(|(_, t)| t)
        .unwrap_or("");
    assert!(countdown.contains(" m "), "countdown {countdown:?}");
    assert!(has_change(&dom, "ACQUIRED", "ui-demo/lock"), "{dom}");
    // The markup holder is text: escaped in the DOM, no element made of
    // it, the title untouched.
    let (_, cells) = row(&dom, "ui-markup/img");
    assert!(
        cells.contains("&lt;img src=x onerror=\"document.title='owned'\"&gt;"),
        "{cells}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert!(dom.contains("<title>Leasehold</title>"), "{dom}");

    // A screenshot is a real PNG of the window's size.
    let shots = tempfile::tempdir().expect("temp dir");
    let png = shots.path().join("ui.png");
    browse(
        &browser,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,800",
        ],
        &format!("{base}/ui?once=1"),
    )
    .await;
    assert_png(&png, 1280, 800);

    // Once the leader recorded the lapse, the page shows it.
    let mut http = Http::open(&ep).await;
    let d = Deadline::new("ui-demo/lock to expire", Duration::from_secs(20));
    loop {
        let r = http
            .request(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/ui-demo/leases/lock",
                None,
            )
            .await;
        let l: Value = serde_json::from_slice(&r.body).expect("JSON lease");
        if l["status"]["expired"] == true {
            break;
        }
        d.check(l).await;
    }
    let dom = dump(&browser, &base).await;
    let (head, cells) = row(&dom, "ui-demo/lock");
    assert!(head.contains(r#"data-state="expired""#), "{head}");
    assert!(
        cells.contains(r#"<td class="state">expired</td>"#),
        "{cells}"
    );
    assert!(
        cells.contains(r#"<td class="holder">alice</td>"#),
        "{cells}"
    );
    assert!(has_change(&dom, "EXPIRED", "ui-demo/lock"), "{dom}");
    let (head, _) = row(&dom, "ui-demo/steady");
    assert!(head.contains(r#"data-state="held""#), "{head}");
}

// ---------------------------------------------------------------------------
// The live mode, driven over the DevTools protocol
// ---------------------------------------------------------------------------

/// A browser in a process group of its own (under `timeout`, so it cannot
/// outlive a crashed test by more than two minutes), killed whole on drop.
struct LiveBrowser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for LiveBrowser {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// Opens `url` in `browser` with a DevTools port; returns it and the port.
async fn open_live(browser: &(PathBuf, bool), url: &str) -> (LiveBrowser, u16) {
    use tokio::io::AsyncBufReadExt;
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = browser_command(browser, 120, &profile);
    cmd.arg("--remote-debugging-port=0")
        .arg(url)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start the browser");
    let stderr = child.stderr.take().expect("stderr");
    let browser = LiveBrowser {
        child,
        _profile: profile,
    };
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                let port = rest.split('/').next().unwrap_or("");
                return port.parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the browser announces its DevTools port within 30 s");
    // Keep reading stderr so that the browser never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (browser, port)
}

/// Node with a `WebSocket` (20.10+ behind the flag, 22+ without), if any.
fn node_with_websocket() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    let node = std::env::split_paths(&paths)
        .map(|d| d.join("node"))
        .find(|p| p.is_file())?;
    let ok = std::process::Command::new(&node)
        .args([
            "--experimental-websocket",
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(node)
}

/// `tests/it/ui_cdp.js`: one JSON command per line in, one answer out.
struct Cdp {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Cdp {
    async fn attach(node: &Path, port: u16) -> Cdp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/ui_cdp.js");
        let mut child = tokio::process::Command::new(node)
            .arg("--experimental-websocket")
            .arg(script)
            .arg(port.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        use tokio::io::AsyncBufReadExt;
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Cdp {
            _child: child,
            stdin,
            stdout,
        }
    }

    async fn call(&mut self, cmd: Value) -> Value {
        use tokio::io::AsyncWriteExt;
        let line = format!("{cmd}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the bridge");
        let answer = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {cmd} within 20 s"))
            .expect("read the bridge")
            .unwrap_or_else(|| panic!("the bridge ended before answering {cmd}"));
        let v: Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert!(v.get("error").is_none(), "{cmd}: {v}");
        v
    }

    /// The value of `expr` in the page.
    async fn eval(&mut self, expr: &str) -> Value {
        self.call(serde_json::json!({ "eval": expr })).await["value"].take()
    }

    /// Polls `expr` until `ok` holds for its value.
    async fn wait(&mut self, what: &str, expr: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let d = Deadline::new(what.to_string(), Duration::from_secs(30));
        loop {
            let v = self.eval(expr).await;
            if ok(&v) {
                return v;
            }
            d.check(v).await;
        }
    }
}

/// The page's leases (`key=state holder`), its first change, its
/// connection text and how many lists it made, as one JSON value.
const PAGE_STATE: &str = r#"({
  ready: document.body.dataset.ready || '',
  lists: document.body.dataset.lists || '',
  conn: document.getElementById('conn').textContent,
  rows: [...document.querySelectorAll('tr[data-lease]')].map(t =>
    t.dataset.lease + '=' + t.dataset.state + ' ' + t.querySelector('.holder').textContent),
  countdown: (document.querySelector('tr[data-lease="live/a"] .countdown') || {}).textContent || '',
  first: Object.assign({}, (document.querySelector('#changes li[data-kind]') || {dataset: {}}).dataset),
})"#;

fn rows(v: &Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_live_view_follows_the_watch_and_lists_again_after_a_gap() {
    let (Some(browser), Some(node)) = (chromium(), node_with_websocket()) else {
        eprintln!(
            "SKIPPED: needs chromium-headless-shell (or chromium) and Node 20.10+ on PATH \
             to drive the live page over the DevTools protocol"
        );
        return;
    };
    let mut c = Cluster::start_with(
        1,
        crate::common::Options {
            extra_args: ["--history-revisions", "5", "--no-identity-lease"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let ep = c.endpoint(1);
    c.client()
        .acquire(acquire_req("before", "one", "h1", 120))
        .await
        .expect("acquire");

    let (_browser, port) = open_live(&browser, &format!("http://{ep}/ui")).await;
    let mut page = Cdp::attach(&node, port).await;
    page.wait("the page to list", PAGE_STATE, |v| {
        v["ready"] == "1" && rows(v).contains(&"before/one=held h1".to_string())
    })
    .await;

    // A lease acquired by the CLI now arrives through the watch.
    let r = cli(
        &ep,
        &["acquire", "live/a", "--holder", "alice", "--duration", "3"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = page
        .wait("live/a to appear", PAGE_STATE, |v| {
            rows(v).contains(&"live/a=held alice".to_string())
        })
        .await;
    assert_eq!(v["first"]["kind"], "ACQUIRED", "{v}");
    assert_eq!(v["first"]["lease"], "live/a", "{v}");
    assert_eq!(v["lists"], "1", "{v}");
    // Its countdown runs without any new event.
    let first = v["countdown"].clone();
    page.wait("the countdown to move", PAGE_STATE, |v| {
        v["countdown"] != first && v["countdown"].as_str().is_some_and(|s| s.ends_with(" s"))
    })
    .await;
    // Its expiry arrives through the watch too.
    let v = page
        .wait("live/a to expire", PAGE_STATE, |v| {
            rows(v).contains(&"live/a=expired alice".to_string())
        })
        .await;
    assert_eq!(v["first"]["kind"], "EXPIRED", "{v}");

    // A gap longer than the history (5 revisions): new watches fail while
    // the node restarts and 9 changes happen; then the page's resumed
    // watch gets a 410 and the page lists again.
    page.call(serde_json::json!({ "block": ["*watch=1*"] }))
        .await;
    c.kill(1);
    page.wait("the page to notice", PAGE_STATE, |v| {
        v["conn"] == "reconnecting"
    })
    .await;
    c.restart(1).await;
    c.wait_for_leader(LEADER_TIMEOUT).await;
    let client = c.client();
    for i in 0..8 {
        client
            .acquire(acquire_req("after", &format!("l{i}"), "h2", 120))
            .await
            .expect("acquire");
    }
    let r = cli(&ep, &["delete", "live/a"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    page.call(serde_json::json!({ "block": [] })).await;
    let v = page
        .wait("the page to list again", PAGE_STATE, |v| {
            v["lists"] == "2" && rows(v).len() == 9
        })
        .await;
    let rows = rows(&v);
    assert!(rows.contains(&"after/l7=held h2".to_string()), "{v}");
    assert!(rows.contains(&"before/one=held h1".to_string()), "{v}");
    assert!(!rows.iter().any(|r| r.starts_with("live/a=")), "{v}");
    assert_eq!(v["first"]["kind"], "RELISTED", "{v}");
    // And it is live again: the next change arrives by the watch.
    client
        .acquire(acquire_req("after", "l8", "h3", 120))
        .await
        .expect("acquire");
    let v = page
        .wait("after/l8 to appear", PAGE_STATE, |v| {
            self::rows(v).contains(&"after/l8=held h3".to_string())
        })
        .await;
    assert_eq!(v["lists"], "2", "{v}");
}
