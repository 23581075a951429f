//! Script plugins (git repositories holding `plugin.sh`) and built-in plugins.
//!
//! [`PluginManager`] is the one handle the API and the scheduler share: it follows the plan
//! (cloning missing plugins, forgetting removed ones), runs plugins (on demand and for the
//! scheduler), ships their metrics and result points, and keeps the enabled/disabled state.
//!
//! - `git.rs`: address checks, clone, explicit update (blocking; run via `spawn_blocking`);
//! - `checkout.rs`: where a checkout lives, its mark, its owner and modes;
//! - `runner.rs`: one process run (session, clean env, fds 0-2, timeout, output cap);
//! - `contain/`: what a run started ends with it (a cgroup per run, or the subreaper sweep);
//! - `state.rs`: disabled-until per plugin, persisted in `data_dir`;
//! - `builtin/`: the compiled-in checks.

pub mod builtin;
pub mod checkout;
pub mod contain;
pub mod git;
pub mod runner;
pub mod runs;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shared::api::{
    ActionResponse, PluginCounts, PluginInfo, PluginList, RunResponse, RunResult, PLUGIN_SCRIPT,
};
use shared::Metric;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::pipeline::normalize::now_secs;
use crate::pipeline::{Pipeline, Rename};
use crate::registry::{BuiltinItem, Plan, PluginItem};
use crate::state::AgentState;
use checkout::{Access, Checkout, Existing};
use runner::{Identity, Outcome, Reason, RunSpec};
use state::PluginStates;

/// Default timeout of an on-demand run.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of stdout and stderr kept with the last run shown by `/plugins/list` (the
/// `/plugins/run` answer carries up to [`runner::OUTPUT_CAP`]).
pub const LIST_OUTPUT_CAP: usize = 16 * 1024;
/// How much of a malformed output is quoted in the error.
const SNIPPET_CHARS: usize = 200;
/// Clones made at the same time when a plan brings many new plugins.
const CLONE_CONCURRENCY: usize = 4;

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const GIT: u8 = 2;

/// How a run was asked for; the `type` tag of the result point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKind {
    /// By the scheduler: timeout = interval minus a margin; metrics shipped.
    Regular,
    /// On demand (`/plugins/run`): its own timeout and optional argument string.
    Call {
        /// Wall-time limit.
        timeout: Duration,
        /// Replaces the registry's `parameters` when given.
        param: Option<String>,
    },
}

impl RunKind {
    fn tag(&self) -> &'static str {
        match self {
            RunKind::Regular => "regular",
            RunKind::Call { .. } => "call",
        }
    }
}

/// What the scheduler's call did.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheduled {
    /// It ran; the result point was shipped.
    Ran(RunResult),
    /// Still running (or being updated): the scheduler counts a skipped tick.
    Busy,
    /// Disabled by an operator: not run.
    Disabled,
    /// Not (or no longer) in the plan.
    Unknown,
    /// In the plan but its first clone has not finished: nothing to run yet (not a failure).
    NotReady,
}

/// The problem an entry shows until its first clone finishes.
const NOT_CLONED_YET: &str = "not cloned yet";

