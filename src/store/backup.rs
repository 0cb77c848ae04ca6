//! Backup files (`leasehold snapshot save`) and seeding a data directory
//! from one (`leasehold snapshot restore`).
//!
//! Layout of a backup file:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `LHBACKUP` |
//! | 4 | backup file version, u32 big-endian ([`BACKUP_VERSION`]) |
//! | 4 | header length n, u32 big-endian (at most [`MAX_HEADER`]) |
//! | n | the header, JSON ([`BackupHeader`]) |
//! | m | the body: a snapshot exactly as `store::snapshot` encodes it (its own magic, format version and CRC-32) |
//! | 32 | sha256 of everything before it |
//!
//! Two checksums, because they guard different things: the sha256 covers
//! the whole file as saved (a flipped byte anywhere, a file cut short),
//! and the snapshot's CRC is what the decoder checks while it reads the
//! body. A file is read twice when restored: once to hash it, once to
//! decode the body; it is never held in memory whole.
//!
//! A restore writes a fresh data directory that a node opens like any
//! other: `node.json` (the new incarnation and cluster id) and one snapshot
//! file whose last log id is the backup's applied index with the default
//! leader id (term 0, node 0), and whose membership is the new members.
//! openraft starts from a snapshot-only directory by purging the log up to
//! it. The term is dropped because the new cluster's votes start at term 0
//! again: a log id of the old term would outrank every entry the new
//! cluster appends and break its elections. The index is kept because
//! request-id records are evicted by log index.

use super::node_meta::{self, NodeMetaFile};
use super::snapshot::{self, SnapshotError};
use super::FORMAT_VERSION;
use crate::state::State;
use crate::types::{Member, Membership, SnapshotMeta, StoredMembership};
use openraft::{CommittedLeaderId, LogId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"LHBACKUP";
/// Version of the backup file's own framing (the body has its own).
pub const BACKUP_VERSION: u32 = 1;
/// Longest header accepted: a header is a few hundred bytes, so anything
/// longer is damage, not data.
pub const MAX_HEADER: u32 = 64 * 1024;
/// Highest revision floor a restore accepts: resourceVersions and tokens
/// above 2^53 lose precision in clients that parse JSON numbers as doubles.
pub const MAX_FLOOR: u64 = (1 << 53) - 1;
const TRAILER: u64 = 32;
const PREFIX: u64 = 16;

/// What a backup says about itself (the JSON header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster revision: every fencing token issued before the backup
    /// is at most this.
    pub revision: u64,
    /// The last log index the state includes.
    pub applied_index: u64,
    /// The term of that entry (informational: a restore drops it).
    pub applied_term: u64,
    /// The cluster the backup was taken from.
    pub cluster_id: String,
    /// The node that served it.
    pub node_id: u64,
    /// The body's on-disk format version.
    pub format_version: u32,
    /// The state machine's time, µs since the Unix epoch.
    pub sm_time_micros: i64,
    /// Number of leases.
    pub leases: u64,
    /// The serving node's version.
    pub server_version: String,
    /// When the saver received it, by the saver's wall clock, µs since the
    /// Unix epoch: the default revision floor grows with the time since.
    pub saved_at_micros: i64,
}

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a backup file.
    #[error("not a Leasehold backup (bad magic)")]
    NotABackup,
    /// A backup framing this binary does not know.
    #[error("backup file version {0}, this binary reads version {BACKUP_VERSION}")]
    Version(u32),
    /// The body was written by another on-disk format version.
    #[error(
        "the backup holds on-disk format version {0}, this binary reads and writes version \
         {FORMAT_VERSION}: restore it with a binary of format version {0}"
    )]
    Format(u32),
    /// Damaged or cut short.
    #[error("corrupt backup: {0}")]
    Corrupt(String),
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<SnapshotError> for BackupError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Version(v) => BackupError::Format(v),
            SnapshotError::Io(e) => BackupError::Io(e),
            other => BackupError::Corrupt(format!("snapshot body: {other}")),
        }
    }
}

