//! Unit tests of the WAL: readability before durability, durability before
//! completion, recovery after a restart, an interrupted write, damage, and
//! segment rotation and removal.

use super::*;
use crate::lease::{Command, LeaseKey, Proposal, Timestamp};
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(term: u64, index: u64, holder_len: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Proposal::single(
            Timestamp::from_micros(index as i64),
            1,
            Command::Renew {
                key: LeaseKey::new("ns", "a"),
                holder: "h".repeat(holder_len),
                fencing_token: 1,
            },
            None,
        )),
    }
}

async fn append(wal: &Wal, entries: Vec<Entry>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    wal.append(entries, Done::Notify(tx)).unwrap();
    rx.await.unwrap().unwrap();
}

fn indexes(wal: &Wal) -> Vec<u64> {
    wal.entries(..)
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

fn newest_segment(dir: &Path) -> PathBuf {
    segment::list(&dir.join("wal")).unwrap().pop().unwrap().1
}

#[tokio::test]
async fn appended_entries_are_readable_at_once_and_complete_only_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    let before = wal.syncs();
    let (tx, rx) = tokio::sync::oneshot::channel();
    wal.append(vec![entry(1, 1, 4), entry(1, 2, 4)], Done::Notify(tx))
        .unwrap();
    // Readable when append returns, whether or not it is on disk yet.
    assert_eq!(indexes(&wal), vec![1, 2]);
    rx.await.unwrap().unwrap();
    assert!(wal.syncs() > before, "completion comes after an fdatasync");
    // What was completed is in the file.
    let data = std::fs::read(newest_segment(dir.path())).unwrap();
    let (found, tail) = segment::scan(&data, 1).unwrap();
    assert_eq!(tail, segment::Tail::Clean);
    assert_eq!(found.iter().filter(|r| r.kind == Kind::Entry).count(), 2);
    assert_eq!(wal.log_state().1.map(|l| l.index), Some(2));
}

#[tokio::test]
async fn everything_is_recovered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(3, 2);
    {
        let wal = Wal::open(dir.path()).unwrap();
        append(&wal, (1..=10).map(|i| entry(1, i, 4)).collect()).await;
        wal.save_vote(&vote).await.unwrap();
        // A follower's conflict: 8.. replaced by entries of term 2.
        wal.truncate(8).await.unwrap();
        append(&wal, (8..=12).map(|i| entry(2, i, 4)).collect()).await;
        wal.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .unwrap();
        wal.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 9)));
        append(&wal, vec![entry(2, 13, 4)]).await;
    }
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(indexes(&wal), (4..=13).collect::<Vec<_>>());
    let terms: Vec<u64> = wal
        .entries(7..=9)
        .unwrap()
        .iter()
        .map(|e| e.log_id.leader_id.term)
        .collect();
    assert_eq!(terms, vec![1, 2, 2]);
    assert_eq!(wal.vote(), Some(vote));
    assert_eq!(wal.committed().map(|c| c.index), Some(9));
    assert_eq!(wal.log_state().0.map(|l| l.index), Some(3));
}

#[tokio::test]
async fn a_write_cut_short_is_dropped_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        append(&wal, (1..=5).map(|i| entry(1, i, 4)).collect()).await;
    }
    // The machine stopped in the middle of the last record.
    let path = newest_segment(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(indexes(&wal), vec![1, 2, 3, 4]);
    // The file ends at the last whole record, and appends continue.
    append(&wal, vec![entry(1, 5, 4), entry(1, 6, 4)]).await;
    drop(wal);
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(indexes(&wal), vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn garbage_at_the_end_is_an_interrupted_write_but_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        append(&wal, (1..=3).map(|i| entry(1, i, 4)).collect()).await;
    }
    // Zeros where the file grew but its data never reached the disk.
    let path = newest_segment(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &data).unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(indexes(&wal), vec![1, 2, 3]);
    drop(wal);

    // A damaged record followed by more than a batch of data: not an
    // interrupted write. Refused, naming the file and what to do.
    let mut data = std::fs::read(&path).unwrap();
    let first_record = segment::HEADER_LEN as usize;
    data[first_record + record::HEADER_LEN + 2] ^= 0x55;
    data.extend(std::iter::repeat_n(7u8, MAX_BATCH_BYTES + 1024));
    std::fs::write(&path, &data).unwrap();
    let err = match Wal::open(dir.path()) {
        Ok(_) => panic!("a damaged log was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("member replace"), "{err}");
}

#[tokio::test]
async fn segments_rotate_and_purged_ones_are_removed_keeping_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(5, 1);
    {
        let wal = Wal::open_with(dir.path(), 4096).unwrap();
        wal.save_vote(&vote).await.unwrap();
        for i in 1..=40 {
            append(&wal, vec![entry(1, i, 200)]).await;
        }
        let segments = segment::list(&dir.path().join("wal")).unwrap().len();
        assert!(segments > 3, "{segments} segments");
        wal.purge(LogId::new(CommittedLeaderId::new(1, 1), 35))
            .unwrap();
        // Removal happens after the purge record is synced.
        append(&wal, vec![entry(1, 41, 200)]).await;
        let left = segment::list(&dir.path().join("wal")).unwrap().len();
        assert!(left < segments, "{left} of {segments} segments left");
        assert_eq!(indexes(&wal), (36..=41).collect::<Vec<_>>());
    }
    // The vote survives the removal of the segment it was first written to.
    let wal = Wal::open_with(dir.path(), 4096).unwrap();
    assert_eq!(wal.vote(), Some(vote));
    assert_eq!(indexes(&wal), (36..=41).collect::<Vec<_>>());
}

#[tokio::test]
async fn old_entries_are_read_back_from_disk_once_out_of_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    append(&wal, (1..=3).map(|i| entry(1, i, 10)).collect()).await;
    drop(wal);
    // After a restart nothing is cached: every read goes to the segment.
    let wal = Wal::open(dir.path()).unwrap();
    let got = wal.entries(2..=3).unwrap();
    assert_eq!(got, vec![entry(1, 2, 10), entry(1, 3, 10)]);
}

#[test]
fn a_data_directory_is_used_by_one_wal_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let held = Wal::open(dir.path()).unwrap();
    let err = match Wal::open(dir.path()) {
        Ok(_) => panic!("opened twice"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another leasehold process"), "{err}");
    drop(held);
}
