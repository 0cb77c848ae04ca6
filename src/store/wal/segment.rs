//! WAL segment files: `<data-dir>/wal/<seq, 16 digits>.wal`.
//!
//! A segment starts with a 20-byte header (magic `LHWAL\r\n\0`, the on-disk
//! format version as u32 big-endian, the segment's sequence number as u64
//! big-endian), then records (`record.rs`). Only the newest segment is ever
//! written; a new one is created (header written and synced, directory
//! synced) when the current one passes its size target.

use super::record::{self, Kind, Read};
use crate::store::FORMAT_VERSION;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LHWAL\r\n\0";
/// Bytes of a segment header.
pub const HEADER_LEN: u64 = 20;

/// A segment's file name.
pub fn file_name(seq: u64) -> String {
    format!("{seq:016}.wal")
}

fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 16).then(|| digits.parse().ok()).flatten()
}

/// The segments in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = seq_of(&entry.file_name().to_string_lossy()) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[12..20].copy_from_slice(&seq.to_be_bytes());
    h
}

/// Creates segment `seq` in `dir` with its header, durably (file and
/// directory synced), and returns it open for appending.
pub fn create(dir: &Path, seq: u64) -> io::Result<File> {
    let path = dir.join(file_name(seq));
    let mut f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)?;
    f.write_all(&header(seq))?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// Opens an existing segment for appending at its end.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).open(path)
}

/// One record found while scanning, with where it sits.
#[derive(Debug)]
pub struct Found<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its payload.
    pub payload: &'a [u8],
    /// Offset of the record in the file.
    pub offset: u64,
}

/// How a segment ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// After the last whole record.
    Clean,
    /// Bytes from `at` on do not form a whole, intact record.
    Damaged {
        /// Offset of the first bad byte.
        at: u64,
        /// Why.
        why: &'static str,
    },
}

/// Why a segment cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Not a WAL segment of this format.
    #[error("{0}")]
    Header(String),
}

/// Checks `data`'s header (for segment `seq`) and returns its records and
/// how it ends. A file shorter than a header is reported as `Damaged` at 0.
pub fn scan(data: &[u8], seq: u64) -> Result<(Vec<Found<'_>>, Tail), SegmentError> {
    if (data.len() as u64) < HEADER_LEN {
        return Ok((
            Vec::new(),
            Tail::Damaged {
                at: 0,
                why: "header cut short",
            },
        ));
    }
    if &data[..8] != MAGIC {
        return Err(SegmentError::Header(
            "not a Leasehold WAL segment (bad magic)".into(),
        ));
    }
    let version = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    if version != FORMAT_VERSION {
        return Err(SegmentError::Header(format!(
            "written with on-disk format version {version}; this binary reads version {FORMAT_VERSION}"
        )));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&data[12..20]);
    if u64::from_be_bytes(s) != seq {
        return Err(SegmentError::Header(format!(
            "header says segment {}, the file name {seq}",
            u64::from_be_bytes(s)
        )));
    }
    let mut found = Vec::new();
    let mut at = HEADER_LEN as usize;
    loop {
        match record::read(&data[at..]) {
            Read::End => return Ok((found, Tail::Clean)),
            Read::Record { kind, payload, len } => {
                found.push(Found {
                    kind,
                    payload,
                    offset: at as u64,
                });
                at += len;
            }
            Read::Torn => {
                return Ok((
                    found,
                    Tail::Damaged {
                        at: at as u64,
                        why: "record cut short",
                    },
                ))
            }
            Read::Corrupt(why) => return Ok((found, Tail::Damaged { at: at as u64, why })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_scans_back_with_offsets_and_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = create(dir.path(), 7).unwrap();
        let mut buf = Vec::new();
        record::write(&mut buf, Kind::Entry, b"one");
        record::write(&mut buf, Kind::Vote, b"two");
        f.write_all(&buf).unwrap();
        let data = fs::read(dir.path().join(file_name(7))).unwrap();
        let (recs, tail) = scan(&data, 7).unwrap();
        assert_eq!(tail, Tail::Clean);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, HEADER_LEN);
        assert_eq!(recs[1].payload, b"two");
        let (recs, tail) = scan(&data[..data.len() - 1], 7).unwrap();
        assert_eq!(recs.len(), 1);
        let end_of_first = recs[0].offset + (record::HEADER_LEN + 3) as u64;
        assert!(matches!(tail, Tail::Damaged { at, .. } if at == end_of_first));
        assert!(scan(&data, 8).is_err(), "wrong sequence number");
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert_eq!(seq_of("0000000000000007.wal"), Some(7));
        assert_eq!(seq_of("7.wal"), None);
    }
}
