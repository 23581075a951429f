//! The batcher: collects points per namespace and flushes a namespace's batch when it holds
//! `batch_size` points or its oldest point waited `flush_ms`, encoding it for the spool.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{json, lineproto, PipelineStats, Point, Stored, Submission};
use crate::config::Format;
use crate::output::spool::Spool;
use crate::output::EncodedBatch;

/// Most submissions taken from the channel in one round before the waiters of the round are
/// answered: a group commit shares one flush per namespace among everything queued, but a
/// never-empty channel must not keep waiters waiting.
const ROUND_MAX: usize = 1024;

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
    /// The queue bound's share of these points, given back as they are encoded.
    permit: Option<OwnedSemaphorePermit>,
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
    fn take(&mut self, ns: &str) -> Option<(Vec<Point>, Option<OwnedSemaphorePermit>)> {
        let p = self.pending.remove(ns)?;
        if let Some(len) = self.last_len.get_mut(ns) {
            *len = p.points.len();
        }
        Some((p.points, p.permit))
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

/// Where flushed batches go, and who waits for them.
struct Sink<'a> {
    cfg: &'a BatchConfig,
    spool: &'a Spool,
    stats: &'a PipelineStats,
    /// Producers waiting for their points to be in the spool, with their namespace.
    waiters: Vec<(Arc<str>, oneshot::Sender<Stored>)>,
    /// Namespaces a batch of which went to memory only during this round.
    in_memory: HashSet<Arc<str>>,
}

impl Sink<'_> {
    fn flush(&mut self, ns: &str, points: Vec<Point>) {
        let n = points.len() as u64;
        for b in encode(self.cfg.format, ns, &points, self.cfg.max_message_bytes) {
            if self.spool.push(b) == Stored::Memory && !self.in_memory.contains(ns) {
                self.in_memory.insert(ns.into());
            }
        }
        self.stats.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Group commit: flushes every namespace someone waits on (with everything pending for it),
    /// then answers all the round's waiters at once. A waiter hears [`Stored::Memory`] when any
    /// batch of its namespace went to memory only in this round (the points of a waiter all
    /// arrive in the round that answers it).
    fn commit(&mut self, batches: &mut Batches) {
        // In the order of their first waiter, so a round's batches keep arrival order.
        let mut namespaces: Vec<Arc<str>> = Vec::new();
        for (ns, _) in &self.waiters {
            if !namespaces.contains(ns) {
                namespaces.push(Arc::clone(ns));
            }
        }
        for ns in namespaces {
            if let Some((points, permit)) = batches.take(&ns) {
                self.flush(&ns, points);
                drop(permit);
            }
        }
        for (ns, tx) in self.waiters.drain(..) {
            let stored = if self.in_memory.contains(&ns) {
                Stored::Memory
            } else {
                Stored::Disk
            };
            // A producer that went away no longer needs the answer; its points are spooled.
            let _ = tx.send(stored);
        }
        self.in_memory.clear();
    }

    /// Adds a submission, keeping its waiter for the round's commit.
    fn take_in(&mut self, batches: &mut Batches, mut sub: Submission) {
        if let Some(tx) = sub.done.take() {
            self.waiters.push((Arc::clone(&sub.ns), tx));
        }
        let cfg = self.cfg;
        add(batches, sub, cfg, &mut |ns, points| self.flush(ns, points));
    }
}

/// Runs until `shutdown`, then drains what producers already handed in and flushes everything.
///
/// Each round takes one submission and whatever else is already queued (up to [`ROUND_MAX`]);
/// if any of them waits for the spool, the round ends with a group commit. Points nobody waits
/// for (the agent's own collectors) are batched as before: flushed at `batch_size` points or
/// after `flush_every`.
pub async fn run_batcher(
    mut rx: mpsc::Receiver<Submission>,
    cfg: BatchConfig,
    spool: Spool,
    stats: Arc<PipelineStats>,
    shutdown: CancellationToken,
) {
    let mut batches = Batches::default();
    let mut sink = Sink {
        cfg: &cfg,
        spool: &spool,
        stats: &stats,
        waiters: Vec::new(),
        in_memory: HashSet::new(),
    };
    loop {
        let next_deadline = batches.pending.values().map(|p| p.deadline).min();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            sub = rx.recv() => {
                let Some(sub) = sub else { break };
                sink.in_memory.clear();
                sink.take_in(&mut batches, sub);
                for _ in 1..ROUND_MAX {
                    match rx.try_recv() {
                        Ok(sub) => sink.take_in(&mut batches, sub),
                        Err(_) => break,
                    }
                }
                sink.commit(&mut batches);
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
                    if let Some((points, permit)) = batches.take(&ns) {
                        sink.flush(&ns, points);
                        drop(permit);
                    }
                }
            }
        }
    }
    // Refuse new submissions (and waits for room), then take what is already queued.
    rx.close();
    sink.in_memory.clear();
    while let Some(sub) = rx.recv().await {
        sink.take_in(&mut batches, sub);
    }
    let n: usize = batches.pending.values().map(|p| p.points.len()).sum();
    let namespaces: Vec<Arc<str>> = batches.pending.keys().cloned().collect();
    for ns in namespaces {
        if let Some((points, permit)) = batches.take(&ns) {
            sink.flush(&ns, points);
            drop(permit);
        }
    }
    sink.commit(&mut batches);
    debug!(points = n, "Batcher flushed everything at shutdown.");
}

