//! The spool's on-disk format: segment files of checksummed records, and the ack file.
//!
//! A segment `{first id:020}.seg` starts with the 8-byte magic `AGSPOOL2`, then records back to
//! back, each:
//!
//! ```text
//! head:  marker [F5 'A' 'G' 'R'] | len u32 LE | id u64 LE | points u32 LE | head_crc u32 LE | body_crc u32 LE
//! body:  ns_len u16 LE | ns | payload                      (len = bytes of body)
//! ```
//!
//! `head_crc` is the CRC-32 (crc32fast) of the head's first 20 bytes, `body_crc` that of the
//! body. The marker makes resynchronising cheap after damage: the scan looks for the next
//! marker whose head checksum holds, and because the head has its own checksum, a record whose
//! payload is damaged still says how many points it held. The marker's first byte never occurs
//! in UTF-8 text, so it never occurs in a payload of line protocol or JSON.
//!
//! Within a segment, record ids are consecutive and the first is the segment's name: a damaged
//! range between two intact records held exactly the ids between theirs.
//!
//! Segments an older agent wrote (`AGSPOOL1`: `len u32 | crc u32 | id u64 | points u32 | ns_len
//! u16 | ns | payload`, no marker) are still read, so an upgrade loses nothing.
//!
//! The ack file `acked` holds the highest record id whose batch was delivered (or dropped) and a
//! CRC of it; it is replaced atomically (write a temporary file, rename).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::output::EncodedBatch;

/// The first bytes of every segment file this agent writes; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"AGSPOOL2";
/// The first bytes of a segment of the previous format.
pub const MAGIC_V1: &[u8; 8] = b"AGSPOOL1";
/// Bytes before the first record.
pub const HEADER_LEN: u64 = MAGIC.len() as u64;
/// The first bytes of every record (format 2); `0xF5` is never part of UTF-8 text.
const MARKER: [u8; 4] = [0xF5, b'A', b'G', b'R'];
/// Bytes of a record's head (format 2).
const HEAD_LEN: usize = 4 + 4 + 8 + 4 + 4 + 4;
/// Bytes of the head covered by `head_crc`.
const HEAD_CHECKED: usize = 20;
/// Fixed part of a body (`ns_len`), format 2.
const BODY_FIXED: usize = 2;
/// Format 1: bytes before a record's body (`len`, `crc`), and the body's fixed part.
const V1_PREFIX: usize = 8;
const V1_BODY_FIXED: usize = 8 + 4 + 2;
/// A `len` above this cannot be a record (messages are at most 5 MiB): the length itself is damaged.
const MAX_BODY: usize = 64 * 1024 * 1024;

const SEGMENT_EXT: &str = "seg";
const ACK_FILE: &str = "acked";

/// The record format of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `AGSPOOL1`: records without marker or head checksum (agents before the resync).
    V1,
    /// `AGSPOOL2`: what this agent writes.
    V2,
}

/// Bytes a batch takes on disk as one record.
pub fn record_len(batch: &EncodedBatch) -> u64 {
    (HEAD_LEN + BODY_FIXED + ns_bytes(batch).len() + batch.payload.len()) as u64
}

/// The namespace as stored: namespaces are short topic names; the cut only guards the u16 field.
fn ns_bytes(batch: &EncodedBatch) -> &[u8] {
    &batch.ns.as_bytes()[..batch.ns.len().min(usize::from(u16::MAX))]
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
    let ns = ns_bytes(batch);
    let body_len = BODY_FIXED + ns.len() + batch.payload.len();
    let start = out.len();
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&batch.points.to_le_bytes());
    let head_crc = crc32fast::hash(&out[start..start + HEAD_CHECKED]);
    out.extend_from_slice(&head_crc.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.extend_from_slice(&(ns.len() as u16).to_le_bytes());
    out.extend_from_slice(ns);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[body_at..]);
    crc.update(&batch.payload);
    let crc = crc.finalize();
    out[body_at - 4..body_at].copy_from_slice(&crc.to_le_bytes());
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

/// Splits `ns_len | ns | payload` into a batch.
fn decode_ns_payload(body: &[u8], points: u32) -> Option<EncodedBatch> {
    let ns_len = usize::from(u16::from_le_bytes([*body.first()?, *body.get(1)?]));
    let ns = body.get(2..2 + ns_len)?;
    let ns = String::from_utf8(ns.to_vec()).ok()?;
    Some(EncodedBatch {
        ns,
        points,
        payload: body[2 + ns_len..].to_vec(),
    })
}

