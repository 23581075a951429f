//! The registry service: refreshes the plan every `registry.refresh_secs` and on `GET /update`
//! (one code path, [`RegistryService::refresh`]), validates it, caches the last good one on disk,
//! and puts every change in force with [`AgentState::set_plan`].
//!
//! A refresh that fails keeps the plan in force: the failure is counted, recorded for
//! `/me/status`, and logged once per distinct error rather than on every refresh.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shared::api::RegistryStatus;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{cache, validate, Plan, RegistryError, Source};
use crate::pipeline::normalize::now_secs;
use crate::state::AgentState;

/// The outcome of one refresh, as `/update` reports it.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// Whether the source answered; on error the previous plan stays in force.
    pub result: Result<(), RegistryError>,
    /// The new plan, when the answer changed what runs.
    pub applied: Option<Arc<Plan>>,
    /// Entries skipped from the answer, each with its reason.
    pub problems: Vec<String>,
}

/// `/update` was called on an agent whose registry service is not running.
#[derive(Debug, thiserror::Error)]
#[error("the registry service is not running (the agent is starting or stopping)")]
pub struct NotRunning;

type Request = oneshot::Sender<Refreshed>;

/// The registry's side of the shared state: its health for `/me/status`, and the way in for
/// `/update`.
#[derive(Default)]
pub struct RegistryHandle {
    health: Mutex<Health>,
    requests: OnceLock<mpsc::Sender<Request>>,
}

#[derive(Debug, Default, Clone)]
struct Health {
    last_success: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    failures: u64,
    from_cache: bool,
    problems: Vec<String>,
}

impl RegistryHandle {
    /// Copies the registry's health into a status document.
    pub fn fill(&self, status: &mut RegistryStatus) {
        let h = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        status.last_success = h.last_success;
        status.last_error = h.last_error;
        status.last_error_at = h.last_error_at;
        status.failures = h.failures;
        status.from_cache = h.from_cache;
        status.problems = h.problems;
    }

    /// Asks the service to refresh now and waits for the outcome.
    pub async fn refresh_now(&self) -> Result<Refreshed, NotRunning> {
        let tx = self.requests.get().ok_or(NotRunning)?;
        let (reply, answer) = oneshot::channel();
        tx.send(reply).await.map_err(|_| NotRunning)?;
        answer.await.map_err(|_| NotRunning)
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h);
        }
    }
}

/// Owns the source and the refresh clock.
pub struct RegistryService {
    state: AgentState,
    source: Source,
    cache_path: std::path::PathBuf,
    /// The plan the cache file holds, so an unchanged answer does not rewrite it.
    cached: Option<Plan>,
    /// What was logged last, so a lasting condition is logged once, not on every refresh.
    reported_error: Option<String>,
    reported_problems: BTreeSet<String>,
}

impl RegistryService {
    /// The service for the state's configuration.
    pub fn new(state: AgentState) -> Result<Self, RegistryError> {
        let source = Source::from_config(state.config(), state.hostname())?;
        let cache_path = cache::path(&state.config().agent.data_dir);
        Ok(RegistryService {
            state,
            source,
            cache_path,
            cached: None,
            reported_error: None,
            reported_problems: BTreeSet::new(),
        })
    }

    /// Puts the cached plan in force (so a slow or down registry does not leave the host idle),
    /// asks the source, then refreshes on the clock and on request until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut requests) = mpsc::channel::<Request>(8);
        if self.state.registry().requests.set(tx).is_err() {
            warn!("A registry service is already running; this one stops.");
            return;
        }
        let every = Duration::from_secs(self.state.config().registry.refresh_secs.max(1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = self.start() => {}
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.refresh().await;
                }
                Some(reply) = requests.recv() => {
                    let outcome = self.refresh().await;
                    // The caller may have gone away; the refresh still counted.
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    async fn start(&mut self) {
        let path = self.cache_path.clone();
        let source = self.source.describe();
        let cached = tokio::task::spawn_blocking(move || cache::load(&path, &source)).await;
        match cached {
            Ok(Ok(Some(cached))) => {
                let checked = validate(cached.plan.clone(), &self.state.config().output.topic);
                info!(
                    namespaces = checked.plan.namespaces.len(),
                    items = checked.plan.item_count(),
                    saved_at = cached.saved_at,
                    "Running the cached registry plan until the registry answers."
                );
                self.cached = Some(cached.plan);
                self.state.set_plan(checked.plan);
                self.state.registry().update(|h| h.from_cache = true);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!(error = %e, "Registry cache unusable; ignoring it."),
            Err(e) => warn!(error = %e, "Registry cache reader failed."),
        }
        self.refresh().await;
    }

    /// Asks the source once and applies what it says; the periodic and the `/update` refresh
    /// both come here.
    pub async fn refresh(&mut self) -> Refreshed {
        let fetched = match self.source.fetch().await {
            Ok(f) => f,
            Err(e) => return self.failed(e),
        };
        let checked = validate(fetched.plan, &self.state.config().output.topic);
        let mut problems = fetched.problems;
        problems.extend(checked.problems);
        self.report_problems(&problems);
        if self.reported_error.take().is_some() {
            info!(source = %self.source.describe(), "Registry answers again.");
        }
        let now = now_secs();
        self.state.registry().update(|h| {
            h.last_success = Some(now);
            h.last_error = None;
            h.from_cache = false;
            h.problems = problems.clone();
        });

        let plan = checked.plan;
        let applied = if *self.state.plan() == plan {
            debug!("Registry plan unchanged.");
            None
        } else {
            info!(
                namespaces = plan.namespaces.len(),
                items = plan.item_count(),
                "Registry plan changed; applying it."
            );
            self.state.set_plan(plan.clone());
            Some(self.state.plan())
        };
        if self.cached.as_ref() != Some(&plan) {
            self.store_cache(plan).await;
        }
        Refreshed {
            result: Ok(()),
            applied,
            problems,
        }
    }

    fn failed(&mut self, e: RegistryError) -> Refreshed {
        let msg = e.to_string();
        let now = now_secs();
        let mut failures = 0;
        self.state.registry().update(|h| {
            h.failures += 1;
            h.last_error = Some(msg.clone());
            h.last_error_at = Some(now);
            failures = h.failures;
        });
        if self.reported_error.as_deref() == Some(msg.as_str()) {
            debug!(error = %msg, failures, "Registry refresh failed again.");
        } else {
            warn!(error = %msg, failures, "Registry refresh failed; the plan in force keeps running.");
            self.reported_error = Some(msg);
        }
        let problems = self
            .state
            .registry()
            .health
            .lock()
            .map(|h| h.problems.clone())
            .unwrap_or_default();
        Refreshed {
            result: Err(e),
            applied: None,
            problems,
        }
    }

    fn report_problems(&mut self, problems: &[String]) {
        let now: BTreeSet<String> = problems.iter().cloned().collect();
        for p in now.difference(&self.reported_problems) {
            warn!(problem = %p, "Registry entry skipped.");
        }
        if now.is_empty() && !self.reported_problems.is_empty() {
            info!("The registry's answer has no more problems.");
        }
        self.reported_problems = now;
    }

    async fn store_cache(&mut self, plan: Plan) {
        let path = self.cache_path.clone();
        let source = self.source.describe();
        let copy = plan.clone();
        let stored = tokio::task::spawn_blocking(move || cache::store(&path, &source, &copy)).await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "Cannot cache the registry plan."),
            Err(e) => warn!(error = %e, "Registry cache writer failed."),
        }
        // Also after a failure: retrying a broken disk on every refresh would only repeat the
        // warning; the next change tries again.
        self.cached = Some(plan);
    }
}
