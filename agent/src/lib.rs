//! The host-monitoring agent: wires the registry, the scheduler, the collectors and plugins, the
//! pipeline and the output together, and serves the HTTP API.
//!
//! Data flows one way: registry -> scheduler -> collectors/plugins -> pipeline -> spool -> output.

pub mod api;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod dryrun;
pub mod error_chain;
pub mod files;
pub mod logging;
pub mod output;
pub mod paths;
pub mod pipeline;
pub mod plugins;
pub mod registry;
pub mod reload;
pub mod resident;
pub mod scheduler;
pub mod state;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use config::Config;
use output::spool::Spool;
use pipeline::batch::{self, BatchConfig};
use pipeline::Pipeline;
use state::AgentState;

/// Build description reported by `/me/status` and `agent version`.
pub const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Capacity of the pipeline channel, in submissions (each a group of points); its bound in bytes
/// is `output.queue_max_bytes`.
const PIPELINE_CAPACITY: usize = 4096;

/// How long after the API listens start-up is taken to be over, for [`resident::drop_code_mappings`].
const STARTUP_SETTLE: Duration = Duration::from_secs(3);

/// How long producers get to stop at shutdown before the pipeline is drained anyway.
const PRODUCER_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The hostname for the `host` tag: the configured one, or the system's.
pub fn hostname(config: &Config) -> String {
    if !config.agent.hostname.is_empty() {
        return config.agent.hostname.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Runs the agent until `shutdown` is cancelled, then drains: producers stop, the batcher flushes
/// everything accepted into the spool, and the output delivers until the spool is empty or
/// `output.drain_secs` pass (the rest stays in the spool for the next start).
///
/// `ready` is called once the API listens, with its address.
pub async fn run(
    mut config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    // First: from here on SIGHUP reloads instead of ending the process (its default action).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler (config reload)")?;
    // The API never runs open: the configured token, or the one in {data_dir}/auth_token.
    let token = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || api::auth::ensure_token(&c))
            .await
            .context("token task failed")??
    };
    config.agent.token = token.secret;
    config.agent.token_file = token.file;
    api::auth::warn_if_config_exposes_token(&config);
    let host = hostname(&config);
    // The data dir first, so the folders made in it below do not decide its mode; then what an
    // earlier start under a looser umask left writable is closed (not the plugin checkouts).
    let data_dir = config.agent.data_dir.clone();
    files::create_dir_all(&data_dir, files::PASS_DIR)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    files::tighten_tree(&data_dir, 1);
    for dir in [
        data_dir.join("spool"),
        config.log_dir(),
        config.output_dir(),
    ] {
        files::tighten_tree(&dir, 1);
    }
    let spool_dir = config.agent.data_dir.join("spool");
    let spool_max = config.output.spool_max_bytes;
    // Opening reads every segment a previous run left.
    let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_dir, spool_max))
        .await
        .context("spool open task failed")??;
    let output = output::build(&config)?;
    let (pipeline, rx) =
        Pipeline::with_bound(&host, PIPELINE_CAPACITY, config.output.queue_max_bytes);
    let output_stats = Arc::new(output::OutputStats::default());
    let state = AgentState::new(
        config.clone(),
        host.clone(),
        pipeline.clone(),
        spool.clone(),
        Arc::clone(&output_stats),
    );

    if let Some(e) = state.plugins().containment_error() {
        anyhow::bail!("{e}");
    }

    let listener = tokio::net::TcpListener::bind(&config.agent.listen)
        .await
        .with_context(|| format!("cannot listen on {} (agent.listen)", config.agent.listen))?;
    let addr = listener.local_addr()?;

    let registry = registry::service::RegistryService::new(state.clone())
        .context("registry (check [registry] in the config file)")?;

    let producers = TaskTracker::new();
    let stop_batcher = CancellationToken::new();
    let drain = CancellationToken::new();

    let batcher = tokio::spawn(batch::run_batcher(
        rx,
        BatchConfig {
            batch_size: config.output.batch_size,
            flush_every: Duration::from_millis(config.output.flush_ms),
            format: config.output.format,
            max_message_bytes: config.output.max_message_bytes,
        },
        spool.clone(),
        Arc::clone(pipeline.stats()),
        stop_batcher.clone(),
    ));
    let (output_swaps, swaps) = tokio::sync::mpsc::channel(4);
    let delivery = tokio::spawn(output::run_delivery_with(
        spool.clone(),
        output,
        swaps,
        output_stats,
        drain.clone(),
        Duration::from_secs(config.output.drain_secs),
    ));

    producers.spawn(registry.run(shutdown.clone()));
    producers.spawn(registry::report::run(state.clone(), shutdown.clone()));
    producers.spawn(scheduler::run(
        state.clone(),
        Arc::new(scheduler::runner::AgentRunner::new(state.clone())),
        shutdown.clone(),
    ));
    let stop_sync = CancellationToken::new();
    let syncer = tokio::spawn(spool.clone().run_sync(stop_sync.clone()));

    producers.spawn(collect::alive::run(state.clone(), shutdown.clone()));
    producers
        .spawn(reload::Reloader::new(state.clone(), output_swaps).run(hangups, shutdown.clone()));
    producers.spawn(plugins::run_sync(state.clone(), shutdown.clone()));
    let app = api::router(state.clone());
    let api_shutdown = shutdown.clone();
    producers.spawn(api::server::serve(listener, app, api_shutdown));
    producers.close();

    info!(%addr, host = %host, output = %config.output.kind, "Agent started.");
    ready(addr);
    trust::warn_about_env_roots().await;
    release_freed_memory();
    // Start-up goes on for a moment after the API listens (the registry's first load, the first
    // reconcile, the output's first connection); what it ran is unmapped once that is over.
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(STARTUP_SETTLE) => drop_startup_code(),
    }

    shutdown.cancelled().await;
    info!("Shutting down: stopping producers.");
    // `/post`s waiting for room answer 503 now instead of holding the stop up.
    pipeline.stop_waiting();
    if tokio::time::timeout(PRODUCER_STOP_DEADLINE, producers.wait())
        .await
        .is_err()
    {
        warn!("Some producers did not stop in time; draining the pipeline anyway.");
    }
    stop_batcher.cancel();
    pipeline.close_budget();
    batcher.await.context("batcher task failed")?;
    drain.cancel();
    delivery.await.context("delivery task failed")?;
    // The syncer's last round fsyncs what the batcher flushed and stores the final acks.
    stop_sync.cancel();
    syncer.await.context("spool sync task failed")?;
    let left = spool.stats();
    if left.batches > 0 {
        warn!(
            batches = left.batches,
            bytes = left.bytes,
            "Output did not take everything before the drain deadline; the rest stays in the spool."
        );
    }
    info!("Agent stopped.");
    Ok(())
}

