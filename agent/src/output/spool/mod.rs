//! The spool between the batcher and the output: batches wait here, on disk, until the output
//! confirms them, and are handed out in order.
//!
//! Layout under the spool directory (format in [`segment`]): segment files of checksummed
//! records, appended in id order, and an `acked` file with the highest id delivered. A segment
//! is deleted once every record in it is acknowledged (or dropped). Past `max_bytes` of segment
//! files, the oldest segments are dropped whole and counted.
//!
//! Durability (see `docs/spool.md`): `push` writes the record into the open segment with one
//! `write` (no user-space buffer), so it survives the agent being killed; a background task
//! ([`Spool::run_sync`]) stores the ack position every [`SYNC_EVERY`] and fsyncs the segments
//! when a record waited that long, and [`Spool::sync`] fsyncs at shutdown. A power loss can
//! lose what was pushed in the last two seconds and not yet delivered; a crash redelivers what
//! was delivered in the last second.
//!
//! When the directory cannot be written (full disk, read-only or missing directory), the spool
//! keeps batches in memory (`durable = false`, bounded by [`MEMORY_FALLBACK_MAX`]), logs it, and
//! tries the disk again every `retry_every`.
//!
//! Recently pushed batches stay in memory too (up to `cache_bytes`), so a healthy output is fed
//! without reading the disk; older ones (a backlog, or what a restart found) are read back.

mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::EncodedBatch;

/// How often segments are fsynced and the ack position stored.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most memory the spool holds when it cannot write to disk.
pub const MEMORY_FALLBACK_MAX: u64 = 64 * 1024 * 1024;
/// Records read back from disk per trip to the blocking pool.
const READ_AHEAD: usize = 32;

/// A batch handed out by [`Spool::next`], to be [`Spool::ack`]ed once delivered.
#[derive(Debug, Clone)]
pub struct SpoolRecord {
    /// The record's sequence number.
    pub id: u64,
    /// The batch.
    pub batch: Arc<EncodedBatch>,
}

/// Figures for `/me/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches waiting.
    pub batches: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Whether the spool is on disk.
    pub durable: bool,
    /// Batches dropped past the bound (or found corrupt on disk) since start.
    pub dropped_batches: u64,
    /// Points in those batches (a corrupt record's points are unknown and not counted).
    pub dropped_points: u64,
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {reason}")]
pub struct SpoolError {
    /// The spool directory.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Tuning knobs; [`Spool::open`] picks them from `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Batches also kept in memory, so the output rarely reads the disk.
    pub cache_bytes: u64,
    /// How long after a disk error the disk is tried again.
    pub retry_every: Duration,
}

impl SpoolOptions {
    /// Segments of 1/16 of the bound (64 KiB to 64 MiB), so a drop frees a small share of it.
    pub fn for_bound(max_bytes: u64) -> Self {
        SpoolOptions {
            segment_bytes: (max_bytes / 16).clamp(64 * 1024, 64 * 1024 * 1024),
            cache_bytes: (max_bytes / 4).min(16 * 1024 * 1024),
            retry_every: Duration::from_secs(5),
        }
    }
}

/// One waiting batch.
struct Entry {
    id: u64,
    /// Where it is on disk: segment (its first id), offset; `None` = memory only.
    seg: Option<u64>,
    offset: u64,
    len: u64,
    points: u32,
    /// The batch, when it is in memory.
    batch: Option<Arc<EncodedBatch>>,
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Entries of this segment still queued.
    live: u64,
}

struct Active {
    first_id: u64,
    file: Arc<File>,
}

struct Inner {
    queue: VecDeque<Entry>,
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    next_id: u64,
    /// Highest id acknowledged, and the one last stored in the ack file.
    acked: u64,
    acked_stored: u64,
    /// Bytes of segment files, and of memory-only and cached batches.
    disk_bytes: u64,
    memory_bytes: u64,
    cached_bytes: u64,
    /// Whether the active segment was written since the last fsync.
    dirty: bool,
    /// Closed segments not fsynced yet, by first id.
    to_sync: Vec<(u64, Arc<File>)>,
    /// The last id written as of the previous sync round.
    sync_mark: u64,
    /// Why the spool is not durable; when the disk is tried again.
    problem: Option<String>,
    retry_at: Option<Instant>,
    stats: SpoolStats,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Serialises pushes (their writes happen outside `inner`); holds the record-head buffer.
    writer: Mutex<Vec<u8>>,
    notify: Notify,
    /// `None`: a memory-only spool that never tries the disk.
    dir: Option<PathBuf>,
    max_bytes: u64,
    opts: SpoolOptions,
}

