//! The spool's on-disk format: segment files of checksummed records, and the ack file.
//!
//! A segment `{first id:020}.seg` starts with the 8-byte magic `AGSPOOL1`, then records back to
//! back, each:
//!
//! ```text
//! len    u32 LE   bytes of `body` below
//! crc    u32 LE   CRC-32 (crc32fast) of `body`
//! body:  id u64 LE | points u32 LE | ns_len u16 LE | ns | payload
//! ```
//!
//! The ack file `acked` holds the highest record id whose batch was delivered (or dropped) and a
//! CRC of it; it is replaced atomically (write a temporary file, rename).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::output::EncodedBatch;

/// The first bytes of every segment file; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"AGSPOOL1";
/// Bytes before the first record.
pub const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Bytes before a record's body (`len`, `crc`).
const PREFIX_LEN: usize = 8;
/// Fixed part of a body (`id`, `points`, `ns_len`).
const BODY_FIXED: usize = 8 + 4 + 2;
/// A `len` above this cannot be a record (messages are at most 5 MiB): the length itself is damaged.
const MAX_BODY: usize = 64 * 1024 * 1024;

const SEGMENT_EXT: &str = "seg";
const ACK_FILE: &str = "acked";

/// Bytes a batch takes on disk as one record.
pub fn record_len(batch: &EncodedBatch) -> u64 {
    (PREFIX_LEN + BODY_FIXED + batch.ns.len().min(usize::from(u16::MAX)) + batch.payload.len())
        as u64
}

/// Appends the record of `batch` with `id` to `out` (the spool writes head and payload apart).
#[cfg(test)]
pub fn encode(id: u64, batch: &EncodedBatch, out: &mut Vec<u8>) {
    encode_head(id, batch, out);
    out.extend_from_slice(&batch.payload);
}

/// Appends the record of `batch` with `id` to `out` without its payload, which follows it on
/// disk; the checksum covers the payload. Lets `push` write the payload from where it is.
pub fn encode_head(id: u64, batch: &EncodedBatch, out: &mut Vec<u8>) {
    // Namespaces are short topic names; the cut only guards the u16 field.
    let ns = &batch.ns.as_bytes()[..batch.ns.len().min(usize::from(u16::MAX))];
    let body_len = BODY_FIXED + ns.len() + batch.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&batch.points.to_le_bytes());
    out.extend_from_slice(&(ns.len() as u16).to_le_bytes());
    out.extend_from_slice(ns);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + PREFIX_LEN..]);
    crc.update(&batch.payload);
    let crc = crc.finalize();
    out[start + 4..start + PREFIX_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Writes `head` then `tail` with as few system calls as the kernel allows (one, usually).
pub fn write_two(mut file: &File, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let total = head.len() + tail.len();
    let mut done = loop {
        match file.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(tail)]) {
            Ok(0) if total > 0 => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if done < head.len() {
        file.write_all(&head[done..])?;
        done = head.len();
    }
    file.write_all(&tail[done - head.len()..])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a body whose checksum matched.
fn decode_body(body: &[u8]) -> Option<(u64, EncodedBatch)> {
    if body.len() < BODY_FIXED {
        return None;
    }
    let id = u64_at(body, 0);
    let points = u32_at(body, 8);
    let ns_len = usize::from(u16::from_le_bytes([body[12], body[13]]));
    let ns = body.get(BODY_FIXED..BODY_FIXED + ns_len)?;
    let ns = String::from_utf8(ns.to_vec()).ok()?;
    let payload = body[BODY_FIXED + ns_len..].to_vec();
    Some((
        id,
        EncodedBatch {
            ns,
            points,
            payload,
        },
    ))
}

/// One good record found by [`scan`].
#[derive(Debug)]
pub struct Scanned {
    /// The record's id.
    pub id: u64,
    /// Where it starts in the segment.
    pub offset: u64,
    /// Its length on disk.
    pub len: u64,
    /// The batch.
    pub batch: EncodedBatch,
}

/// Damage found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file does not start with [`MAGIC`]: not a segment of this version.
    BadHeader,
    /// A record's checksum did not match; it was skipped and the scan went on after it.
    Corrupt {
        /// Where the record starts.
        offset: u64,
    },
    /// The segment ends inside a record (a write cut short) or with a length that cannot be
    /// right; the rest of the file was skipped.
    Torn {
        /// Where the cut record starts.
        offset: u64,
        /// Bytes skipped.
        bytes: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::BadHeader => write!(f, "not a spool segment (bad header)"),
            Damage::Corrupt { offset } => {
                write!(f, "record at byte {offset} fails its checksum")
            }
            Damage::Torn { offset, bytes } => write!(
                f,
                "incomplete record at byte {offset} ({bytes} bytes to the end of the file)"
            ),
        }
    }
}