/// Why a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No such (ns, repo).
    #[error("no plugin {repo:?} in namespace {ns:?}; the registry may not have been refreshed yet (call /update, then /plugins/list)")]
    NotFound {
        /// Namespace asked for.
        ns: String,
        /// Address or project asked for.
        repo: String,
    },
    /// The registry item was refused (duplicate project name, bad address).
    #[error("plugin {repo:?} in namespace {ns:?} is not usable: {problem}")]
    Refused {
        /// Namespace.
        ns: String,
        /// Address.
        repo: String,
        /// Why.
        problem: String,
    },
    /// A run or an update is going on.
    #[error("plugin {project} in namespace {ns} is busy ({what}); try again when it is done")]
    Busy {
        /// Namespace.
        ns: String,
        /// Project.
        project: String,
        /// `running` or `being updated`.
        what: &'static str,
    },
    /// The git update failed; the old checkout is kept.
    #[error("{0}; the previous checkout is kept")]
    Git(#[from] git::GitError),
    /// The checkout's place is refused (not the agent's, a path leading out of `plugins_dir`,
    /// a folder the plugin user could write): nothing was changed.
    #[error("{0}")]
    Checkout(git::GitError),
    /// The enabled/disabled state could not be saved.
    #[error("{0}")]
    State(#[from] state::StateError),
}

struct Entry {
    item: PluginItem,
    project: String,
    checkout: Checkout,
    commit: Option<String>,
    problem: Option<String>,
    busy: Arc<AtomicU8>,
    last_run: Option<RunResult>,
}

#[derive(Default)]
struct Table {
    entries: BTreeMap<(String, String), Entry>,
    /// Items refused at sync (duplicate project name, unusable address), shown by the list.
    refused: Vec<PluginInfo>,
}

struct Inner {
    plugins_dir: PathBuf,
    /// Who may read checkouts (the plugin user's group when the agent is root).
    access: Access,
    state_path: PathBuf,
    disable_secs: u64,
    identity: Result<Option<Identity>, String>,
    contain: Result<Arc<contain::Containment>, String>,
    home: PathBuf,
    pipeline: Pipeline,
    table: Mutex<Table>,
    /// The built-in items and their last results, for the list.
    builtins: builtin::book::Book,
    states: Mutex<PluginStates>,
    /// Serialises state file writes so the last write carries the latest state.
    save: tokio::sync::Mutex<()>,
    /// Runs so far, by plugin and outcome.
    runs: runs::RunCounts,
}

/// The plugins' handle; cheap to clone.
#[derive(Clone)]
pub struct PluginManager {
    inner: Arc<Inner>,
}

/// Resets a plugin's busy flag when the run or update is over, also on cancellation.
struct BusyGuard(Arc<AtomicU8>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(IDLE, Ordering::Release);
    }
}

fn try_busy(flag: &Arc<AtomicU8>, to: u8) -> Result<BusyGuard, u8> {
    flag.compare_exchange(IDLE, to, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| BusyGuard(Arc::clone(flag)))
}

fn busy_word(v: u8) -> &'static str {
    if v == GIT {
        "being updated"
    } else {
        "running"
    }
}

/// Who plugins run as: nobody-like `agent.plugins_user` when the agent is root, refusing root
/// unless `agent.plugins_allow_root`; the agent's own user otherwise.
fn resolve_identity(config: &Config) -> Result<Option<Identity>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = &config.agent.plugins_user;
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look up agent.plugins_user {name:?}: {e}"))?
        .ok_or_else(|| format!("agent.plugins_user {name:?} does not exist on this host"))?;
    if user.uid.is_root() && !config.agent.plugins_allow_root {
        return Err(format!(
            "agent.plugins_user {name:?} is root; plugins are not run as root unless agent.plugins_allow_root = true"
        ));
    }
    Ok(Some(Identity {
        name: name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    }))
}

