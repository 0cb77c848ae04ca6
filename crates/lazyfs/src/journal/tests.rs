//! Unit tests of the undo journal on a plain directory (no FUSE): what is
//! durable after which sync, and what `lose-unsynced` takes back.

use super::*;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    journal: Journal,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let journal = Journal::new(&root, false).expect("journal");
    Fixture {
        _tmp: tmp,
        root,
        journal,
    }
}

fn dir(path: &Path) -> DirRef {
    let fd = sys::open_path(path).expect("open dir");
    let st = sys::fstat(fd.as_fd()).expect("fstat");
    DirRef {
        key: sys::key_of(&st),
        fd: Arc::new(fd),
    }
}

fn key(path: &Path) -> Key {
    let m = fs::metadata(path).expect("metadata");
    (m.dev(), m.ino())
}

fn opener(path: &Path) -> impl FnOnce() -> io::Result<File> + '_ {
    move || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    }
}

fn write(j: &mut Journal, path: &Path, off: u64, data: &[u8]) {
    let n = j.write(key(path), opener(path), off, data).expect("write");
    assert_eq!(n, data.len());
}

#[test]
fn overwrite_and_append_are_undone() {
    let mut f = fixture();
    let p = f.root.join("a");
    let old: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&p, &old).expect("seed");
    write(&mut f.journal, &p, 5000, &[0xAA; 3000]);
    write(&mut f.journal, &p, 9000, &[0xBB; 5000]);
    write(&mut f.journal, &p, 4095, &[0xCC; 2]);
    assert_eq!(
        f.journal.status(),
        Summary {
            files: 1,
            bytes: 8002,
            entries: 0
        }
    );
    let lost = f.journal.lose(None).expect("lose");
    assert_eq!(lost.bytes, 8002);
    assert_eq!(fs::read(&p).expect("read"), old);
    assert_eq!(f.journal.status(), Summary::default());
}

#[test]
fn truncation_is_undone_unless_synced() {
    let mut f = fixture();
    let p = f.root.join("a");
    let old: Vec<u8> = (0..9000u32).map(|i| (i % 13) as u8).collect();
    fs::write(&p, &old).expect("seed");
    let k = key(&p);
    f.journal.set_len(k, opener(&p), 100).expect("shrink");
    f.journal.set_len(k, opener(&p), 20_000).expect("extend");
    write(&mut f.journal, &p, 6000, b"new");
    f.journal.lose(None).expect("lose");
    assert_eq!(fs::read(&p).expect("read"), old);

    f.journal.set_len(k, opener(&p), 100).expect("shrink");
    f.journal.file_synced(k);
    write(&mut f.journal, &p, 200, b"x");
    f.journal.lose(None).expect("lose");
    assert_eq!(fs::read(&p).expect("read"), &old[..100]);
}

#[test]
fn punch_hole_is_undone() {
    let mut f = fixture();
    let p = f.root.join("a");
    fs::write(&p, vec![7u8; 3 * PAGE as usize]).expect("seed");
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    match f.journal.allocate(key(&p), opener(&p), mode, 100, PAGE) {
        Ok(()) => {}
        // Some filesystems (tmpfs on old kernels) cannot punch holes.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
        Err(e) => panic!("fallocate: {e}"),
    }
    assert_eq!(fs::read(&p).expect("read")[200], 0);
    f.journal.lose(None).expect("lose");
    assert_eq!(fs::read(&p).expect("read"), vec![7u8; 3 * PAGE as usize]);
}

#[test]
fn torn_keeps_a_prefix_of_the_unsynced_stream() {
    for seed in 0..40 {
        let mut f = fixture();
        let p = f.root.join("log");
        fs::write(&p, b"synced|").expect("seed");
        let mut stream = b"synced|".to_vec();
        for i in 0..5u8 {
            let rec = vec![b'a' + i; 100 + i as usize * 37];
            write(&mut f.journal, &p, stream.len() as u64, &rec);
            stream.extend_from_slice(&rec);
        }
        let lost = f.journal.lose(Some(seed)).expect("lose");
        let now = fs::read(&p).expect("read");
        assert!(now.len() >= 7 && now.len() < stream.len(), "seed {seed}");
        assert_eq!(now[..], stream[..now.len()], "seed {seed}");
        assert_eq!(lost.bytes, (stream.len() - now.len()) as u64);
    }
}

#[test]
fn created_entry_vanishes_unless_dir_synced() {
    let mut f = fixture();
    let root = dir(&f.root);
    fs::write(f.root.join("a"), b"x").expect("create");
    f.journal.created(&root, OsStr::new("a"));
    f.journal.lose(None).expect("lose");
    assert!(!f.root.join("a").exists());

    fs::write(f.root.join("b"), b"x").expect("create");
    f.journal.created(&root, OsStr::new("b"));
    f.journal.dir_synced(&root).expect("fsyncdir");
    assert_eq!(f.journal.status().entries, 0);
    f.journal.lose(None).expect("lose");
    assert!(f.root.join("b").exists());
}

#[test]
fn unlink_and_rename_over_come_back() {
    let mut f = fixture();
    let root = dir(&f.root);
    fs::write(f.root.join("a"), b"A").expect("a");
    fs::write(f.root.join("b"), b"B").expect("b");
    f.journal
        .rename(&root, OsStr::new("a"), &root, OsStr::new("b"), false)
        .expect("rename");
    assert_eq!(fs::read(f.root.join("b")).expect("b"), b"A");
    f.journal.unlink(&root, OsStr::new("b")).expect("unlink");
    assert!(!f.root.join("b").exists());
    f.journal.lose(None).expect("lose");
    assert_eq!(fs::read(f.root.join("a")).expect("a"), b"A");
    assert_eq!(fs::read(f.root.join("b")).expect("b"), b"B");
    assert_eq!(
        fs::read_dir(f.root.join(STASH_DIR)).expect("stash").count(),
        0
    );
}

