//! One WAL record: what it says, and its bytes.
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of the kind byte and the payload
//! u8      kind
//! ...     payload
//! ```
//!
//! A record whose length runs past the end of the file, or whose checksum
//! does not match, was cut short or damaged; [`read`] reports which.

/// Bytes before a record's payload.
pub const HEADER_LEN: usize = 9;

/// Largest payload accepted when reading: a Raft entry is bounded by the
/// API's limits (a lease of 512 KiB in a 4 MiB message), so anything near
/// this is damage, not data.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A log entry (bincode `Entry`).
    Entry = 1,
    /// The vote (bincode `Vote`).
    Vote = 2,
    /// The committed log id (bincode `Option<LogId>`).
    Committed = 3,
    /// Entries at and after this index (u64 LE) are removed.
    Truncate = 4,
    /// Entries up to and including this log id (bincode `LogId`) are
    /// purged.
    Purge = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::Vote,
            3 => Kind::Committed,
            4 => Kind::Truncate,
            5 => Kind::Purge,
            _ => return None,
        })
    }
}

/// Appends one record to `buf`.
pub fn write(buf: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(payload);
}

/// How reading one record went.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole, intact record, and the bytes it took.
    Record {
        /// Its kind.
        kind: Kind,
        /// Its payload.
        payload: &'a [u8],
        /// Header plus payload.
        len: usize,
    },
    /// No bytes left.
    End,
    /// The record runs past the end of the data: cut short.
    Torn,
    /// The record is complete but damaged (checksum, kind or length).
    Corrupt(&'static str),
}

/// Reads the record at the start of `data`.
pub fn read(data: &[u8]) -> Read<'_> {
    if data.is_empty() {
        return Read::End;
    }
    if data.len() < HEADER_LEN {
        return Read::Torn;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if len > MAX_PAYLOAD {
        return Read::Corrupt("record length out of range");
    }
    let Some(body) = data.get(8..HEADER_LEN + len) else {
        return Read::Torn;
    };
    if crc32fast::hash(body) != crc {
        return Read::Corrupt("checksum mismatch");
    }
    let Some(kind) = Kind::from_u8(body[0]) else {
        return Read::Corrupt("unknown record kind");
    };
    Read::Record {
        kind,
        payload: &body[1..],
        len: HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_told_apart_from_a_cut() {
        let mut buf = Vec::new();
        write(&mut buf, Kind::Entry, b"hello");
        write(&mut buf, Kind::Vote, b"");
        let first = read(&buf);
        assert_eq!(
            first,
            Read::Record {
                kind: Kind::Entry,
                payload: b"hello",
                len: HEADER_LEN + 5
            }
        );
        assert_eq!(
            read(&buf[HEADER_LEN + 5..]),
            Read::Record {
                kind: Kind::Vote,
                payload: b"",
                len: HEADER_LEN
            }
        );
        assert_eq!(read(&[]), Read::End);
        for cut in 1..HEADER_LEN + 5 {
            assert_eq!(read(&buf[..cut]), Read::Torn, "cut at {cut}");
        }
        let mut flipped = buf.clone();
        flipped[HEADER_LEN + 2] ^= 1;
        assert_eq!(read(&flipped), Read::Corrupt("checksum mismatch"));
        let mut huge = buf.clone();
        huge[3] = 0xff;
        assert!(matches!(read(&huge), Read::Corrupt(_)));
    }
}