/// The queue of encoded batches; cheap to clone, one consumer.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing), bounded by `max_bytes`, and queues what a
    /// previous run left there. Blocking: it reads every segment.
    ///
    /// A directory that cannot be used is not an error: the spool runs in memory and says so in
    /// its stats, logs, and [`Spool::problem`], and tries the disk again later.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Self::open_with(dir, max_bytes, SpoolOptions::for_bound(max_bytes))
    }

    /// [`Spool::open`] with explicit tuning.
    pub fn open_with(dir: &Path, max_bytes: u64, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        let spool = Self::new(Some(dir.to_path_buf()), max_bytes, opts);
        spool.recover(dir);
        Ok(spool)
    }

    /// A spool that never touches the disk (the baseline of the benchmarks, and a fallback).
    pub fn in_memory(max_bytes: u64) -> Spool {
        let spool = Self::new(None, max_bytes, SpoolOptions::for_bound(max_bytes));
        spool.lock().problem = Some("memory-only spool".to_owned());
        spool
    }

    fn new(dir: Option<PathBuf>, max_bytes: u64, opts: SpoolOptions) -> Spool {
        Spool {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    queue: VecDeque::new(),
                    segments: BTreeMap::new(),
                    active: None,
                    next_id: 1,
                    acked: 0,
                    acked_stored: 0,
                    disk_bytes: 0,
                    memory_bytes: 0,
                    cached_bytes: 0,
                    dirty: false,
                    to_sync: Vec::new(),
                    sync_mark: 0,
                    problem: None,
                    retry_at: None,
                    stats: SpoolStats {
                        durable: dir.is_some(),
                        ..SpoolStats::default()
                    },
                }),
                writer: Mutex::new(Vec::new()),
                notify: Notify::new(),
                dir,
                max_bytes,
                opts,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what a previous run left in `dir`.
    fn recover(&self, dir: &Path) {
        let mut g = self.lock();
        if let Err(e) = crate::files::create_dir_all(dir, crate::files::PRIVATE_DIR) {
            g.degrade(
                format!("cannot create spool directory {}: {e}", dir.display()),
                self.shared.opts.retry_every,
            );
            return;
        }
        let acked = segment::read_acked(dir).unwrap_or_else(|reason| {
            warn!(dir = %dir.display(), %reason, "Spool ack file unusable; everything in the spool will be delivered again.");
            0
        });
        g.acked = acked;
        g.acked_stored = acked;
        g.next_id = acked + 1;
        let segments = match segment::list_segments(dir) {
            Ok(s) => s,
            Err(e) => {
                g.degrade(
                    format!("cannot list spool directory {}: {e}", dir.display()),
                    self.shared.opts.retry_every,
                );
                return;
            }
        };
        let mut found = 0u64;
        for (first_id, path) in segments {
            let (records, damage) = match segment::scan(&path) {
                Ok(r) => r,
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "Cannot read a spool segment; skipping it.");
                    continue;
                }
            };
            for d in &damage {
                warn!(segment = %path.display(), damage = %d, "Spool segment damaged (likely a crash or power loss); skipping the damaged part.");
                if !matches!(d, segment::Damage::BadHeader) {
                    g.stats.dropped_batches += 1;
                }
            }
            if damage.contains(&segment::Damage::BadHeader) {
                continue;
            }
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            let mut live = 0;
            for r in records {
                g.next_id = g.next_id.max(r.id + 1);
                if r.id <= acked {
                    continue;
                }
                live += 1;
                found += u64::from(r.batch.points);
                let batch = (g.cached_bytes + r.len <= self.shared.opts.cache_bytes).then(|| {
                    g.cached_bytes += r.len;
                    Arc::new(r.batch.clone())
                });
                g.stats.batches += 1;
                g.stats.bytes += r.len;
                g.queue.push_back(Entry {
                    id: r.id,
                    seg: Some(first_id),
                    offset: r.offset,
                    len: r.len,
                    points: r.batch.points,
                    batch,
                });
            }
            if live == 0 {
                if let Err(e) = fs::remove_file(&path) {
                    warn!(segment = %path.display(), error = %e, "Cannot remove a delivered spool segment.");
                }
                continue;
            }
            g.disk_bytes += bytes;
            g.segments.insert(first_id, Segment { path, bytes, live });
        }
        if g.stats.batches > 0 {
            info!(
                batches = g.stats.batches,
                points = found,
                bytes = g.stats.bytes,
                "Spool holds batches from a previous run; delivering them first."
            );
        }
    }

    /// Appends a batch: written to the open segment (one `write`, no fsync) before `push`
    /// returns. Past the bound the oldest segments are dropped and counted.
    ///
    /// The write happens outside the queue's lock, so the delivery loop is never held up by the
    /// disk; the batch is queued (in memory) first, and the output may already be taking it.
    pub fn push(&self, batch: EncodedBatch) {
        let shared = &*self.shared;
        let batch = Arc::new(batch);
        let len = segment::record_len(&batch);
        let mut deletions = Vec::new();
        // One push at a time: the file holds records in id order.
        let mut head = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (id, place) = {
            let mut g = self.lock();
            let id = g.next_id;
            g.next_id += 1;
            let place = match &shared.dir {
                Some(dir) => g.reserve(dir, shared, id, len, &mut deletions),
                None => None,
            };
            match place {
                None => g.memory_bytes += len,
                Some(_) => g.cached_bytes += len,
            }
            g.stats.batches += 1;
            g.stats.bytes += len;
            g.queue.push_back(Entry {
                id,
                seg: place.as_ref().map(|p| p.0),
                offset: place.as_ref().map_or(0, |p| p.1),
                len,
                points: batch.points,
                batch: Some(Arc::clone(&batch)),
            });
            let memory_max = if shared.dir.is_some() {
                shared.max_bytes.min(MEMORY_FALLBACK_MAX)
            } else {
                shared.max_bytes
            };
            while g.memory_bytes > memory_max {
                if !g.drop_oldest_in_memory() {
                    break;
                }
            }
            (id, place)
        };
        shared.notify.notify_one();
        if let (Some((seg, _, file)), Some(dir)) = (place, &shared.dir) {
            head.clear();
            segment::encode_head(id, &batch, &mut head);
            let written = segment::write_two(&file, &head, &batch.payload);
            let mut g = self.lock();
            match written {
                Ok(()) => g.written(id, len, shared.opts.cache_bytes),
                Err(e) => {
                    // What reached the file is a torn record at its end, which a scan skips.
                    g.unwritten(id, seg, len);
                    g.close_active(&mut deletions);
                    g.degrade(
                        format!("cannot write to the spool in {}: {e}", dir.display()),
                        shared.opts.retry_every,
                    );
                }
            }
        }
        drop(head);
        remove_files(deletions);
    }

    /// The oldest batch not yet acknowledged; waits for one. Cancel-safe: nothing changes until
    /// [`Spool::ack`].
    pub async fn next(&self) -> SpoolRecord {
        loop {
            let notified = self.shared.notify.notified();
            let want: Vec<(u64, u64, u64, u64)> = {
                let g = self.lock();
                match g.queue.front() {
                    None => Vec::new(),
                    Some(e) => match &e.batch {
                        Some(b) => {
                            return SpoolRecord {
                                id: e.id,
                                batch: Arc::clone(b),
                            }
                        }
                        None => g
                            .queue
                            .iter()
                            .take(READ_AHEAD)
                            .take_while(|e| e.batch.is_none())
                            .filter_map(|e| e.seg.map(|s| (e.id, s, e.offset, e.len)))
                            .collect(),
                    },
                }
            };
            if want.is_empty() {
                notified.await;
                continue;
            }
            self.read_back(want).await;
        }
    }

    /// Reads records back from disk into the queue; a record that cannot be read is dropped
    /// from the queue, logged and counted (its segment was damaged after the start-up scan).
    async fn read_back(&self, want: Vec<(u64, u64, u64, u64)>) {
        let Some(dir) = self.shared.dir.clone() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut open: Option<(u64, File)> = None;
            let mut out = Vec::with_capacity(want.len());
            for (id, seg, offset, len) in want {
                if open.as_ref().is_none_or(|(s, _)| *s != seg) {
                    match File::open(segment::segment_path(&dir, seg)) {
                        Ok(f) => open = Some((seg, f)),
                        Err(e) => {
                            out.push((id, Err(e.to_string())));
                            open = None;
                            continue;
                        }
                    }
                }
                if let Some((_, f)) = &open {
                    out.push((
                        id,
                        segment::read_at(f, offset, len, id).map_err(|e| e.to_string()),
                    ));
                }
            }
            out
        })
        .await;
        let Ok(read) = read else {
            return;
        };
        let mut deletions = Vec::new();
        {
            let mut g = self.lock();
            for (id, result) in read {
                // The entry may have been acked or dropped meanwhile.
                let Some(pos) = g.queue.iter().position(|e| e.id == id) else {
                    continue;
                };
                match result {
                    Ok(batch) => {
                        if g.queue[pos].batch.is_some() {
                            continue;
                        }
                        let len = g.queue[pos].len;
                        g.cached_bytes += len;
                        g.queue[pos].batch = Some(Arc::new(batch));
                    }
                    Err(error) => {
                        if g.queue[pos].batch.is_some() {
                            continue;
                        }
                        warn!(id, %error, "Cannot read a batch back from the spool; dropping it.");
                        if let Some(e) = g.queue.remove(pos) {
                            g.stats.dropped_batches += 1;
                            g.stats.dropped_points += u64::from(e.points);
                            g.forget(&e, &mut deletions);
                        }
                    }
                }
            }
        }
        remove_files(deletions);
    }

    /// Removes the record `id` once its batch was delivered (or refused for good). Only the
    /// oldest record can be acknowledged; other ids are ignored.
    pub fn ack(&self, id: u64) {
        let mut deletions = Vec::new();
        {
            let mut g = self.lock();
            if g.queue.front().is_none_or(|e| e.id != id) {
                return;
            }
            if let Some(e) = g.queue.pop_front() {
                g.acked = g.acked.max(e.id);
                g.forget(&e, &mut deletions);
            }
        }
        remove_files(deletions);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Current figures.
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats
    }

    /// Why the spool is not durable right now (for `/me/status`), if it is not.
    pub fn problem(&self) -> Option<String> {
        self.lock().problem.clone()
    }

    /// Fsyncs every segment written since the last fsync and stores the ack position.
    /// Blocking; called once more at shutdown.
    pub fn sync(&self) {
        self.sync_round(true);
    }

    /// One round of the sync task. Records the output already confirmed need no fsync, and
    /// neither do the ones pushed since the last round (the output is probably taking them right
    /// now): segments are fsynced only when a record written before the last round is still
    /// waiting. So a healthy output causes no forced disk writes (segments are often deleted
    /// before the kernel writes them back at all), and a record the output does not take
    /// within one round is on disk by the next.
    fn sync_round(&self, force: bool) {
        let Some(dir) = &self.shared.dir else {
            return;
        };
        let (files, acked) = {
            let mut g = self.lock();
            let g = &mut *g;
            let segments = &g.segments;
            g.to_sync.retain(|(seg, _)| segments.contains_key(seg));
            let oldest_waiting = g.queue.iter().find(|e| e.seg.is_some()).map(|e| e.id);
            let mark = std::mem::replace(&mut g.sync_mark, g.next_id - 1);
            let mut files = Vec::new();
            match oldest_waiting {
                // Everything on disk was delivered: nothing to make durable.
                None => {
                    g.to_sync.clear();
                    g.dirty = false;
                }
                Some(oldest) if force || oldest <= mark => {
                    files.extend(g.to_sync.drain(..).map(|(_, f)| f));
                    if g.dirty {
                        if let Some(a) = &g.active {
                            files.push(Arc::clone(&a.file));
                        }
                        g.dirty = false;
                    }
                }
                Some(_) => {}
            }
            let acked = (g.acked != g.acked_stored).then_some(g.acked);
            (files, acked)
        };
        for f in files {
            if let Err(e) = f.sync_data() {
                warn!(error = %e, "Cannot fsync a spool segment; its newest records may be lost on power loss.");
            }
        }
        if let Some(id) = acked {
            match segment::write_acked(dir, id) {
                Ok(()) => {
                    let mut g = self.lock();
                    g.acked_stored = g.acked_stored.max(id);
                }
                Err(e) => {
                    debug!(error = %e, "Cannot store the spool's ack position; will retry.");
                }
            }
        }
    }

    /// Fsyncs and stores the ack position every [`SYNC_EVERY`] until `cancel`, then once more.
    pub async fn run_sync(self, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(SYNC_EVERY) => false,
                () = cancel.cancelled() => true,
            };
            let me = self.clone();
            if tokio::task::spawn_blocking(move || me.sync_round(stop))
                .await
                .is_err()
            {
                warn!("Spool sync task failed.");
            }
            if stop {
                return;
            }
        }
    }
}

