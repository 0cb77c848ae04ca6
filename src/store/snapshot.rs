//! The snapshot file: a versioned copy of the whole `sm` tree.
//!
//! Layout: the 8 magic bytes `LHSNAP01`, the format version as u32
//! big-endian, then bincode of `Vec<(key, value)>` holding every `sm` record
//! (leases and state-machine metadata) exactly as stored. Installing one
//! replaces the `sm` tree atomically.

use super::FORMAT_VERSION;

const MAGIC: &[u8; 8] = b"LHSNAP01";

/// Every `sm` record, key and value, in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Encodes the records of a state machine.
pub fn encode(records: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>, bincode::Error> {
    let mut out = Vec::with_capacity(
        12 + records
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bincode::serialize_into(&mut out, records)?;
    Ok(out)
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a Leasehold snapshot.
    #[error("not a Leasehold snapshot (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("snapshot has format version {0}, this binary reads {FORMAT_VERSION}")]
    Version(u32),
    /// Corrupt body.
    #[error("corrupt snapshot: {0}")]
    Corrupt(#[from] bincode::Error),
}

/// Decodes a snapshot file into its records.
pub fn decode(bytes: &[u8]) -> Result<Records, SnapshotError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_be_bytes(v);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    Ok(bincode::deserialize(&bytes[12..])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let recs = vec![
            (b"la\0b".to_vec(), vec![1, 2, 3]),
            (b"m:revision".to_vec(), vec![9]),
        ];
        let bytes = encode(&recs).unwrap();
        assert_eq!(decode(&bytes).unwrap(), recs);
        assert!(matches!(
            decode(b"nonsense-bytes"),
            Err(SnapshotError::BadMagic)
        ));
        let mut other = bytes.clone();
        other[11] = other[11].wrapping_add(1);
        assert!(matches!(decode(&other), Err(SnapshotError::Version(_))));
        let truncated = &bytes[..bytes.len() - 2];
        assert!(matches!(decode(truncated), Err(SnapshotError::Corrupt(_))));
    }
}
