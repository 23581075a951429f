//! The point pipeline: producers hand metrics in, they are normalised into points, batched per
//! namespace, encoded, and handed to the spool in front of the output.
//!
//! ```text
//! producers --submit--> [bounded channel] --> batcher (per ns) --encode--> spool --> output
//! ```

pub mod batch;
pub mod json;
pub mod lineproto;
pub mod normalize;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shared::{Metric, Value};
use tokio::sync::mpsc;

pub use normalize::{MetricError, Rename};

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

/// The producers' handle on the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Submission>,
    host: Arc<str>,
    stats: Arc<PipelineStats>,
}

impl Pipeline {
    /// A pipeline handle and the receiving end the batcher consumes.
    pub fn new(host: &str, capacity: usize) -> (Pipeline, mpsc::Receiver<Submission>) {
        let (tx, rx) = mpsc::channel(capacity);
        let p = Pipeline {
            tx,
            host: host.into(),
            stats: Arc::default(),
        };
        (p, rx)
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
        metrics: Vec<Metric>,
        rename: Rename<'_>,
    ) -> Result<Ingested, PipelineClosed> {
        let now = normalize::now_secs();
        let mut out = Ingested::default();
        let mut points = Vec::with_capacity(metrics.len());
        for m in metrics {
            match normalize::normalize(m, rename, &self.host, now) {
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
        self.stats
            .rejected
            .fetch_add(out.rejected as u64, Ordering::Relaxed);
        self.submit(ns, points).await?;
        Ok(out)
    }

    /// Submits already normalised points to `ns`; waits while the channel is full.
    pub async fn submit(&self, ns: &str, points: Vec<Point>) -> Result<(), PipelineClosed> {
        if points.is_empty() {
            return Ok(());
        }
        let n = points.len() as u64;
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        let sub = Submission {
            ns: ns.into(),
            points,
        };
        if self.tx.send(sub).await.is_err() {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(PipelineClosed);
        }
        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}