fn remove_files(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(segment = %p.display(), error = %e, "Cannot remove a spool segment.");
            }
        }
    }
}

impl Inner {
    /// Makes room for a record of `len` bytes in the open segment (rolling, dropping the oldest
    /// segments past the bound, opening a segment) and reserves it; returns (segment, offset,
    /// file), or `None` when the spool is not on disk right now.
    fn reserve(
        &mut self,
        dir: &Path,
        shared: &Shared,
        id: u64,
        len: u64,
        deletions: &mut Vec<PathBuf>,
    ) -> Option<(u64, u64, Arc<File>)> {
        // Roll: close a full segment (its fsync happens off this path).
        let full = self.active.as_ref().is_some_and(|a| {
            self.segments.get(&a.first_id).is_some_and(|s| {
                s.bytes > segment::HEADER_LEN && s.bytes + len > shared.opts.segment_bytes
            })
        });
        if full {
            self.close_active(deletions);
        }
        // The bound: drop the oldest closed segments until this record fits.
        while self.disk_bytes + len > shared.max_bytes {
            let oldest = self
                .segments
                .keys()
                .next()
                .copied()
                .filter(|s| self.active.as_ref().is_none_or(|a| a.first_id != *s));
            match oldest {
                Some(seg) => self.drop_segment(seg, deletions),
                None => break,
            }
        }
        if self.active.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            let opened = crate::files::create_dir_all(dir, crate::files::PRIVATE_DIR)
                .and_then(|()| segment::create_segment(dir, id));
            match opened {
                Ok(file) => {
                    self.segments.insert(
                        id,
                        Segment {
                            path: segment::segment_path(dir, id),
                            bytes: segment::HEADER_LEN,
                            live: 0,
                        },
                    );
                    self.disk_bytes += segment::HEADER_LEN;
                    self.active = Some(Active {
                        first_id: id,
                        file: Arc::new(file),
                    });
                    self.dirty = true;
                }
                Err(e) => {
                    // A half-created file holds nothing; remove it so it is not read as damage.
                    let _ = fs::remove_file(segment::segment_path(dir, id));
                    self.degrade(
                        format!("cannot create a spool segment in {}: {e}", dir.display()),
                        shared.opts.retry_every,
                    );
                    return None;
                }
            }
        }
        let active = self.active.as_ref()?;
        let (seg, file) = (active.first_id, Arc::clone(&active.file));
        let s = self.segments.get_mut(&seg)?;
        let offset = s.bytes;
        s.bytes += len;
        s.live += 1;
        self.disk_bytes += len;
        Some((seg, offset, file))
    }

    /// Record `id` reached its segment: it may leave memory now (past the cache budget).
    fn written(&mut self, id: u64, len: u64, cache_bytes: u64) {
        self.dirty = true;
        if let Some(problem) = self.problem.take() {
            info!(was = %problem, "Spool is on disk again.");
            self.stats.durable = true;
            self.retry_at = None;
        }
        if self.cached_bytes <= cache_bytes {
            return;
        }
        // Pushed last, so it is at the back unless it was delivered already.
        if let Some(e) = self.queue.iter_mut().rev().find(|e| e.id == id) {
            if e.batch.take().is_some() {
                self.cached_bytes -= len;
            }
        }
    }

    /// Record `id` could not be written: it stays queued, in memory only.
    fn unwritten(&mut self, id: u64, seg: u64, len: u64) {
        let Some(e) = self.queue.iter_mut().rev().find(|e| e.id == id) else {
            return;
        };
        e.seg = None;
        self.cached_bytes -= len;
        self.memory_bytes += len;
        if let Some(s) = self.segments.get_mut(&seg) {
            s.live -= 1;
        }
    }

    fn degrade(&mut self, problem: String, retry_every: Duration) {
        if self.problem.is_none() {
            warn!(%problem, "Spool cannot use the disk; buffering in memory until it can.");
        }
        self.problem = Some(problem);
        self.stats.durable = false;
        self.retry_at = Some(Instant::now() + retry_every);
    }

    fn close_active(&mut self, deletions: &mut Vec<PathBuf>) {
        if let Some(a) = self.active.take() {
            if self.dirty {
                self.to_sync.push((a.first_id, a.file));
            }
            self.dirty = false;
            if self.segments.get(&a.first_id).is_some_and(|s| s.live == 0) {
                self.remove_segment(a.first_id, deletions);
            }
        }
    }

    fn remove_segment(&mut self, seg: u64, deletions: &mut Vec<PathBuf>) {
        if let Some(s) = self.segments.remove(&seg) {
            self.disk_bytes -= s.bytes;
            deletions.push(s.path);
        }
    }

    /// Drops every queued batch of segment `seg` and the segment itself, counting them.
    fn drop_segment(&mut self, seg: u64, deletions: &mut Vec<PathBuf>) {
        let (mut batches, mut points) = (0u64, 0u64);
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for e in std::mem::take(&mut self.queue) {
            if e.seg == Some(seg) {
                batches += 1;
                points += u64::from(e.points);
                self.release(&e);
            } else {
                kept.push_back(e);
            }
        }
        self.queue = kept;
        self.stats.dropped_batches += batches;
        self.stats.dropped_points += points;
        warn!(
            batches,
            points, "Spool is full; dropped its oldest segment."
        );
        self.remove_segment(seg, deletions);
    }

    /// Drops the oldest memory-only batch; false if there is none.
    fn drop_oldest_in_memory(&mut self) -> bool {
        let Some(pos) = self.queue.iter().position(|e| e.seg.is_none()) else {
            return false;
        };
        let Some(e) = self.queue.remove(pos) else {
            return false;
        };
        warn!(ns = %e.batch.as_ref().map_or("", |b| b.ns.as_str()), points = e.points, "Spool memory fallback is full; dropped its oldest batch.");
        self.stats.dropped_batches += 1;
        self.stats.dropped_points += u64::from(e.points);
        let mut none = Vec::new();
        self.forget(&e, &mut none);
        true
    }

    /// Accounting for an entry leaving the queue (without touching its segment).
    fn release(&mut self, e: &Entry) {
        self.stats.batches -= 1;
        self.stats.bytes -= e.len;
        if e.seg.is_none() {
            self.memory_bytes -= e.len;
        } else if e.batch.is_some() {
            self.cached_bytes -= e.len;
        }
    }

    /// An entry left the queue: release it and delete its segment once nothing in it waits.
    fn forget(&mut self, e: &Entry, deletions: &mut Vec<PathBuf>) {
        self.release(e);
        let Some(seg) = e.seg else { return };
        let empty = self.segments.get_mut(&seg).is_some_and(|s| {
            s.live -= 1;
            s.live == 0
        });
        let active = self.active.as_ref().is_some_and(|a| a.first_id == seg);
        if empty && !active {
            self.remove_segment(seg, deletions);
        }
    }
}

#[cfg(test)]
mod tests;
