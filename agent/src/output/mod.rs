//! Outputs: where encoded batches go, and the delivery loop that moves them there from the spool.
//!
//! Every batch passes through the [`spool::Spool`] first; the delivery loop takes the oldest
//! batch, hands it to the output, and removes it from the spool only when the output confirmed
//! it (nsqd `OK`, InfluxDB 204, file written). Transient failures are retried with capped
//! backoff; a batch the output refuses for good (bad data) is dropped and counted.

mod delivery;
pub mod file;
pub mod influxdb;
pub mod nsq;
pub mod spool;
pub mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use crate::config::{Config, OutputKind};
pub use delivery::{run_delivery, run_delivery_with};

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
