//! The agent's [`Runner`]: what each kind of job does on a tick, and where its metrics go.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use shared::Metric;
use tokio::sync::oneshot;
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
    /// (and reloads).
    system: Arc<SystemRounds>,
    /// One process collector; it keys its samples by (name, bin_path), so namespaces may share it.
    procs: Arc<Mutex<ProcCollector>>,
}

impl AgentRunner {
    /// A runner sending to the state's pipeline.
    pub fn new(state: AgentState) -> Self {
        let section = state.config().system.clone();
        AgentRunner {
            state,
            system: Arc::new(SystemRounds::new(section)),
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

/// What one family's collection gave: its metrics, or why the collector failed.
type Collected = Result<Vec<Metric>, String>;

/// The system collector, and the families asked of it that wait for a trip to the blocking pool.
///
/// The families due at the same moment tick together (one clock, one timer) and are collected
/// one after the other in one blocking call: one thread wakeup per round instead of one per
/// family, which was most of what an idle agent's runtime did (docs/benchmarks.md, "Idle
/// agent"). The first family to ask takes the trip; the others that ask before it leaves ride
/// along. One that asks later takes the next trip, so nothing waits for a family that is late.
struct SystemRounds {
    /// The collector, with the `[system]` section it was set up with (a reload may change it).
    collector: Mutex<(SystemCollector, SystemConfig)>,
    /// Families asked for and not yet taken by a trip, with where their metrics go.
    asked: Mutex<Vec<(Family, oneshot::Sender<Collected>)>>,
    /// Trips to the blocking pool so far.
    trips: AtomicU64,
}

impl SystemRounds {
    fn new(section: SystemConfig) -> Self {
        SystemRounds {
            collector: Mutex::new((SystemCollector::new(section.options()), section)),
            asked: Mutex::default(),
            trips: AtomicU64::new(0),
        }
    }

    /// Collects `family` with the `[system]` section `section`, in the trip of the families
    /// asked for at the same moment.
    async fn collect(self: &Arc<Self>, family: Family, section: SystemConfig) -> Collected {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
            asked.push((family, tx));
            asked.len() == 1
        };
        if first {
            // A task of its own, so the trip leaves even if this run is dropped (a job stopped).
            let me = Arc::clone(self);
            drop(tokio::spawn(async move {
                // The families due now were woken by the same timer: let them ask first.
                tokio::task::yield_now().await;
                let asked =
                    std::mem::take(&mut *me.asked.lock().unwrap_or_else(PoisonError::into_inner));
                me.trips.fetch_add(1, Ordering::Relaxed);
                drop(tokio::task::spawn_blocking(move || {
                    // Answered together at the end: each answer wakes a worker, and once one is
                    // awake the rest find it so.
                    let collected: Vec<_> = asked
                        .into_iter()
                        .map(|(family, tx)| (tx, me.collect_now(&section, family)))
                        .collect();
                    for (tx, c) in collected {
                        let _ = tx.send(c);
                    }
                }));
            }));
        }
        rx.await
            .unwrap_or_else(|_| Err("the collector's thread ended".to_owned()))
    }

    /// One family, now (blocking). A panic is that family's failure, not the trip's.
    fn collect_now(&self, section: &SystemConfig, family: Family) -> Collected {
        let mut g = self
            .collector
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (collector, in_force) = &mut *g;
        if in_force != section {
            collector.set_options(section.options());
            *in_force = section.clone();
        }
        std::panic::catch_unwind(AssertUnwindSafe(|| collector.collect(family))).map_err(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            format!("the collector failed: {why}")
        })
    }
}

impl AgentRunner {
    /// One run of `work` (the job `key`): its metrics go to the pipeline. `Err` says why the run
    /// failed (a plugin's reason, error and stderr tail; a collector that panicked); the scheduler
    /// only logs it, `agent test` lists it. A plugin that is busy or disabled did not fail.
    pub fn run_once(&self, key: &JobKey, work: &Work) -> BoxFuture<'static, Result<(), String>> {
        let state = self.state.clone();
        let job = key.to_string();
        match work {
            Work::System { family, namespaces } => {
                let (family, namespaces) = (*family, Arc::clone(namespaces));
                let system = Arc::clone(&self.system);
                let config = state.config();
                Box::pin(async move {
                    match system.collect(family, config.system.clone()).await {
                        Ok(metrics) => {
                            submit(&state, &job, &namespaces, metrics).await;
                            Ok(())
                        }
                        Err(e) => {
                            warn!(job, error = %e, "System collector failed.");
                            Err(e)
                        }
                    }
                })
            }
            Work::Port { ns, item } => {
                let (ns, item) = (ns.clone(), item.clone());
                Box::pin(async move {
                    // A closed port is a value (`up` 0), not a failed run.
                    let metric = port::check(&item).await;
                    submit(&state, &job, &[ns], vec![metric]).await;
                    Ok(())
                })
            }
            Work::Plugin { ns, project } => {
                let (ns, project) = (ns.clone(), project.clone());
                Box::pin(async move {
                    match state.plugins().run_scheduled(&ns, &project).await {
                        Scheduled::Ran(r) if r.ok => Ok(()),
                        Scheduled::Ran(r) => Err(crate::plugins::describe_failure(&r)),
                        Scheduled::Busy => {
                            state.jobs().count_skipped_tick();
                            Ok(())
                        }
                        Scheduled::Disabled => Ok(()),
                        Scheduled::NotReady => Err("not cloned yet".to_owned()),
                        Scheduled::Unknown => Err("no longer in the plan".to_owned()),
                    }
                })
            }
            Work::Builtin { ns, item } => {
                let (ns, item) = (ns.clone(), item.clone());
                Box::pin(async move {
                    let r = state.plugins().run_builtin_scheduled(&ns, &item).await;
                    if r.ok {
                        Ok(())
                    } else {
                        Err(crate::plugins::describe_failure(&r))
                    }
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
                            Ok(())
                        }
                        Err(e) => {
                            warn!(job, error = %e, "Process collector failed.");
                            Err(format!("the collector failed: {e}"))
                        }
                    }
                })
            }
        }
    }
}

impl Runner for AgentRunner {
    fn run(&self, key: &JobKey, spec: &JobSpec) -> BoxFuture<'static, ()> {
        // Failures are logged where they happen (the plugin manager logs a plugin's).
        let run = self.run_once(key, &spec.work);
        Box::pin(async move {
            let _ = run.await;
        })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn families_due_together_are_collected_in_one_trip() {
        let rounds = Arc::new(SystemRounds::new(SystemConfig::default()));
        let due = tokio::time::Instant::now() + Duration::from_secs(10);
        let runs: Vec<_> = Family::ALL
            .into_iter()
            .map(|family| {
                let rounds = Arc::clone(&rounds);
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    (
                        family,
                        rounds.collect(family, SystemConfig::default()).await,
                    )
                })
            })
            .collect();
        for run in runs {
            let (family, collected) = run.await.expect("join");
            let metrics = collected.expect("collected");
            if family == Family::Mem {
                assert!(
                    metrics.iter().any(|m| m.name.starts_with("mem.")),
                    "{metrics:?}"
                );
            }
        }
        assert_eq!(
            rounds.trips.load(Ordering::Relaxed),
            1,
            "sixteen families, one trip"
        );

        // One asked on its own takes a trip of its own, and the collector's counters carried on.
        let cpu = rounds.collect(Family::Cpu, SystemConfig::default()).await;
        assert!(cpu.expect("collected").iter().any(|m| m.name == "cpu.user"));
        assert_eq!(rounds.trips.load(Ordering::Relaxed), 2);
    }
}