/// Reads a whole segment: its good records in order, and the damage met on the way.
pub fn scan(path: &Path) -> io::Result<(Vec<Scanned>, Vec<Damage>)> {
    let data = fs::read(path)?;
    Ok(scan_bytes(&data))
}

fn scan_bytes(data: &[u8]) -> (Vec<Scanned>, Vec<Damage>) {
    let mut records = Vec::new();
    let mut damage = Vec::new();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        // An empty file is a segment whose header write never happened: nothing in it.
        if !data.is_empty() {
            damage.push(Damage::BadHeader);
        }
        return (records, damage);
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let rest = data.len() - at;
        let torn = Damage::Torn {
            offset: at as u64,
            bytes: rest as u64,
        };
        if rest < PREFIX_LEN {
            damage.push(torn);
            break;
        }
        let body_len = u32_at(data, at) as usize;
        if !(BODY_FIXED..=MAX_BODY).contains(&body_len) || body_len > rest - PREFIX_LEN {
            damage.push(torn);
            break;
        }
        let crc = u32_at(data, at + 4);
        let body = &data[at + PREFIX_LEN..at + PREFIX_LEN + body_len];
        let len = PREFIX_LEN + body_len;
        match (crc32fast::hash(body) == crc)
            .then(|| decode_body(body))
            .flatten()
        {
            Some((id, batch)) => records.push(Scanned {
                id,
                offset: at as u64,
                len: len as u64,
                batch,
            }),
            // The length looked sane, so the next record most likely starts right after; if it
            // does not, its own checksum says so.
            None => damage.push(Damage::Corrupt { offset: at as u64 }),
        }
        at += len;
    }
    (records, damage)
}

/// Reads the record of `id` at `offset`, checking its checksum again (the file may have been
/// damaged since the scan).
pub fn read_at(file: &File, offset: u64, len: u64, id: u64) -> io::Result<EncodedBatch> {
    let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, offset)?;
    let (found, batch) = scan_record(&buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {offset} fails its checksum"),
        )
    })?;
    if found != id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {offset} has id {found}, expected {id}"),
        ));
    }
    Ok(batch)
}

fn scan_record(buf: &[u8]) -> Option<(u64, EncodedBatch)> {
    if buf.len() < PREFIX_LEN + BODY_FIXED {
        return None;
    }
    let body_len = u32_at(buf, 0) as usize;
    let body = buf.get(PREFIX_LEN..PREFIX_LEN + body_len)?;
    (crc32fast::hash(body) == u32_at(buf, 4))
        .then(|| decode_body(body))
        .flatten()
}

/// The file of the segment whose first record is `first_id`.
pub fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.{SEGMENT_EXT}"))
}

/// Segment files in `dir`, oldest first, with their first ids.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        if let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((id, path));
        }
    }
    found.sort_unstable_by_key(|(id, _)| *id);
    Ok(found)
}

/// Creates a segment file and writes its header.
pub fn create_segment(dir: &Path, first_id: u64) -> io::Result<File> {
    let path = segment_path(dir, first_id);
    // Not `create_new`: a leftover file of a failed attempt with this id is reused. Only this
    // handle writes, sequentially, so the file position is the end.
    let mut file = crate::files::create(&path)?;
    file.write_all(MAGIC)?;
    Ok(file)
}

