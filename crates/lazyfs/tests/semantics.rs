//! The durability semantics of the lazy filesystem, through real mounts.
//!
//! Each test mounts a fresh backing directory in process (the library's
//! `Mounted`), acts on the mountpoint with ordinary file system calls, cuts
//! the power (`lose_unsynced`) and checks what is left. Without `/dev/fuse`,
//! or without the right to mount, each test prints `SKIPPED: <reason>` and
//! passes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use leasehold_lazyfs::{Mounted, Summary};

struct Fx {
    m: PathBuf,
    b: PathBuf,
    fs: Option<Mounted>,
    _tmp: tempfile::TempDir,
}

impl Fx {
    fn p(&self, rel: &str) -> PathBuf {
        self.m.join(rel)
    }

    fn fs(&self) -> &Mounted {
        self.fs.as_ref().expect("mounted")
    }

    fn lose(&self) -> Summary {
        self.fs().lose_unsynced().expect("lose-unsynced")
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(fs) = self.fs.take() {
            fs.unmount().expect("unmount");
        }
    }
}

/// Mounts a fresh backing directory, or explains why it cannot.
fn try_mount() -> Result<Fx, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let b = tmp.path().join("backing");
    let m = tmp.path().join("mnt");
    fs::create_dir(&b).map_err(|e| e.to_string())?;
    fs::create_dir(&m).map_err(|e| e.to_string())?;
    match Mounted::mount(&b, &m) {
        Ok(fs) => Ok(Fx {
            m,
            b,
            fs: Some(fs),
            _tmp: tmp,
        }),
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.raw_os_error() == Some(libc::EPERM) =>
        {
            Err(format!("mounting is not permitted: {e}"))
        }
        Err(e) => panic!("mount failed: {e}"),
    }
}

macro_rules! mount_or_skip {
    () => {
        match try_mount() {
            Ok(fx) => fx,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    };
}

fn sync_dir(p: &Path) {
    File::open(p)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

/// Creates `p` with `data` and fsyncs it (not its directory).
fn write_synced(p: &Path, data: &[u8]) {
    let mut f = File::create(p).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

fn append(p: &Path, data: &[u8]) -> File {
    let mut f = OpenOptions::new().append(true).open(p).expect("open");
    f.write_all(data).expect("append");
    f
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("should fail").raw_os_error().unwrap_or(0)
}

#[test]
fn unsynced_append_vanishes_synced_prefix_survives() {
    let fx = mount_or_skip!();
    let p = fx.p("log");
    write_synced(&p, b"first;");
    sync_dir(&fx.m);
    let f = append(&p, b"second;");
    drop(f); // close makes nothing durable
    assert_eq!(read(&p), b"first;second;");
    let lost = fx.lose();
    assert_eq!(
        lost,
        Summary {
            files: 1,
            bytes: 7,
            entries: 0
        }
    );
    assert_eq!(read(&p), b"first;");
}

#[test]
fn fdatasync_of_one_file_does_not_persist_another() {
    let fx = mount_or_skip!();
    let (a, b) = (fx.p("a"), fx.p("b"));
    File::create(&a).expect("a");
    File::create(&b).expect("b");
    sync_dir(&fx.m);
    let fa = append(&a, b"AAAA");
    let _fb = append(&b, b"BBBB");
    fa.sync_data().expect("fdatasync a");
    fx.lose();
    assert_eq!(read(&a), b"AAAA");
    assert_eq!(read(&b), b"");
}

#[test]
fn overwrite_in_the_middle_of_a_synced_file_is_undone() {
    let fx = mount_or_skip!();
    let p = fx.p("data");
    let old: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    write_synced(&p, &old);
    sync_dir(&fx.m);
    let f = OpenOptions::new().write(true).open(&p).expect("open");
    f.write_all_at(&[0xEE; 5000], 6000).expect("overwrite");
    f.write_all_at(b"tail", 19_998).expect("overwrite the end");
    assert_ne!(read(&p), old);
    fx.lose();
    assert_eq!(read(&p), old);
}

#[test]
fn truncation_is_undone_unless_synced() {
    let fx = mount_or_skip!();
    let p = fx.p("t");
    let old: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
    write_synced(&p, &old);
    sync_dir(&fx.m);

    // Shrink, then extend: both undone.
    let f = OpenOptions::new().write(true).open(&p).expect("open");
    f.set_len(10).expect("shrink");
    f.set_len(50_000).expect("extend");
    assert_eq!(fs::metadata(&p).expect("stat").len(), 50_000);
    fx.lose();
    assert_eq!(read(&p), old);

    // truncate(2) by path and O_TRUNC too.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .expect("O_TRUNC");
    assert_eq!(fs::metadata(&p).expect("stat").len(), 0);
    fx.lose();
    assert_eq!(read(&p), old);

    // truncate(2) by path (no open file).
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 3) }, 0);
    assert_eq!(read(&p), &old[..3]);
    fx.lose();
    assert_eq!(read(&p), old);

    // Synced: kept.
    f.set_len(100).expect("shrink");
    f.sync_all().expect("fsync");
    f.set_len(200).expect("extend");
    fx.lose();
    assert_eq!(read(&p), &old[..100]);
}

