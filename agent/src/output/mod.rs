//! Outputs: where encoded batches go, and the delivery loop that moves them there from the spool.
//!
//! Every batch passes through the [`spool::Spool`] first; the delivery loop takes the oldest
//! batch, hands it to the output, and removes it from the spool only when the output confirmed
//! it (nsqd `OK`, InfluxDB 204, file written). Transient failures are retried with capped
//! backoff; a batch the output refuses for good (bad data) is dropped and counted.

pub mod file;
pub mod influxdb;
pub mod nsq;
pub mod spool;
pub mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, OutputKind};
use spool::{Spool, SpoolRecord};

/// One encoded message for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// The namespace (topic and database downstream).
    pub ns: String,
    /// Points in the payload.
    pub points: u32,
    /// Line protocol or JSON, at most `max_message_bytes`.
    pub payload: Vec<u8>,
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The output is unavailable; the batch stays in the spool and is retried.
    #[error("{0}")]
    Retry(String),
    /// The output refused this batch for good (bad data); it is dropped and counted.
    #[error("{0}")]
    Reject(String),
    /// The output took the batch except `points` points it refused for good (e.g. a line over
    /// nsqd's message size limit); those are counted as dropped, the rest as delivered.
    #[error("{reason}")]
    PartlyRefused {
        /// Points refused.
        points: u32,
        /// Why.
        reason: String,
    },
}

/// A boxed future, so outputs can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How much an output takes in one delivery: consecutive batches of one namespace, up to
/// `batches` of them and `bytes` of payload (the first batch always, whatever its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimit {
    /// Most batches.
    pub batches: usize,
    /// Most payload bytes, summed.
    pub bytes: u64,
}

impl RunLimit {
    /// One batch per delivery.
    pub const ONE: RunLimit = RunLimit {
        batches: 1,
        bytes: 0,
    };
}

/// A destination for encoded batches.
pub trait Output: Send {
    /// Where this output sends to (address, URL, directory), for `/me/status`.
    fn endpoint(&self) -> String;
    /// Delivers one batch; returns only once the destination confirmed it.
    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// How many batches [`Output::deliver_run`] takes at once; one unless the output can
    /// confirm several in one exchange.
    fn run_limit(&self) -> RunLimit {
        RunLimit::ONE
    }
    /// Delivers consecutive batches of one namespace as one, confirmed (or failed) together:
    /// a retry sends all of them again. By default one [`Output::deliver`] after the other.
    fn deliver_run<'a>(
        &'a mut self,
        run: &'a [Arc<EncodedBatch>],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            for batch in run {
                self.deliver(batch).await?;
            }
            Ok(())
        })
    }
}

/// Output counters, read by `/me/status`.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Whether the last delivery attempt succeeded.
    pub connected: AtomicBool,
    /// Batches delivered.
    pub delivered_batches: AtomicU64,
    /// Points delivered.
    pub delivered_points: AtomicU64,
    /// Batches the output refused for good.
    pub rejected_batches: AtomicU64,
    /// Points in refused batches.
    pub rejected_points: AtomicU64,
    /// The endpoint in use.
    pub endpoint: Mutex<Option<String>>,
    /// The last delivery error.
    pub last_error: Mutex<Option<String>>,
    /// Failed delivery attempts (retried or refused), e.g. nsqd error frames.
    pub errors: AtomicU64,
}

impl OutputStats {
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    /// Outputs with failover (nsq) change endpoints; `/me/status` shows the one in use.
    fn set_endpoint(&self, endpoint: String) {
        if let Ok(mut g) = self.endpoint.lock() {
            if g.as_deref() != Some(endpoint.as_str()) {
                *g = Some(endpoint);
            }
        }
    }
}

/// Builds the output the configuration names.
pub fn build(config: &Config) -> anyhow::Result<Box<dyn Output>> {
    Ok(match config.output.kind {
        OutputKind::File => Box::new(file::FileOutput::new(
            config.output_dir(),
            config.output.file_max_bytes,
            config.output.file_keep,
        )?),
        OutputKind::Stdout => Box::new(stdout::StdoutOutput::default()),
        OutputKind::Nsq => Box::new(nsq::NsqOutput::new(
            nsq::NsqSettings::from_config(config).map_err(anyhow::Error::msg)?,
        )),
        OutputKind::Influxdb => Box::new(influxdb::InfluxOutput::new(&config.output.url)?),
    })
}