/// Writes a backup file: header, body chunks, then the trailer. Hashes
/// everything as it goes.
pub struct BackupWriter<W: Write> {
    out: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup on `out` with `header`.
    pub fn begin(out: W, header: &BackupHeader) -> io::Result<Self> {
        let json = serde_json::to_vec(header).map_err(io::Error::other)?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|l| *l <= MAX_HEADER)
            .ok_or_else(|| io::Error::other("backup header too long"))?;
        let mut w = BackupWriter {
            out,
            hash: Sha256::new(),
            size: 0,
        };
        w.write_body(MAGIC)?;
        w.write_body(&BACKUP_VERSION.to_be_bytes())?;
        w.write_body(&len.to_be_bytes())?;
        w.write_body(&json)?;
        Ok(w)
    }

    /// Appends body bytes.
    pub fn write_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes the trailer; returns the output, the file's size and its
    /// sha256 (the trailer).
    pub fn finish(mut self) -> io::Result<(W, u64, [u8; 32])> {
        let digest: [u8; 32] = self.hash.finalize().into();
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((self.out, self.size + TRAILER, digest))
    }
}

/// A backup file whose sha256 matched: where its body is.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: BackupHeader,
    /// The body's offset and length.
    pub body_offset: u64,
    /// The body's length.
    pub body_len: u64,
    /// The file's size.
    pub size: u64,
    /// The file's sha256 (its trailer).
    pub sha256: [u8; 32],
}

impl Verified {
    /// The sha256 in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the file at `path`: its framing and its sha256 over the whole
/// file. The body's own checksum is checked by [`load`].
pub fn verify(path: &Path) -> Result<Verified, BackupError> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size < PREFIX + TRAILER {
        return Err(if size >= 8 && !starts_with_magic(&mut f)? {
            BackupError::NotABackup
        } else {
            BackupError::Corrupt(format!("only {size} bytes: cut short"))
        });
    }
    let mut prefix = [0u8; PREFIX as usize];
    f.read_exact(&mut prefix)?;
    if &prefix[..8] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let version = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    let header_len = u32::from_be_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
    // The sha256 decides before any other field is trusted: a flipped bit
    // in the version or the length is reported as damage.
    let mut hash = Sha256::new();
    hash.update(prefix);
    let mut rest = io::Read::take(&mut f, size - PREFIX - TRAILER);
    let mut buf = vec![0u8; 1 << 20];
    let mut header_bytes = Vec::new();
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let want = (header_len.min(MAX_HEADER) as usize).saturating_sub(header_bytes.len());
        header_bytes.extend_from_slice(&buf[..n.min(want)]);
        hash.update(&buf[..n]);
    }
    let mut trailer = [0u8; TRAILER as usize];
    f.read_exact(&mut trailer)?;
    let digest: [u8; 32] = hash.finalize().into();
    if digest != trailer {
        return Err(BackupError::Corrupt(format!(
            "sha256 mismatch over {} bytes (the file is damaged or cut short)",
            size - TRAILER
        )));
    }
    if version != BACKUP_VERSION {
        return Err(BackupError::Version(version));
    }
    let body_offset = PREFIX + u64::from(header_len);
    if header_len > MAX_HEADER || body_offset > size - TRAILER {
        return Err(BackupError::Corrupt(format!(
            "header length {header_len} does not fit the file"
        )));
    }
    let header: BackupHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| BackupError::Corrupt(format!("header: {e}")))?;
    if header.format_version != FORMAT_VERSION {
        return Err(BackupError::Format(header.format_version));
    }
    Ok(Verified {
        path: path.to_path_buf(),
        header,
        body_offset,
        body_len: size - TRAILER - body_offset,
        size,
        sha256: digest,
    })
}

fn starts_with_magic(f: &mut File) -> io::Result<bool> {
    let mut m = [0u8; 8];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut m)?;
    Ok(&m == MAGIC)
}