/// The acknowledged id stored in `dir`: `Ok(0)` when there is no ack file, `Err` with a reason
/// when it is damaged.
pub fn read_acked(dir: &Path) -> Result<u64, String> {
    let data = match fs::read(dir.join(ACK_FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {ACK_FILE}: {e}")),
    };
    if data.len() != 12 {
        return Err(format!("{ACK_FILE} has {} bytes, expected 12", data.len()));
    }
    let id = u64_at(&data, 0);
    if crc32fast::hash(&data[..8]) != u32_at(&data, 8) {
        return Err(format!("{ACK_FILE} fails its checksum"));
    }
    Ok(id)
}

/// Stores the acknowledged id atomically (a reader sees the old or the new one, whole).
///
/// Not fsynced: a stale position after a power loss only means more redelivery, and an fsync
/// here every second would make the file system commit (and so write out) segment data too.
pub fn write_acked(dir: &Path, id: u64) -> io::Result<()> {
    let mut data = Vec::with_capacity(12);
    data.extend_from_slice(&id.to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&id.to_le_bytes()).to_le_bytes());
    let tmp = dir.join(format!("{ACK_FILE}.tmp"));
    crate::files::create(&tmp)?.write_all(&data)?;
    fs::rename(&tmp, dir.join(ACK_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ns: &str, points: u32, text: &str) -> EncodedBatch {
        EncodedBatch {
            ns: ns.into(),
            points,
            payload: text.as_bytes().to_vec(),
        }
    }

    fn segment(records: &[(u64, EncodedBatch)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (id, b) in records {
            encode(*id, b, &mut out);
        }
        out
    }

    #[test]
    fn records_round_trip_with_their_lengths_and_offsets() {
        let a = batch(
            "web.shop",
            2,
            "m value=1 1764000000\nm value=2 1764000001\n",
        );
        let b = batch("db", 1, "");
        let data = segment(&[(7, a.clone()), (8, b.clone())]);
        let (recs, damage) = scan_bytes(&data);
        assert!(damage.is_empty(), "{damage:?}");
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].id, &recs[0].batch), (7, &a));
        assert_eq!((recs[1].id, &recs[1].batch), (8, &b));
        assert_eq!(recs[0].offset, HEADER_LEN);
        assert_eq!(recs[0].len, record_len(&a));
        assert_eq!(recs[1].offset, HEADER_LEN + record_len(&a));
        assert_eq!(data.len() as u64, recs[1].offset + record_len(&b));
    }

    #[test]
    fn a_torn_tail_is_reported_and_everything_before_it_kept() {
        let a = batch("a", 1, "first value=1 1764000000\n");
        let b = batch("a", 1, "second value=2 1764000000\n");
        let full = segment(&[(1, a.clone()), (2, b)]);
        // Every cut inside the second record keeps exactly the first.
        let second_at = (HEADER_LEN + record_len(&a)) as usize;
        for cut in second_at + 1..full.len() {
            let (recs, damage) = scan_bytes(&full[..cut]);
            assert_eq!(recs.len(), 1, "cut at {cut}");
            assert_eq!(recs[0].batch, a);
            assert_eq!(
                damage,
                [Damage::Torn {
                    offset: second_at as u64,
                    bytes: (cut - second_at) as u64
                }],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept() {
        let recs: Vec<(u64, EncodedBatch)> = (1..=3)
            .map(|i| (i, batch("a", 1, &format!("m value={i} 1764000000\n"))))
            .collect();
        let mut data = segment(&recs);
        let second_at = (HEADER_LEN + record_len(&recs[0].1)) as usize;
        // Flip a payload byte of the second record.
        let flip = second_at + PREFIX_LEN + BODY_FIXED + 1 + 3;
        data[flip] ^= 0x20;
        let (found, damage) = scan_bytes(&data);
        let ids: Vec<u64> = found.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(
            damage,
            [Damage::Corrupt {
                offset: second_at as u64
            }]
        );
    }

    #[test]
    fn a_damaged_length_stops_the_scan_of_that_segment() {
        let a = batch("a", 1, "m value=1 1764000000\n");
        let mut data = segment(&[(1, a.clone()), (2, a.clone())]);
        let second_at = (HEADER_LEN + record_len(&a)) as usize;
        data[second_at..second_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (found, damage) = scan_bytes(&data);
        assert_eq!(found.len(), 1);
        assert!(matches!(damage[..], [Damage::Torn { .. }]), "{damage:?}");
    }

    #[test]
    fn a_record_written_in_two_parts_is_the_same_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = batch("ns", 3, "m value=1 1764000000\n");
        let mut whole = Vec::new();
        encode(9, &b, &mut whole);
        let mut head = Vec::new();
        encode_head(9, &b, &mut head);
        let f = File::create(dir.path().join("x")).expect("create");
        write_two(&f, &head, &b.payload).expect("write");
        assert_eq!(fs::read(dir.path().join("x")).expect("read"), whole);
    }

    #[test]
    fn a_file_without_the_magic_is_not_read() {
        let (found, damage) = scan_bytes(b"hello world, not a segment");
        assert!(found.is_empty());
        assert_eq!(damage, [Damage::BadHeader]);
        let (found, damage) = scan_bytes(b"");
        assert!(found.is_empty() && damage.is_empty());
    }

    #[test]
    fn the_ack_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(read_acked(dir.path()), Ok(0));
        write_acked(dir.path(), 123_456).expect("write");
        assert_eq!(read_acked(dir.path()), Ok(123_456));
        let mut raw = fs::read(dir.path().join(ACK_FILE)).expect("read");
        raw[0] ^= 1;
        fs::write(dir.path().join(ACK_FILE), raw).expect("write");
        assert!(read_acked(dir.path())
            .expect_err("damaged")
            .contains("checksum"));
    }
}
