//! The batcher: collects points per namespace and flushes a namespace's batch when it holds
//! `batch_size` points or its oldest point waited `flush_ms`, encoding it for the spool.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{json, lineproto, PipelineStats, Point, Submission};
use crate::config::Format;
use crate::output::spool::Spool;
use crate::output::EncodedBatch;

/// How batches are cut and encoded.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Points per batch.
    pub batch_size: usize,
    /// Longest wait of a partial batch.
    pub flush_every: Duration,
    /// Line protocol or JSON.
    pub format: Format,
    /// Largest encoded message.
    pub max_message_bytes: usize,
}

struct Pending {
    points: Vec<Point>,
    deadline: Instant,
}

/// The batches being filled, and how large each namespace's last batch was: a new batch is
/// allocated at that size, so a busy namespace gets `batch_size` at once (no regrowing on the
/// hot path) while a quiet one does not hold `batch_size` points' worth of memory for a few
/// dozen points.
#[derive(Default)]
struct Batches {
    pending: HashMap<Arc<str>, Pending>,
    last_len: HashMap<Arc<str>, usize>,
}

impl Batches {
    /// Takes the batch of `ns` out, remembering its size.
    fn take(&mut self, ns: &str) -> Option<Vec<Point>> {
        let p = self.pending.remove(ns)?;
        if let Some(len) = self.last_len.get_mut(ns) {
            *len = p.points.len();
        }
        Some(p.points)
    }
}

/// Encodes the points of `ns` into spool-ready batches that each fit `max_message_bytes`.
pub fn encode(
    format: Format,
    ns: &str,
    points: &[Point],
    max_message_bytes: usize,
) -> Vec<EncodedBatch> {
    let messages = match format {
        Format::Line => lineproto::encode_batch(points, max_message_bytes),
        Format::Json => json::encode_batch(ns, points, max_message_bytes),
    };
    messages
        .into_iter()
        .map(|m| EncodedBatch {
            ns: ns.to_owned(),
            points: m.points,
            payload: m.payload,
        })
        .collect()
}

/// Runs until `shutdown`, then drains what producers already handed in and flushes everything.
pub async fn run_batcher(
    mut rx: mpsc::Receiver<Submission>,
    cfg: BatchConfig,
    spool: Spool,
    stats: Arc<PipelineStats>,
    shutdown: CancellationToken,
) {
    let mut batches = Batches::default();
    let flush = |ns: &str, points: Vec<Point>| {
        let n = points.len() as u64;
        for b in encode(cfg.format, ns, &points, cfg.max_message_bytes) {
            spool.push(b);
        }
        stats.queued.fetch_sub(n, Ordering::Relaxed);
    };
    loop {
        let next_deadline = batches.pending.values().map(|p| p.deadline).min();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            sub = rx.recv() => {
                let Some(sub) = sub else { break };
                add(&mut batches, sub, &cfg, &flush);
            }
            () = sleep_until(next_deadline) => {
                let now = Instant::now();
                let due: Vec<Arc<str>> = batches
                    .pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(ns, _)| Arc::clone(ns))
                    .collect();
                for ns in due {
                    if let Some(points) = batches.take(&ns) {
                        flush(&ns, points);
                    }
                }
            }
        }
    }
    // Refuse new submissions, then take what is already queued.
    rx.close();
    while let Some(sub) = rx.recv().await {
        add(&mut batches, sub, &cfg, &flush);
    }
    let n: usize = batches.pending.values().map(|p| p.points.len()).sum();
    for (ns, p) in batches.pending.drain() {
        flush(&ns, p.points);
    }
    debug!(points = n, "Batcher flushed everything at shutdown.");
}