/// Decodes the body of a verified backup (checking its format version and
/// CRC): the snapshot meta it was taken with and the state.
pub fn load(
    v: &Verified,
    identity_gc_age_micros: i64,
) -> Result<(SnapshotMeta, State), BackupError> {
    let mut f = File::open(&v.path)?;
    f.seek(SeekFrom::Start(v.body_offset))?;
    let body = BufReader::with_capacity(1 << 20, f).take(v.body_len);
    let (meta, state) = snapshot::decode_from(body, v.body_len, identity_gc_age_micros)?;
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    if index != v.header.applied_index || state.revision() != v.header.revision {
        return Err(BackupError::Corrupt(format!(
            "the header says index {} revision {}, the body index {index} revision {}",
            v.header.applied_index,
            v.header.revision,
            state.revision()
        )));
    }
    Ok((meta, state))
}

/// The default revision bump: 10⁹, plus 10⁷ per second elapsed since the
/// backup was saved (an old cluster left running made fewer than 10⁷
/// changes a second; the measured peak is a few thousand).
pub fn default_bump(saved_at_micros: i64, now_micros: i64) -> u64 {
    let elapsed_secs = (now_micros.saturating_sub(saved_at_micros) / 1_000_000).max(0) as u64;
    1_000_000_000u64.saturating_add(elapsed_secs.saturating_mul(10_000_000))
}

/// The incarnation restored member `id` gets: derived, not random, so that
/// restores run separately on each machine agree on every member's
/// incarnation, and therefore on the membership and the cluster id. The
/// revision floor is part of it: members restored with different floors
/// hold different states at the same log index, and must not form one
/// cluster (they get different cluster ids and refuse each other's
/// messages).
pub fn restored_incarnation(
    cluster_token: &str,
    backup_sha256: &[u8; 32],
    floor: u64,
    id: u64,
) -> String {
    let mut h = Sha256::new();
    h.update((cluster_token.len() as u64).to_be_bytes());
    h.update(cluster_token.as_bytes());
    h.update(backup_sha256);
    h.update(floor.to_be_bytes());
    h.update(id.to_be_bytes());
    hex(&h.finalize())[..32].to_string()
}

/// What a restore writes.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The empty (or missing) data directory to seed.
    pub data_dir: PathBuf,
    /// This node's id (one of `peers`).
    pub id: u64,
    /// Every member of the new cluster: id → address.
    pub peers: BTreeMap<u64, String>,
    /// Makes the new cluster's identity (with the backup's hash).
    pub cluster_token: String,
    /// The revision the restored state starts at (see `State::restored`).
    pub floor: u64,
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The new cluster's id.
    pub cluster_id: String,
    /// This node's incarnation.
    pub incarnation: String,
    /// The snapshot file written.
    pub snapshot: PathBuf,
    /// The restored state's revision (the floor).
    pub revision: u64,
    /// The log index the new cluster continues after.
    pub index: u64,
}