/// Unmaps the code start-up ran (see [`resident`]); logs what it did.
fn drop_startup_code() {
    match resident::drop_code_mappings() {
        Ok(d) => tracing::debug!(
            mappings = d.mappings,
            resident_kib = d.resident_bytes / 1024,
            "Start-up code unmapped; what runs from now on maps its pages again."
        ),
        Err(e) => {
            tracing::debug!(error = %e, "Cannot read /proc/self/smaps; start-up code stays mapped.")
        }
    }
}

/// Most malloc arenas glibc may use, unless `MALLOC_ARENA_MAX` says otherwise.
pub const MALLOC_ARENAS: i32 = 2;

/// Allocations from this size on get pages of their own (`mmap`), given back when freed.
/// Setting it also turns off glibc's sliding threshold, which after the first large buffer is
/// freed serves the next ones (1 MiB pieces of `/post` bodies, 16 MiB bodies) from the arenas,
/// where their freed pages stay resident: the abuse test then peaked at 296-358 MiB against its
/// 256 MiB bound.
pub const MALLOC_MMAP_THRESHOLD: i32 = 256 * 1024;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]; call before any thread starts. glibc gives
/// each thread that allocates under contention an arena of its own, up to 8 per core, and keeps
/// what is freed in the arena it came from: under `/post` abuse the same bounded bytes (bodies,
/// queue, spool cache) then sit in several arenas at once, and the peak resident memory was
/// 267-285 MiB where the bounds add up to about 170 MiB (measured with the abuse test, which
/// peaks at 168 MiB with two arenas). An operator's `MALLOC_ARENA_MAX` wins.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes no pointers; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
    }
}

/// Gives the allocator's free pages back to the kernel once start-up is done. Start-up reads
/// large things once (the TLS roots `SSL_CERT_FILE` / `SSL_CERT_DIR` name are a few hundred KiB,
/// read to check them), and glibc keeps what is freed in the arena of the thread that freed it,
/// where an idle agent would carry it as resident memory for its whole life.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it only hands free pages of the allocator's own
    // arenas back to the kernel, under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