#[test]
fn cross_directory_rename_needs_both_directories() {
    let mut f = fixture();
    fs::create_dir(f.root.join("x")).expect("x");
    fs::create_dir(f.root.join("y")).expect("y");
    fs::write(f.root.join("x/f"), b"F").expect("f");
    let (x, y) = (dir(&f.root.join("x")), dir(&f.root.join("y")));
    f.journal
        .rename(&x, OsStr::new("f"), &y, OsStr::new("g"), false)
        .expect("rename");
    f.journal.dir_synced(&y).expect("sync y");
    assert_eq!(f.journal.status().entries, 1);
    f.journal.lose(None).expect("lose");
    assert!(f.root.join("x/f").exists() && !f.root.join("y/g").exists());

    f.journal
        .rename(&x, OsStr::new("f"), &y, OsStr::new("g"), false)
        .expect("rename");
    f.journal.dir_synced(&y).expect("sync y");
    f.journal.dir_synced(&x).expect("sync x");
    f.journal.lose(None).expect("lose");
    assert!(!f.root.join("x/f").exists() && f.root.join("y/g").exists());
}

#[test]
fn a_durable_later_change_of_a_name_commits_the_earlier_ones() {
    let mut f = fixture();
    fs::create_dir(f.root.join("x")).expect("x");
    fs::create_dir(f.root.join("y")).expect("y");
    fs::write(f.root.join("x/f"), b"F").expect("f");
    let (x, y) = (dir(&f.root.join("x")), dir(&f.root.join("y")));
    f.journal
        .rename(&x, OsStr::new("f"), &y, OsStr::new("f"), false)
        .expect("rename");
    f.journal.unlink(&y, OsStr::new("f")).expect("unlink");
    f.journal.dir_synced(&y).expect("sync y");
    assert_eq!(f.journal.status().entries, 0);
    f.journal.lose(None).expect("lose");
    assert!(!f.root.join("x/f").exists() && !f.root.join("y/f").exists());
}

#[test]
fn changes_inside_a_renamed_directory_are_undone_in_place() {
    let mut f = fixture();
    fs::create_dir(f.root.join("d")).expect("d");
    let root = dir(&f.root);
    let d = dir(&f.root.join("d"));
    fs::write(f.root.join("d/f"), b"F").expect("f");
    f.journal.created(&d, OsStr::new("f"));
    f.journal
        .rename(&root, OsStr::new("d"), &root, OsStr::new("e"), false)
        .expect("rename");
    f.journal.dir_synced(&root).expect("sync root");
    f.journal.lose(None).expect("lose");
    assert!(f.root.join("e").is_dir());
    assert!(!f.root.join("e/f").exists());
}

#[test]
fn rmdir_checks_and_undo() {
    let mut f = fixture();
    let root = dir(&f.root);
    fs::create_dir(f.root.join("d")).expect("d");
    fs::write(f.root.join("d/f"), b"F").expect("f");
    let e = f.journal.rmdir(&root, OsStr::new("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    let e = f.journal.unlink(&root, OsStr::new("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    let d = dir(&f.root.join("d"));
    f.journal.unlink(&d, OsStr::new("f")).expect("unlink");
    f.journal.rmdir(&root, OsStr::new("d")).expect("rmdir");
    assert!(!f.root.join("d").exists());
    f.journal.lose(None).expect("lose");
    assert_eq!(fs::read(f.root.join("d/f")).expect("f"), b"F");
}

#[test]
fn past_the_redo_limit_a_torn_loss_keeps_nothing_unsynced() {
    let mut f = fixture();
    let p = f.root.join("big");
    fs::write(&p, b"synced").expect("seed");
    let chunk = vec![1u8; 1 << 20];
    for i in 0..=(REDO_LIMIT >> 20) {
        write(&mut f.journal, &p, 6 + (i << 20), &chunk);
    }
    let lost = f.journal.lose(Some(3)).expect("lose");
    assert_eq!(lost.bytes, REDO_LIMIT + (1 << 20));
    assert_eq!(fs::read(&p).expect("read"), b"synced");
}

#[test]
fn close_makes_everything_durable_and_removes_the_stash() {
    let mut f = fixture();
    let root = dir(&f.root);
    fs::write(f.root.join("a"), b"A").expect("a");
    f.journal.created(&root, OsStr::new("a"));
    f.journal.unlink(&root, OsStr::new("a")).expect("unlink");
    f.journal.close().expect("close");
    assert!(!f.root.join(STASH_DIR).exists());
    assert_eq!(f.journal.lose(None).expect("lose"), Summary::default());
    assert!(!f.root.join("a").exists());
}

#[test]
fn checkpoint_makes_everything_durable() {
    let mut f = fixture();
    let root = dir(&f.root);
    let p = f.root.join("a");
    fs::write(&p, b"").expect("a");
    f.journal.created(&root, OsStr::new("a"));
    write(&mut f.journal, &p, 0, b"hello");
    fs::write(f.root.join("b"), b"B").expect("b");
    f.journal.unlink(&root, OsStr::new("b")).expect("unlink");
    let done = f.journal.checkpoint().expect("checkpoint");
    assert_eq!(
        done,
        Summary {
            files: 1,
            bytes: 5,
            entries: 2
        }
    );
    assert_eq!(f.journal.lose(None).expect("lose"), Summary::default());
    assert_eq!(fs::read(&p).expect("a"), b"hello");
    assert!(!f.root.join("b").exists());
}
