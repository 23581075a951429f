//! The agent's [`Runner`]: what each kind of job does on a tick, and where its metrics go.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use shared::Metric;
use tracing::{debug, warn};

use super::{JobKey, JobSpec, Runner, Work};
use crate::collect::port;
use crate::collect::proc::ProcCollector;
use crate::collect::system::{Family, SystemCollector};
use crate::config::SystemConfig;
use crate::output::BoxFuture;
use crate::pipeline::Rename;
use crate::plugins::Scheduled;
use crate::registry::Plan;
use crate::state::AgentState;

/// Runs collectors and hands their metrics to the pipeline.
pub struct AgentRunner {
    state: AgentState,
    /// One long-lived collector: its counters make the rates, so it outlives every reconcile
    /// (and reloads: the `[system]` section it was set up with is kept beside it).
    system: Arc<Mutex<(SystemCollector, SystemConfig)>>,
    /// One process collector; it keys its samples by (name, bin_path), so namespaces may share it.
    procs: Arc<Mutex<ProcCollector>>,
}

impl AgentRunner {
    /// A runner sending to the state's pipeline.
    pub fn new(state: AgentState) -> Self {
        let section = state.config().system.clone();
        let system = SystemCollector::new(section.options());
        AgentRunner {
            state,
            system: Arc::new(Mutex::new((system, section))),
            procs: Arc::default(),
        }
    }
}

/// Submits metrics to each namespace; false once the pipeline is closed (shutting down).
/// `job` names the producer for the taps (`system CPU`, `port ns/name:80@host`).
async fn submit(
    state: &AgentState,
    job: &str,
    namespaces: &[String],
    metrics: Vec<Metric>,
) -> bool {
    if metrics.is_empty() {
        return true;
    }
    for ns in namespaces {
        match state
            .pipeline()
            .submit_metrics(ns, job, metrics.clone(), Rename::Keep)
            .await
        {
            Ok(ingested) if ingested.rejected > 0 => {
                debug!(ns = %ns, rejected = ingested.rejected, errors = ?ingested.errors, "Collector metrics rejected.");
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

fn collect_system(
    system: &Mutex<(SystemCollector, SystemConfig)>,
    section: &SystemConfig,
    family: Family,
) -> Vec<Metric> {
    let mut g = system.lock().unwrap_or_else(PoisonError::into_inner);
    let (collector, in_force) = &mut *g;
    if in_force != section {
        collector.set_options(section.options());
        *in_force = section.clone();
    }
    collector.collect(family)
}

impl Runner for AgentRunner {
    fn run(&self, key: &JobKey, spec: &JobSpec) -> BoxFuture<'static, ()> {
        let state = self.state.clone();
        let job = key.to_string();
        match &spec.work {
            Work::System { family, namespaces } => {
                let (family, namespaces) = (*family, Arc::clone(namespaces));
                let system = Arc::clone(&self.system);
                let config = state.config();
                Box::pin(async move {
                    match tokio::task::spawn_blocking(move || {
                        collect_system(&system, &config.system, family)
                    })
                    .await
                    {
                        Ok(metrics) => {
                            submit(&state, &job, &namespaces, metrics).await;
                        }
                        Err(e) => warn!(job, error = %e, "System collector failed."),
                    }
                })
            }
            Work::Port { ns, item } => {
                let (ns, item) = (ns.clone(), item.clone());
                Box::pin(async move {
                    let metric = port::check(&item).await;
                    submit(&state, &job, &[ns], vec![metric]).await;
                })
            }
            Work::Plugin { ns, project } => {
                let (ns, project) = (ns.clone(), project.clone());
                Box::pin(async move {
                    if let Scheduled::Busy = state.plugins().run_scheduled(&ns, &project).await {
                        state.jobs().count_skipped_tick();
                    }
                })
            }
            Work::Builtin { ns, item } => {
                let (ns, item) = (ns.clone(), item.clone());
                Box::pin(async move {
                    state.plugins().run_builtin_scheduled(&ns, &item).await;
                })
            }
            Work::Proc { ns, item } => {
                let collector = Arc::clone(&self.procs);
                let (ns, item) = (ns.clone(), item.clone());
                Box::pin(async move {
                    let collected = tokio::task::spawn_blocking(move || {
                        collector
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .collect(&item)
                    })
                    .await;
                    match collected {
                        Ok(metrics) => {
                            submit(&state, &job, &[ns], metrics).await;
                        }
                        Err(e) => warn!(job, error = %e, "Process collector failed."),
                    }
                })
            }
        }
    }

    fn retain(&self, plan: &Plan) {
        let wanted: HashSet<(&str, &str)> = plan
            .namespaces
            .values()
            .flat_map(|ns| &ns.procs)
            .map(|p| (p.name.as_str(), p.bin_path.as_str()))
            .collect();
        // A collector busy scanning /proc is pruned at the next reconcile; never wait here.
        if let Ok(mut c) = self.procs.try_lock() {
            c.retain(|name, bin| wanted.contains(&(name, bin)));
        }
    }
}
