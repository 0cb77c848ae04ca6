//! `leasehold snapshot save | status | restore`: backups of a live cluster
//! and seeding a new cluster from one (as `etcdctl snapshot save` and
//! `etcdutl snapshot restore`).
//!
//! `save` asks the leader (a follower names it; the command goes there)
//! for its state after a read barrier, and writes the backup file
//! (`store::backup`) under `FILE.part`, synced, then renamed: a crash or a
//! broken stream never leaves a file that looks complete. `status` and
//! `restore` are offline: they read the file only. `restore` seeds one
//! node's empty data directory; run it once per member, on each machine,
//! with the same `--peers` and `--cluster-token`, and start the members as
//! usual.

use super::output::{self, Format};
use super::{connect, invalid, parse_peers, report, Target};
use super::{EXIT_OK, EXIT_REFUSED};
use crate::api::status::{error_info, reason};
use crate::proto::v1 as pb;
use crate::store::backup::{self, BackupHeader, BackupWriter, RestorePlan, Verified};
use clap::{Args, Subcommand};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::{Code, Status};

/// Longest `--cluster-token` accepted.
const MAX_CLUSTER_TOKEN: usize = 256;
/// How many NOT_LEADER redirections `save` follows.
const MAX_REDIRECTS: usize = 3;

/// What to do with snapshots.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Save a backup of the cluster into FILE: the leader's state after
    /// every write acknowledged before the call, checksummed.
    Save {
        /// Where to write the backup (written as FILE.part, then renamed).
        file: PathBuf,
    },
    /// Check a backup's two checksums and print what it holds.
    Status {
        /// The backup file.
        file: PathBuf,
    },
    /// Seed an empty data directory for one member of a NEW cluster from a
    /// backup (offline; run it for every member with the same --peers and
    /// --cluster-token). Stop the old cluster first.
    Restore(RestoreArgs),
}

/// The flags of `snapshot restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory to seed: missing or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This member's node id.
    #[arg(long)]
    pub id: u64,
    /// Every member of the new cluster, ID=HOST:PORT, comma-separated.
    #[arg(long)]
    pub peers: String,
    /// Names the new cluster: the same on every member, new for every
    /// restore (the cluster id and member incarnations derive from it and
    /// the backup).
    #[arg(long)]
    pub cluster_token: String,
    /// Add this to the backup's revision for the revision floor. Without
    /// it and without --revision-floor: 1,000,000,000 plus 10,000,000 per
    /// second since the backup was saved (printed: give the other members
    /// that floor with --revision-floor).
    #[arg(long)]
    pub bump_revision: Option<u64>,
    /// The revision floor itself (with --bump-revision: the lowest one).
    /// Every member of one restore must get the same floor: members
    /// restored with different floors do not form a cluster.
    #[arg(long)]
    pub revision_floor: Option<u64>,
}

/// `snapshot status` and `snapshot restore`: the file only, no cluster.
pub fn offline(action: SnapshotAction, format: Format) -> i32 {
    match action {
        SnapshotAction::Status { file } => status(&file, format),
        SnapshotAction::Restore(args) => restore(&args, format),
        SnapshotAction::Save { .. } => unreachable!("save needs the cluster"),
    }
}

fn header_json(v: &Verified) -> serde_json::Value {
    let h = &v.header;
    json!({
        "file": v.path.display().to_string(),
        "size": v.size,
        "sha256": v.sha256_hex(),
        "revision": h.revision,
        "appliedIndex": h.applied_index,
        "appliedTerm": h.applied_term,
        "clusterId": h.cluster_id,
        "nodeId": h.node_id,
        "formatVersion": h.format_version,
        "leases": h.leases,
        "serverVersion": h.server_version,
        "smTime": micros_text(h.sm_time_micros),
        "savedAt": micros_text(h.saved_at_micros),
    })
}

fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| micros.to_string())
}

fn header_text(v: &Verified) -> String {
    let h = &v.header;
    format!(
        "{}: revision {}, applied index {} (term {}), {} leases, cluster {}, saved from node {} \
         (version {}, on-disk format {}) at {}; {} bytes, sha256 {}\n",
        v.path.display(),
        h.revision,
        h.applied_index,
        h.applied_term,
        h.leases,
        h.cluster_id,
        h.node_id,
        h.server_version,
        h.format_version,
        micros_text(h.saved_at_micros),
        v.size,
        v.sha256_hex()
    )
}

/// Verifies the file's sha256 and decodes its body (format version, CRC).
fn check(file: &Path) -> Result<Verified, String> {
    let v = backup::verify(file).map_err(|e| format!("{}: {e}", file.display()))?;
    backup::load(&v, 0).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(v)
}

fn status(file: &Path, format: Format) -> i32 {
    match check(file) {
        Ok(v) => {
            match format {
                Format::Table => print!("ok (sha256 and snapshot checksum): {}", header_text(&v)),
                f => print!("{}", output::render(&header_json(&v), f)),
            }
            EXIT_OK
        }
        Err(m) => {
            eprintln!("error: {m}");
            EXIT_REFUSED
        }
    }
}

