//! `GET /metrics`: the agent's own telemetry for Prometheus, and the API's request counters.
//!
//! The figures are read from the same counters `/me/status` shows, so the two agree; every
//! metric is listed in docs/operations.md ("Metrics reference").

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::exposition::{self, Exposition, Kind};
use crate::output::spool::DropReason;
use crate::state::AgentState;

/// The `endpoint` label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// API requests answered, by route template and status.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Keys are bounded: route templates are the router's (every other path is [`UNMATCHED`])
    /// and statuses the handlers' own. By endpoint first, so counting a request allocates
    /// nothing once its endpoint has been seen.
    counts: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
}

impl RequestCounts {
    fn record(&self, endpoint: &str, status: u16) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        if !c.contains_key(endpoint) {
            c.insert(endpoint.to_owned(), BTreeMap::new());
        }
        if let Some(statuses) = c.get_mut(endpoint) {
            *statuses.entry(status).or_insert(0) += 1;
        }
    }

    fn snapshot(&self) -> Vec<((String, u16), u64)> {
        self.counts
            .lock()
            .map(|c| {
                c.iter()
                    .flat_map(|(e, s)| s.iter().map(|(st, n)| ((e.clone(), *st), *n)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Middleware: counts every answered request under its route template (`unmatched` for paths
/// no route serves, so a scanner cannot grow the counters), whatever its status, 401s included.
pub async fn count_requests(State(state): State<AgentState>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let endpoint = endpoint.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    state
        .api_requests()
        .record(endpoint, resp.status().as_u16());
    resp
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AgentState>) -> Response {
    ([(CONTENT_TYPE, exposition::CONTENT_TYPE)], render(&state)).into_response()
}

/// The exposition document of the agent's state now.
pub fn render(state: &AgentState) -> String {
    let mut doc = Exposition::new();
    let version = env!("CARGO_PKG_VERSION");
    doc.family(
        "agent_build_info",
        Kind::Gauge,
        "The agent's version and build; always 1.",
    )
    .sample(&[("version", version), ("build", crate::BUILD)], 1u64);
    doc.family(
        "agent_start_time_seconds",
        Kind::Gauge,
        "Unix time the agent started.",
    )
    .value(state.started_at());

    let p = state.pipeline().stats();
    doc.family(
        "agent_points_accepted_total",
        Kind::Counter,
        "Points accepted into the pipeline (collectors, plugins, /post).",
    )
    .value(p.accepted.load(Ordering::Relaxed));
    doc.family(
        "agent_points_rejected_total",
        Kind::Counter,
        "Metrics refused by the pipeline (bad name, tag or value).",
    )
    .value(p.rejected.load(Ordering::Relaxed));
    doc.family(
        "agent_points_queued",
        Kind::Gauge,
        "Points waiting in memory to be batched.",
    )
    .value(p.queued.load(Ordering::Relaxed));

    let tap = state.pipeline().tap();
    doc.family("agent_taps_open", Kind::Gauge, "GET /tap streams open now.")
        .value(tap.open_count() as u64);
    doc.family(
        "agent_tap_dropped_points_total",
        Kind::Counter,
        "Points taps lost because their readers were slower than the points (the pipeline never waits for a tap).",
    )
    .value(tap.dropped_total());

    let o = state.output_stats();
    doc.family(
        "agent_points_delivered_total",
        Kind::Counter,
        "Points the output confirmed.",
    )
    .value(o.delivered_points.load(Ordering::Relaxed));
    doc.family(
        "agent_batches_delivered_total",
        Kind::Counter,
        "Batches the output confirmed.",
    )
    .value(o.delivered_batches.load(Ordering::Relaxed));

    let spool = state.spool().stats();
    let rejected = (
        o.rejected_batches.load(Ordering::Relaxed),
        o.rejected_points.load(Ordering::Relaxed),
    );
    let mut dropped = doc.family(
        "agent_points_dropped_total",
        Kind::Counter,
        "Points dropped, by reason: spool_full, memory_full, damaged, unreadable (the spool), \
         rejected (refused by the output for good).",
    );
    for r in DropReason::ALL {
        dropped.sample(
            &[("reason", r.as_str())],
            spool.dropped_by[r as usize].points,
        );
    }
    dropped.sample(&[("reason", "rejected")], rejected.1);
    let mut dropped = doc.family(
        "agent_batches_dropped_total",
        Kind::Counter,
        "Batches dropped, by reason (as agent_points_dropped_total).",
    );
    for r in DropReason::ALL {
        dropped.sample(
            &[("reason", r.as_str())],
            spool.dropped_by[r as usize].batches,
        );
    }
    dropped.sample(&[("reason", "rejected")], rejected.0);
    doc.family(
        "agent_spool_batches",
        Kind::Gauge,
        "Batches waiting in the spool.",
    )
    .value(spool.batches);
    doc.family(
        "agent_spool_bytes",
        Kind::Gauge,
        "Bytes waiting in the spool.",
    )
    .value(spool.bytes);
    doc.family(
        "agent_spool_durable",
        Kind::Gauge,
        "1 when the spool writes to disk, 0 while it holds batches in memory only.",
    )
    .value(spool.durable);
    doc.family(
        "agent_spool_damaged_ranges_total",
        Kind::Counter,
        "Damaged byte ranges found in the spool's files.",
    )
    .value(spool.damaged_ranges);
    doc.family(
        "agent_spool_lost_unknown_bytes_total",
        Kind::Counter,
        "Bytes of damaged spool records whose points could not be counted.",
    )
    .value(spool.lost_unknown_bytes);
    doc.family(
        "agent_output_connected",
        Kind::Gauge,
        "1 when the output's last delivery attempt succeeded.",
    )
    .value(o.connected.load(Ordering::Relaxed));
    doc.family(
        "agent_output_errors_total",
        Kind::Counter,
        "Failed delivery attempts (retried or refused).",
    )
    .value(o.errors.load(Ordering::Relaxed));

    let (answered, failed) = state.registry().refreshes();
    doc.family(
        "agent_registry_refreshes_total",
        Kind::Counter,
        "Registry refreshes, by result: ok (the source answered) or error.",
    )
    .sample(&[("result", "ok")], answered)
    .sample(&[("result", "error")], failed);
    let mut health = shared::api::RegistryStatus::default();
    state.registry().fill(&mut health);
    doc.family(
        "agent_registry_skipped_entries_total",
        Kind::Counter,
        "Registry entries skipped as unusable, each counted once when it appears.",
    )
    .value(health.skipped_total);
    let mut last = doc.family(
        "agent_registry_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last refresh the source answered (absent before the first).",
    );
    if let Some(at) = health.last_success {
        last.value(at);
    }
    let plan = state.plan();
    doc.family(
        "agent_registry_namespaces",
        Kind::Gauge,
        "Namespaces in the plan in force.",
    )
    .value(plan.namespaces.len());
    doc.family(
        "agent_registry_items",
        Kind::Gauge,
        "Collect items in the plan in force.",
    )
    .value(plan.item_count());

    let jobs = state.jobs().counts();
    doc.family("agent_jobs", Kind::Gauge, "Scheduled jobs, by kind.")
        .sample(&[("kind", "system")], jobs.system)
        .sample(&[("kind", "port")], jobs.ports)
        .sample(&[("kind", "proc")], jobs.procs)
        .sample(&[("kind", "plugin")], jobs.plugins)
        .sample(&[("kind", "builtin")], jobs.builtins);
    doc.family(
        "agent_jobs_started_total",
        Kind::Counter,
        "Jobs started (a job a registry change leaves running is not started again).",
    )
    .value(jobs.started_total);
    doc.family(
        "agent_scheduler_skipped_ticks_total",
        Kind::Counter,
        "Ticks skipped because the job's previous run was still going.",
    )
    .value(jobs.skipped_ticks);

    let plugins = state.plugins().counts();
    doc.family(
        "agent_plugins",
        Kind::Gauge,
        "Script plugins known from the registry.",
    )
    .value(plugins.total);
    doc.family(
        "agent_plugins_disabled",
        Kind::Gauge,
        "Script plugins disabled.",
    )
    .value(plugins.disabled);
    doc.family(
        "agent_plugins_running",
        Kind::Gauge,
        "Script plugins running now.",
    )
    .value(plugins.running);
    let mut runs = doc.family(
        "agent_plugin_runs_total",
        Kind::Counter,
        "Plugin runs (script and built-in), by namespace, plugin, kind (regular or call), \
         result (ok or failed) and reason (ok, exit, timeout, output, spawn).",
    );
    for (k, n) in state.plugins().runs().snapshot() {
        let result = if k.reason == "ok" { "ok" } else { "failed" };
        runs.sample(
            &[
                ("ns", &k.ns),
                ("plugin", &k.plugin),
                ("kind", &k.kind),
                ("result", result),
                ("reason", &k.reason),
            ],
            n,
        );
    }

    let mut requests = doc.family(
        "agent_api_requests_total",
        Kind::Counter,
        "API requests answered, by endpoint (route, or unmatched) and HTTP status.",
    );
    for ((endpoint, status), n) in state.api_requests().snapshot() {
        let status = status.to_string();
        requests.sample(&[("endpoint", &endpoint), ("status", &status)], n);
    }
    doc.finish()
}
