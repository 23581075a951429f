//! The point pipeline: producers hand metrics in, they are normalised into points, batched per
//! namespace, encoded, and handed to the spool in front of the output.
//!
//! ```text
//! producers --submit--> [bounded channel] --> batcher (per ns) --encode--> spool --> output
//!                  \--> open taps (copies, never waited for: tap.rs)
//! ```

pub mod batch;
pub mod json;
pub mod lineproto;
pub mod normalize;
pub mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shared::{Metric, Value};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use crate::output::spool::Stored;
pub use normalize::{MetricError, Rename};

/// Default bound of the queue between producers and the batcher (`output.queue_max_bytes`).
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// One metric, normalised: what leaves the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement, after renaming.
    pub measurement: String,
    /// Tags sorted by key, `host` included.
    pub tags: Vec<(String, String)>,
    /// The single field `value`.
    pub value: Value,
    /// Unix time in seconds.
    pub timestamp: i64,
}

impl Point {
    /// About how much memory the point holds: itself and its heap allocations, each counted with
    /// the allocator's overhead. The queue's byte bound counts points with this.
    pub fn mem_bytes(&self) -> usize {
        // glibc's malloc: 16 bytes of header and rounding per allocation, about.
        const PER_ALLOC: usize = 16;
        let heap = |cap: usize| if cap == 0 { 0 } else { cap + PER_ALLOC };
        let tags: usize = self
            .tags
            .iter()
            .map(|(k, v)| heap(k.capacity()) + heap(v.capacity()))
            .sum();
        let value = match &self.value {
            Value::Str(s) => heap(s.capacity()),
            _ => 0,
        };
        std::mem::size_of::<Point>()
            + heap(self.measurement.capacity())
            + heap(self.tags.capacity() * std::mem::size_of::<(String, String)>())
            + tags
            + value
    }
}

/// One encoded message and the number of points it carries (the encoder knows; nothing counts
/// them again afterwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Line protocol or JSON.
    pub payload: Vec<u8>,
    /// Points in the payload.
    pub points: u32,
}

/// Points of one namespace handed to the batcher together.
#[derive(Debug)]
pub struct Submission {
    /// The namespace (the database downstream).
    pub ns: Arc<str>,
    /// Normalised points.
    pub points: Vec<Point>,
    /// Normalised points already encoded as line protocol (from `/post`, when the output
    /// format is line protocol).
    pub lines: Lines,
    /// The share of the queue's byte bound these points hold; the batcher gives it back (drops
    /// it) as it encodes them.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Told where the points went once they were handed to the spool (a durable `/post`
    /// answer waits for it); `None` when nobody waits.
    pub done: Option<oneshot::Sender<Stored>>,
}

/// How long a producer waits for room in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As long as it takes: the agent's own collectors, whose points are never refused.
    Forever,
    /// As long as it takes, unless the agent is stopping (the rest of a `/post` body that
    /// started).
    WhileRunning,
    /// At most this long, then [`SubmitError::Full`]; also given up when the agent is stopping.
    AtMost(Duration),
}

/// Why points were not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The agent is shutting down.
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
    /// The queue stayed full for the whole wait.
    #[error("the pipeline's queue stayed full for {} ms (output.queue_max_bytes)", .0.as_millis())]
    Full(Duration),
}

/// Counters of the pipeline, read by `/me/status`.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Points accepted since start.
    pub accepted: AtomicU64,
    /// Metrics rejected since start.
    pub rejected: AtomicU64,
    /// Points submitted but not yet encoded into a batch.
    pub queued: AtomicU64,
}

/// The pipeline is shut down; nothing more is accepted.
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down and accepts no more points")]
pub struct PipelineClosed;

/// What happened to a group of submitted metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ingested {
    /// Metrics accepted.
    pub accepted: usize,
    /// Metrics rejected.
    pub rejected: usize,
    /// The first few rejection reasons.
    pub errors: Vec<String>,
}

/// How many rejection reasons an [`Ingested`] keeps.
pub const MAX_REPORTED_ERRORS: usize = 10;

/// A producer's body parsed into metrics or points (JSON list or line protocol); parts that could
/// not be parsed are counted, with the first few reasons kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T = Metric> {
    /// What parsed.
    pub items: Vec<T>,
    /// Elements or lines (or their metrics) refused.
    pub rejected: usize,
    /// The first [`MAX_REPORTED_ERRORS`] reasons.
    pub errors: Vec<String>,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T> Parsed<T> {
    /// Empty, with room for `n` items.
    pub fn with_capacity(n: usize) -> Self {
        Parsed {
            items: Vec::with_capacity(n),
            rejected: 0,
            errors: Vec::new(),
        }
    }

    /// Counts one rejection, keeping its reason while there is room.
    pub fn reject(&mut self, reason: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(reason);
        }
    }
}