/// A format-2 record head whose checksum holds.
#[derive(Debug, Clone, Copy)]
struct Head {
    body_len: usize,
    id: u64,
    points: u32,
    body_crc: u32,
}

impl Head {
    fn record_len(&self) -> usize {
        HEAD_LEN + self.body_len
    }
}

/// The head at `at` if its marker, checksum and length check (the body may run past the end).
fn head_at(data: &[u8], at: usize) -> Option<Head> {
    let h = data.get(at..at.checked_add(HEAD_LEN)?)?;
    if h[..4] != MARKER || crc32fast::hash(&h[..HEAD_CHECKED]) != u32_at(h, HEAD_CHECKED) {
        return None;
    }
    let body_len = u32_at(h, 4) as usize;
    (BODY_FIXED..=MAX_BODY).contains(&body_len).then(|| Head {
        body_len,
        id: u64_at(h, 8),
        points: u32_at(h, 16),
        body_crc: u32_at(h, 24),
    })
}

/// The head at `at` read as if its length were `body_len` (the stored one being damaged): the
/// damaged record's id and points when only its length was hit.
fn head_with_len(data: &[u8], at: usize, body_len: usize) -> Option<Head> {
    let h = data.get(at..at.checked_add(HEAD_LEN)?)?;
    if h[..4] != MARKER || !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let mut checked = [0u8; HEAD_CHECKED];
    checked.copy_from_slice(&h[..HEAD_CHECKED]);
    checked[4..8].copy_from_slice(&u32::try_from(body_len).ok()?.to_le_bytes());
    (crc32fast::hash(&checked) == u32_at(h, HEAD_CHECKED)).then(|| Head {
        body_len,
        id: u64_at(h, 8),
        points: u32_at(h, 16),
        body_crc: u32_at(h, 24),
    })
}

/// The next offset after `from` where a format-2 head checks.
fn next_head(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < data.len() {
        // Resynchronising is rare (only in damage): a plain byte search is enough.
        let found = at + data[at..].iter().position(|&b| b == MARKER[0])?;
        if head_at(data, found).is_some() {
            return Some(found);
        }
        at = found + 1;
    }
    None
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

/// What kind of damage a range is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The segment header is not `AGSPOOL1`/`AGSPOOL2`; the records were scanned anyway.
    Header,
    /// A record whose framing is intact but whose payload fails its checksum.
    Checksum,
    /// Bytes whose record framing cannot be read (a damaged head or length).
    Unreadable,
    /// The segment ends inside a record (a write cut short).
    Torn,
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DamageKind::Header => "bad segment header",
            DamageKind::Checksum => "a record fails its checksum",
            DamageKind::Unreadable => "unreadable record framing",
            DamageKind::Torn => "incomplete record at the end of the file",
        })
    }
}

/// A damaged byte range found by [`scan`] (adjacent damage is merged into one range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// What was found first in the range.
    pub kind: DamageKind,
    /// Where the range starts in the segment.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Records in the range whose framing could be read: (id, points).
    pub framed: Vec<(u64, u32)>,
    /// Bytes of the range that held records whose framing could not be read (0: every lost
    /// record is in `framed`).
    pub unknown_bytes: u64,
    /// The ids the range held (inclusive), when intact records on both sides bound them.
    pub ids: Option<(u64, u64)>,
}

/// What a damaged range lost, given the acknowledged position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Batches lost, as far as they are known.
    pub batches: u64,
    /// Points in them, as far as they are known.
    pub points: u64,
    /// Bytes whose records' points (and, at the end of a segment, their number) are unknown.
    pub unknown_bytes: u64,
}