/// Seeds `plan.data_dir` from a verified backup. Refuses a data directory
/// that holds anything: a restore never mixes with existing state.
pub fn restore(v: &Verified, plan: &RestorePlan) -> anyhow::Result<Restored> {
    use anyhow::{bail, Context};
    if !plan.peers.contains_key(&plan.id) {
        bail!("--peers must include this node's id {}", plan.id);
    }
    if plan.floor < v.header.revision {
        bail!(
            "revision floor {} is below the backup's revision {}: tokens issued before the \
             backup would be issued again",
            plan.floor,
            v.header.revision
        );
    }
    if plan.floor > MAX_FLOOR {
        bail!("revision floor {} is above 2^53 - 1", plan.floor);
    }
    match std::fs::read_dir(&plan.data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "data directory {} is not empty: a restore seeds a new, empty directory \
                     (move the old one away first)",
                    plan.data_dir.display()
                );
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", plan.data_dir.display()))
        }
    }
    let (_, state) = load(v, 0)?;
    let state = state.restored(plan.floor);
    let incarnations: BTreeMap<u64, String> = plan
        .peers
        .keys()
        .map(|id| {
            let inc = restored_incarnation(&plan.cluster_token, &v.sha256, plan.floor, *id);
            (*id, inc)
        })
        .collect();
    let nodes: BTreeMap<u64, Member> = plan
        .peers
        .iter()
        .map(|(id, addr)| (*id, Member::new(addr.clone(), incarnations[id].clone())))
        .collect();
    let cluster_id = node_meta::derive_cluster_id(
        nodes
            .iter()
            .map(|(id, m)| (*id, m.addr.as_str(), m.incarnation.as_str())),
    );
    let index = v.header.applied_index;
    let log_id = LogId::new(CommittedLeaderId::default(), index);
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        snapshot_id: format!("restored-{index}-{}", &v.sha256_hex()[..16]),
    };
    super::create_dir_durably(&plan.data_dir)
        .with_context(|| format!("cannot create {}", plan.data_dir.display()))?;
    let snapshot = snapshot::write_file(&snapshot::dir_of(&plan.data_dir), &state, &meta)
        .map_err(|e| anyhow::anyhow!("cannot write the snapshot: {e}"))?;
    let incarnation = incarnations[&plan.id].clone();
    // node.json last: a directory without it is recognisably unfinished
    // (and is refused as non-empty by a second restore attempt).
    node_meta::create(
        &plan.data_dir,
        &NodeMetaFile {
            node_id: plan.id,
            incarnation: incarnation.clone(),
            cluster_id: Some(cluster_id.clone()),
        },
    )?;
    Ok(Restored {
        cluster_id,
        incarnation,
        snapshot,
        revision: state.revision(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            revision: 7,
            applied_index: 9,
            applied_term: 2,
            cluster_id: "c".into(),
            node_id: 1,
            format_version: FORMAT_VERSION,
            sm_time_micros: 1,
            leases: 0,
            server_version: "x".into(),
            saved_at_micros: 0,
        }
    }

    #[test]
    fn a_written_file_verifies_and_any_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let mut w = BackupWriter::begin(File::create(&path).unwrap(), &header()).unwrap();
        w.write_body(b"body bytes").unwrap();
        let (_, size, digest) = w.finish().unwrap();
        let v = verify(&path).unwrap();
        assert_eq!(v.header, header());
        assert_eq!(v.size, size);
        assert_eq!(v.sha256, digest);
        assert_eq!(v.body_len, 10);
        let bytes = std::fs::read(&path).unwrap();
        for i in [0, 9, 13, 20, bytes.len() - 5, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let e = verify(&path).unwrap_err();
            assert!(
                matches!(e, BackupError::Corrupt(_) | BackupError::NotABackup),
                "byte {i}: {e}"
            );
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(verify(&path), Err(BackupError::Corrupt(_))));
        std::fs::write(&path, b"short").unwrap();
        assert!(verify(&path).is_err());
    }

    #[test]
    fn another_format_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let mut h = header();
        h.format_version = FORMAT_VERSION + 1;
        let w = BackupWriter::begin(File::create(&path).unwrap(), &h).unwrap();
        w.finish().unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("version {}", FORMAT_VERSION + 1))
                && e.contains(&format!("version {FORMAT_VERSION}")),
            "{e}"
        );
    }

    /// A backup of a state with one lease at applied index 9, written to
    /// `dir/b`.
    fn backup_file(dir: &Path) -> Verified {
        use crate::lease::{Command, LeaseKey, Proposal, Timestamp};
        use crate::state::applier::EntryPosition;
        use crate::state::{ApplyOptions, EpochLeader};
        let mut state = State::new(0);
        let p = Proposal::single(
            Timestamp::from_micros(1),
            1,
            Command::Acquire {
                key: LeaseKey::new("ns", "a"),
                holder: "alice".into(),
                duration_seconds: 10,
                labels: Default::default(),
            },
            None,
        );
        let at = EntryPosition {
            index: 9,
            leader: EpochLeader { term: 2, node: 1 },
        };
        state.apply_proposal(at, &p, &ApplyOptions::default());
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        let mut h = header();
        h.revision = state.revision();
        let path = dir.join("b");
        let mut w = BackupWriter::begin(File::create(&path).unwrap(), &h).unwrap();
        w.write_body(&snapshot::encode(&state, &meta).unwrap())
            .unwrap();
        w.finish().unwrap();
        verify(&path).unwrap()
    }

    fn plan(dir: &Path, id: u64, floor: u64) -> RestorePlan {
        RestorePlan {
            data_dir: dir.to_path_buf(),
            id,
            peers: [(1, "a:1".to_string()), (2, "b:2".to_string())].into(),
            cluster_token: "t".into(),
            floor,
        }
    }

    /// What a restored directory holds: a snapshot at the backup's index
    /// with term 0 and the new members as voters, the floor as revision,
    /// and `node.json` with a cluster id every member computes alike, but
    /// only for the same floor.
    #[test]
    fn restored_directories_agree_per_floor_and_start_at_term_0() {
        let tmp = tempfile::tempdir().unwrap();
        let v = backup_file(tmp.path());
        let node_json = |d: &Path| -> NodeMetaFile {
            serde_json::from_slice(&std::fs::read(d.join("node.json")).unwrap()).unwrap()
        };
        let one = tmp.path().join("one");
        let r1 = restore(&v, &plan(&one, 1, 1000)).unwrap();
        let (meta, state) = snapshot::load(&r1.snapshot, 0).unwrap();
        assert_eq!(
            meta.last_log_id,
            Some(LogId::new(CommittedLeaderId::default(), 9))
        );
        assert_eq!(meta.last_membership.log_id(), &meta.last_log_id);
        let voters: Vec<u64> = meta.last_membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2]);
        assert_eq!(state.revision(), 1000);
        assert_eq!(state.lease_count(), 1);
        let f1 = node_json(&one);
        assert_eq!(f1.node_id, 1);
        assert_eq!(f1.cluster_id.as_deref(), Some(r1.cluster_id.as_str()));
        let m1 = meta.last_membership.membership();
        assert_eq!(m1.get_node(&1).unwrap().incarnation, f1.incarnation);

        // Member 2, restored on its own with the same floor: same cluster,
        // same membership.
        let two = tmp.path().join("two");
        let r2 = restore(&v, &plan(&two, 2, 1000)).unwrap();
        assert_eq!(r2.cluster_id, r1.cluster_id);
        let (meta2, _) = snapshot::load(&r2.snapshot, 0).unwrap();
        assert_eq!(meta2.last_membership, meta.last_membership);
        assert_eq!(
            meta2
                .last_membership
                .membership()
                .get_node(&2)
                .unwrap()
                .incarnation,
            node_json(&two).incarnation
        );

        // With another floor: another cluster.
        let other = tmp.path().join("other");
        let r3 = restore(&v, &plan(&other, 2, 1001)).unwrap();
        assert_ne!(r3.cluster_id, r1.cluster_id);

        // Refusals: used directory, floor below the backup, id not a peer.
        let e = restore(&v, &plan(&one, 1, 1000)).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let e = restore(&v, &plan(&tmp.path().join("x"), 1, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the backup's revision"), "{e}");
        let e = restore(&v, &plan(&tmp.path().join("y"), 3, 1000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("include this node's id 3"), "{e}");
        assert!(!tmp.path().join("x").exists() && !tmp.path().join("y").exists());
    }

    #[test]
    fn the_default_bump_grows_with_time_and_incarnations_are_deterministic() {
        assert_eq!(default_bump(0, 0), 1_000_000_000);
        assert_eq!(default_bump(0, 3_000_000), 1_030_000_000);
        assert_eq!(default_bump(5_000_000, 0), 1_000_000_000, "a clock behind");
        assert_eq!(default_bump(i64::MIN, i64::MAX), u64::MAX);
        let a = restored_incarnation("t", &[1; 32], 9, 1);
        assert_eq!(a, restored_incarnation("t", &[1; 32], 9, 1));
        assert_eq!(a.len(), 32);
        assert_ne!(a, restored_incarnation("t", &[1; 32], 9, 2));
        assert_ne!(a, restored_incarnation("u", &[1; 32], 9, 1));
        assert_ne!(a, restored_incarnation("t", &[2; 32], 9, 1));
        assert_ne!(
            a,
            restored_incarnation("t", &[1; 32], 10, 1),
            "another floor"
        );
    }
}