/// Points already encoded as line protocol, one line each, every line ending in `\n`: what the
/// batcher copies into a batch as it is (the `/post` path encodes on its own task, so encoding
/// is spread over the cores instead of done by the one batcher).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    /// The lines.
    pub bytes: Vec<u8>,
    /// Lines (points) in `bytes`.
    pub points: usize,
}

impl Lines {
    /// Appends `points`, encoded.
    pub fn push_points(&mut self, points: &[Point]) {
        for p in points {
            lineproto::encode_point(p, &mut self.bytes);
        }
        self.points += points.len();
    }
}

/// Adds `more` rejection reasons to `kept` while it holds fewer than [`MAX_REPORTED_ERRORS`].
pub fn keep_reasons(kept: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    let room = MAX_REPORTED_ERRORS.saturating_sub(kept.len());
    kept.extend(more.into_iter().take(room));
}

/// A body (or piece) encoded for the batcher, with what was refused.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Encoded {
    /// The accepted points.
    pub lines: Lines,
    /// Elements or lines (or their metrics) refused.
    pub rejected: usize,
    /// The first [`MAX_REPORTED_ERRORS`] reasons.
    pub errors: Vec<String>,
}

impl Encoded {
    /// Takes in parsed points, encoding them, and their rejections.
    pub fn add(&mut self, parsed: Parsed<Point>) {
        self.lines.push_points(&parsed.items);
        self.rejected += parsed.rejected;
        keep_reasons(&mut self.errors, parsed.errors);
    }
}

/// The producers' handle on the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Submission>,
    host: Arc<str>,
    stats: Arc<PipelineStats>,
    /// The queue's byte bound: producers take permits (bytes) before they queue points.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// Cancelled when the agent starts stopping: bounded waits ([`Wait::AtMost`]) give up.
    stopping: CancellationToken,
    /// The live taps (`GET /tap`), offered every submission while one is open.
    tap: Arc<tap::TapHub>,
}

impl Pipeline {
    /// A pipeline handle and the receiving end the batcher consumes, with the default byte
    /// bound ([`DEFAULT_QUEUE_BYTES`]).
    pub fn new(host: &str, capacity: usize) -> (Pipeline, mpsc::Receiver<Submission>) {
        Self::with_bound(host, capacity, DEFAULT_QUEUE_BYTES)
    }

    /// A pipeline whose queue holds at most `capacity` submissions and about `queue_bytes` of
    /// points ([`Point::mem_bytes`]).
    pub fn with_bound(
        host: &str,
        capacity: usize,
        queue_bytes: usize,
    ) -> (Pipeline, mpsc::Receiver<Submission>) {
        let (tx, rx) = mpsc::channel(capacity);
        let budget_bytes = queue_bytes.clamp(1, u32::MAX as usize);
        let p = Pipeline {
            tx,
            host: host.into(),
            stats: Arc::default(),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            stopping: CancellationToken::new(),
            tap: Arc::default(),
        };
        (p, rx)
    }

    /// The agent is stopping: producers waiting a bounded time for room give up now.
    /// The open taps end too.
    pub fn stop_waiting(&self) {
        self.stopping.cancel();
        self.tap.close();
    }

    /// The live taps.
    pub fn tap(&self) -> &Arc<tap::TapHub> {
        &self.tap
    }

    /// Takes `bytes` of the queue's bound (at most the whole bound), waiting as `wait` says.
    pub async fn reserve(
        &self,
        bytes: usize,
        wait: Wait,
    ) -> Result<OwnedSemaphorePermit, SubmitError> {
        let n = bytes.clamp(1, self.budget_bytes) as u32;
        let acquire = Arc::clone(&self.budget).acquire_many_owned(n);
        let acquired = match wait {
            Wait::Forever => acquire.await,
            Wait::WhileRunning => tokio::select! {
                r = acquire => r,
                () = self.stopping.cancelled() => return Err(PipelineClosed.into()),
            },
            Wait::AtMost(limit) => tokio::select! {
                r = acquire => r,
                () = tokio::time::sleep(limit) => return Err(SubmitError::Full(limit)),
                () = self.stopping.cancelled() => return Err(PipelineClosed.into()),
            },
        };
        acquired.map_err(|_| SubmitError::Closed(PipelineClosed))
    }

    /// Queues `points` of `ns` under `permit` (from [`Pipeline::reserve`]), which is first
    /// fitted to the points' size: the excess is given back, a shortfall taken if it is free
    /// (never waited for, so two producers holding reservations cannot wait on each other).
    /// With `ack`, the answer says where the points went once they are in the spool.
    /// `producer` names the job or API call the points come from (for the taps).
    pub async fn submit_reserved(
        &self,
        ns: &str,
        producer: &str,
        points: Vec<Point>,
        permit: OwnedSemaphorePermit,
        ack: bool,
    ) -> Result<Option<oneshot::Receiver<Stored>>, PipelineClosed> {
        self.queue(ns, producer, points, Lines::default(), permit, ack)
            .await
    }

