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
//! ([`Spool::run_sync`]) stores the ack position every [`SYNC_EVERY`] while anything waits (and
//! sleeps until the next push when nothing does) and fsyncs the segments when a record waited
//! that long, and [`Spool::sync`] fsyncs at shutdown. A power loss can
//! lose what was pushed in the last two seconds and not yet delivered; a crash redelivers what
//! was delivered in the last second.
//!
//! When the directory cannot be written (full disk, read-only or missing directory), the spool
//! keeps batches in memory (`durable = false`, bounded by [`MEMORY_FALLBACK_MAX`]), logs it, and
//! tries the disk again every `retry_every`: on a push, and from the sync task, so it is durable
//! again within a round of the disk having room.
//!
//! A damaged segment found at start gives every intact record (the scan resynchronises on the
//! next record marker); what the damage lost is counted, exactly where the records' framing can
//! be read, and the file is moved to `quarantine/` once its records are delivered.
//!
//! Recently pushed batches stay in memory too (up to `cache_bytes`), so a healthy output is fed
//! without reading the disk; older ones (a backlog, or what a restart found) are read back.

mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{EncodedBatch, RunLimit};
use crate::logging::{Burst, Repeats};

/// How often segments are fsynced and the ack position stored.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most memory the spool holds when it cannot write to disk.
pub const MEMORY_FALLBACK_MAX: u64 = 64 * 1024 * 1024;
/// Records read back from disk per trip to the blocking pool.
const READ_AHEAD: usize = 32;
/// Damaged segments kept in `quarantine/` (each at most a segment, 1/16 of the bound).
pub const QUARANTINE_KEEP: usize = 4;
/// The folder of the spool directory damaged segments are moved to.
pub const QUARANTINE_DIR: &str = "quarantine";
/// How often a repeated warning (a drop per batch) is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A batch handed out by [`Spool::next`], to be [`Spool::ack`]ed once delivered.
#[derive(Debug, Clone)]
pub struct SpoolRecord {
    /// The record's sequence number.
    pub id: u64,
    /// The batch.
    pub batch: Arc<EncodedBatch>,
}

/// Where [`Spool::push`] put a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Written to a segment file (`write(2)`, fsynced by the sync task's policy): it survives the
    /// agent being killed.
    Disk,
    /// In memory only (no usable disk, or a memory-only spool): lost if the agent dies first.
    Memory,
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
    /// Batches dropped past the bound (or found damaged on disk) since start.
    pub dropped_batches: u64,
    /// Points in those batches (a damaged record's points count when its framing is readable).
    pub dropped_points: u64,
    /// Damaged byte ranges found in the spool's segments since start.
    pub damaged_ranges: u64,
    /// Bytes of damaged records whose framing could not be read: their points (and, at the end
    /// of a segment, their number) are not in the dropped figures. 0 = the figures are exact.
    pub lost_unknown_bytes: u64,
    /// The dropped figures split by why (for `/metrics`); they add up to the totals above.
    pub dropped_by: [Dropped; DropReason::ALL.len()],
}

/// Why the spool dropped batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Past `output.spool_max_bytes`: the oldest segment went.
    SpoolFull,
    /// On memory (no usable disk) and past its bound: the oldest batch went.
    MemoryFull,
    /// Found damaged on disk when the spool was opened.
    Damaged,
    /// A record that could not be read back for delivery.
    Unreadable,
}

impl DropReason {
    /// Every reason, in the order of [`SpoolStats::dropped_by`].
    pub const ALL: [DropReason; 4] = [
        DropReason::SpoolFull,
        DropReason::MemoryFull,
        DropReason::Damaged,
        DropReason::Unreadable,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SpoolFull => "spool_full",
            DropReason::MemoryFull => "memory_full",
            DropReason::Damaged => "damaged",
            DropReason::Unreadable => "unreadable",
        }
    }
}

/// Batches and points dropped for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Batches.
    pub batches: u64,
    /// Points in them.
    pub points: u64,
}

impl SpoolStats {
    /// Counts a drop in the totals and under its reason.
    fn drop(&mut self, reason: DropReason, batches: u64, points: u64) {
        self.dropped_batches += batches;
        self.dropped_points += points;
        let by = &mut self.dropped_by[reason as usize];
        by.batches += batches;
        by.points += points;
    }
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
            retry_every: Duration::from_secs(1),
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
    /// How its records are laid out (segments of an older agent are read as they are).
    format: segment::Format,
    /// Damage was found in it: it goes to quarantine instead of being deleted.
    damaged: bool,
}

/// A segment file to delete (or quarantine) once the lock is released.
struct Removal {
    path: PathBuf,
    damaged: bool,
}