fn add(
    batches: &mut Batches,
    sub: Submission,
    cfg: &BatchConfig,
    flush: &impl Fn(&str, Vec<Point>),
) {
    let last_len = batches
        .last_len
        .entry(Arc::clone(&sub.ns))
        .or_insert(cfg.batch_size);
    let entry = batches
        .pending
        .entry(Arc::clone(&sub.ns))
        .or_insert_with(|| Pending {
            points: Vec::with_capacity(
                (*last_len)
                    .max(sub.points.len())
                    .min(cfg.batch_size.min(10_000)),
            ),
            deadline: Instant::now() + cfg.flush_every,
        });
    entry.points.extend(sub.points);
    while entry.points.len() >= cfg.batch_size {
        let rest = entry.points.split_off(cfg.batch_size);
        let full = std::mem::replace(&mut entry.points, rest);
        *last_len = cfg.batch_size;
        flush(&sub.ns, full);
    }
    if entry.points.is_empty() {
        batches.pending.remove(&sub.ns);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Pipeline, Rename};
    use shared::Metric;

    fn cfg(batch_size: usize, flush_ms: u64) -> BatchConfig {
        BatchConfig {
            batch_size,
            flush_every: Duration::from_millis(flush_ms),
            format: Format::Line,
            max_message_bytes: 1 << 20,
        }
    }

    fn metrics(n: usize) -> Vec<Metric> {
        (0..n)
            .map(|i| Metric::new(format!("m{i}"), i as f64))
            .collect()
    }

    fn submission(ns: &Arc<str>, n: usize) -> Submission {
        let points = (0..n)
            .map(|i| Point {
                measurement: format!("m{i}"),
                tags: Vec::new(),
                value: shared::Value::Float(1.0),
                timestamp: 1_764_000_000,
            })
            .collect();
        Submission {
            ns: Arc::clone(ns),
            points,
        }
    }

    #[tokio::test]
    async fn a_new_batch_is_allocated_at_the_size_of_the_namespaces_last_one() {
        let flushed = std::sync::Mutex::new(Vec::new());
        let flush =
            |_: &str, points: Vec<Point>| flushed.lock().expect("flushed").push(points.len());
        let cfg = cfg(1000, 1000);
        let (quiet, busy): (Arc<str>, Arc<str>) = ("quiet".into(), "busy".into());
        let mut b = Batches::default();
        let capacity = |b: &Batches, ns: &Arc<str>| b.pending.get(ns).map(|p| p.points.capacity());

        // A namespace seen for the first time gets a whole batch.
        add(&mut b, submission(&quiet, 30), &cfg, &flush);
        assert_eq!(capacity(&b, &quiet), Some(1000));
        assert_eq!(b.take(&quiet).map(|p| p.len()), Some(30));
        // Its next batch is sized by the last one, and grows if it must.
        add(&mut b, submission(&quiet, 20), &cfg, &flush);
        assert_eq!(capacity(&b, &quiet), Some(30));
        add(&mut b, submission(&quiet, 20), &cfg, &flush);
        assert_eq!(b.take(&quiet).map(|p| p.len()), Some(40));

        // A namespace that filled a batch keeps getting whole ones.
        add(&mut b, submission(&busy, 1500), &cfg, &flush);
        assert_eq!(*flushed.lock().expect("flushed"), [1000]);
        assert_eq!(b.take(&busy).map(|p| p.len()), Some(500));
        add(&mut b, submission(&busy, 10), &cfg, &flush);
        assert_eq!(capacity(&b, &busy), Some(500), "its last batch held 500");
        add(&mut b, submission(&busy, 990), &cfg, &flush);
        assert_eq!(*flushed.lock().expect("flushed"), [1000, 1000]);
        add(&mut b, submission(&busy, 1), &cfg, &flush);
        assert_eq!(capacity(&b, &busy), Some(1000));
    }

    #[tokio::test]
    async fn flushes_full_batches_at_once_and_partial_ones_after_flush_ms() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (p, rx) = Pipeline::new("h", 16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_batcher(
            rx,
            cfg(10, 200),
            spool.clone(),
            Arc::clone(p.stats()),
            stop.clone(),
        ));
        p.submit_metrics("a", metrics(25), Rename::Keep)
            .await
            .expect("submit");
        // Two full batches of 10 go out at once; 5 wait for flush_ms.
        let first = tokio::time::timeout(Duration::from_millis(150), spool.next())
            .await
            .expect("full batch is flushed before flush_ms");
        assert_eq!(first.batch.points, 10);
        spool.ack(first.id);
        let second = spool.next().await;
        assert_eq!(second.batch.points, 10);
        spool.ack(second.id);
        let third = tokio::time::timeout(Duration::from_millis(1000), spool.next())
            .await
            .expect("partial batch flushed after flush_ms");
        assert_eq!(third.batch.points, 5);
        assert!(String::from_utf8_lossy(&third.batch.payload).starts_with("m20,host=h value=20.0 "));
        spool.ack(third.id);
        stop.cancel();
        task.await.expect("join");
        assert_eq!(p.stats().queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn shutdown_flushes_everything_accepted() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (p, rx) = Pipeline::new("h", 16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_batcher(
            rx,
            cfg(1000, 60_000),
            spool.clone(),
            Arc::clone(p.stats()),
            stop.clone(),
        ));
        p.submit_metrics("a", metrics(3), Rename::Keep)
            .await
            .expect("a");
        p.submit_metrics("b", metrics(4), Rename::Keep)
            .await
            .expect("b");
        stop.cancel();
        task.await.expect("join");
        assert_eq!(spool.stats().batches, 2);
        let closed = p.submit_metrics("a", metrics(1), Rename::Keep).await;
        assert!(closed.is_err(), "no points are accepted after shutdown");
    }
}
