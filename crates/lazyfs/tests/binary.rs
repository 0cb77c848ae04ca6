//! The `leasehold-lazyfs` binary as the chaos harness runs it: `mount` in
//! the foreground until SIGTERM, commands through its control socket (the
//! library's `control` and the `ctl` subcommand), and `unmount` of the dead
//! mount a SIGKILLed server leaves. (Running it here also makes
//! `cargo test` build the binary.)

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leasehold_lazyfs::control;

const BIN: &str = env!("CARGO_BIN_EXE_leasehold-lazyfs");

struct Dirs {
    b: PathBuf,
    m: PathBuf,
    sock: PathBuf,
    _tmp: tempfile::TempDir,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    Dirs {
        // Not created: `mount` creates them.
        b: tmp.path().join("backing"),
        m: tmp.path().join("mnt"),
        sock: tmp.path().join("ctl.sock"),
        _tmp: tmp,
    }
}

/// Starts `mount` and waits for its `ready` line; on failure returns the
/// exit status and stderr.
fn start(d: &Dirs) -> Result<Child, (Option<ExitStatus>, String)> {
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg("--backing")
        .arg(&d.b)
        .arg("--mountpoint")
        .arg(&d.m)
        .arg("--control")
        .arg(&d.sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasehold-lazyfs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line == "ready\n" => Ok(child),
        _ => {
            let _ = child.kill();
            let status = child.wait().ok();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Err((status, err))
        }
    }
}

/// `start`, or `None` after printing why the test is skipped.
fn start_or_skip(d: &Dirs) -> Option<Child> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing");
        return None;
    }
    match start(d) {
        Ok(child) => Some(child),
        Err((_, err)) if err.contains("not permitted") || err.contains("ermission denied") => {
            eprintln!("SKIPPED: mounting is not permitted: {}", err.trim());
            None
        }
        Err((status, err)) => panic!("mount failed ({status:?}): {err}"),
    }
}

fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ctl")
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < limit, "no exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) of our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill");
}

fn is_mounted(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(canon.to_str().expect("utf-8 path")))
}

#[test]
fn mount_control_and_sigterm() {
    let d = dirs();
    let Some(mut child) = start_or_skip(&d) else {
        return;
    };
    assert!(is_mounted(&d.m));
    assert_eq!(control(&d.sock, "ping").expect("ping"), "ok");

    let p = d.m.join("wal");
    let mut f = File::create(&p).expect("create");
    f.write_all(b"synced").expect("write");
    f.sync_data().expect("fdatasync");
    File::open(&d.m)
        .expect("dir")
        .sync_all()
        .expect("fsync dir");
    f.write_all(b"+lost").expect("write");
    drop(f);

    let out = ctl(&d.sock, &["status"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok files=1 bytes=5 entries=0\n");

    // One connection, several commands.
    let mut conn = UnixStream::connect(&d.sock).expect("connect");
    conn.write_all(b"ping\nstatus\nbogus\n").expect("send");
    let mut lines = BufReader::new(conn.try_clone().expect("clone")).lines();
    let mut next = || lines.next().expect("a reply").expect("read");
    assert_eq!(next(), "ok");
    assert_eq!(next(), "ok files=1 bytes=5 entries=0");
    assert!(next().starts_with("err unknown command \"bogus\" (known: ping, status"));
    drop(conn);

    let began = Instant::now();
    let out = ctl(&d.sock, &["lose-unsynced"]);
    assert!(began.elapsed() < Duration::from_secs(1));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok files=1 bytes=5 entries=0\n");
    assert_eq!(fs::read(&p).expect("read"), b"synced");

    let mut f = OpenOptions::new().append(true).open(&p).expect("open");
    f.write_all(b"|more").expect("write");
    drop(f);
    let out = ctl(&d.sock, &["lose-unsynced", "torn", "7"]);
    assert!(out.status.success(), "{out:?}");
    assert!(b"synced|more".starts_with(&fs::read(&p).expect("read")));
    let out = ctl(&d.sock, &["checkpoint"]);
    assert_eq!(out.stdout, b"ok files=0 bytes=0 entries=0\n");

    let out = ctl(&d.sock, &["frobnicate", "now"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("err unknown command"));

    // A second server on the same mountpoint is refused, naming it.
    let d2 = Dirs {
        b: d.b.with_file_name("backing2"),
        m: d.m.clone(),
        sock: d.sock.with_file_name("ctl2.sock"),
        _tmp: tempfile::tempdir().expect("tempdir"),
    };
    let (status, err) = start(&d2).expect_err("the mountpoint is busy");
    assert!(!status.expect("exited").success());
    assert!(err.contains(d.m.to_str().expect("utf-8")), "{err}");

    signal(&child, libc::SIGTERM);
    assert!(wait(&mut child, Duration::from_secs(10)).success());
    assert!(!is_mounted(&d.m));
    assert!(!d.sock.exists(), "the socket file is removed");
    assert!(!d.b.join(leasehold_lazyfs::STASH_DIR).exists());
    assert!(fs::read(d.b.join("wal"))
        .expect("backing")
        .starts_with(b"synced"));
}

#[test]
fn unmount_cleans_the_mount_a_killed_server_left() {
    let d = dirs();
    let Some(mut child) = start_or_skip(&d) else {
        return;
    };
    signal(&child, libc::SIGKILL);
    wait(&mut child, Duration::from_secs(10));
    let dead = fs::metadata(&d.m).expect_err("a dead mount");
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN));

    // A new server refuses the dead mountpoint with a hint.
    let (_, err) = start(&d).expect_err("dead mountpoint");
    assert!(err.contains("leasehold-lazyfs unmount"), "{err}");

    let out = Command::new(BIN)
        .arg("unmount")
        .arg(&d.m)
        .output()
        .expect("unmount");
    assert!(out.status.success(), "{out:?}");
    assert!(fs::metadata(&d.m).expect("usable again").is_dir());
    let out = Command::new(BIN)
        .arg("unmount")
        .arg(&d.m)
        .output()
        .expect("unmount");
    assert!(out.status.success(), "nothing mounted is fine: {out:?}");

    let mut child = start(&d).expect("mount again");
    signal(&child, libc::SIGINT);
    assert!(wait(&mut child, Duration::from_secs(10)).success());
}