/// The warnings that would repeat once per batch, rate-limited.
struct Warnings {
    bound: Repeats,
    memory: Repeats,
    unreadable: Repeats,
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
    warnings: Warnings,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Serialises pushes (their writes happen outside `inner`); holds the record-head buffer.
    writer: Mutex<Vec<u8>>,
    notify: Notify,
    /// Wakes the sync task, which sleeps while it has nothing to do ([`Spool::run_sync`]).
    sync_wake: Notify,
    /// Rounds the sync task made (they are what an idle agent's spool costs).
    sync_rounds: AtomicU64,
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
                    warnings: Warnings {
                        bound: Repeats::new(WARN_EVERY),
                        memory: Repeats::new(WARN_EVERY),
                        unreadable: Repeats::new(WARN_EVERY),
                    },
                }),
                writer: Mutex::new(Vec::new()),
                notify: Notify::new(),
                sync_wake: Notify::new(),
                sync_rounds: AtomicU64::new(0),
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
        let mut removals = Vec::new();
        for (first_id, path) in segments {
            let scan = match segment::scan(&path, first_id) {
                Ok(r) => r,
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "Cannot read a spool segment; skipping it.");
                    continue;
                }
            };
            for d in &scan.damage {
                let loss = d.loss(acked);
                g.stats.damaged_ranges += 1;
                g.stats.drop(DropReason::Damaged, loss.batches, loss.points);
                g.stats.lost_unknown_bytes += loss.unknown_bytes;
                warn!(
                    segment = %path.display(),
                    offset = d.offset,
                    bytes = d.bytes,
                    damage = %d.kind,
                    lost_batches = loss.batches,
                    lost_points = loss.points,
                    unknown_bytes = loss.unknown_bytes,
                    "Spool segment damaged (likely a crash, a power loss or a disk fault): {loss}; the intact records around it are kept."
                );
            }
            let damaged = !scan.damage.is_empty();
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            let mut live = 0;
            for r in scan.records {
                g.next_id = g.next_id.max(r.id + 1);
                if r.id <= acked {
                    continue;
                }
                live += 1;
                let points = r.batch.points;
                found += u64::from(points);
                let batch = (g.cached_bytes + r.len <= self.shared.opts.cache_bytes).then(|| {
                    g.cached_bytes += r.len;
                    Arc::new(r.batch)
                });
                g.stats.batches += 1;
                g.stats.bytes += r.len;
                g.queue.push_back(Entry {
                    id: r.id,
                    seg: Some(first_id),
                    offset: r.offset,
                    len: r.len,
                    points,
                    batch,
                });
            }
            for d in &scan.damage {
                for &(id, _) in &d.framed {
                    g.next_id = g.next_id.max(id + 1);
                }
            }
            if live == 0 {
                removals.push(Removal { path, damaged });
                continue;
            }
            g.disk_bytes += bytes;
            g.segments.insert(
                first_id,
                Segment {
                    path,
                    bytes,
                    live,
                    format: scan.format,
                    damaged,
                },
            );
        }
        drop(g);
        self.shared.remove_files(removals);
        let g = self.lock();
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
    /// returns. Past the bound the oldest segments are dropped and counted. Says where the batch
    /// is: [`Stored::Disk`] survives the agent being killed, [`Stored::Memory`] does not.
    ///
    /// The write happens outside the queue's lock, so the delivery loop is never held up by the
    /// disk; the batch is queued (in memory) first, and the output may already be taking it.
    pub fn push(&self, batch: EncodedBatch) -> Stored {
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
        let mut stored = Stored::Memory;
        if let (Some((seg, _, file)), Some(dir)) = (place, &shared.dir) {
            head.clear();
            segment::encode_head(id, &batch, &mut head);
            let written = segment::write_two(&file, &head, &batch.payload);
            let mut g = self.lock();
            match written {
                Ok(()) => {
                    g.written(id, len, shared.opts.cache_bytes);
                    stored = Stored::Disk;
                }
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
        shared.remove_files(deletions);
        shared.sync_wake.notify_one();
        stored
    }

    /// The oldest batch not yet acknowledged; waits for one. Cancel-safe: nothing changes until
    /// [`Spool::ack`].
    pub async fn next(&self) -> SpoolRecord {
        loop {
            let notified = self.shared.notify.notified();
            let want: Vec<Want> = {
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
                            .filter_map(|e| {
                                let seg = e.seg?;
                                Some(Want {
                                    id: e.id,
                                    seg,
                                    // Always known; were it not, the read fails and
                                    // drops the record rather than stall delivery.
                                    format: g
                                        .segments
                                        .get(&seg)
                                        .map_or(segment::Format::V2, |s| s.format),
                                    offset: e.offset,
                                    len: e.len,
                                })
                            })
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

    /// The oldest batch not yet acknowledged and the ones queued right after it for the same
    /// namespace, while they are in memory and within `limit`; waits for the first. The oldest
    /// always comes, whatever its size. Cancel-safe like [`Spool::next`]; acknowledge the run
    /// with [`Spool::ack_through`] and its last id.
    pub async fn next_run(&self, limit: RunLimit) -> Vec<SpoolRecord> {
        let first = self.next().await;
        let mut run = vec![first];
        if limit.batches <= 1 {
            return run;
        }
        let g = self.lock();
        let mut bytes = run[0].batch.payload.len() as u64;
        // The queue still starts with `first` unless a drop past the bound took it meanwhile;
        // then the run is just `first`, and its ack finds nothing to remove.
        if g.queue.front().is_none_or(|e| e.id != run[0].id) {
            return run;
        }
        for e in g.queue.iter().skip(1) {
            let Some(b) = &e.batch else { break };
            bytes += b.payload.len() as u64;
            if run.len() >= limit.batches || bytes > limit.bytes || b.ns != run[0].batch.ns {
                break;
            }
            run.push(SpoolRecord {
                id: e.id,
                batch: Arc::clone(b),
            });
        }
        run
    }

    /// Reads records back from disk into the queue; a record that cannot be read is dropped
    /// from the queue, logged and counted (its segment was damaged after the start-up scan).
    async fn read_back(&self, want: Vec<Want>) {
        let Some(dir) = self.shared.dir.clone() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut open: Option<(u64, File)> = None;
            let mut out = Vec::with_capacity(want.len());
            for Want {
                id,
                seg,
                format,
                offset,
                len,
            } in want
            {
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
                        segment::read_at(f, format, offset, len, id).map_err(|e| e.to_string()),
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
                        if let Some(e) = g.queue.remove(pos) {
                            if let Some(b) = g.warnings.unreadable.record(1, u64::from(e.points)) {
                                warn_unreadable(&b, Some((id, &error)));
                            }
                            g.stats.drop(DropReason::Unreadable, 1, u64::from(e.points));
                            g.forget(&e, &mut deletions);
                        }
                    }
                }
            }
        }
        self.shared.remove_files(deletions);
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
        self.shared.remove_files(deletions);
    }

    /// Removes every record up to and including `last` from the front of the queue: a run
    /// [`Spool::next_run`] handed out was delivered (or refused for good).
    pub fn ack_through(&self, last: u64) {
        let mut deletions = Vec::new();
        {
            let mut g = self.lock();
            while g.queue.front().is_some_and(|e| e.id <= last) {
                if let Some(e) = g.queue.pop_front() {
                    g.acked = g.acked.max(e.id);
                    g.forget(&e, &mut deletions);
                }
            }
        }
        self.shared.remove_files(deletions);
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
        self.shared.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let (files, acked) = {
            let mut g = self.lock();
            let g = &mut *g;
            // The disk is probed while the spool is off it, so it is durable again within a
            // round of the disk having room, without waiting for a push.
            if g.problem.is_some() && g.active.is_none() {
                let id = g.next_id;
                g.open_active(dir, &self.shared, id);
            }
            g.flush_warnings(force);
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

    /// Whether a sync round has anything to do: a record waits (to be fsynced if it waits
    /// long, and its ack stored once delivered), an ack position is not stored yet, a segment
    /// was not fsynced, the disk is to be tried again, or a warning is still to be logged.
    fn wants_sync_round(&self) -> bool {
        if self.shared.dir.is_none() {
            return false;
        }
        let g = self.lock();
        let w = &g.warnings;
        !g.queue.is_empty()
            || g.acked != g.acked_stored
            || g.dirty
            || !g.to_sync.is_empty()
            || g.problem.is_some()
            || w.bound.has_unreported()
            || w.memory.has_unreported()
            || w.unreadable.has_unreported()
    }

    /// Sync rounds made so far.
    pub fn sync_rounds(&self) -> u64 {
        self.shared.sync_rounds.load(Ordering::Relaxed)
    }

    /// Returns [`SYNC_EVERY`] after the sync task has something to do. With nothing waiting it
    /// sleeps until a push wakes it, so an idle agent makes one round per batch it writes, not
    /// one a second (docs/benchmarks.md, "Idle agent").
    async fn next_sync_round(&self) {
        while !self.wants_sync_round() {
            self.shared.sync_wake.notified().await;
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }

    /// Fsyncs and stores the ack position every [`SYNC_EVERY`] while anything waits, until
    /// `cancel`, then once more.
    pub async fn run_sync(self, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                () = self.next_sync_round() => false,
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

fn warn_bound(b: &Burst) {
    warn!(
        batches = b.batches,
        points = b.points,
        "Spool is full; dropped its oldest segment: {b}."
    );
}

fn warn_memory(b: &Burst) {
    warn!(
        batches = b.batches,
        points = b.points,
        "Spool memory fallback is full; dropped its oldest batch: {b}."
    );
}

fn warn_unreadable(b: &Burst, first: Option<(u64, &str)>) {
    let (id, error) = first.unzip();
    warn!(
        id,
        error,
        batches = b.batches,
        points = b.points,
        "Cannot read a batch back from the spool; dropped {b}."
    );
}

/// A record [`Spool::next`] reads back from disk.
struct Want {
    id: u64,
    seg: u64,
    format: segment::Format,
    offset: u64,
    len: u64,
}

impl Shared {
    /// Deletes segment files whose records are all gone; moves damaged ones to quarantine.
    fn remove_files(&self, removals: Vec<Removal>) {
        for r in removals {
            let quarantine = self.dir.as_ref().filter(|_| r.damaged);
            let result = match quarantine {
                Some(dir) => {
                    segment::quarantine(&r.path, &dir.join(QUARANTINE_DIR), QUARANTINE_KEEP).map(
                        |to| info!(segment = %r.path.display(), to = %to.display(), "Moved a damaged spool segment to quarantine; its intact records were delivered."),
                    )
                }
                None => fs::remove_file(&r.path),
            };
            if let Err(e) = result {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(segment = %r.path.display(), error = %e, "Cannot remove a spool segment.");
                }
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
        deletions: &mut Vec<Removal>,
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
        if self.active.is_none() && !self.open_active(dir, shared, id) {
            return None;
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

    /// Opens a new segment whose first record will be `id` (the next id), unless a disk error
    /// was met less than `retry_every` ago; false when the spool stays off the disk.
    fn open_active(&mut self, dir: &Path, shared: &Shared, id: u64) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
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
                        format: segment::Format::V2,
                        damaged: false,
                    },
                );
                self.disk_bytes += segment::HEADER_LEN;
                self.active = Some(Active {
                    first_id: id,
                    file: Arc::new(file),
                });
                self.dirty = true;
                // The header write reached the disk: new batches are durable again.
                self.recovered();
                true
            }
            Err(e) => {
                // A half-created file holds nothing; remove it so it is not read as damage.
                let _ = fs::remove_file(segment::segment_path(dir, id));
                self.degrade(
                    format!("cannot create a spool segment in {}: {e}", dir.display()),
                    shared.opts.retry_every,
                );
                false
            }
        }
    }

    /// Logs the counts of rate-limited warnings whose window passed (all of them: at shutdown).
    fn flush_warnings(&mut self, all: bool) {
        if let Some(b) = self.warnings.bound.pending(all) {
            warn_bound(&b);
        }
        if let Some(b) = self.warnings.memory.pending(all) {
            warn_memory(&b);
        }
        if let Some(b) = self.warnings.unreadable.pending(all) {
            warn_unreadable(&b, None);
        }
    }

    fn recovered(&mut self) {
        if let Some(problem) = self.problem.take() {
            info!(was = %problem, "Spool is on disk again.");
            self.stats.durable = true;
            self.retry_at = None;
        }
    }

    /// Record `id` reached its segment: it may leave memory now (past the cache budget).
    fn written(&mut self, id: u64, len: u64, cache_bytes: u64) {
        self.dirty = true;
        self.recovered();
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

    fn close_active(&mut self, deletions: &mut Vec<Removal>) {
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

    fn remove_segment(&mut self, seg: u64, deletions: &mut Vec<Removal>) {
        if let Some(s) = self.segments.remove(&seg) {
            self.disk_bytes -= s.bytes;
            deletions.push(Removal {
                path: s.path,
                damaged: s.damaged,
            });
        }
    }

    /// Drops every queued batch of segment `seg` and the segment itself, counting them.
    fn drop_segment(&mut self, seg: u64, deletions: &mut Vec<Removal>) {
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
        self.stats.drop(DropReason::SpoolFull, batches, points);
        if let Some(b) = self.warnings.bound.record(batches, points) {
            warn_bound(&b);
        }
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
        if let Some(b) = self.warnings.memory.record(1, u64::from(e.points)) {
            warn_memory(&b);
        }
        self.stats
            .drop(DropReason::MemoryFull, 1, u64::from(e.points));
        let mut none = Vec::new(); // memory-only: no file
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
    fn forget(&mut self, e: &Entry, deletions: &mut Vec<Removal>) {
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
