//! The spool between the batcher and the output: batches wait here until the output confirms
//! them, in order.
//!
//! This version keeps batches in memory, bounded by `max_bytes` (oldest dropped past the bound,
//! counted); the durable on-disk spool replaces its internals behind the same interface.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tracing::warn;

use super::EncodedBatch;

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
    /// Batches dropped past the bound since start.
    pub dropped_batches: u64,
    /// Points in those batches.
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

#[derive(Default)]
struct Inner {
    queue: VecDeque<SpoolRecord>,
    next_id: u64,
    stats: SpoolStats,
}

/// The queue of encoded batches; cheap to clone, one consumer.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    max_bytes: u64,
}

impl Spool {
    /// Opens the spool in `dir`, bounded by `max_bytes`.
    pub fn open(_dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Ok(Spool {
            inner: Arc::default(),
            notify: Arc::default(),
            max_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch; past the bound the oldest batches are dropped and counted.
    pub fn push(&self, batch: EncodedBatch) {
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        g.stats.batches += 1;
        g.stats.bytes += batch.payload.len() as u64;
        g.queue.push_back(SpoolRecord {
            id,
            batch: Arc::new(batch),
        });
        while g.stats.bytes > self.max_bytes && g.queue.len() > 1 {
            if let Some(old) = g.queue.pop_front() {
                g.stats.batches -= 1;
                g.stats.bytes -= old.batch.payload.len() as u64;
                g.stats.dropped_batches += 1;
                g.stats.dropped_points += u64::from(old.batch.points);
                warn!(ns = %old.batch.ns, points = old.batch.points, "Spool is full; dropped its oldest batch.");
            }
        }
        drop(g);
        self.notify.notify_one();
    }

    /// The oldest batch not yet acknowledged; waits for one. Cancel-safe.
    pub async fn next(&self) -> SpoolRecord {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.lock().queue.front().cloned() {
                return r;
            }
            notified.await;
        }
    }

    /// Removes the record `id` once its batch was delivered (or refused for good).
    pub fn ack(&self, id: u64) {
        let mut g = self.lock();
        if g.queue.front().is_some_and(|r| r.id == id) {
            if let Some(r) = g.queue.pop_front() {
                g.stats.batches -= 1;
                g.stats.bytes -= r.batch.payload.len() as u64;
            }
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Current figures.
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats
    }
}