fn restore(args: &RestoreArgs, format: Format) -> i32 {
    let peers = match parse_peers(&args.peers) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => return invalid("--peers must list every member of the new cluster"),
        Err(m) => return invalid(m),
    };
    if args.id == 0 {
        return invalid("--id must be a positive node id");
    }
    if !peers.contains_key(&args.id) {
        return invalid(format!("--peers must include this node's id {}", args.id));
    }
    let token = args.cluster_token.trim();
    if token.is_empty() || token.len() > MAX_CLUSTER_TOKEN {
        return invalid(format!(
            "--cluster-token must be 1 to {MAX_CLUSTER_TOKEN} characters"
        ));
    }
    if args.bump_revision == Some(0) && args.revision_floor.is_none() {
        return invalid(
            "--bump-revision 0 without --revision-floor would let the new cluster issue again \
             the fencing tokens the old one issued after the backup: give --revision-floor (the \
             old cluster's revision, or higher) or a positive bump",
        );
    }
    // The sha256 here; the body (format version, CRC) is decoded once, by
    // the restore itself, before anything is written.
    let v = match backup::verify(&args.file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return EXIT_REFUSED;
        }
    };
    let revision = v.header.revision;
    let (bump, floor) = match (args.bump_revision, args.revision_floor) {
        (Some(b), f) => (b, revision.saturating_add(b).max(f.unwrap_or(0))),
        // An explicit floor replaces the default bump: every member of one
        // restore must get the same floor, and the default grows with time.
        (None, Some(f)) => (0, f.max(revision)),
        (None, None) => {
            let b = backup::default_bump(
                v.header.saved_at_micros,
                chrono::Utc::now().timestamp_micros(),
            );
            (b, revision.saturating_add(b))
        }
    };
    if let Some(f) = args.revision_floor {
        if f < revision {
            return invalid(format!(
                "--revision-floor {f} is below the backup's revision {revision}: the old \
                 cluster's revision is at least that"
            ));
        }
    }
    if floor > backup::MAX_FLOOR {
        return invalid(format!(
            "the revision floor {floor} (revision {revision} + bump {bump}) is above 2^53 - 1; \
             give a smaller --bump-revision"
        ));
    }
    let plan = RestorePlan {
        data_dir: args.data_dir.clone(),
        id: args.id,
        peers,
        cluster_token: token.to_string(),
        floor,
    };
    match backup::restore(&v, &plan) {
        Ok(r) => {
            match format {
                Format::Table => {
                    let how = if bump > 0 {
                        format!("backup revision {revision} + bump {bump}")
                    } else {
                        format!("backup revision {revision}; --revision-floor")
                    };
                    print!(
                        "restored node {} into {}: cluster {}, revision floor {} ({how}), log \
                         index {}, incarnation {}\nevery fencing token and resourceVersion from \
                         now on is above {}; watches from revision {} or earlier get COMPACTED. \
                         Restore every other member with --revision-floor {} and the same \
                         --peers and --cluster-token. The old cluster must stay stopped.\n",
                        args.id,
                        args.data_dir.display(),
                        r.cluster_id,
                        r.revision,
                        r.index,
                        r.incarnation,
                        r.revision,
                        r.revision,
                        r.revision
                    )
                }
                f => print!(
                    "{}",
                    output::render(
                        &json!({
                            "nodeId": args.id,
                            "dataDir": args.data_dir.display().to_string(),
                            "clusterId": r.cluster_id,
                            "incarnation": r.incarnation,
                            "revisionFloor": r.revision,
                            "backupRevision": revision,
                            "logIndex": r.index,
                            "snapshot": r.snapshot.display().to_string(),
                        }),
                        f
                    )
                ),
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_REFUSED
        }
    }
}

/// Why a save failed.
enum SaveError {
    Status(Status),
    Local(String),
}

impl From<Status> for SaveError {
    fn from(s: Status) -> Self {
        SaveError::Status(s)
    }
}