    /// [`Pipeline::submit_reserved`] for points already encoded as line protocol, which the
    /// batcher copies as they are (the output format must be line protocol; see
    /// [`Lines`]).
    pub async fn submit_lines_reserved(
        &self,
        ns: &str,
        producer: &str,
        lines: Lines,
        permit: OwnedSemaphorePermit,
        ack: bool,
    ) -> Result<Option<oneshot::Receiver<Stored>>, PipelineClosed> {
        self.queue(ns, producer, Vec::new(), lines, permit, ack)
            .await
    }

    /// Queues a submission under `permit`, fitted first to its size, offering its points to the
    /// open taps.
    async fn queue(
        &self,
        ns: &str,
        producer: &str,
        points: Vec<Point>,
        lines: Lines,
        mut permit: OwnedSemaphorePermit,
        ack: bool,
    ) -> Result<Option<oneshot::Receiver<Stored>>, PipelineClosed> {
        let n = (points.len() + lines.points) as u64;
        if n == 0 {
            return Ok(None);
        }
        let want = (submission_bytes(&points) + lines.bytes.capacity()).clamp(1, self.budget_bytes);
        let held = permit.num_permits();
        if held > want {
            drop(permit.split(held - want));
        } else if held < want {
            if let Ok(more) = Arc::clone(&self.budget).try_acquire_many_owned((want - held) as u32)
            {
                permit.merge(more);
            }
        }
        if self.tap.is_open() {
            if !points.is_empty() {
                self.tap.offer(ns, producer, &points);
            }
            if lines.points > 0 {
                // Encoded lines are read back for the taps only while one is open.
                let back = lineproto::parse::parse_points(&lines.bytes, &self.host, 0);
                self.tap.offer(ns, producer, &back.items);
            }
        }
        let (done, answer) = if ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        let sub = Submission {
            ns: ns.into(),
            points,
            lines,
            permit: Some(permit),
            done,
        };
        if self.tx.send(sub).await.is_err() {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(PipelineClosed);
        }
        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
        Ok(answer)
    }

    /// Closes the byte bound: every wait for room ends with [`PipelineClosed`].
    pub fn close_budget(&self) {
        self.budget.close();
    }

    /// The `host` tag value.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Normalises `metrics` (renaming per `rename`) and submits the valid ones to `ns`.
    ///
    /// Invalid metrics are counted and their reasons returned; the rest are accepted.
    pub async fn submit_metrics(
        &self,
        ns: &str,
        producer: &str,
        metrics: Vec<Metric>,
        rename: Rename<'_>,
    ) -> Result<Ingested, PipelineClosed> {
        let (points, out) = normalize_all(metrics, rename, &self.host, normalize::now_secs());
        self.stats
            .rejected
            .fetch_add(out.rejected as u64, Ordering::Relaxed);
        self.submit(ns, producer, points).await?;
        Ok(out)
    }

    /// Submits already normalised points to `ns`; waits while the queue is full (in bytes or
    /// in submissions) for as long as it takes: the agent's own points are never refused.
    pub async fn submit(
        &self,
        ns: &str,
        producer: &str,
        points: Vec<Point>,
    ) -> Result<(), PipelineClosed> {
        if points.is_empty() {
            return Ok(());
        }
        let permit = match self.reserve(submission_bytes(&points), Wait::Forever).await {
            Ok(p) => p,
            Err(_) => return Err(PipelineClosed),
        };
        self.submit_reserved(ns, producer, points, permit, false)
            .await?;
        Ok(())
    }
}

/// Normalises `metrics` into points; the invalid ones are counted with their reasons.
pub fn normalize_all(
    metrics: Vec<Metric>,
    rename: Rename<'_>,
    host: &str,
    now: i64,
) -> (Vec<Point>, Ingested) {
    let mut out = Ingested::default();
    let mut points = Vec::with_capacity(metrics.len());
    for m in metrics {
        match normalize::normalize(m, rename, host, now) {
            Ok(p) => points.push(p),
            Err(e) => {
                out.rejected += 1;
                if out.errors.len() < MAX_REPORTED_ERRORS {
                    out.errors.push(e.to_string());
                }
            }
        }
    }
    out.accepted = points.len();
    (points, out)
}

/// What a submission of `points` counts against the queue's byte bound.
pub fn submission_bytes(points: &[Point]) -> usize {
    std::mem::size_of::<Submission>() + points.iter().map(Point::mem_bytes).sum::<usize>()
}