impl Damage {
    /// What this range lost: records acknowledged before the damage are not a loss.
    pub fn loss(&self, acked: u64) -> Loss {
        let mut loss = Loss::default();
        for &(id, points) in &self.framed {
            if id > acked {
                loss.batches += 1;
                loss.points += u64::from(points);
            }
        }
        if self.unknown_bytes == 0 {
            return loss;
        }
        match self.ids {
            Some((lo, hi)) => {
                let unframed = (lo.max(acked + 1)..=hi)
                    .filter(|id| !self.framed.iter().any(|(f, _)| f == id))
                    .count() as u64;
                loss.batches += unframed;
                if unframed > 0 {
                    loss.unknown_bytes = self.unknown_bytes;
                }
            }
            None => loss.unknown_bytes = self.unknown_bytes,
        }
        loss
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: u64| if n == 1 { "" } else { "es" };
        match (self.batches, self.unknown_bytes) {
            (0, 0) => write!(f, "no batch lost"),
            (b, 0) => write!(f, "{b} batch{} of {} points lost", s(b), self.points),
            (0, u) => write!(
                f,
                "an unknown number of batches lost in {u} unreadable bytes"
            ),
            (b, u) => write!(
                f,
                "{b} batch{} lost, at least {} points ({u} bytes unreadable)",
                s(b),
                self.points
            ),
        }
    }
}

/// A segment's intact records in order, and its damaged ranges.
#[derive(Debug)]
pub struct Scan {
    /// The record format the segment was read as.
    pub format: Format,
    /// Intact records, in file order.
    pub records: Vec<Scanned>,
    /// Damaged ranges, in file order.
    pub damage: Vec<Damage>,
}

/// Reads a whole segment whose first record is `first_id`.
pub fn scan(path: &Path, first_id: u64) -> io::Result<Scan> {
    let data = fs::read(path)?;
    Ok(scan_bytes(&data, first_id))
}

/// Collects records and damage while scanning, merging adjacent damage.
#[derive(Default)]
struct Found {
    records: Vec<Scanned>,
    damage: Vec<Damage>,
    /// Per damage range: the id of the last record (intact or framed) before it.
    before: Vec<Option<u64>>,
    /// The last record id seen (intact or framed).
    last_id: Option<u64>,
}

impl Found {
    fn record(&mut self, id: u64, offset: usize, len: usize, batch: EncodedBatch) {
        self.last_id = Some(id);
        self.records.push(Scanned {
            id,
            offset: offset as u64,
            len: len as u64,
            batch,
        });
    }

    fn damage(&mut self, kind: DamageKind, offset: usize, bytes: usize, framed: Option<Head>) {
        let (offset, bytes) = (offset as u64, bytes as u64);
        let unknown = if framed.is_some() { 0 } else { bytes };
        let merge = self
            .damage
            .last()
            .is_some_and(|d| d.offset + d.bytes == offset);
        if merge {
            if let Some(d) = self.damage.last_mut() {
                d.bytes += bytes;
                d.unknown_bytes += unknown;
                d.framed.extend(framed.map(|h| (h.id, h.points)));
            }
        } else {
            self.before.push(self.last_id);
            self.damage.push(Damage {
                kind,
                offset,
                bytes,
                framed: framed.map(|h| (h.id, h.points)).into_iter().collect(),
                unknown_bytes: unknown,
                ids: None,
            });
        }
        if let Some(h) = framed {
            self.last_id = Some(h.id);
        }
    }

    /// Bounds each damaged range's ids by the records around it (the first record of a segment
    /// is `first_id`), then returns the result.
    fn finish(mut self, format: Format, first_id: u64) -> Scan {
        // Ids of everything readable, in file order, with offsets, to find what follows a range.
        let mut known: Vec<(u64, u64)> = self.records.iter().map(|r| (r.offset, r.id)).collect();
        for d in &self.damage {
            // Framed records inside a range do not bound it from after.
            known.extend(d.framed.iter().map(|&(id, _)| (d.offset, id)));
        }
        known.sort_unstable();
        for (d, before) in self.damage.iter_mut().zip(&self.before) {
            let end = d.offset + d.bytes;
            let after = known.iter().find(|(at, _)| *at >= end).map(|&(_, id)| id);
            let lo = before.map_or(first_id, |b| b + 1);
            d.ids = after.map(|a| (lo, a.saturating_sub(1)));
        }
        Scan {
            format,
            records: self.records,
            damage: self.damage,
        }
    }
}

