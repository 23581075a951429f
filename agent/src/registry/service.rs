//! The registry service: refreshes the plan every `registry.refresh_secs` and on `GET /update`
//! (one code path, [`RegistryService::refresh`]), validates it, caches the last good one on disk,
//! and puts every change in force with [`AgentState::set_plan`].
//!
//! A refresh that fails keeps the plan in force: the failure is counted, recorded for
//! `/me/status`, and logged once per distinct error rather than on every refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shared::api::RegistryStatus;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::spread::Spread;
use super::{cache, validate, Checked, Plan, RegistryError, Source};
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
    /// The HTTP registry's last namespace answer: namespace -> this host's resource id.
    registered: Mutex<Option<BTreeMap<String, String>>>,
}

#[derive(Debug, Default, Clone)]
struct Health {
    last_success: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    failures: u64,
    /// Refreshes the source answered (for `/metrics`; `failures` counts the others).
    successes: u64,
    from_cache: bool,
    problems: Vec<String>,
    skipped_total: u64,
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
        status.skipped_total = h.skipped_total;
    }

    /// Refreshes since start: (answered, failed).
    pub fn refreshes(&self) -> (u64, u64) {
        self.health
            .lock()
            .map(|h| (h.successes, h.failures))
            .unwrap_or_default()
    }

    /// Asks the service to refresh now and waits for the outcome.
    pub async fn refresh_now(&self) -> Result<Refreshed, NotRunning> {
        let tx = self.requests.get().ok_or(NotRunning)?;
        let (reply, answer) = oneshot::channel();
        tx.send(reply).await.map_err(|_| NotRunning)?;
        answer.await.map_err(|_| NotRunning)
    }

    /// The namespaces the HTTP registry last named for this host, each with the host's
    /// resource id there; `None` until it answered once since start.
    pub fn registered(&self) -> Option<BTreeMap<String, String>> {
        self.registered.lock().ok().and_then(|r| r.clone())
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
    /// `/update` requests; registered at construction so none is refused while starting.
    requests: mpsc::Receiver<Request>,
    /// The `[registry]` section and `output.topic` the source and the last check were made
    /// with; a reload that changes them rebuilds the source and refreshes at once.
    settings: (crate::config::RegistryConfig, String),
}

impl RegistryService {
    /// The service for the state's configuration.
    pub fn new(state: AgentState) -> Result<Self, RegistryError> {
        let config = state.config();
        let source = Source::from_config(&config, state.hostname())?;
        let cache_path = cache::path(&config.agent.data_dir);
        let settings = (config.registry.clone(), config.output.topic.clone());
        let (tx, requests) = mpsc::channel::<Request>(8);
        if state.registry().requests.set(tx).is_err() {
            warn!(
                "A registry service already serves /update; this one only refreshes on its clock."
            );
        }
        Ok(RegistryService {
            requests,
            state,
            source,
            cache_path,
            cached: None,
            reported_error: None,
            reported_problems: BTreeSet::new(),
            settings,
        })
    }

    /// The refresh clock for the source and `[registry]` settings in force.
    fn clock(&self) -> Clock {
        let every = Duration::from_secs(self.settings.0.refresh_secs.max(1));
        let splay = Duration::from_secs(self.settings.0.splay_secs);
        match self.source {
            Source::File(_) => Clock::Fixed(every),
            Source::Http(_) => Clock::Spread(Spread::new(self.state.hostname(), every, splay)),
        }
    }

    /// Takes a reloaded configuration: a new source, refresh clock or topic is used from now
    /// on; true when the caller should refresh at once.
    fn reconfigure(&mut self) -> bool {
        let config = self.state.config();
        let settings = (config.registry.clone(), config.output.topic.clone());
        if settings == self.settings {
            return false;
        }
        if settings.0 != self.settings.0 {
            match Source::from_config(&config, self.state.hostname()) {
                Ok(source) => {
                    info!(from = %self.source.describe(), to = %source.describe(), refresh_secs = settings.0.refresh_secs, "Registry settings reloaded.");
                    self.source = source;
                }
                // The reload checked it; kept as it was if it fails all the same.
                Err(e) => {
                    warn!(error = %e, "Reloaded registry settings unusable; the source in force stays.");
                    return false;
                }
            }
        }
        self.settings = settings;
        self.reported_error = None;
        true
    }