#[test]
fn fallocate_extension_is_undone() {
    let fx = mount_or_skip!();
    let p = fx.p("f");
    write_synced(&p, b"0123456789");
    sync_dir(&fx.m);
    let f = OpenOptions::new().write(true).open(&p).expect("open");
    // SAFETY: a valid descriptor; the kernel checks the range.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(rc, 0, "fallocate: {}", io::Error::last_os_error());
    assert_eq!(fs::metadata(&p).expect("stat").len(), 1 << 20);
    fx.lose();
    assert_eq!(read(&p), b"0123456789");
}

#[test]
fn created_and_fsynced_file_vanishes_unless_its_directory_is_fsynced() {
    let fx = mount_or_skip!();
    write_synced(&fx.p("lost"), b"data");
    fx.lose();
    assert!(!fx.p("lost").exists(), "no fsync of the directory: gone");

    write_synced(&fx.p("kept"), b"data");
    sync_dir(&fx.m);
    fx.lose();
    assert_eq!(read(&fx.p("kept")), b"data");
}

#[test]
fn a_durable_entry_without_durable_data_is_empty() {
    let fx = mount_or_skip!();
    let p = fx.p("new");
    File::create(&p).expect("create");
    sync_dir(&fx.m);
    append(&p, b"never synced");
    fx.lose();
    assert_eq!(read(&p), b"");
}

#[test]
fn unlinked_file_comes_back_with_its_content() {
    let fx = mount_or_skip!();
    let p = fx.p("victim");
    write_synced(&p, b"precious");
    sync_dir(&fx.m);
    fs::remove_file(&p).expect("unlink");
    assert!(!p.exists());
    let lost = fx.lose();
    assert_eq!(lost.entries, 1);
    assert_eq!(read(&p), b"precious");

    fs::remove_file(&p).expect("unlink");
    sync_dir(&fx.m);
    fx.lose();
    assert!(!p.exists(), "a durable unlink stays");
}

#[test]
fn rename_over_an_existing_file_is_undone_without_dir_fsync() {
    let fx = mount_or_skip!();
    let (a, b) = (fx.p("a"), fx.p("b"));
    write_synced(&a, b"A");
    write_synced(&b, b"B");
    sync_dir(&fx.m);
    fs::rename(&a, &b).expect("rename");
    assert!(!a.exists());
    assert_eq!(read(&b), b"A");
    fx.lose();
    assert_eq!(read(&a), b"A");
    assert_eq!(read(&b), b"B");
}

#[test]
fn atomic_replace_survives_entirely() {
    let fx = mount_or_skip!();
    let dir = fx.p("meta");
    fs::create_dir(&dir).expect("mkdir");
    sync_dir(&fx.m);
    let target = dir.join("state.json");
    write_synced(&target, b"{\"v\":1}");
    sync_dir(&dir);

    let tmp = dir.join("state.json.tmp");
    write_synced(&tmp, b"{\"v\":2}");
    fs::rename(&tmp, &target).expect("rename");
    sync_dir(&dir);
    fx.lose();
    assert_eq!(read(&target), b"{\"v\":2}");
    assert!(!tmp.exists());

    // The same without the final directory fsync: the old version.
    write_synced(&tmp, b"{\"v\":3}");
    fs::rename(&tmp, &target).expect("rename");
    fx.lose();
    assert_eq!(read(&target), b"{\"v\":2}");
    assert!(!tmp.exists());
}