/// `snapshot save FILE`.
pub async fn save(target: &Target, file: &Path, format: Format) -> i32 {
    let client = match connect(target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let wait = Duration::from_secs_f64(if target.timeout.is_nan() {
        0.001
    } else {
        target.timeout.clamp(0.001, 1e9)
    });
    let (addr, stream) = match open(&client, wait).await {
        Ok(s) => s,
        Err(s) => return report(&s),
    };
    let part = part_path(file);
    match receive(stream, &part, file, wait).await {
        Ok(v) => {
            match format {
                Format::Table => print!("saved from {addr}: {}", header_text(&v)),
                f => print!("{}", output::render(&header_json(&v), f)),
            }
            EXIT_OK
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            match e {
                SaveError::Status(s) => report(&s),
                SaveError::Local(m) => {
                    eprintln!("error: {m}");
                    EXIT_REFUSED
                }
            }
        }
    }
}

fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

/// Opens the backup stream on the leader: tries the endpoints in order and
/// follows a follower's NOT_LEADER to the leader it names.
async fn open(
    client: &crate::client::Client,
    wait: Duration,
) -> Result<(String, tonic::Streaming<pb::SnapshotChunk>), Status> {
    let mut addrs: VecDeque<String> = client.endpoints().iter().cloned().collect();
    let mut redirects = 0;
    let mut last = Status::unavailable("no endpoint answered");
    while let Some(addr) = addrs.pop_front() {
        match tokio::time::timeout(wait, client.snapshot_on(&addr)).await {
            Err(_) => {
                last = Status::deadline_exceeded(format!(
                    "{addr}: no answer within {} s",
                    wait.as_secs_f64()
                ))
            }
            Ok(Ok(stream)) => return Ok((addr, stream)),
            Ok(Err(s)) => {
                let leader = error_info(&s)
                    .filter(|(r, _)| r == reason::NOT_LEADER)
                    .map(|(_, meta)| meta.get("leaderAddress").cloned());
                match leader {
                    Some(Some(leader)) if redirects < MAX_REDIRECTS && leader != addr => {
                        redirects += 1;
                        addrs.push_front(leader);
                    }
                    Some(_) => {}
                    None if s.code() == Code::Unavailable => {}
                    None => return Err(s),
                }
                last = Status::new(s.code(), format!("{addr}: {}", s.message()));
            }
        }
    }
    Err(last)
}

/// The next part of the stream, waiting at most `wait`; `None` at its end.
async fn next_part(
    stream: &mut tonic::Streaming<pb::SnapshotChunk>,
    wait: Duration,
) -> Result<Option<pb::snapshot_chunk::Part>, SaveError> {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => Err(SaveError::Status(Status::deadline_exceeded(format!(
            "the backup stream sent nothing for {} s",
            wait.as_secs_f64()
        )))),
        Ok(Err(s)) => Err(s.into()),
        Ok(Ok(None)) => Ok(None),
        // A message without a part (from a newer server) carries nothing
        // this binary knows: an error rather than silently skipped data.
        Ok(Ok(Some(c))) => c.part.map(Some).ok_or_else(|| {
            SaveError::Local("the backup stream sent a message of an unknown kind".into())
        }),
    }
}

/// Receives the stream into `part`, checks it, syncs it and renames it to
/// `file`.
async fn receive(
    mut stream: tonic::Streaming<pb::SnapshotChunk>,
    part: &Path,
    file: &Path,
    wait: Duration,
) -> Result<Verified, SaveError> {
    use pb::snapshot_chunk::Part;
    let info = match next_part(&mut stream, wait).await? {
        Some(Part::Info(i)) => i,
        _ => {
            return Err(SaveError::Local(
                "the backup stream did not start with its info".into(),
            ))
        }
    };
    let header = BackupHeader {
        revision: info.revision,
        applied_index: info.applied_index,
        applied_term: info.applied_term,
        cluster_id: info.cluster_id,
        node_id: info.node_id,
        format_version: info.format_version,
        sm_time_micros: info.sm_time_micros,
        leases: info.leases,
        server_version: info.version,
        saved_at_micros: chrono::Utc::now().timestamp_micros(),
    };
    let local = |what: &str, e: std::io::Error| {
        SaveError::Local(format!("cannot {what} {}: {e}", part.display()))
    };
    let out = std::fs::File::create(part).map_err(|e| local("create", e))?;
    let mut w = BackupWriter::begin(std::io::BufWriter::with_capacity(1 << 20, out), &header)
        .map_err(|e| local("write", e))?;
    let mut body_hash = Sha256::new();
    loop {
        match next_part(&mut stream, wait).await? {
            Some(Part::Data(d)) => {
                body_hash.update(&d);
                w.write_body(&d).map_err(|e| local("write", e))?;
            }
            Some(Part::Sha256(sent)) => {
                let got: [u8; 32] = body_hash.finalize().into();
                if sent.as_slice() != got {
                    return Err(SaveError::Local(format!(
                        "the backup stream's sha256 {} does not match its data ({}): damaged in \
                         transit",
                        backup::hex(&sent),
                        backup::hex(&got)
                    )));
                }
                break;
            }
            Some(Part::Info(_)) => {
                return Err(SaveError::Local(
                    "the backup stream sent its info twice".into(),
                ))
            }
            None => {
                return Err(SaveError::Status(Status::unavailable(
                    "the backup stream ended before its checksum: the backup is incomplete",
                )))
            }
        }
    }
    let (out, _, _) = w.finish().map_err(|e| local("write", e))?;
    let out = out
        .into_inner()
        .map_err(|e| local("write", e.into_error()))?;
    out.sync_all().map_err(|e| local("sync", e))?;
    drop(out);
    std::fs::rename(part, file).map_err(|e| {
        SaveError::Local(format!(
            "cannot rename {} to {}: {e}",
            part.display(),
            file.display()
        ))
    })?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::store::snapshot::sync_dir(&dir)
        .map_err(|e| SaveError::Local(format!("cannot sync {}: {e}", dir.display())))?;
    backup::verify(file).map_err(|e| SaveError::Local(format!("{}: {e}", file.display())))
}