impl PluginManager {
    /// A manager for `config`'s directories and user, shipping through `pipeline`. The saved
    /// enabled/disabled state is read by [`PluginManager::load_state`].
    pub fn new(config: &Config, pipeline: Pipeline) -> Self {
        let identity = resolve_identity(config);
        if let Err(e) = &identity {
            warn!(error = %e, "Plugins cannot run until this is fixed.");
        }
        let plugin_uid = identity
            .as_ref()
            .ok()
            .and_then(|i| i.as_ref().map(|i| i.uid));
        let contain = contain::Containment::init(config, plugin_uid).map(Arc::new);
        if let Err(e) = &contain {
            warn!(error = %e, "Plugins cannot run until this is fixed.");
        }
        let data = &config.agent.data_dir;
        let access = Access {
            plugin_user: identity
                .as_ref()
                .ok()
                .and_then(|id| id.as_ref().map(|id| (id.uid, id.gid))),
        };
        PluginManager {
            inner: Arc::new(Inner {
                access,
                plugins_dir: config
                    .agent
                    .plugins_dir
                    .clone()
                    .unwrap_or_else(|| data.join("plugins")),
                state_path: data.join(state::FILE_NAME),
                disable_secs: config.agent.plugin_disable_secs,
                identity,
                contain,
                home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
                pipeline,
                table: Mutex::default(),
                builtins: builtin::book::Book::default(),
                states: Mutex::default(),
                save: tokio::sync::Mutex::new(()),
                runs: runs::RunCounts::default(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // matters more than losing the whole manager; keep serving.
        self.inner
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn states(&self) -> MutexGuard<'_, PluginStates> {
        self.inner
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the saved enabled/disabled state (a missing file is no state; a corrupt one is
    /// logged and replaced on the next change).
    pub async fn load_state(&self) {
        let path = self.inner.state_path.clone();
        match tokio::task::spawn_blocking(move || PluginStates::load(&path)).await {
            Ok(Ok(s)) => *self.states() = s,
            Ok(Err(e)) => warn!(error = %e, "Plugin state not restored; all plugins enabled."),
            Err(e) => warn!(error = %e, "Plugin state task failed."),
        }
    }

    async fn save_state(&self) -> Result<(), PluginError> {
        let _one_writer = self.inner.save.lock().await;
        let snapshot = {
            let mut s = self.states();
            s.prune(now_secs());
            s.clone()
        };
        let path = self.inner.state_path.clone();
        tokio::task::spawn_blocking(move || snapshot.save(&path))
            .await
            .map_err(|e| state::StateError {
                path: self.inner.state_path.clone(),
                message: format!("save task failed: {e}"),
            })??;
        Ok(())
    }

    /// Makes the set of plugins the plan's: new ones (and ones whose clone failed before) are
    /// cloned when missing on disk (existing checkouts are used as they are), removed ones are
    /// forgotten (their checkout stays on disk),
    /// changed items take their new interval and parameters. Returns when the clones are done.
    pub async fn sync(&self, plan: &Plan) {
        self.inner.builtins.sync(plan);
        let mut prepare = Vec::new();
        {
            let mut table = self.table();
            let mut old = std::mem::take(&mut table.entries);
            let mut refused = Vec::new();
            for (ns, nsplan) in &plan.namespaces {
                let mut used: BTreeMap<String, String> = BTreeMap::new();
                for item in &nsplan.plugins {
                    let refuse = |problem: String, project: String| PluginInfo {
                        ns: ns.clone(),
                        project,
                        repo: git::redact_address(&item.git),
                        interval: item.interval,
                        parameters: item.parameters.clone(),
                        kind: PLUGIN_SCRIPT.to_owned(),
                        enabled: false,
                        problem: Some(problem),
                        ..PluginInfo::default()
                    };
                    if let Err(e) = git::check_address(&item.git) {
                        refused.push(refuse(e.to_string(), String::new()));
                        continue;
                    }
                    let project = match crate::registry::project_name(&item.git) {
                        Ok(p) => p,
                        Err(e) => {
                            refused.push(refuse(e, String::new()));
                            continue;
                        }
                    };
                    let checkout = match Checkout::new(
                        &self.inner.plugins_dir,
                        ns,
                        &project,
                        self.inner.access,
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            refused.push(refuse(e.to_string(), project));
                            continue;
                        }
                    };
                    if let Some(Err(e)) = item.branch.as_deref().map(crate::paths::check_branch) {
                        refused.push(refuse(e.to_string(), project));
                        continue;
                    }
                    if let Some(first) = used.get(&project) {
                        let problem = format!(
                            "project name {project:?} is already used in namespace {ns:?} by {first:?}; a namespace cannot hold two plugins with the same repository name"
                        );
                        refused.push(refuse(problem, project));
                        continue;
                    }
                    used.insert(project.clone(), git::redact_address(&item.git));
                    let key = (ns.clone(), project.clone());
                    let entry = match old.remove(&key) {
                        Some(mut e) => {
                            e.item = item.clone();
                            // A clone that failed earlier (remote down) is retried.
                            if e.commit.is_none() {
                                prepare.push(key.clone());
                            }
                            e
                        }
                        None => {
                            prepare.push(key.clone());
                            Entry {
                                item: item.clone(),
                                checkout,
                                project,
                                commit: None,
                                problem: Some(NOT_CLONED_YET.to_owned()),
                                busy: Arc::default(),
                                last_run: None,
                            }
                        }
                    };
                    table.entries.insert(key, entry);
                }
            }
            for p in &refused {
                warn!(ns = %p.ns, repo = %p.repo, problem = p.problem.as_deref().unwrap_or(""), "Plugin refused.");
            }
            table.refused = refused;
            for (ns, project) in old.keys() {
                info!(
                    ns,
                    plugin = project,
                    "Plugin removed from the registry; forgotten."
                );
            }
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(CLONE_CONCURRENCY));
        let mut jobs = tokio::task::JoinSet::new();
        for (ns, project) in prepare {
            let me = self.clone();
            let limit = Arc::clone(&limit);
            jobs.spawn(async move {
                let _permit = limit.acquire().await;
                me.prepare(&ns, &project).await;
            });
        }
        while jobs.join_next().await.is_some() {}
    }

    /// Clones a new plugin if its checkout is missing, or reads the commit of the one there
    /// (adopting an earlier version's checkout; refusing a folder the agent did not make).
    async fn prepare(&self, ns: &str, project: &str) {
        let Some((item, checkout, busy)) = self.with_entry(ns, project, |e| {
            (e.item.clone(), e.checkout.clone(), Arc::clone(&e.busy))
        }) else {
            return;
        };
        let Ok(_guard) = try_busy(&busy, GIT) else {
            return;
        };
        let result = tokio::task::spawn_blocking(move || {
            checkout.check_under().map_err(|e| e.to_string())?;
            match checkout.claim(&item.git).map_err(|e| e.to_string())? {
                Existing::Ours => git::head_commit(checkout.dir()).ok_or_else(|| {
                    format!(
                        "{} is the agent's checkout but has no commit; call /plugins/update to replace it",
                        checkout.dir().display()
                    )
                }),
                Existing::Missing => {
                    git::clone_into(&item.git, item.branch.as_deref(), &checkout)
                        .map_err(|e| e.to_string())
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("git task failed: {e}")));
        match &result {
            Ok(commit) => info!(ns, plugin = project, commit, "Plugin ready."),
            Err(e) => warn!(ns, plugin = project, error = %e, "Plugin not ready."),
        }
        self.with_entry(ns, project, |e| match result {
            Ok(c) => {
                e.commit = Some(c);
                e.problem = None;
            }
            Err(p) => e.problem = Some(p),
        });
    }

    fn with_entry<T>(&self, ns: &str, project: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut table = self.table();
        table
            .entries
            .get_mut(&(ns.to_owned(), project.to_owned()))
            .map(f)
    }

    /// Finds a plugin by namespace and `repo`, which may be the git address as in the registry,
    /// the address as the API shows it (without a password), or the project name. Returns the
    /// project name.
    pub fn resolve(&self, ns: &str, repo: &str) -> Result<String, PluginError> {
        let table = self.table();
        let hit = table.entries.iter().find(|((n, p), e)| {
            n == ns && (e.item.git == repo || git::redact_address(&e.item.git) == repo || p == repo)
        });
        if let Some(((_, p), _)) = hit {
            return Ok(p.clone());
        }
        if let Some(r) = table.refused.iter().find(|r| {
            r.ns == ns
                && (r.repo == repo
                    || r.repo == git::redact_address(repo)
                    || (!r.project.is_empty() && r.project == repo))
        }) {
            return Err(PluginError::Refused {
                ns: ns.to_owned(),
                repo: r.repo.clone(),
                problem: r.problem.clone().unwrap_or_default(),
            });
        }
        if self.inner.builtins.has(ns, repo) {
            return Err(PluginError::Refused {
                ns: ns.to_owned(),
                repo: repo.to_owned(),
                problem: "it is a built-in plugin: compiled into the agent, it has no checkout to update and runs on its schedule only (its last result is in /plugins/list)".into(),
            });
        }
        Err(PluginError::NotFound {
            ns: ns.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// Runs a plugin now. If it is already running (or being updated) the call is ignored and
    /// the answer says so (`ran = false`).
    pub async fn run(
        &self,
        ns: &str,
        repo: &str,
        kind: RunKind,
    ) -> Result<RunResponse, PluginError> {
        let project = self.resolve(ns, repo)?;
        let ran = self.run_project(ns, &project, kind).await;
        Ok(match ran {
            Ok(result) => RunResponse {
                ns: ns.to_owned(),
                message: format!(
                    "{project} ran in {} ms: {}",
                    result.duration_ms,
                    result.error.as_deref().unwrap_or("ok")
                ),
                project,
                ran: true,
                result: Some(result),
            },
            Err(IDLE) => {
                return Err(PluginError::NotFound {
                    ns: ns.to_owned(),
                    repo: repo.to_owned(),
                })
            }
            Err(busy) => RunResponse {
                ns: ns.to_owned(),
                message: format!(
                    "{project} is already {}; this call was ignored",
                    busy_word(busy)
                ),
                project,
                ran: false,
                result: None,
            },
        })
    }

    /// The scheduler's entry: runs the plugin if it is known, enabled and idle, with the
    /// timeout of its interval minus a margin, and ships its metrics and result point.
    pub async fn run_scheduled(&self, ns: &str, project: &str) -> Scheduled {
        let pending = self.with_entry(ns, project, |e| {
            e.commit.is_none() && e.problem.as_deref() == Some(NOT_CLONED_YET)
        });
        match pending {
            None => return Scheduled::Unknown,
            // The job starts with the plan, the clone may still be queued: a tick now would
            // report a bogus `spawn` failure.
            Some(true) => return Scheduled::NotReady,
            Some(false) => {}
        }
        if !self.states().is_enabled(ns, project, now_secs()) {
            return Scheduled::Disabled;
        }
        match self.run_project(ns, project, RunKind::Regular).await {
            Ok(r) => Scheduled::Ran(r),
            Err(IDLE) => Scheduled::Unknown,
            Err(_) => Scheduled::Busy,
        }
    }

    /// Runs a (known) plugin once; `Err` carries the busy state when it was not idle, or
    /// `IDLE` when the plugin is no longer in the plan.
    async fn run_project(&self, ns: &str, project: &str, kind: RunKind) -> Result<RunResult, u8> {
        let producer = format!("plugin {ns}/{project}");
        let Some((item, checkout, busy)) = self.with_entry(ns, project, |e| {
            (e.item.clone(), e.checkout.clone(), Arc::clone(&e.busy))
        }) else {
            // Removed from the plan between the lookup and now.
            return Err(IDLE);
        };
        let _guard = try_busy(&busy, RUNNING)?;
        let (timeout, params) = match &kind {
            RunKind::Regular => (periodic_timeout(item.interval), item.parameters.clone()),
            RunKind::Call { timeout, param } => (
                *timeout,
                param.clone().unwrap_or_else(|| item.parameters.clone()),
            ),
        };
        let at = now_secs();
        // The checkout is proven under plugins_dir again (a symlink planted since the clone
        // would lead the run elsewhere).
        let dir = checkout.dir().to_path_buf();
        let under = tokio::task::spawn_blocking(move || checkout.check_under())
            .await
            .unwrap_or_else(|e| {
                Err(crate::paths::PathError::Resolve {
                    path: dir.clone(),
                    message: format!("check task failed: {e}"),
                })
            });
        let ready = match (&self.inner.identity, &self.inner.contain, under) {
            (Ok(identity), Ok(contain), Ok(())) => Ok((identity, contain)),
            (Err(e), _, _) | (_, Err(e), _) => Err(e.clone()),
            (_, _, Err(e)) => Err(e.to_string()),
        };
        let outcome = match ready {
            Ok((identity, contain)) => {
                let spec = RunSpec {
                    dir,
                    args: runner::split_args(&params),
                    ns: ns.to_owned(),
                    project: project.to_owned(),
                    timeout,
                    identity: identity.clone(),
                    home: self.inner.home.clone(),
                    output_cap: runner::OUTPUT_CAP,
                    contain: Arc::clone(contain),
                };
                runner::run(&spec).await
            }
            Err(e) => Outcome {
                reason: Reason::Spawn,
                exit_code: None,
                stdout: Vec::new(),
                stderr: Vec::new(),
                truncated: false,
                duration: Duration::ZERO,
                error: Some(e),
                pid: None,
            },
        };
        let mut result = RunResult {
            at,
            kind: kind.tag().to_owned(),
            duration_ms: outcome.duration.as_millis() as u64,
            ok: outcome.reason == Reason::Ok,
            reason: outcome.reason.as_str().to_owned(),
            exit_code: outcome.exit_code,
            stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
            truncated: outcome.truncated,
            error: outcome.error.clone(),
        };
        // An on-demand-only plugin's output is for the caller; a periodic one's is metrics,
        // also when it is run on demand.
        let ships = kind == RunKind::Regular || item.interval > 0;
        if result.ok && ships {
            match parse_metrics(&outcome.stdout) {
                Ok(metrics) => self.ship(ns, &producer, project, metrics).await,
                Err(e) => {
                    result.ok = false;
                    result.reason = Reason::Output.as_str().to_owned();
                    result.error = Some(e);
                }
            }
        }
        self.ship_result(ns, &producer, project, kind.tag(), &result)
            .await;
        if result.ok {
            debug!(ns, plugin = project, ms = result.duration_ms, "Plugin ran.");
        } else {
            warn!(
                ns,
                plugin = project,
                reason = %result.reason,
                error = result.error.as_deref().unwrap_or(""),
                "Plugin run failed."
            );
        }
        let kept = preview(&result);
        self.with_entry(ns, project, |e| e.last_run = Some(kept));
        Ok(result)
    }

    /// `producer` names the run for the taps (`plugin ns/project`, `builtin ns/name`).
    async fn ship(&self, ns: &str, producer: &str, project: &str, metrics: Vec<Metric>) {
        match self
            .inner
            .pipeline
            .submit_metrics(ns, producer, metrics, Rename::Plugin(project))
            .await
        {
            Ok(ing) if ing.rejected > 0 => warn!(
                ns,
                plugin = project,
                rejected = ing.rejected,
                first = ing.errors.first().map_or("", String::as_str),
                "Some plugin metrics were rejected."
            ),
            Ok(_) => {}
            Err(e) => debug!(ns, plugin = project, error = %e, "Plugin metrics not shipped."),
        }
    }

    /// The result point `plugin.<project>`: 0 ok / 1 failed, tags `type` and `reason`.
    /// Every run, script or built-in, ends here, so this is also where runs are counted.
    async fn ship_result(
        &self,
        ns: &str,
        producer: &str,
        project: &str,
        kind: &str,
        result: &RunResult,
    ) {
        self.inner.runs.record(ns, project, kind, &result.reason);
        let point = Metric::new(
            format!("plugin.{project}"),
            if result.ok { 0.0 } else { 1.0 },
        )
        .tag("type", kind)
        .tag("reason", result.reason.clone());
        if let Err(e) = self
            .inner
            .pipeline
            .submit_metrics(ns, producer, vec![point], Rename::Keep)
            .await
        {
            debug!(ns, plugin = project, error = %e, "Plugin result point not shipped.");
        }
    }

    /// The scheduler's entry for a built-in: runs it with the timeout of its interval minus a
    /// margin, ships its metrics renamed `PLUGIN.<name>.<metric>` and the result point
    /// `plugin.<name>` (reason `exit` when the built-in returned an error).
    pub async fn run_builtin_scheduled(&self, ns: &str, item: &BuiltinItem) -> RunResult {
        let at = now_secs();
        let started = Instant::now();
        let timeout = periodic_timeout(item.interval);
        let producer = format!("builtin {ns}/{}", item.name);
        self.inner.builtins.started(ns, item);
        let ran = tokio::time::timeout(timeout, builtin::run(&item.name, &item.params)).await;
        let (reason, error) = match ran {
            Ok(Ok(metrics)) => {
                self.ship(ns, &producer, &item.name, metrics).await;
                (Reason::Ok, None)
            }
            Ok(Err(e)) => (Reason::Exit, Some(e)),
            Err(_) => (
                Reason::Timeout,
                Some(format!("timed out after {:.1} s", timeout.as_secs_f64())),
            ),
        };
        let result = RunResult {
            at,
            kind: RunKind::Regular.tag().to_owned(),
            duration_ms: started.elapsed().as_millis() as u64,
            ok: reason == Reason::Ok,
            reason: reason.as_str().to_owned(),
            error,
            ..RunResult::default()
        };
        if let Some(e) = &result.error {
            warn!(ns, plugin = %item.name, reason = %result.reason, error = %e, "Built-in plugin failed.");
        }
        self.ship_result(ns, &producer, &item.name, &result.kind, &result)
            .await;
        self.inner.builtins.finished(ns, item, preview(&result));
        result
    }

    /// Fetches the plugin's repository and moves its checkout to the latest commit of its
    /// branch. Refused while it runs; on failure the old checkout stays.
    pub async fn update(&self, ns: &str, repo: &str) -> Result<ActionResponse, PluginError> {
        let project = self.resolve(ns, repo)?;
        let Some((item, checkout, busy)) = self.with_entry(ns, &project, |e| {
            (e.item.clone(), e.checkout.clone(), Arc::clone(&e.busy))
        }) else {
            return Err(PluginError::NotFound {
                ns: ns.to_owned(),
                repo: repo.to_owned(),
            });
        };
        let _guard = try_busy(&busy, GIT).map_err(|v| PluginError::Busy {
            ns: ns.to_owned(),
            project: project.clone(),
            what: busy_word(v),
        })?;
        let updated = tokio::task::spawn_blocking(move || {
            git::update(&item.git, item.branch.as_deref(), &checkout)
        })
        .await
        .map_err(|e| git::GitError::Git {
            op: "update",
            addr: git::redact_address(repo),
            message: format!("task failed: {e}"),
        })?;
        let updated = match updated {
            Ok(u) => u,
            Err(e) if e.is_local_refusal() => {
                warn!(ns, plugin = %project, error = %e, "Plugin update refused; nothing was changed.");
                return Err(PluginError::Checkout(e));
            }
            Err(e) => {
                warn!(ns, plugin = %project, error = %e, "Plugin update failed; the previous checkout is kept.");
                return Err(e.into());
            }
        };
        self.with_entry(ns, &project, |e| {
            e.commit = Some(updated.new.clone());
            e.problem = None;
        });
        let message = match &updated.old {
            Some(old) if *old == updated.new => format!("{project} is already at {}", short(old)),
            Some(old) => format!(
                "{project} updated from {} to {}",
                short(old),
                short(&updated.new)
            ),
            None => format!("{project} cloned at {}", short(&updated.new)),
        };
        info!(ns, plugin = %project, commit = %updated.new, "Plugin updated.");
        Ok(self.action(ns, &project, message))
    }

    /// Disables the plugin for `agent.plugin_disable_secs` (saved at once).
    pub async fn disable(&self, ns: &str, repo: &str) -> Result<ActionResponse, PluginError> {
        let project = self.resolve(ns, repo)?;
        let until = now_secs().saturating_add(self.inner.disable_secs as i64);
        self.states().disable(ns, &project, until);
        self.save_state().await?;
        info!(ns, plugin = %project, until, "Plugin disabled.");
        let message = format!(
            "{project} disabled; it re-enables itself in {} s unless enabled earlier",
            self.inner.disable_secs
        );
        Ok(self.action(ns, &project, message))
    }

    /// Enables the plugin (saved at once).
    pub async fn enable(&self, ns: &str, repo: &str) -> Result<ActionResponse, PluginError> {
        let project = self.resolve(ns, repo)?;
        let was = self.states().enable(ns, &project);
        self.save_state().await?;
        info!(ns, plugin = %project, "Plugin enabled.");
        let message = if was {
            format!("{project} enabled")
        } else {
            format!("{project} was already enabled")
        };
        Ok(self.action(ns, &project, message))
    }

    fn action(&self, ns: &str, project: &str, message: String) -> ActionResponse {
        ActionResponse {
            ns: ns.to_owned(),
            project: project.to_owned(),
            message,
            plugin: self.info(ns, project),
        }
    }

    fn info(&self, ns: &str, project: &str) -> Option<PluginInfo> {
        let now = now_secs();
        let states = self.states().clone();
        let table = self.table();
        table
            .entries
            .get(&(ns.to_owned(), project.to_owned()))
            .map(|e| entry_info(ns, e, &states, now))
    }

    /// Every plugin, sorted by (ns, project), refused registry items included (with `problem`).
    pub fn list(&self) -> PluginList {
        let now = now_secs();
        let states = self.states().clone();
        let table = self.table();
        let mut plugins: Vec<PluginInfo> = table
            .entries
            .iter()
            .map(|((ns, _), e)| entry_info(ns, e, &states, now))
            .chain(table.refused.iter().cloned())
            .chain(self.inner.builtins.list())
            .collect();
        plugins.sort_by(|a, b| (&a.ns, &a.project).cmp(&(&b.ns, &b.project)));
        PluginList { plugins }
    }

    /// Why plugins cannot be contained (the agent refuses to start then), if so.
    pub fn containment_error(&self) -> Option<&str> {
        self.inner.contain.as_ref().err().map(String::as_str)
    }

    /// Runs so far, by plugin and outcome (for `/metrics`).
    pub fn runs(&self) -> &runs::RunCounts {
        &self.inner.runs
    }

    /// Counts for `/me/status`.
    pub fn counts(&self) -> PluginCounts {
        let now = now_secs();
        let states = self.states().clone();
        let table = self.table();
        PluginCounts {
            total: table.entries.len(),
            disabled: table
                .entries
                .keys()
                .filter(|(ns, p)| !states.is_enabled(ns, p, now))
                .count(),
            running: table
                .entries
                .values()
                .filter(|e| e.busy.load(Ordering::Acquire) == RUNNING)
                .count(),
            containment: match &self.inner.contain {
                Ok(c) => c.describe().to_owned(),
                Err(e) => format!("none: {e}"),
            },
        }
    }

    /// Where a plugin is checked out; refused for names that are not one folder name.
    pub fn checkout_dir(
        &self,
        ns: &str,
        project: &str,
    ) -> Result<PathBuf, crate::paths::PathError> {
        Checkout::new(&self.inner.plugins_dir, ns, project, self.inner.access)
            .map(|c| c.dir().to_path_buf())
    }
}

fn entry_info(ns: &str, e: &Entry, states: &PluginStates, now: i64) -> PluginInfo {
    let disabled_until = states.disabled_until(ns, &e.project, now);
    PluginInfo {
        ns: ns.to_owned(),
        project: e.project.clone(),
        kind: PLUGIN_SCRIPT.to_owned(),
        repo: git::redact_address(&e.item.git),
        interval: e.item.interval,
        parameters: e.item.parameters.clone(),
        enabled: disabled_until.is_none(),
        disabled_until,
        running: e.busy.load(Ordering::Acquire) == RUNNING,
        commit: e.commit.clone(),
        problem: e.problem.clone(),
        last_run: e.last_run.clone(),
    }
}

/// The timeout of a periodic run: the interval minus a margin (a tenth, between 0.1 s and 5 s),
/// so a run ends before the next is due.
pub fn periodic_timeout(interval_secs: u64) -> Duration {
    let interval = Duration::from_secs(interval_secs.max(1));
    let margin = (interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    interval.saturating_sub(margin)
}

/// A periodic plugin's stdout: a JSON list of metrics, or an error quoting its start.
fn parse_metrics(stdout: &[u8]) -> Result<Vec<Metric>, String> {
    serde_json::from_slice::<Vec<Metric>>(stdout).map_err(|e| {
        let text = String::from_utf8_lossy(stdout);
        let snippet: String = text.chars().take(SNIPPET_CHARS).collect();
        format!("stdout is not a JSON list of metrics ({e}); it starts with: {snippet:?}")
    })
}

/// The copy of a run kept for `/plugins/list`: outputs cut to [`LIST_OUTPUT_CAP`].
fn preview(r: &RunResult) -> RunResult {
    let cut = |s: &str| {
        if s.len() <= LIST_OUTPUT_CAP {
            return s.to_owned();
        }
        let mut end = LIST_OUTPUT_CAP;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    RunResult {
        stdout: cut(&r.stdout),
        stderr: cut(&r.stderr),
        ..r.clone()
    }
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// Follows the plan: loads the saved state, then syncs the plugins to every plan put in force,
/// until `shutdown`.
pub async fn run_sync(state: AgentState, shutdown: CancellationToken) {
    let plugins = state.plugins().clone();
    plugins.load_state().await;
    let mut plans = state.subscribe_plan();
    loop {
        let plan = Arc::clone(&plans.borrow_and_update());
        tokio::select! {
            () = plugins.sync(&plan) => {}
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            changed = plans.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
