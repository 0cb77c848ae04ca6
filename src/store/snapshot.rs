//! Snapshot files: the replicated state at one log index, on disk.
//!
//! A node keeps its latest snapshot in `<data-dir>/snapshots/`, one file
//! named after the snapshot's last log index. Layout:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `LHSNAP\r\n` |
//! | 4 | on-disk format version, u32 big-endian ([`super::FORMAT_VERSION`]) |
//! | n | bincode body: openraft's `SnapshotMeta`, the clock, the revision, the history's compacted point, then the leases, the history events, the request-id records and the tombstones as sequences |
//! | 4 | CRC-32 of everything before it, u32 big-endian |
//!
//! The body is written by streaming over a consistent view of the state
//! (persistent maps), so taking a snapshot neither stops writes nor copies
//! the state into one buffer first. A file is written under a temporary
//! name, `fdatasync`ed, renamed into place, and the directory is synced;
//! only then may openraft purge the log it replaces. The same bytes are
//! what a follower receives when it installs the snapshot.

use crate::lease::{Event, Lease};
use crate::state::dedup::Record;
use crate::state::{Parts, SmClock, State};
use crate::types::SnapshotMeta;
use serde::de::DeserializeOwned;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde::Deserialize;
use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::FORMAT_VERSION;

const MAGIC: &[u8; 8] = b"LHSNAP\r\n";
const HEADER: usize = 12;
const TRAILER: usize = 4;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a Leasehold snapshot.
    #[error("not a Leasehold snapshot (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("snapshot has format version {0}, this binary reads {FORMAT_VERSION}")]
    Version(u32),
    /// Cut short or damaged.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A sequence serialized by iterating, without collecting it first.
struct Seq<I>(RefCell<Option<I>>);

impl<I> Seq<I> {
    fn new(iter: I) -> Self {
        Seq(RefCell::new(Some(iter)))
    }
}

impl<I> Serialize for Seq<I>
where
    I: ExactSizeIterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let iter = self
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| serde::ser::Error::custom("sequence serialized twice"))?;
        s.collect_seq(iter)
    }
}

/// The body as written (borrowing the state).
struct BodyOut<'a, L, E, R> {
    meta: &'a SnapshotMeta,
    parts: Parts<Seq<L>, Seq<E>, Seq<R>>,
}

impl<'a, L, E, R> Serialize for BodyOut<'a, L, E, R>
where
    L: ExactSizeIterator<Item = &'a Lease>,
    E: ExactSizeIterator<Item = &'a Event>,
    R: ExactSizeIterator<Item = &'a Record>,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Body", 8)?;
        st.serialize_field("meta", self.meta)?;
        st.serialize_field("clock", &self.parts.clock)?;
        st.serialize_field("revision", &self.parts.revision)?;
        st.serialize_field("history_compacted", &self.parts.history_compacted)?;
        st.serialize_field("leases", &self.parts.leases)?;
        st.serialize_field("events", &self.parts.events)?;
        st.serialize_field("dedup", &self.parts.dedup)?;
        st.serialize_field("tombstones", &self.parts.tombstones)?;
        st.end()
    }
}

/// The body as read (field order as written above). The leases go
/// straight into the map as they are decoded: a snapshot of a million
/// leases is never also held as a list.
#[derive(Deserialize)]
struct BodyIn {
    meta: SnapshotMeta,
    clock: SmClock,
    revision: u64,
    history_compacted: u64,
    leases: LeaseMap,
    events: Vec<Event>,
    dedup: Vec<Record>,
    tombstones: Vec<std::sync::Arc<Lease>>,
}

/// The lease map, built while the sequence is decoded.
struct LeaseMap(crate::state::LeaseMap);

impl<'de> Deserialize<'de> for LeaseMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LeaseMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of leases")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LeaseMap, A::Error> {
                let mut map = crate::state::LeaseMap::new();
                while let Some(lease) = seq.next_element::<Lease>()? {
                    map.insert(
                        std::sync::Arc::new(lease.key.clone()),
                        std::sync::Arc::new(lease),
                    );
                }
                Ok(LeaseMap(map))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Computes the CRC of everything read through it.
struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: io::Read> io::Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Computes the CRC of everything written through it.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot of `state` at `meta` to `out`.
pub fn encode_into(
    state: &State,
    meta: &SnapshotMeta,
    out: impl Write,
) -> Result<(), SnapshotError> {
    let mut w = CrcWriter {
        inner: out,
        crc: crc32fast::Hasher::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_be_bytes())?;
    let p = state.parts();
    let body = BodyOut {
        meta,
        parts: Parts {
            clock: p.clock,
            revision: p.revision,
            history_compacted: p.history_compacted,
            leases: Seq::new(p.leases),
            events: Seq::new(p.events),
            dedup: Seq::new(p.dedup),
            tombstones: p.tombstones,
        },
    };
    bincode::serialize_into(&mut w, &body).map_err(|e| match *e {
        bincode::ErrorKind::Io(io) => SnapshotError::Io(io),
        other => SnapshotError::Corrupt(other.to_string()),
    })?;
    let crc = w.crc.clone().finalize();
    w.inner.write_all(&crc.to_be_bytes())?;
    w.inner.flush()?;
    Ok(())
}

