//! The one handle the API, the scheduler and the producers share: configuration, the pipeline,
//! the plan in force, and every subsystem's counters.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::api::metrics::RequestCounts;
use crate::config::Config;
use crate::output::spool::Spool;
use crate::output::OutputStats;
use crate::pipeline::Pipeline;
use crate::plugins::PluginManager;
use crate::registry::service::RegistryHandle;
use crate::registry::Plan;
use crate::scheduler::{SchedulerStats, SharedClock};

/// Shared state of a running agent; cheap to clone.
#[derive(Clone)]
pub struct AgentState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration in force; replaced whole by a reload (`crate::reload`).
    config: watch::Sender<Arc<Config>>,
    hostname: String,
    started: Instant,
    started_at: i64,
    pipeline: Pipeline,
    spool: Spool,
    output: Arc<OutputStats>,
    plan: watch::Sender<Arc<Plan>>,
    registry: Arc<RegistryHandle>,
    jobs: Arc<SchedulerStats>,
    plugins: PluginManager,
    log_reads: Arc<tokio::sync::Semaphore>,
    /// Bytes of `/post` bodies that may be read and parsed at once (`agent.max_inflight_body_bytes`).
    post_bodies: Arc<tokio::sync::Semaphore>,
    /// API requests answered, for `/metrics`.
    api_requests: RequestCounts,
    /// The clock the system families and the heartbeat tick on (one random phase per agent).
    clock: SharedClock,
}

impl AgentState {
    /// Assembles the state of an agent starting now.
    pub fn new(
        config: Config,
        hostname: String,
        pipeline: Pipeline,
        spool: Spool,
        output: Arc<OutputStats>,
    ) -> Self {
        let (plan, _) = watch::channel(Arc::new(Plan::default()));
        let plugins = PluginManager::new(&config, pipeline.clone());
        let post_bodies = Arc::new(tokio::sync::Semaphore::new(
            config.agent.max_inflight_body_bytes,
        ));
        let (config, _) = watch::channel(Arc::new(config));
        AgentState {
            inner: Arc::new(Inner {
                config,
                hostname,
                started: Instant::now(),
                started_at: crate::pipeline::normalize::now_secs(),
                pipeline,
                spool,
                output,
                plan,
                registry: Arc::default(),
                jobs: Arc::default(),
                plugins,
                log_reads: crate::api::log::read_permits(),
                post_bodies,
                api_requests: RequestCounts::default(),
                clock: SharedClock::random(),
            }),
        }
    }

    /// The clock the system families and the heartbeat share, so the points of one round
    /// leave in one batch per namespace.
    pub fn clock(&self) -> SharedClock {
        self.inner.clock
    }

    /// The configuration in force (a reload may replace it; each call sees the latest).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.inner.config.borrow())
    }

    /// Follows reloads of the configuration.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.config.subscribe()
    }

    /// Puts a reloaded configuration in force; only `crate::reload` calls this, after it kept
    /// the keys that need a restart at their running values.
    pub fn set_config(&self, config: Config) {
        self.inner.config.send_replace(Arc::new(config));
    }

    /// The `host` tag value.
    pub fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

    /// Unix time of start.
    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }

    /// The producers' handle on the pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// The spool in front of the output.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// The output's counters.
    pub fn output_stats(&self) -> &Arc<OutputStats> {
        &self.inner.output
    }

    /// The plan in force.
    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.inner.plan.borrow())
    }

    /// Follows changes of the plan.
    pub fn subscribe_plan(&self) -> watch::Receiver<Arc<Plan>> {
        self.inner.plan.subscribe()
    }

    /// The registry service's health and its `/update` entry.
    pub fn registry(&self) -> &Arc<RegistryHandle> {
        &self.inner.registry
    }

    /// The scheduler's job counts.
    pub fn jobs(&self) -> &Arc<SchedulerStats> {
        &self.inner.jobs
    }

    /// Puts a new plan in force.
    pub fn set_plan(&self, plan: Plan) {
        self.inner.plan.send_replace(Arc::new(plan));
    }

    /// The bound of `/post` bodies in flight, in bytes.
    pub fn post_bodies(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.post_bodies
    }

    /// Script and built-in plugins.
    pub fn plugins(&self) -> &PluginManager {
        &self.inner.plugins
    }

    /// API requests answered, by route and status.
    pub fn api_requests(&self) -> &RequestCounts {
        &self.inner.api_requests
    }

    /// The places of `/log/offset` reads in progress (they bound its memory).
    pub fn log_reads(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.log_reads
    }
}