fn scan_bytes(data: &[u8], first_id: u64) -> Scan {
    if data.is_empty() {
        // A segment whose header write never happened: nothing in it.
        return Found::default().finish(Format::V2, first_id);
    }
    let header = &data[..data.len().min(MAGIC.len())];
    if header == MAGIC {
        return scan_v2(data, Found::default()).finish(Format::V2, first_id);
    }
    if header == MAGIC_V1 {
        return scan_v1(data, Found::default()).finish(Format::V1, first_id);
    }
    // A damaged header: the records may well be intact. Read them as this version's; if none
    // is found, as the older one's.
    let mut found = Found::default();
    found.damage(DamageKind::Header, 0, header.len(), None);
    if let Some(d) = found.damage.last_mut() {
        d.unknown_bytes = 0; // the header holds no record
    }
    let v2 = scan_v2(data, found);
    if !v2.records.is_empty() || v2.damage.iter().any(|d| !d.framed.is_empty()) {
        return v2.finish(Format::V2, first_id);
    }
    let mut found = Found::default();
    found.damage(DamageKind::Header, 0, header.len(), None);
    if let Some(d) = found.damage.last_mut() {
        d.unknown_bytes = 0;
    }
    let v1 = scan_v1(data, found);
    if !v1.records.is_empty() {
        return v1.finish(Format::V1, first_id);
    }
    v2.finish(Format::V2, first_id)
}

fn scan_v2(data: &[u8], mut found: Found) -> Found {
    let mut at = MAGIC.len().min(data.len());
    while at < data.len() {
        if let Some(h) = head_at(data, at) {
            let len = h.record_len();
            if at + len > data.len() {
                found.damage(DamageKind::Torn, at, data.len() - at, Some(h));
                break;
            }
            let body = &data[at + HEAD_LEN..at + len];
            match (crc32fast::hash(body) == h.body_crc)
                .then(|| decode_ns_payload(body, h.points))
                .flatten()
            {
                Some(batch) => found.record(h.id, at, len, batch),
                None => found.damage(DamageKind::Checksum, at, len, Some(h)),
            }
            at += len;
            continue;
        }
        // Unreadable framing: resynchronise on the next head that checks.
        let next = next_head(data, at + 1);
        let end = next.unwrap_or(data.len());
        // Only the length hit? Then the head checks with the length the next record implies.
        let framed = next
            .and_then(|n| (n - at).checked_sub(HEAD_LEN))
            .and_then(|body_len| head_with_len(data, at, body_len));
        let kind = if next.is_none() && data.len() - at < HEAD_LEN {
            DamageKind::Torn
        } else {
            DamageKind::Unreadable
        };
        found.damage(kind, at, end - at, framed);
        at = end;
    }
    found
}

/// The format of agents before the resync: a damaged length ends the segment's scan.
fn scan_v1(data: &[u8], mut found: Found) -> Found {
    let mut at = MAGIC.len().min(data.len());
    while at < data.len() {
        let rest = data.len() - at;
        if rest < V1_PREFIX {
            found.damage(DamageKind::Torn, at, rest, None);
            break;
        }
        let body_len = u32_at(data, at) as usize;
        if !(V1_BODY_FIXED..=MAX_BODY).contains(&body_len) || body_len > rest - V1_PREFIX {
            found.damage(DamageKind::Torn, at, rest, None);
            break;
        }
        let len = V1_PREFIX + body_len;
        match decode_v1(&data[at..at + len]) {
            Some((id, batch)) => found.record(id, at, len, batch),
            None => found.damage(DamageKind::Checksum, at, len, None),
        }
        at += len;
    }
    found
}

/// A whole format-1 record whose checksum holds.
fn decode_v1(rec: &[u8]) -> Option<(u64, EncodedBatch)> {
    let body = rec.get(V1_PREFIX..)?;
    if body.len() < V1_BODY_FIXED || crc32fast::hash(body) != u32_at(rec, 4) {
        return None;
    }
    let batch = decode_ns_payload(&body[12..], u32_at(body, 8))?;
    Some((u64_at(body, 0), batch))
}

/// A whole format-2 record whose checksums hold.
fn decode_v2(rec: &[u8]) -> Option<(u64, EncodedBatch)> {
    let h = head_at(rec, 0)?;
    let body = rec.get(HEAD_LEN..h.record_len())?;
    if crc32fast::hash(body) != h.body_crc {
        return None;
    }
    Some((h.id, decode_ns_payload(body, h.points)?))
}