/// The snapshot of `state` at `meta`, in memory.
pub fn encode(state: &State, meta: &SnapshotMeta) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::new();
    encode_into(state, meta, &mut out)?;
    Ok(out)
}

/// Reads a snapshot of `len` bytes from `r`: checks the header, decodes
/// the body as it streams by, then checks the CRC of everything read.
fn read_body<T: DeserializeOwned>(r: impl io::Read, len: u64) -> Result<T, SnapshotError> {
    if len < (HEADER + TRAILER) as u64 {
        return Err(SnapshotError::BadMagic);
    }
    let mut r = CrcReader {
        inner: r,
        crc: crc32fast::Hasher::new(),
    };
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let body_len = len - (HEADER + TRAILER) as u64;
    let mut body = io::Read::take(&mut r, body_len);
    let decoded: Result<T, _> = bincode::deserialize_from(&mut body);
    // Whatever the decoder made of it, the checksum decides first.
    io::copy(&mut body, &mut io::sink())?;
    let computed = r.crc.clone().finalize();
    let mut trailer = [0u8; TRAILER];
    r.inner
        .read_exact(&mut trailer)
        .map_err(|_| SnapshotError::Corrupt("cut short before its checksum".into()))?;
    if computed != u32::from_be_bytes(trailer) {
        return Err(SnapshotError::Corrupt(format!(
            "checksum mismatch over {} bytes (cut short or damaged)",
            len - TRAILER as u64
        )));
    }
    decoded.map_err(|e| SnapshotError::Corrupt(e.to_string()))
}

/// Decodes a snapshot of `len` bytes from `r`: its meta and the state.
pub fn decode_from(
    r: impl io::Read,
    len: u64,
    identity_gc_age_micros: i64,
) -> Result<(SnapshotMeta, State), SnapshotError> {
    let body: BodyIn = read_body(r, len)?;
    let state = State::from_map(
        identity_gc_age_micros,
        Parts {
            clock: body.clock,
            revision: body.revision,
            history_compacted: body.history_compacted,
            leases: body.leases.0,
            events: body.events,
            dedup: body.dedup,
            tombstones: body.tombstones,
        },
    );
    Ok((body.meta, state))
}

/// Decodes a snapshot held in memory.
pub fn decode(
    bytes: &[u8],
    identity_gc_age_micros: i64,
) -> Result<(SnapshotMeta, State), SnapshotError> {
    decode_from(bytes, bytes.len() as u64, identity_gc_age_micros)
}

/// Reads only the meta of a snapshot (still checking the whole file).
pub fn decode_meta(bytes: &[u8]) -> Result<SnapshotMeta, SnapshotError> {
    #[derive(Deserialize)]
    struct MetaOnly {
        meta: SnapshotMeta,
    }
    // bincode reads fields in order; the rest is skipped (and checksummed).
    let m: MetaOnly = read_body(bytes, bytes.len() as u64)?;
    Ok(m.meta)
}

/// Loads the snapshot file at `path`.
pub fn load(
    path: &Path,
    identity_gc_age_micros: i64,
) -> Result<(SnapshotMeta, State), SnapshotError> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    decode_from(
        io::BufReader::with_capacity(1 << 20, f),
        len,
        identity_gc_age_micros,
    )
}

/// The snapshot directory of a data directory.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

fn file_name(index: u64) -> String {
    format!("snapshot-{index:020}.lhsnap")
}

fn index_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".lhsnap")?
        .parse()
        .ok()
}

/// Syncs a directory, so a rename or removal in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes the snapshot of `state` into `dir` durably and removes older
/// snapshot files; returns the new file's path. Blocking: run it off the
/// async runtime.
pub fn write_file(
    dir: &Path,
    state: &State,
    meta: &SnapshotMeta,
) -> Result<PathBuf, SnapshotError> {
    write_with(dir, meta, |w| encode_into(state, meta, w))
}

