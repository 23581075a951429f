//! The agent's own heartbeat: `agent.alive` (value 1) per namespace every `agent.alive_secs` (10 s), plus the agent's
//! own counters, so a namespace always receives something and the pipeline carries real data.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::Metric;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use tokio::time::Instant;

use crate::pipeline::Rename;
use crate::scheduler::SharedClock;
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

/// Least time between two heartbeats of a namespace: two in the same second would share a
/// timestamp, and InfluxDB keeps only the last point of a series per timestamp.
const MIN_GAP: Duration = Duration::from_secs(1);

/// The heartbeat's next tick after one at `last` (or a namespace's first, sent at `last`): on
/// the agent's clock, where the system families tick, so its points join theirs in one batch
/// per namespace (one spool write, one output write) instead of a round of their own.
fn next_beat(clock: SharedClock, every: Duration, last: Instant) -> Instant {
    clock.tick_at_or_after(every, last + MIN_GAP.min(every))
}

/// Sends the heartbeat to every namespace of the plan in force until `shutdown`.
pub async fn run(state: AgentState, shutdown: CancellationToken) {
    let every = Duration::from_secs(state.config().agent.alive_secs).max(Duration::from_millis(1));
    let clock = state.clock();
    let mut next = clock.tick_at_or_after(every, Instant::now());
    let mut plans = state.subscribe_plan();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // The namespaces in force at start get theirs at once: the plan may have been loaded before
    // this task subscribed, and then no change would announce them.
    let mut starting = true;
    loop {
        // A namespace gets its first heartbeat as soon as the registry names it, not a tick later.
        let only_new = std::mem::take(&mut starting)
            || tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => false,
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
        // After a stall, on the clock again rather than a burst; after a namespace's first
        // heartbeat, not within MIN_GAP of it.
        next = next_beat(clock, every, if only_new { Instant::now() } else { next })
            .max(clock.tick_at_or_after(every, Instant::now()));
        seen = plan.namespaces.keys().cloned().collect();
        debug!(namespaces = plan.namespaces.len(), "Sent heartbeat.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_ticks_where_the_system_families_do() {
        let clock = SharedClock::random();
        let ten = Duration::from_secs(10);
        // Where CPU, MEM... tick (the scheduler's Phase::Shared on this clock).
        let family = clock.tick_at_or_after(ten, Instant::now());
        let mut beat = clock.tick_at_or_after(ten, Instant::now());
        assert_eq!(beat, family);
        for k in 1..5 {
            beat = next_beat(clock, ten, beat);
            assert_eq!(
                beat,
                family + ten * k,
                "every 10 s, on the families' instants"
            );
        }
        // A namespace's first heartbeat at any moment: the next one is on the clock again, at
        // least MIN_GAP later.
        for ms in [0, 500, 9_400, 9_999] {
            let sent = family + Duration::from_millis(ms);
            let after = next_beat(clock, ten, sent);
            assert!(after >= sent + MIN_GAP, "{ms}");
            assert_eq!((after - family).as_millis() % 10_000, 0, "{ms}");
        }
    }
}