/// Refusals of the delivery loop, logged rate-limited: one line per refused batch would flood
/// the log when an output refuses everything. The count left is logged when the loop ends.
struct Refusals {
    repeats: crate::logging::Repeats,
    /// The namespace and error of the last refusal.
    last: (String, String),
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            repeats: crate::logging::Repeats::new(spool::WARN_EVERY),
            last: (String::new(), String::new()),
        }
    }
}

impl Refusals {
    fn refused(&mut self, ns: &str, error: &str, batches: usize, points: u64) {
        self.last = (ns.to_owned(), error.to_owned());
        if let Some(b) = self.repeats.record(batches as u64, points) {
            self.log(b);
        }
    }

    fn flush(&self, all: bool) {
        if let Some(b) = self.repeats.pending(all) {
            self.log(b);
        }
    }

    fn log(&self, b: crate::logging::Burst) {
        let (ns, error) = &self.last;
        warn!(
            ns,
            error,
            batches = b.batches,
            points = b.points,
            "Output refused a batch; dropping it: {b}."
        );
    }
}

impl Drop for Refusals {
    fn drop(&mut self) {
        self.flush(true);
    }
}

/// The batches of one delivery, as the spool handed them out.
struct Run {
    batches: Vec<Arc<EncodedBatch>>,
    /// The last record's id, acknowledged (with every one before it) once delivered.
    last: u64,
    points: u64,
}

impl Run {
    fn of(records: &[SpoolRecord]) -> Run {
        Run {
            batches: records.iter().map(|r| Arc::clone(&r.batch)).collect(),
            last: records.last().map_or(0, |r| r.id),
            points: records.iter().map(|r| u64::from(r.batch.points)).sum(),
        }
    }

    fn ns(&self) -> &str {
        self.batches.first().map_or("", |b| b.ns.as_str())
    }

    fn deliver<'a>(
        &'a self,
        output: &'a mut Box<dyn Output>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        match &self.batches[..] {
            [one] => output.deliver(one),
            run => output.deliver_run(run),
        }
    }
}

/// Backoff between retries of a failing output.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How often a failing output is logged again while it stays down.
const FAILING_REMINDER: Duration = Duration::from_secs(600);

/// Moves batches from the spool to the output until `drain` is cancelled and the spool is empty,
/// or `drain` is cancelled and `deadline` passed (what is left stays in the spool).
pub async fn run_delivery(
    spool: Spool,
    output: Box<dyn Output>,
    stats: Arc<OutputStats>,
    drain: CancellationToken,
    deadline: Duration,
) {
    let (_none, swaps) = tokio::sync::mpsc::channel(1);
    run_delivery_with(spool, output, swaps, stats, drain, deadline).await;
}

/// Takes the newest output sent on `swaps`, if any (a reload sends one per change).
fn take_swap(
    output: &mut Box<dyn Output>,
    swaps: &mut tokio::sync::mpsc::Receiver<Box<dyn Output>>,
    stats: &OutputStats,
) {
    let mut newest = None;
    while let Ok(o) = swaps.try_recv() {
        newest = Some(o);
    }
    if let Some(o) = newest {
        switch(output, o, stats);
    }
}

fn switch(output: &mut Box<dyn Output>, new: Box<dyn Output>, stats: &OutputStats) {
    info!(from = %output.endpoint(), to = %new.endpoint(), "Output switched by a reload.");
    *output = new;
    stats.set_endpoint(output.endpoint());
    // The next success logs "Output is delivering." for the new endpoint.
    stats.connected.store(false, Ordering::Relaxed);
}