/// Stores already encoded (and checked) snapshot bytes into `dir` durably,
/// as [`write_file`] does.
pub fn write_bytes(
    dir: &Path,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<PathBuf, SnapshotError> {
    write_with(dir, meta, |w| Ok(w.write_all(bytes)?))
}

fn write_with(
    dir: &Path,
    meta: &SnapshotMeta,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), SnapshotError>,
) -> Result<PathBuf, SnapshotError> {
    super::create_dir_durably(dir)?;
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let path = dir.join(file_name(index));
    let tmp = dir.join(format!("{}.tmp", file_name(index)));
    {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_data()?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    remove_older(dir, index)?;
    Ok(path)
}

/// Removes snapshot files older than `index` and leftover temporary files.
fn remove_older(dir: &Path, index: u64) -> io::Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.ends_with(".tmp") || index_of(&name).is_some_and(|i| i < index);
        if stale {
            fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The newest snapshot file in `dir`, if any.
pub fn latest(dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut best: Option<(u64, PathBuf)> = None;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(i) = index_of(&name.to_string_lossy()) {
            if best.as_ref().is_none_or(|(b, _)| i > *b) {
                best = Some((i, entry.path()));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Command, LeaseKey, Proposal, Timestamp};
    use crate::state::applier::EntryPosition;
    use crate::state::{ApplyOptions, EpochLeader};
    use openraft::{CommittedLeaderId, LogId};

    fn state_with_leases(n: u64) -> State {
        let mut s = State::new(0);
        for i in 1..=n {
            let p = Proposal::single(
                Timestamp::from_micros(i as i64),
                1,
                Command::Acquire {
                    key: LeaseKey::new("ns", format!("l{i}")),
                    holder: "h".into(),
                    duration_seconds: 10,
                    labels: Default::default(),
                },
                Some(format!("r{i}")),
            );
            let at = EntryPosition {
                index: i,
                leader: EpochLeader { term: 1, node: 1 },
            };
            s.apply_proposal(at, &p, &ApplyOptions::default());
        }
        s
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    /// A held lease deleted: its tombstone is in the snapshot, and the
    /// state read back refuses to create the lease again, as the original
    /// does.
    #[test]
    fn tombstones_survive_a_round_trip() {
        let mut s = state_with_leases(2);
        let at = |index| EntryPosition {
            index,
            leader: EpochLeader { term: 1, node: 1 },
        };
        let key = LeaseKey::new("ns", "l1");
        let delete = Proposal::single(
            Timestamp::from_micros(3),
            1,
            Command::Delete {
                key: key.clone(),
                resource_version: None,
                uid: None,
            },
            None,
        );
        s.apply_proposal(at(3), &delete, &ApplyOptions::default());
        assert_eq!(s.tombstone_count(), 1);
        let bytes = encode(&s, &meta(3)).unwrap();
        let (_, mut back) = decode(&bytes, 0).unwrap();
        assert_eq!(back.tombstone_count(), 1);
        let create = Proposal::single(
            Timestamp::from_micros(4),
            1,
            Command::Acquire {
                key,
                holder: "other".into(),
                duration_seconds: 10,
                labels: Default::default(),
            },
            None,
        );
        let (r, _) = back.apply_proposal(at(4), &create, &ApplyOptions::default());
        assert!(
            matches!(
                r.as_slice(),
                [crate::lease::CommandResponse::Refused(
                    crate::lease::LeaseError::Tombstoned { .. }
                )]
            ),
            "{r:?}"
        );
    }

    #[test]
    fn round_trip_keeps_everything_and_damage_is_refused() {
        let s = state_with_leases(5);
        let bytes = encode(&s, &meta(5)).unwrap();
        let (m, back) = decode(&bytes, 0).unwrap();
        assert_eq!(m, meta(5));
        assert_eq!(decode_meta(&bytes).unwrap(), meta(5));
        assert_eq!(back.lease_count(), 5);
        assert_eq!(back.revision(), 5);
        assert_eq!(back.clock(), s.clock());
        assert_eq!(back.dedup_len(), 5);
        assert_eq!(back.history_bounds(), s.history_bounds());
        assert_eq!(
            back.get(&LeaseKey::new("ns", "l3"))
                .map(|l| l.fencing_token),
            Some(3)
        );
        assert!(matches!(
            decode(b"nonsense-bytes-here", 0),
            Err(SnapshotError::BadMagic)
        ));
        let mut other = bytes.clone();
        other[11] = other[11].wrapping_add(1);
        assert!(matches!(decode(&other, 0), Err(SnapshotError::Version(_))));
        let cut = &bytes[..bytes.len() - 7];
        assert!(matches!(decode(cut, 0), Err(SnapshotError::Corrupt(_))));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            decode(&flipped, 0),
            Err(SnapshotError::Corrupt(_))
        ));
    }

    #[test]
    fn files_replace_older_ones_and_the_latest_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir_of(dir.path());
        assert_eq!(latest(&d).unwrap(), None);
        let s = state_with_leases(3);
        write_file(&d, &s, &meta(3)).unwrap();
        fs::write(d.join("snapshot-00000000000000000009.lhsnap.tmp"), b"junk").unwrap();
        let p = write_file(&d, &s, &meta(7)).unwrap();
        assert_eq!(latest(&d).unwrap(), Some(p.clone()));
        let names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![file_name(7)],
            "older and temporary files are gone"
        );
        let (m, back) = decode(&fs::read(p).unwrap(), 0).unwrap();
        assert_eq!(m, meta(7));
        assert_eq!(back.lease_count(), 3);
    }
}