#[test]
fn mkdir_without_parent_fsync_vanishes_with_its_content() {
    let fx = mount_or_skip!();
    let d = fx.p("d");
    fs::create_dir(&d).expect("mkdir");
    write_synced(&d.join("f"), b"x");
    sync_dir(&d);
    fx.lose();
    assert!(!d.exists());

    fs::create_dir(&d).expect("mkdir again");
    sync_dir(&fx.m);
    fx.lose();
    assert!(d.is_dir());
}

#[test]
fn cross_directory_rename_needs_both_directories_fsynced() {
    let fx = mount_or_skip!();
    let (x, y) = (fx.p("x"), fx.p("y"));
    fs::create_dir(&x).expect("x");
    fs::create_dir(&y).expect("y");
    write_synced(&x.join("f"), b"F");
    sync_dir(&x);
    sync_dir(&fx.m);

    fs::rename(x.join("f"), y.join("g")).expect("rename");
    sync_dir(&y);
    fx.lose();
    assert_eq!(read(&x.join("f")), b"F");
    assert!(!y.join("g").exists());

    fs::rename(x.join("f"), y.join("g")).expect("rename");
    sync_dir(&y);
    sync_dir(&x);
    fx.lose();
    assert!(!x.join("f").exists());
    assert_eq!(read(&y.join("g")), b"F");
}

#[test]
fn checkpoint_makes_everything_survive() {
    let fx = mount_or_skip!();
    fs::create_dir(fx.p("d")).expect("mkdir");
    fs::write(fx.p("d/f"), b"unsynced").expect("write");
    fs::write(fx.p("g"), b"also").expect("write");
    let done = fx.fs().checkpoint().expect("checkpoint");
    assert_eq!(
        done,
        Summary {
            files: 2,
            bytes: 12,
            entries: 3
        }
    );
    assert_eq!(fx.fs().status(), Summary::default());
    assert_eq!(fx.lose(), Summary::default());
    assert_eq!(read(&fx.p("d/f")), b"unsynced");
    assert_eq!(read(&fx.p("g")), b"also");
}

#[test]
fn status_counts_what_is_pending() {
    let fx = mount_or_skip!();
    assert_eq!(fx.fs().status(), Summary::default());
    fs::write(fx.p("a"), b"12345").expect("a");
    fs::create_dir(fx.p("d")).expect("d");
    assert_eq!(
        fx.fs().status(),
        Summary {
            files: 1,
            bytes: 5,
            entries: 2
        }
    );
    File::open(fx.p("a")).expect("a").sync_all().expect("fsync");
    assert_eq!(
        fx.fs().status(),
        Summary {
            files: 0,
            bytes: 0,
            entries: 2
        }
    );
    sync_dir(&fx.m);
    assert_eq!(fx.fs().status(), Summary::default());
}

#[test]
fn torn_mode_keeps_the_synced_content_plus_a_prefix() {
    let fx = mount_or_skip!();
    let p = fx.p("wal");
    let mut cut_inside = false;
    for seed in 0..12u64 {
        write_synced(&p, b"SYNCED|");
        sync_dir(&fx.m);
        let mut stream = b"SYNCED|".to_vec();
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        for i in 0..6u8 {
            let rec = vec![b'a' + i; 300 + 50 * i as usize];
            f.write_all(&rec).expect("append");
            stream.extend_from_slice(&rec);
        }
        drop(f);
        let lost = fx.fs().lose_unsynced_torn(seed).expect("torn");
        let now = read(&p);
        assert!(now.starts_with(b"SYNCED|"), "seed {seed}: synced part kept");
        assert!(now.len() < stream.len(), "seed {seed}: something is lost");
        assert_eq!(
            now[..],
            stream[..now.len()],
            "seed {seed}: a prefix, no garbage"
        );
        assert_eq!(lost.bytes, (stream.len() - now.len()) as u64);
        cut_inside |= now.len() > 7;
    }
    assert!(cut_inside, "some seed keeps part of the unsynced stream");
}