/// [`run_delivery`], taking a new output from `swaps` between deliveries: a batch being
/// delivered finishes on the output it started on (acked, or retried on the new output), so a
/// switch neither loses nor repeats a batch.
pub async fn run_delivery_with(
    spool: Spool,
    mut output: Box<dyn Output>,
    mut swaps: tokio::sync::mpsc::Receiver<Box<dyn Output>>,
    stats: Arc<OutputStats>,
    drain: CancellationToken,
    deadline: Duration,
) {
    stats.set_endpoint(output.endpoint());
    let give_up = async {
        drain.cancelled().await;
        tokio::time::sleep(deadline).await;
    };
    tokio::pin!(give_up);
    let mut backoff = BACKOFF_MIN;
    let mut refusals = Refusals::default();
    // Since when deliveries fail, and when that was last logged: an output that was never
    // reachable is logged at its first failure (not only one that was lost), then every
    // FAILING_REMINDER while it stays down.
    let mut failing: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    loop {
        let records: Vec<SpoolRecord> = tokio::select! {
            biased;
            r = spool.next_run(output.run_limit()) => r,
            () = drain.cancelled(), if spool.is_empty() => break,
            () = &mut give_up => break,
            Some(new) = swaps.recv() => {
                switch(&mut output, new, &stats);
                continue;
            }
        };
        let mut runs = std::collections::VecDeque::from([Run::of(&records)]);
        while let Some(run) = runs.pop_front() {
            loop {
                take_swap(&mut output, &mut swaps, &stats);
                let result = tokio::select! {
                    r = run.deliver(&mut output) => r,
                    () = &mut give_up => {
                        warn!(ns = %run.ns(), batches = run.batches.len(), "Shutdown deadline passed during a delivery; the batches stay in the spool.");
                        return;
                    }
                };
                match result {
                    Ok(()) => {
                        spool.ack_through(run.last);
                        refusals.flush(false);
                        stats.set_endpoint(output.endpoint());
                        stats
                            .delivered_batches
                            .fetch_add(run.batches.len() as u64, Ordering::Relaxed);
                        stats
                            .delivered_points
                            .fetch_add(run.points, Ordering::Relaxed);
                        if !stats.connected.swap(true, Ordering::Relaxed) {
                            info!(endpoint = %output.endpoint(), "Output is delivering.");
                            stats.set_error(None);
                        }
                        failing = None;
                        backoff = BACKOFF_MIN;
                        break;
                    }
                    Err(DeliveryError::PartlyRefused { points, reason }) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        warn!(ns = %run.ns(), points, error = %reason, "Output refused part of a batch; the rest was delivered.");
                        spool.ack_through(run.last);
                        stats.set_endpoint(output.endpoint());
                        stats
                            .delivered_batches
                            .fetch_add(run.batches.len() as u64, Ordering::Relaxed);
                        stats.delivered_points.fetch_add(
                            run.points.saturating_sub(u64::from(points)),
                            Ordering::Relaxed,
                        );
                        stats
                            .rejected_points
                            .fetch_add(u64::from(points), Ordering::Relaxed);
                        stats.set_error(Some(reason));
                        backoff = BACKOFF_MIN;
                        failing = None;
                        break;
                    }
                    Err(DeliveryError::Reject(e)) if run.batches.len() > 1 => {
                        // One refused batch must not take the others of its run with it: each is
                        // sent alone, and only what is refused then is dropped.
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        debug!(ns = %run.ns(), batches = run.batches.len(), error = %e, "Output refused a run for good; sending its batches one at a time.");
                        runs.extend(records.iter().map(|r| Run::of(std::slice::from_ref(r))));
                        break;
                    }
                    Err(DeliveryError::Reject(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        refusals.refused(run.ns(), &e, run.batches.len(), run.points);
                        spool.ack_through(run.last);
                        stats
                            .rejected_batches
                            .fetch_add(run.batches.len() as u64, Ordering::Relaxed);
                        stats
                            .rejected_points
                            .fetch_add(run.points, Ordering::Relaxed);
                        stats.set_error(Some(e));
                        // It answered: reachable, so a later failure is a new one to log.
                        failing = None;
                        break;
                    }
                    Err(DeliveryError::Retry(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        stats.connected.store(false, Ordering::Relaxed);
                        let now = tokio::time::Instant::now();
                        match &mut failing {
                            None => {
                                warn!(endpoint = %output.endpoint(), error = %e, "Output is failing; batches wait in the spool.");
                                failing = Some((now, now));
                            }
                            Some((since, logged)) if now - *logged >= FAILING_REMINDER => {
                                warn!(endpoint = %output.endpoint(), error = %e, failing_secs = (now - *since).as_secs(), "Output is still failing; batches wait in the spool.");
                                *logged = now;
                            }
                            Some(_) => {}
                        }
                        stats.set_error(Some(e));
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut give_up => return,
                            // A new output is tried at once, not after the old one's backoff.
                            Some(new) = swaps.recv() => {
                                switch(&mut output, new, &stats);
                                failing = None;
                                backoff = BACKOFF_MIN;
                                continue;
                            }
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }
}
