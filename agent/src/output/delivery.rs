//! The delivery loop: takes runs of batches from the spool, hands them to the output, and
//! acknowledges them in the spool once the output confirmed them.
//!
//! Two levels: [`run_delivery_with`] waits for the next run (or a swapped output, or the end),
//! and [`Delivery::until_done`] delivers one run until it is confirmed, refused for good, or the
//! shutdown deadline passed, retrying with capped backoff in between.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::spool::{self, Spool, SpoolRecord};
use super::{BoxFuture, DeliveryError, EncodedBatch, Output, OutputStats};

/// Backoff between retries of a failing output.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How often a failing output is logged again while it stays down.
const FAILING_REMINDER: Duration = Duration::from_secs(600);

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

/// How the delivery of one run ended.
enum Ended {
    /// Confirmed, or refused for good and dropped: acknowledged in the spool.
    Done,
    /// A run of several batches refused for good: to be sent again batch by batch.
    Split,
    /// The shutdown deadline passed; the run stays in the spool.
    GaveUp,
}

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

/// [`run_delivery`], taking a new output from `swaps` between deliveries: a batch being
/// delivered finishes on the output it started on (acked, or retried on the new output), so a
/// switch neither loses nor repeats a batch.
pub async fn run_delivery_with(
    spool: Spool,
    output: Box<dyn Output>,
    swaps: Receiver<Box<dyn Output>>,
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
    let mut d = Delivery {
        spool,
        output,
        swaps,
        stats,
        refusals: Refusals::default(),
        backoff: BACKOFF_MIN,
        failing: None,
    };
    loop {
        let records: Vec<SpoolRecord> = tokio::select! {
            biased;
            r = d.spool.next_run(d.output.run_limit()) => r,
            () = drain.cancelled(), if d.spool.is_empty() => break,
            () = &mut give_up => break,
            Some(new) = d.swaps.recv() => {
                d.switch(new);
                continue;
            }
        };
        let mut runs = VecDeque::from([Run::of(&records)]);
        while let Some(run) = runs.pop_front() {
            match d.until_done(&run, &mut give_up).await {
                Ended::Done => {}
                // One refused batch must not take the others of its run with it: each is sent
                // alone, and only what is refused then is dropped. (Only the first run of
                // `records` has several batches, so only it is ever split.)
                Ended::Split => {
                    runs.extend(records.iter().map(|r| Run::of(std::slice::from_ref(r))));
                }
                Ended::GaveUp => return,
            }
        }
    }
}

/// What the delivery loop keeps between runs.
struct Delivery {
    spool: Spool,
    output: Box<dyn Output>,
    swaps: Receiver<Box<dyn Output>>,
    stats: Arc<OutputStats>,
    refusals: Refusals,
    backoff: Duration,
    /// Since when deliveries fail, and when that was last logged: an output that was never
    /// reachable is logged at its first failure (not only one that was lost), then every
    /// FAILING_REMINDER while it stays down.
    failing: Option<(Instant, Instant)>,
}

impl Delivery {
    /// Delivers `run`, retrying while the output is unavailable, until it is confirmed or
    /// refused for good, or `give_up` fires.
    async fn until_done(
        &mut self,
        run: &Run,
        give_up: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        loop {
            self.take_swap();
            let result = tokio::select! {
                r = run.deliver(&mut self.output) => r,
                () = &mut *give_up => {
                    warn!(ns = %run.ns(), batches = run.batches.len(), "Shutdown deadline passed during a delivery; the batches stay in the spool.");
                    return Ended::GaveUp;
                }
            };
            let stats = Arc::clone(&self.stats);
            match result {
                Ok(()) => {
                    self.acked(run, 0);
                    self.refusals.flush(false);
                    if !stats.connected.swap(true, Ordering::Relaxed) {
                        info!(endpoint = %self.output.endpoint(), "Output is delivering.");
                        stats.set_error(None);
                    }
                    return Ended::Done;
                }
                Err(DeliveryError::PartlyRefused { points, reason }) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(ns = %run.ns(), points, error = %reason, "Output refused part of a batch; the rest was delivered.");
                    self.acked(run, points);
                    stats.set_error(Some(reason));
                    return Ended::Done;
                }
                Err(DeliveryError::Reject(e)) if run.batches.len() > 1 => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    debug!(ns = %run.ns(), batches = run.batches.len(), error = %e, "Output refused a run for good; sending its batches one at a time.");
                    return Ended::Split;
                }
                Err(DeliveryError::Reject(e)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.refusals
                        .refused(run.ns(), &e, run.batches.len(), run.points);
                    self.spool.ack_through(run.last);
                    stats
                        .rejected_batches
                        .fetch_add(run.batches.len() as u64, Ordering::Relaxed);
                    stats
                        .rejected_points
                        .fetch_add(run.points, Ordering::Relaxed);
                    stats.set_error(Some(e));
                    // It answered: reachable, so a later failure is a new one to log.
                    self.failing = None;
                    return Ended::Done;
                }
                Err(DeliveryError::Retry(e)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.connected.store(false, Ordering::Relaxed);
                    self.log_failing(&e);
                    stats.set_error(Some(e));
                    tokio::select! {
                        () = tokio::time::sleep(self.backoff) => {}
                        () = &mut *give_up => return Ended::GaveUp,
                        // A new output is tried at once, not after the old one's backoff.
                        Some(new) = self.swaps.recv() => {
                            self.switch(new);
                            self.failing = None;
                            self.backoff = BACKOFF_MIN;
                            continue;
                        }
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// `run` was confirmed except `refused` of its points: acknowledged and counted.
    fn acked(&mut self, run: &Run, refused: u32) {
        let stats = &self.stats;
        self.spool.ack_through(run.last);
        stats.set_endpoint(self.output.endpoint());
        stats
            .delivered_batches
            .fetch_add(run.batches.len() as u64, Ordering::Relaxed);
        stats.delivered_points.fetch_add(
            run.points.saturating_sub(u64::from(refused)),
            Ordering::Relaxed,
        );
        if refused > 0 {
            stats
                .rejected_points
                .fetch_add(u64::from(refused), Ordering::Relaxed);
        }
        self.backoff = BACKOFF_MIN;
        self.failing = None;
    }

    /// Logs a failing output at its first failure, then every [`FAILING_REMINDER`].
    fn log_failing(&mut self, e: &str) {
        let now = Instant::now();
        match &mut self.failing {
            None => {
                warn!(endpoint = %self.output.endpoint(), error = %e, "Output is failing; batches wait in the spool.");
                self.failing = Some((now, now));
            }
            Some((since, logged)) if now - *logged >= FAILING_REMINDER => {
                warn!(endpoint = %self.output.endpoint(), error = %e, failing_secs = (now - *since).as_secs(), "Output is still failing; batches wait in the spool.");
                *logged = now;
            }
            Some(_) => {}
        }
    }

    /// Takes the newest output sent on `swaps`, if any (a reload sends one per change).
    fn take_swap(&mut self) {
        let mut newest = None;
        while let Ok(o) = self.swaps.try_recv() {
            newest = Some(o);
        }
        if let Some(o) = newest {
            self.switch(o);
        }
    }

    fn switch(&mut self, new: Box<dyn Output>) {
        info!(from = %self.output.endpoint(), to = %new.endpoint(), "Output switched by a reload.");
        self.output = new;
        self.stats.set_endpoint(self.output.endpoint());
        // The next success logs "Output is delivering." for the new endpoint.
        self.stats.connected.store(false, Ordering::Relaxed);
    }
}