#[test]
fn o_dsync_writes_are_durable_when_they_return() {
    let fx = mount_or_skip!();
    let p = fx.p("j");
    File::create(&p).expect("create");
    sync_dir(&fx.m);
    let mut f = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_DSYNC)
        .open(&p)
        .expect("open O_DSYNC");
    f.write_all(b"durable").expect("write");
    assert_eq!(fx.fs().status().files, 0);
    fx.lose();
    assert_eq!(read(&p), b"durable");
}

#[test]
fn flock_works_on_the_mount() {
    let fx = mount_or_skip!();
    let dir = fx.p("data");
    fs::create_dir(&dir).expect("mkdir");
    let lock = dir.join("LOCK");
    let flock = |f: &File| {
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let a = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .expect("a");
    let b = OpenOptions::new().write(true).open(&lock).expect("b");
    flock(&a).expect("first flock");
    assert_eq!(errno(flock(&b)), libc::EWOULDBLOCK);
    drop(a);
    flock(&b).expect("flock after release");

    let d1 = File::open(&dir).expect("dir");
    let d2 = File::open(&dir).expect("dir");
    flock(&d1).expect("flock dir");
    assert_eq!(errno(flock(&d2)), libc::EWOULDBLOCK);
}

#[test]
fn lose_after_renames_restores_the_right_inodes() {
    let fx = mount_or_skip!();
    let d = fx.p("d");
    fs::create_dir(&d).expect("mkdir");
    write_synced(&d.join("a"), b"AAAA");
    write_synced(&d.join("b"), b"BBBB");
    sync_dir(&d);
    sync_dir(&fx.m);
    let ino_a = fs::metadata(d.join("a")).expect("a").ino();
    let ino_b = fs::metadata(d.join("b")).expect("b").ino();

    // Swap the names through a third, scribble over both, rename the
    // directory itself (durably), then cut the power.
    fs::rename(d.join("a"), d.join("c")).expect("a->c");
    fs::rename(d.join("b"), d.join("a")).expect("b->a");
    fs::rename(d.join("c"), d.join("b")).expect("c->b");
    let f = append(&d.join("a"), b"-more-b");
    f.write_all_at(b"XX", 0).expect("overwrite");
    append(&d.join("b"), b"-more-a");
    fs::rename(&d, fx.p("e")).expect("d->e");
    sync_dir(&fx.m);
    fx.lose();

    let e = fx.p("e");
    assert!(!d.exists());
    assert_eq!(read(&e.join("a")), b"AAAA");
    assert_eq!(read(&e.join("b")), b"BBBB");
    assert!(!e.join("c").exists());
    assert_eq!(fs::metadata(e.join("a")).expect("a").ino(), ino_a);
    assert_eq!(fs::metadata(e.join("b")).expect("b").ino(), ino_b);
}

#[test]
fn an_open_unlinked_file_keeps_working() {
    let fx = mount_or_skip!();
    let p = fx.p("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .expect("create");
    fs::remove_file(&p).expect("unlink");
    f.write_all(b"still here").expect("write");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    assert_eq!(f.read_at(&mut [0u8; 5], 0).expect("pread"), 5);
    assert_eq!(f.metadata().expect("fstat").len(), 10);
    f.sync_all().expect("fsync");
    drop(f);
    fx.lose();
    assert!(!p.exists(), "never durably created");
}

#[test]
fn unsupported_operations_fail_cleanly() {
    let fx = mount_or_skip!();
    let p = fx.p("f");
    fs::write(&p, b"x").expect("write");
    assert_eq!(
        errno(std::os::unix::fs::symlink("f", fx.p("s"))),
        libc::EPERM
    );
    assert_eq!(errno(fs::hard_link(&p, fx.p("h"))), libc::EPERM);

    let exchange = |a: &Path, b: &Path| {
        let (a, b) = (
            std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).expect("a"),
            std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).expect("b"),
        );
        // SAFETY: NUL-terminated paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    fs::write(fx.p("g"), b"y").expect("write");
    assert_eq!(errno(exchange(&p, &fx.p("g"))), libc::EINVAL);

    // RENAME_NOREPLACE is supported.
    let noreplace = |a: &Path, b: &Path| {
        let (a, b) = (
            std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).expect("a"),
            std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).expect("b"),
        );
        // SAFETY: NUL-terminated paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    assert_eq!(errno(noreplace(&p, &fx.p("g"))), libc::EEXIST);
    noreplace(&p, &fx.p("h")).expect("noreplace to a new name");

    // Directory errors come out as on a local filesystem.
    fs::create_dir(fx.p("d")).expect("mkdir");
    fs::write(fx.p("d/x"), b"").expect("write");
    assert_eq!(errno(fs::remove_dir(fx.p("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_file(fx.p("d"))), libc::EISDIR);
    assert_eq!(errno(fs::create_dir(fx.p("d"))), libc::EEXIST);
}

#[test]
fn the_stash_is_hidden_and_removed_at_unmount() {
    let mut fx = mount_or_skip!();
    fs::write(fx.p("a"), b"x").expect("write");
    fs::remove_file(fx.p("a")).expect("unlink");
    let names: Vec<_> = fs::read_dir(&fx.m)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(!fx.p(leasehold_lazyfs::STASH_DIR).exists());
    assert_eq!(
        errno(fs::create_dir(fx.p(leasehold_lazyfs::STASH_DIR))),
        libc::EACCES
    );
    assert!(fx.b.join(leasehold_lazyfs::STASH_DIR).is_dir());
    fx.fs.take().expect("mounted").unmount().expect("unmount");
    assert!(!fx.b.join(leasehold_lazyfs::STASH_DIR).exists());
}

#[test]
fn other_users_can_use_the_mount_and_own_what_they_create() {
    let fx = mount_or_skip!();
    let shared = fx.p("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).expect("chmod");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 027 && echo hi > \"$1/f\" && mkdir \"$1/sub\" && cat \"$1/f\"")
        .arg("sh")
        .arg(&shared)
        .uid(4242)
        .gid(4243)
        .output()
        .expect("run sh as another user");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(status.stdout, b"hi\n");
    for (name, mode) in [("f", 0o640), ("sub", 0o750)] {
        let m = fs::metadata(shared.join(name)).expect("stat");
        assert_eq!((m.uid(), m.gid()), (4242, 4243), "{name}");
        assert_eq!(m.mode() & 0o7777, mode, "{name}");
    }

    // Their files stay theirs: the kernel checks permissions.
    fs::set_permissions(shared.join("f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let denied = std::process::Command::new("cat")
        .arg(shared.join("f"))
        .uid(5000)
        .output()
        .expect("run cat");
    assert!(!denied.status.success());
}

#[test]
fn metadata_passes_through_and_is_not_undone() {
    let fx = mount_or_skip!();
    let p = fx.p("m");
    write_synced(&p, b"x");
    sync_dir(&fx.m);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o751)).expect("chmod");
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(&p)
        .expect("open")
        .set_modified(when)
        .expect("futimens");
    fx.lose();
    let m = fs::metadata(&p).expect("stat");
    assert_eq!(m.mode() & 0o7777, 0o751);
    assert_eq!(m.modified().expect("mtime"), when);
}

#[test]
fn existing_symlinks_can_be_read() {
    let fx = mount_or_skip!();
    std::os::unix::fs::symlink("some/target", fx.b.join("link")).expect("symlink in backing");
    assert_eq!(
        fs::read_link(fx.p("link")).expect("readlink"),
        Path::new("some/target")
    );
    assert!(fs::symlink_metadata(fx.p("link"))
        .expect("lstat")
        .file_type()
        .is_symlink());
}

#[test]
fn concurrent_writers_keep_exactly_their_synced_prefixes() {
    let fx = mount_or_skip!();
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let p = fx.p(&format!("w{w}"));
            File::create(&p).expect("create");
            p
        })
        .collect();
    sync_dir(&fx.m);
    let synced: Vec<(PathBuf, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(w, p)| {
                s.spawn(move || {
                    let mut f = OpenOptions::new().append(true).open(p).expect("open");
                    let mut written = Vec::new();
                    let mut synced = 0;
                    for i in 0..150u32 {
                        let rec = format!("<{w}:{i}:{}>", "x".repeat((i % 40) as usize));
                        f.write_all(rec.as_bytes()).expect("append");
                        written.extend_from_slice(rec.as_bytes());
                        if i % 7 == 0 {
                            f.sync_data().expect("fdatasync");
                            synced = written.len();
                        }
                    }
                    written.truncate(synced);
                    (p.clone(), written)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    fx.lose();
    for (p, expected) in synced {
        assert_eq!(read(&p), expected, "{}", p.display());
    }
}