    /// Puts the cached plan in force (so a slow or down registry does not leave the host idle),
    /// asks the source, then refreshes on the clock and on request until `shutdown`.
    ///
    /// A file is read at start and every `refresh_secs` from then on. An HTTP registry is asked
    /// at this host's slot ([`Spread`]), backed off while it fails; at start it is asked at
    /// once only when there is no cached plan to run meanwhile, so a fleet restarted together
    /// does not call it together either.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut configs = self.state.subscribe_config();
        configs.mark_unchanged();
        let mut clock = self.clock();
        let started = tokio::select! {
            () = shutdown.cancelled() => return,
            started = self.start(&clock) => started,
        };
        if let Some(ok) = started {
            clock.record(ok);
        }
        let mut due = clock.first(Duration::from_secs(self.settings.0.refresh_secs.max(1)));
        loop {
            let reply = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(due) => None,
                Some(reply) = self.requests.recv() => Some(reply),
                Ok(()) = configs.changed() => {
                    if !self.reconfigure() {
                        continue;
                    }
                    // A new source or period: refresh now, then on the new clock.
                    clock = self.clock();
                    due = tokio::time::Instant::now();
                    None
                }
            };
            let periodic = reply.is_none();
            // A slow registry must not hold up shutdown for (1 + namespaces) * timeout_secs.
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.refresh() => outcome,
            };
            let ok = outcome.result.is_ok();
            if let Some(reply) = reply {
                // The caller may have gone away; the refresh still counted.
                let _ = reply.send(outcome);
            }
            // Only the clock's own calls back off: an operator's `/update` that fails does
            // not push the next refresh further out, one that succeeds ends the backoff.
            if periodic || ok {
                clock.record(ok);
            }
            if let Some(next) = clock.next(due, periodic) {
                due = next;
            }
        }
    }

    /// Puts the cached plan in force, then asks the source unless the clock says to wait for
    /// the slot; returns whether the source answered, when it was asked.
    async fn start(&mut self, clock: &Clock) -> Option<bool> {
        let has_cache = self.load_cache().await;
        if has_cache && matches!(clock, Clock::Spread(_)) {
            debug!("Asking the registry at this host's slot; the cached plan runs until then.");
            return None;
        }
        Some(self.refresh().await.result.is_ok())
    }

    /// Puts the cached plan in force; returns whether there was one.
    async fn load_cache(&mut self) -> bool {
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
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                warn!(error = %e, "Registry cache unusable; ignoring it.");
                false
            }
            Err(e) => {
                warn!(error = %e, "Registry cache reader failed.");
                false
            }
        }
    }

    /// Asks the source once and applies what it says; the periodic and the `/update` refresh
    /// both come here.
    pub async fn refresh(&mut self) -> Refreshed {
        let fetched = match self.source.fetch().await {
            Ok(f) => f,
            Err(e) => return self.failed(e),
        };
        if let Source::Http(_) = self.source {
            if let Ok(mut r) = self.state.registry().registered.lock() {
                *r = Some(fetched.registered.clone());
            }
        }
        let Checked { plan, problems } =
            fetched.check(&self.state.plan(), &self.state.config().output.topic);
        self.report_problems(&problems);
        if self.reported_error.take().is_some() {
            info!(source = %self.source.describe(), "Registry answers again.");
        }
        let now = now_secs();
        self.state.registry().update(|h| {
            h.last_success = Some(now);
            h.successes += 1;
            h.last_error = None;
            h.last_error_at = None;
            h.from_cache = false;
            h.problems = problems.clone();
        });

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

    /// Logs and counts the problems that were not in the previous answer.
    fn report_problems(&mut self, problems: &[String]) {
        let now: BTreeSet<String> = problems.iter().cloned().collect();
        let mut new = 0;
        for p in now.difference(&self.reported_problems) {
            warn!(problem = %p, "Registry entry skipped.");
            new += 1;
        }
        self.state.registry().update(|h| h.skipped_total += new);
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

/// When the periodic refresh comes.
enum Clock {
    /// Every period from start (a file: nobody else to spare).
    Fixed(Duration),
    /// At this host's slot, backed off while the registry fails.
    Spread(Spread),
}

impl Clock {
    fn record(&mut self, ok: bool) {
        if let Clock::Spread(s) = self {
            s.record(ok);
        }
    }

    /// When the first periodic refresh after start is due.
    fn first(&self, every: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self {
            Clock::Fixed(_) => now + every,
            Clock::Spread(s) => now + s.delay(),
        }
    }

    /// The next due time after a refresh: `None` keeps `due` (a file's clock is not moved by
    /// `/update`). A fixed clock that fell behind (a slow refresh) counts from now.
    fn next(&self, due: tokio::time::Instant, periodic: bool) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        match self {
            Clock::Fixed(every) if periodic => Some((due + *every).max(now)),
            Clock::Fixed(_) => None,
            // The slot is on the wall clock: asking again gives the same slot unless the
            // backoff changed.
            Clock::Spread(s) => Some(now + s.delay()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::output::spool::Spool;
    use crate::pipeline::Pipeline;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(
        dir: &std::path::Path,
    ) -> (
        AgentState,
        tokio::sync::mpsc::Receiver<crate::pipeline::Submission>,
    ) {
        let mut config = Config::default();
        config.resolve_paths(dir);
        let (pipeline, rx) = Pipeline::new("h", 16);
        let spool = Spool::open(&dir.join("spool"), 1 << 20).expect("spool");
        let state = AgentState::new(config, "h".into(), pipeline, spool, Arc::default());
        (state, rx)
    }

    fn status(state: &AgentState) -> RegistryStatus {
        let mut s = RegistryStatus::default();
        state.registry().fill(&mut s);
        s
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_plan_and_is_recorded() {
        let dir = tempfile::tempdir().expect("tmp");
        let (state, _rx) = state(dir.path());
        let registry = dir.path().join("registry.toml");
        std::fs::write(
            &registry,
            "[[namespace]]\nname = \"a\"\nports = [{ name = \"x\", port = 0 }]\n",
        )
        .expect("write");
        let mut service = RegistryService::new(state.clone()).expect("service");
        let first = service.refresh().await;
        assert!(first.result.is_ok());
        assert!(first.applied.is_some());
        assert_eq!(state.plan().namespace_names(), ["a"]);
        assert_eq!(first.problems.len(), 1, "port 0: {:?}", first.problems);
        assert_eq!(status(&state).skipped_total, 1);
        assert!(dir.path().join("data/registry-cache.json").exists());
        let again = service.refresh().await;
        assert!(
            again.applied.is_none(),
            "an unchanged answer changes nothing"
        );
        assert_eq!(
            status(&state).skipped_total,
            1,
            "a lasting problem is counted once"
        );
        std::fs::write(
            &registry,
            "[[namespace]]\nname = \"a\"\nports = [{ name = \"x\", port = 0 }, { name = \"y\", port = 0 }]\n",
        )
        .expect("write");
        assert_eq!(service.refresh().await.problems.len(), 2);
        assert_eq!(status(&state).skipped_total, 2, "only the new one is added");

        std::fs::write(&registry, "[[namespace]]\nname = 5\n").expect("write");
        for n in 1..=2 {
            let failed = service.refresh().await;
            assert!(failed.result.is_err());
            let s = status(&state);
            assert_eq!(s.failures, n);
            assert!(
                s.last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("registry.toml"),
                "{s:?}"
            );
            assert_eq!(state.plan().namespace_names(), ["a"], "the plan stays");
            assert!(s.last_error_at.is_some());
        }
        std::fs::write(&registry, "[[namespace]]\nname = \"b\"\n").expect("write");
        assert!(service.refresh().await.applied.is_some());
        let s = status(&state);
        assert_eq!(s.last_error, None);
        assert_eq!(s.last_error_at, None, "cleared with the error it dates");
        assert!(s.last_success.is_some());
        assert_eq!(s.problems, Vec::<String>::new());
        assert_eq!(state.registry().refreshes(), (4, 2), "answered, failed");
    }

    #[tokio::test]
    async fn a_missing_registry_at_start_runs_the_cached_plan() {
        let dir = tempfile::tempdir().expect("tmp");
        let registry = dir.path().join("registry.toml");
        std::fs::write(&registry, "[[namespace]]\nname = \"cached\"\n").expect("write");
        {
            let (state, _rx) = state(dir.path());
            let mut service = RegistryService::new(state).expect("service");
            assert!(service.refresh().await.result.is_ok());
        }
        std::fs::remove_file(&registry).expect("remove");
        let (state, _rx) = state(dir.path());
        let mut service = RegistryService::new(state.clone()).expect("service");
        let clock = Clock::Fixed(Duration::from_secs(60));
        assert_eq!(
            service.start(&clock).await,
            Some(false),
            "a file is read at once"
        );
        assert_eq!(state.plan().namespace_names(), ["cached"]);
        let s = status(&state);
        assert!(s.from_cache && s.failures == 1, "{s:?}");
    }

    #[tokio::test]
    async fn update_endpoint_answers_through_the_running_service() {
        let dir = tempfile::tempdir().expect("tmp");
        let (state, _rx) = state(dir.path());
        let app = crate::api::router(state.clone());
        let get = |app: axum::Router| async move {
            let resp = app
                .oneshot(
                    Request::get("/update")
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("answer");
            let code = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
            (code, body)
        };
        let (code, body) = get(app.clone()).await;
        assert_eq!(code, 503, "{body}");

        let shutdown = CancellationToken::new();
        let service = RegistryService::new(state.clone()).expect("service");
        // Called before the service task has even started: the request waits for it.
        let pending = tokio::spawn(get(app.clone()));
        tokio::spawn(service.run(shutdown.clone()));
        let runner = Arc::new(crate::scheduler::runner::AgentRunner::new(state.clone()));
        tokio::spawn(crate::scheduler::run(
            state.clone(),
            runner,
            shutdown.clone(),
        ));
        let (code, body) = pending.await.expect("request task");
        assert_eq!(code, 502, "no registry file yet: {body}");
        let (code, body) = get(app.clone()).await;
        assert_eq!(code, 502, "no registry file yet: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("keeps running"),
            "{body}"
        );
        std::fs::write(
            dir.path().join("registry.toml"),
            "[[namespace]]\nname = \"n1\"\n",
        )
        .expect("write");
        let (code, body) = get(app).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["ok"], true);
        assert_eq!(body["namespaces"], serde_json::json!(["n1"]));
        assert_eq!(
            body["started"],
            crate::collect::system::Family::ALL.len(),
            "one job per system family: {body}"
        );
        shutdown.cancel();
    }
}