/// Reads the record of `id` at `offset`, checking its checksum again (the file may have been
/// damaged since the scan).
pub fn read_at(
    file: &File,
    format: Format,
    offset: u64,
    len: u64,
    id: u64,
) -> io::Result<EncodedBatch> {
    let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, offset)?;
    let decoded = match format {
        Format::V1 => decode_v1(&buf),
        Format::V2 => decode_v2(&buf),
    };
    let (found, batch) = decoded.ok_or_else(|| {
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

/// Moves a damaged segment into `quarantine` (created if missing), named by the time it was
/// moved, and removes the oldest quarantined files past `keep`. Returns the new path.
pub fn quarantine(path: &Path, quarantine: &Path, keep: usize) -> io::Result<PathBuf> {
    crate::files::create_dir_all(quarantine, crate::files::PRIVATE_DIR)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned());
    let to = quarantine.join(format!("{secs:012}-{name}"));
    fs::rename(path, &to)?;
    let mut kept: Vec<PathBuf> = fs::read_dir(quarantine)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(SEGMENT_EXT))
        .collect();
    // Names start with the time, zero-padded: name order is age order.
    kept.sort();
    let excess = kept.len().saturating_sub(keep);
    for old in &kept[..excess] {
        fs::remove_file(old)?;
    }
    Ok(to)
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

/// Stores the acknowledged id: one 12-byte write at offset 0 of the ack file, over the old id.
///
/// In place rather than a new file renamed over the old one: that cost an inode, a rename and,
/// on ext4, the writeback a rename over an existing file starts, which was an eighth of an idle
/// agent's CPU (docs/benchmarks.md, "Idle agent"). Twelve bytes at offset 0 lie in one sector
/// and one page: a killed agent leaves the old id or the new one, whole; a write torn by a power
/// loss fails the checksum, which means redelivery, never loss ([`read_acked`]).
///
/// Not fsynced: a stale position after a power loss only means more redelivery, and an fsync
/// here every second would make the file system commit (and so write out) segment data too.
pub fn write_acked(dir: &Path, id: u64) -> io::Result<()> {
    let mut data = [0u8; 12];
    data[..8].copy_from_slice(&id.to_le_bytes());
    data[8..].copy_from_slice(&crc32fast::hash(&id.to_le_bytes()).to_le_bytes());
    let file = crate::files::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(ACK_FILE))?;
    file.write_all_at(&data, 0)?;
    // Only a file something else lengthened is longer; it would read as damaged.
    if file.metadata()?.len() != data.len() as u64 {
        file.set_len(data.len() as u64)?;
    }
    Ok(())
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

    /// Records 1..=n of `points` = id each, and the offset of each.
    fn numbered(n: u64) -> (Vec<u8>, Vec<usize>) {
        let recs: Vec<(u64, EncodedBatch)> = (1..=n)
            .map(|i| {
                (
                    i,
                    batch("a", i as u32, &format!("m value={i} 1764000000\n")),
                )
            })
            .collect();
        let mut at = HEADER_LEN as usize;
        let offsets = recs
            .iter()
            .map(|(_, b)| {
                let o = at;
                at += record_len(b) as usize;
                o
            })
            .collect();
        (segment(&recs), offsets)
    }

    fn ids(scan: &Scan) -> Vec<u64> {
        scan.records.iter().map(|r| r.id).collect()
    }

    /// A format-1 segment, as an agent before the resync wrote it.
    fn segment_v1(records: &[(u64, EncodedBatch)]) -> Vec<u8> {
        let mut out = MAGIC_V1.to_vec();
        for (id, b) in records {
            let mut body = Vec::new();
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&b.points.to_le_bytes());
            body.extend_from_slice(&(b.ns.len() as u16).to_le_bytes());
            body.extend_from_slice(b.ns.as_bytes());
            body.extend_from_slice(&b.payload);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            out.extend_from_slice(&body);
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
        let scan = scan_bytes(&data, 7);
        assert!(scan.damage.is_empty(), "{:?}", scan.damage);
        let recs = &scan.records;
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].id, &recs[0].batch), (7, &a));
        assert_eq!((recs[1].id, &recs[1].batch), (8, &b));
        assert_eq!(recs[0].offset, HEADER_LEN);
        assert_eq!(recs[0].len, record_len(&a));
        assert_eq!(recs[1].offset, HEADER_LEN + record_len(&a));
        assert_eq!(data.len() as u64, recs[1].offset + record_len(&b));
    }

    #[test]
    fn a_torn_tail_is_counted_from_its_head_and_everything_before_it_kept() {
        let a = batch("a", 1, "first value=1 1764000000\n");
        let b = batch("a", 7, "second value=2 1764000000\n");
        let full = segment(&[(1, a.clone()), (2, b)]);
        let second_at = (HEADER_LEN + record_len(&a)) as usize;
        for cut in second_at + 1..full.len() {
            let scan = scan_bytes(&full[..cut], 1);
            assert_eq!(ids(&scan), [1], "cut at {cut}");
            assert_eq!(scan.records[0].batch, a);
            let [d] = &scan.damage[..] else {
                panic!("one range at cut {cut}: {:?}", scan.damage)
            };
            assert_eq!(
                (d.kind, d.offset, d.bytes),
                (DamageKind::Torn, second_at as u64, (cut - second_at) as u64)
            );
            let loss = d.loss(0);
            if cut - second_at >= HEAD_LEN {
                assert_eq!(
                    loss,
                    Loss {
                        batches: 1,
                        points: 7,
                        unknown_bytes: 0
                    },
                    "cut at {cut}"
                );
            } else {
                assert_eq!(
                    loss.unknown_bytes,
                    (cut - second_at) as u64,
                    "cut at {cut}: unknown, not 0"
                );
            }
        }
    }

    #[test]
    fn a_damaged_payload_is_counted_exactly_and_the_rest_kept() {
        let (mut data, at) = numbered(3);
        data[at[1] + HEAD_LEN + 5] ^= 0x20;
        let scan = scan_bytes(&data, 1);
        assert_eq!(ids(&scan), [1, 3]);
        let [d] = &scan.damage[..] else {
            panic!("{:?}", scan.damage)
        };
        assert_eq!((d.kind, d.offset), (DamageKind::Checksum, at[1] as u64));
        assert_eq!(
            d.loss(0),
            Loss {
                batches: 1,
                points: 2,
                unknown_bytes: 0
            }
        );
        assert_eq!(
            d.loss(2),
            Loss::default(),
            "an acknowledged record is no loss"
        );
    }

    #[test]
    fn an_impossible_length_is_resynchronised_on_and_counted_exactly() {
        let (mut data, at) = numbered(20);
        data[at[1] + 4..at[1] + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let scan = scan_bytes(&data, 1);
        let expected: Vec<u64> = (1..=20).filter(|&i| i != 2).collect();
        assert_eq!(ids(&scan), expected, "every record after it is kept");
        let [d] = &scan.damage[..] else {
            panic!("{:?}", scan.damage)
        };
        assert_eq!(
            (d.kind, d.offset, d.bytes),
            (DamageKind::Unreadable, at[1] as u64, (at[2] - at[1]) as u64)
        );
        assert_eq!(
            d.loss(0),
            Loss {
                batches: 1,
                points: 2,
                unknown_bytes: 0
            },
            "the head checks with the implied length"
        );
    }

    #[test]
    fn overwritten_records_are_counted_by_their_ids_with_points_unknown() {
        let (mut data, at) = numbered(10);
        // Zeros over records 3, 4 and 5 and the start of 6.
        data[at[2]..at[5] + 10].fill(0);
        let scan = scan_bytes(&data, 1);
        assert_eq!(ids(&scan), [1, 2, 7, 8, 9, 10]);
        let [d] = &scan.damage[..] else {
            panic!("{:?}", scan.damage)
        };
        assert_eq!(d.ids, Some((3, 6)));
        assert_eq!(
            d.loss(0),
            Loss {
                batches: 4,
                points: 0,
                unknown_bytes: (at[6] - at[2]) as u64
            }
        );
        assert_eq!(
            format!("{}", d.loss(0)),
            format!(
                "4 batches lost, at least 0 points ({} bytes unreadable)",
                at[6] - at[2]
            )
        );
        // Garbage between records that held no id loses nothing.
        let (clean, at) = numbered(3);
        let mut data = clean[..at[1]].to_vec();
        data.extend_from_slice(b"garbage in between");
        data.extend_from_slice(&clean[at[1]..]);
        let scan = scan_bytes(&data, 1);
        assert_eq!(ids(&scan), [1, 2, 3]);
        assert_eq!(scan.damage[0].loss(0), Loss::default());
        // At the start of a segment, the file name bounds the ids.
        let (mut data, at) = numbered(3);
        data[at[0]] = 0;
        let scan = scan_bytes(&data, 1);
        assert_eq!(ids(&scan), [2, 3]);
        assert_eq!(scan.damage[0].ids, Some((1, 1)));
        assert_eq!(scan.damage[0].loss(0).batches, 1);
    }

    #[test]
    fn a_damaged_header_still_gives_every_record() {
        let (mut data, _) = numbered(21);
        data[..8].copy_from_slice(b"garbage!");
        let scan = scan_bytes(&data, 1);
        assert_eq!(scan.format, Format::V2);
        assert_eq!(ids(&scan), (1..=21).collect::<Vec<_>>());
        let [d] = &scan.damage[..] else {
            panic!("{:?}", scan.damage)
        };
        assert_eq!((d.kind, d.offset, d.bytes), (DamageKind::Header, 0, 8));
        assert_eq!(d.loss(0), Loss::default());
        // A file that is no segment at all: one unreadable range, nothing delivered.
        let scan = scan_bytes(b"hello world, not a segment", 1);
        assert!(scan.records.is_empty());
        assert_eq!(scan.damage.len(), 1);
        assert!(scan.damage[0].loss(0).unknown_bytes > 0);
        let scan = scan_bytes(b"", 1);
        assert!(scan.records.is_empty() && scan.damage.is_empty());
    }

    #[test]
    fn segments_of_the_previous_format_are_read() {
        let recs: Vec<(u64, EncodedBatch)> = (5..=7)
            .map(|i| (i, batch("old", 3, &format!("m value={i} 1764000000\n"))))
            .collect();
        let data = segment_v1(&recs);
        let scan = scan_bytes(&data, 5);
        assert_eq!(scan.format, Format::V1);
        assert!(scan.damage.is_empty());
        assert_eq!(ids(&scan), [5, 6, 7]);
        assert_eq!(scan.records[1].batch, recs[1].1);
        let f = tempfile::tempfile().expect("tmp");
        f.write_all_at(&data, 0).expect("write");
        let r = &scan.records[2];
        let back = read_at(&f, Format::V1, r.offset, r.len, 7).expect("read back");
        assert_eq!(back, recs[2].1);
        // A damaged header on an old segment: still read, as the old format.
        let mut data = data;
        data[..8].fill(b'x');
        let scan = scan_bytes(&data, 5);
        assert_eq!((scan.format, ids(&scan)), (Format::V1, vec![5, 6, 7]));
        // A damaged old record is counted by the ids around it.
        let mut data = segment_v1(&recs);
        let last = data.len() - 1;
        let second_end = data.len() - (V1_PREFIX + V1_BODY_FIXED + 3 + recs[2].1.payload.len());
        data[second_end - 1] ^= 0xff;
        let _ = last;
        let scan = scan_bytes(&data, 5);
        assert_eq!(ids(&scan), [5, 7]);
        assert_eq!(scan.damage[0].loss(0).batches, 1);
    }

    #[test]
    fn read_back_checks_the_record_again() {
        let (data, at) = numbered(2);
        let f = tempfile::tempfile().expect("tmp");
        f.write_all_at(&data, 0).expect("write");
        let len = (at[1] - at[0]) as u64;
        assert!(read_at(&f, Format::V2, at[0] as u64, len, 1).is_ok());
        assert!(
            read_at(&f, Format::V2, at[0] as u64, len, 2).is_err(),
            "wrong id"
        );
        f.write_all_at(b"X", at[0] as u64 + 40).expect("damage");
        assert!(
            read_at(&f, Format::V2, at[0] as u64, len, 1).is_err(),
            "damaged since the scan"
        );
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
    fn quarantine_keeps_only_the_newest_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = dir.path().join("quarantine");
        for i in 1..=6u64 {
            let p = segment_path(dir.path(), i);
            fs::write(&p, b"x").expect("write");
            quarantine(&p, &q, 4).expect("quarantine");
            assert!(!p.exists());
        }
        assert_eq!(fs::read_dir(&q).expect("list").count(), 4);
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

    #[test]
    fn the_ack_file_is_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(ACK_FILE);
        write_acked(dir.path(), 7).expect("write");
        let inode = fs::metadata(&path).expect("meta").ino();
        write_acked(dir.path(), 8).expect("write");
        assert_eq!(read_acked(dir.path()), Ok(8));
        assert_eq!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "no new file renamed over it"
        );
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temporary file"
        );
        // A file lengthened by something else is trimmed back to the 12 bytes.
        let mut long = fs::read(&path).expect("read");
        long.extend_from_slice(b"trailing");
        fs::write(&path, long).expect("write");
        write_acked(dir.path(), 9).expect("write");
        assert_eq!(read_acked(dir.path()), Ok(9));
    }
}
