//! The agent's own heartbeat: `agent.alive` (value 1) per namespace every `agent.alive_secs` (10 s), plus the agent's
//! own counters, so a namespace always receives something and the pipeline carries real data.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::Metric;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::pipeline::Rename;
use crate::state::AgentState;

/// The heartbeat metrics as of now.
pub fn metrics(state: &AgentState) -> Vec<Metric> {
    let p = state.pipeline().stats();
    let o = state.output_stats();
    let spool = state.spool().stats();
    vec![
        Metric::new("agent.alive", 1.0),
        Metric::new(
            "agent.points.accepted",
            p.accepted.load(Ordering::Relaxed) as f64,
        ),
        Metric::new(
            "agent.points.rejected",
            p.rejected.load(Ordering::Relaxed) as f64,
        ),
        Metric::new(
            "agent.points.delivered",
            o.delivered_points.load(Ordering::Relaxed) as f64,
        ),
        Metric::new(
            "agent.points.queued",
            p.queued.load(Ordering::Relaxed) as f64,
        ),
        Metric::new("agent.spool.batches", spool.batches as f64),
        Metric::new("agent.spool.bytes", spool.bytes as f64),
        Metric::new(
            "agent.points.dropped",
            (spool.dropped_points + o.rejected_points.load(Ordering::Relaxed)) as f64,
        ),
    ]
}

/// Sends the heartbeat to every namespace of the plan in force until `shutdown`.
pub async fn run(state: AgentState, shutdown: CancellationToken) {
    let every = Duration::from_secs(state.config().agent.alive_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut plans = state.subscribe_plan();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        // A namespace gets its first heartbeat as soon as the registry names it, not a tick later.
        let only_new = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            changed = plans.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        let plan = state.plan();
        let targets = plan
            .namespaces
            .keys()
            .filter(|ns| !only_new || !seen.contains(*ns));
        for ns in targets {
            if state
                .pipeline()
                .submit_metrics(ns, "agent alive", metrics(&state), Rename::Keep)
                .await
                .is_err()
            {
                return;
            }
        }
        if only_new {
            // A full period until the next heartbeat: two in the same second would share a
            // timestamp, and InfluxDB keeps only the last point of a series per timestamp.
            tick.reset();
        }
        seen = plan.namespaces.keys().cloned().collect();
        debug!(namespaces = plan.namespaces.len(), "Sent heartbeat.");
    }
}
