//! Who this data directory belongs to: `<data-dir>/node.json`.
//!
//! Written when the directory is first used and never rewritten except to
//! record the cluster id once it is known. It holds:
//! - `node_id`: the `--id` the directory was created for; starting another
//!   id on it is refused (two nodes must never share a Raft identity);
//! - `incarnation`: a random id chosen when the directory was created. Raft
//!   membership records each member's incarnation, and peers address every
//!   Raft message to it; a node whose directory was wiped or replaced has a
//!   new incarnation, so it cannot answer (and above all cannot vote) as the
//!   member it replaces, which acknowledged entries and cast votes it no
//!   longer remembers. It must be put back with `leasehold member replace`;
//! - `cluster_id`: the cluster this directory belongs to, fixed when the
//!   cluster is bootstrapped (derived from the initial members and their
//!   incarnations) or, for a node that joins, adopted from the first Raft
//!   message its leader sends it. Messages from another cluster are refused.
//!
//! Writes go to a temporary file that is synced, renamed into place, and
//! the directory synced, so a power loss leaves the old or the new file.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const FILE: &str = "node.json";

/// The contents of `node.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetaFile {
    /// The node id the directory belongs to.
    pub node_id: u64,
    /// Random id of this directory's life.
    pub incarnation: String,
    /// The cluster, once known.
    pub cluster_id: Option<String>,
}

/// A data directory's identity, shared by the parts of a node that need it
/// (the peer transport stamps it on messages, the peer service checks
/// messages against it, bootstrap and joining set the cluster id).
#[derive(Debug, Clone)]
pub struct NodeMeta {
    path: PathBuf,
    file: Arc<Mutex<NodeMetaFile>>,
}

/// A fresh random id (32 lowercase hex digits).
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The cluster id of a cluster bootstrapped with `members` (id, address,
/// incarnation): every node that bootstraps the same members computes the
/// same id, and a different incarnation anywhere gives a different one.
pub fn derive_cluster_id<'a>(members: impl IntoIterator<Item = (u64, &'a str, &'a str)>) -> String {
    let mut sorted: Vec<_> = members.into_iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (id, addr, inc) in sorted {
        h.update(id.to_be_bytes());
        for part in [addr, inc] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl NodeMeta {
    /// Loads `node.json` from `dir`, or creates it for `node_id` with a new
    /// incarnation. Refuses a directory that belongs to another node id.
    pub fn load_or_create(dir: &Path, node_id: u64) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: NodeMetaFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is damaged", path.display()))?;
                if f.node_id != node_id {
                    bail!(
                        "data directory {} belongs to node {}, not node {node_id}: start it with \
                         --id {} or use another directory",
                        dir.display(),
                        f.node_id,
                        f.node_id
                    );
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = NodeMetaFile {
                    node_id,
                    incarnation: random_id(),
                    cluster_id: None,
                };
                write(&path, &f)?;
                f
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(NodeMeta {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn get(&self) -> NodeMetaFile {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node id.
    pub fn node_id(&self) -> u64 {
        self.get().node_id
    }

    /// This directory's incarnation.
    pub fn incarnation(&self) -> String {
        self.get().incarnation
    }

    /// The cluster id, once known.
    pub fn cluster_id(&self) -> Option<String> {
        self.get().cluster_id
    }

    /// Records the cluster id (durably) if none is recorded yet. Fails if a
    /// different one is.
    pub fn set_cluster_id(&self, id: &str) -> anyhow::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match &f.cluster_id {
            Some(existing) if existing == id => Ok(()),
            Some(existing) => bail!("this node belongs to cluster {existing}, not {id}"),
            None => {
                let mut next = f.clone();
                next.cluster_id = Some(id.to_string());
                write(&self.path, &next)?;
                *f = next;
                Ok(())
            }
        }
    }
}

/// Writes `node.json` into `dir` for a data directory seeded by a restore
/// (`store::backup`), whose incarnation and cluster id are derived rather
/// than random. Refuses to replace an existing one.
pub fn create(dir: &Path, f: &NodeMetaFile) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    if path.exists() {
        bail!("{} exists already", path.display());
    }
    write(&path, f)
}

fn write(path: &Path, f: &NodeMetaFile) -> anyhow::Result<()> {
    let dir = path.parent().context("node.json has no directory")?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(f)?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_kept_across_opens_and_bound_to_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeMeta::load_or_create(dir.path(), 3).unwrap();
        assert_eq!(a.cluster_id(), None);
        let b = NodeMeta::load_or_create(dir.path(), 3).unwrap();
        assert_eq!(a.incarnation(), b.incarnation());
        b.set_cluster_id("c1").unwrap();
        b.set_cluster_id("c1").unwrap();
        assert!(b.set_cluster_id("c2").is_err());
        let c = NodeMeta::load_or_create(dir.path(), 3).unwrap();
        assert_eq!(c.cluster_id().as_deref(), Some("c1"));
        let err = NodeMeta::load_or_create(dir.path(), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to node 3"), "{err}");
        // A wiped directory is a new incarnation.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            NodeMeta::load_or_create(other.path(), 3)
                .unwrap()
                .incarnation(),
            a.incarnation()
        );
    }

    #[test]
    fn cluster_ids_depend_on_every_member_and_not_on_order() {
        let x = derive_cluster_id([(1, "a:1", "i1"), (2, "b:2", "i2")]);
        assert_eq!(x, derive_cluster_id([(2, "b:2", "i2"), (1, "a:1", "i1")]));
        assert_ne!(x, derive_cluster_id([(1, "a:1", "i1"), (2, "b:2", "i3")]));
        assert_eq!(x.len(), 32);
    }
}