fn add(
    batches: &mut Batches,
    sub: Submission,
    cfg: &BatchConfig,
    flush: &mut impl FnMut(&str, Vec<Point>),
) {
    let Submission {
        ns, points, permit, ..
    } = sub;
    let last_len = batches
        .last_len
        .entry(Arc::clone(&ns))
        .or_insert(cfg.batch_size);
    let entry = batches
        .pending
        .entry(Arc::clone(&ns))
        .or_insert_with(|| Pending {
            points: Vec::with_capacity(
                (*last_len)
                    .max(points.len())
                    .min(cfg.batch_size.min(10_000)),
            ),
            permit: None,
            deadline: Instant::now() + cfg.flush_every,
        });
    entry.points.extend(points);
    match (&mut entry.permit, permit) {
        (Some(held), Some(more)) => held.merge(more),
        (slot @ None, more) => *slot = more,
        (Some(_), None) => {}
    }
    while entry.points.len() >= cfg.batch_size {
        let total = entry.points.len();
        let rest = entry.points.split_off(cfg.batch_size);
        let full = std::mem::replace(&mut entry.points, rest);
        *last_len = cfg.batch_size;
        // The flushed points' share of the bound, given back once they are encoded.
        let share = entry
            .permit
            .as_mut()
            .and_then(|p| p.split(p.num_permits() * cfg.batch_size / total));
        flush(&ns, full);
        drop(share);
    }
    if entry.points.is_empty() {
        batches.pending.remove(&ns);
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
    use crate::pipeline::{Pipeline, Rename, SubmitError, Wait};
    use shared::Metric;

    /// Runs the batcher over `p`'s queue into `spool` until the returned token is cancelled.
    fn start_batcher(
        rx: mpsc::Receiver<Submission>,
        p: &Pipeline,
        spool: &Spool,
        cfg: BatchConfig,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_batcher(
            rx,
            cfg,
            spool.clone(),
            Arc::clone(p.stats()),
            stop.clone(),
        ));
        (stop, task)
    }

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
            permit: None,
            done: None,
        }
    }

    #[tokio::test]
    async fn a_new_batch_is_allocated_at_the_size_of_the_namespaces_last_one() {
        let flushed = std::sync::Mutex::new(Vec::new());
        let mut flush =
            |_: &str, points: Vec<Point>| flushed.lock().expect("flushed").push(points.len());
        let cfg = cfg(1000, 1000);
        let (quiet, busy): (Arc<str>, Arc<str>) = ("quiet".into(), "busy".into());
        let mut b = Batches::default();
        let capacity = |b: &Batches, ns: &Arc<str>| b.pending.get(ns).map(|p| p.points.capacity());

        // A namespace seen for the first time gets a whole batch.
        add(&mut b, submission(&quiet, 30), &cfg, &mut flush);
        assert_eq!(capacity(&b, &quiet), Some(1000));
        assert_eq!(b.take(&quiet).map(|(p, _)| p.len()), Some(30));
        // Its next batch is sized by the last one, and grows if it must.
        add(&mut b, submission(&quiet, 20), &cfg, &mut flush);
        assert_eq!(capacity(&b, &quiet), Some(30));
        add(&mut b, submission(&quiet, 20), &cfg, &mut flush);
        assert_eq!(b.take(&quiet).map(|(p, _)| p.len()), Some(40));

        // A namespace that filled a batch keeps getting whole ones.
        add(&mut b, submission(&busy, 1500), &cfg, &mut flush);
        assert_eq!(*flushed.lock().expect("flushed"), [1000]);
        assert_eq!(b.take(&busy).map(|(p, _)| p.len()), Some(500));
        add(&mut b, submission(&busy, 10), &cfg, &mut flush);
        assert_eq!(capacity(&b, &busy), Some(500), "its last batch held 500");
        add(&mut b, submission(&busy, 990), &cfg, &mut flush);
        assert_eq!(*flushed.lock().expect("flushed"), [1000, 1000]);
        add(&mut b, submission(&busy, 1), &cfg, &mut flush);
        assert_eq!(capacity(&b, &busy), Some(1000));
    }

    #[tokio::test]
    async fn flushes_full_batches_at_once_and_partial_ones_after_flush_ms() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (p, rx) = Pipeline::new("h", 16);
        let (stop, task) = start_batcher(rx, &p, &spool, cfg(10, 200));
        p.submit_metrics("a", "test", metrics(25), Rename::Keep)
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

    fn points(n: usize) -> Vec<Point> {
        submission(&Arc::from("x"), n).points
    }

    async fn submit_waiting(p: &Pipeline, ns: &str, n: usize) -> oneshot::Receiver<Stored> {
        let pts = points(n);
        let permit = p
            .reserve(crate::pipeline::submission_bytes(&pts), Wait::Forever)
            .await
            .expect("room");
        p.submit_reserved(ns, "test", pts, permit, true)
            .await
            .expect("queued")
            .expect("an answer to wait for")
    }

    #[tokio::test]
    async fn waiters_share_one_flush_are_answered_at_once_and_give_the_bound_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (p, rx) = Pipeline::with_bound("h", 16, 1 << 20);
        // flush_ms is a minute: only the waiters can make the batcher flush now.
        let (stop, task) = start_batcher(rx, &p, &spool, cfg(1000, 60_000));
        // The agent's own points wait for flush_ms; three posts queue before the batcher runs.
        p.submit("a", "test", points(2)).await.expect("collector");
        let answers = [
            submit_waiting(&p, "a", 3).await,
            submit_waiting(&p, "a", 4).await,
            submit_waiting(&p, "b", 5).await,
        ];
        for a in answers {
            let stored = tokio::time::timeout(Duration::from_secs(5), a)
                .await
                .expect("answered before flush_ms")
                .expect("answered");
            assert_eq!(stored, Stored::Disk);
        }
        // One group commit: one batch per namespace, the collector's points included.
        let s = spool.stats();
        assert_eq!(s.batches, 2, "{s:?}");
        let first = spool.next().await;
        assert_eq!((first.batch.ns.as_str(), first.batch.points), ("a", 9));
        assert_eq!(p.stats().queued.load(Ordering::Relaxed), 0);
        // Encoded points gave their share of the bound back: all of it is free again.
        let all = p
            .reserve(usize::MAX, Wait::AtMost(Duration::from_millis(100)))
            .await;
        assert!(all.is_ok(), "the whole bound is free once encoded");
        drop(all);
        // Points nobody waits for still wait for flush_ms.
        p.submit("c", "test", points(1)).await.expect("collector");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(spool.stats().batches, 2);
        stop.cancel();
        task.await.expect("join");
    }

    #[tokio::test]
    async fn a_full_bound_makes_a_bounded_wait_fail_and_collectors_wait() {
        let (p, mut rx) = Pipeline::with_bound("h", 16, 1 << 20);
        let held = p.reserve(usize::MAX, Wait::Forever).await.expect("all");
        let full = p
            .reserve(1000, Wait::AtMost(Duration::from_millis(50)))
            .await;
        assert!(matches!(full, Err(SubmitError::Full(_))), "{full:?}");
        // A collector's submission waits instead of failing, and goes through once room is back.
        let collector = tokio::spawn({
            let p = p.clone();
            async move { p.submit("a", "test", points(3)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!collector.is_finished(), "the collector waits for room");
        drop(held);
        collector.await.expect("join").expect("submitted");
        assert_eq!(rx.recv().await.map(|s| s.points.len()), Some(3));
        // Stopping ends bounded waits at once.
        let _held = p.reserve(usize::MAX, Wait::Forever).await.expect("all");
        p.stop_waiting();
        let r = p
            .reserve(1000, Wait::AtMost(Duration::from_secs(3600)))
            .await;
        assert!(matches!(r, Err(SubmitError::Closed(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_waiter_hears_memory_when_its_batch_is_not_on_disk() {
        let spool = Spool::in_memory(1 << 30);
        let (p, rx) = Pipeline::new("h", 16);
        let (stop, task) = start_batcher(rx, &p, &spool, cfg(1000, 60_000));
        let answer = submit_waiting(&p, "a", 3).await.await.expect("answered");
        assert_eq!(answer, Stored::Memory);
        stop.cancel();
        task.await.expect("join");
    }

    #[tokio::test]
    async fn shutdown_flushes_everything_accepted() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (p, rx) = Pipeline::new("h", 16);
        let (stop, task) = start_batcher(rx, &p, &spool, cfg(1000, 60_000));
        p.submit_metrics("a", "test", metrics(3), Rename::Keep)
            .await
            .expect("a");
        p.submit_metrics("b", "test", metrics(4), Rename::Keep)
            .await
            .expect("b");
        stop.cancel();
        task.await.expect("join");
        assert_eq!(spool.stats().batches, 2);
        let closed = p
            .submit_metrics("a", "test", metrics(1), Rename::Keep)
            .await;
        assert!(closed.is_err(), "no points are accepted after shutdown");
    }
}
