//! `GET /me/status` and `GET /me/ns`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::Json;
use shared::api::{NamespacesResponse, OutputStatus, PipelineStatus, RegistryStatus, Status};

use crate::plugins::git::redact_address;
use crate::state::AgentState;

/// `GET /me/status`.
pub async fn status(State(state): State<AgentState>) -> Json<Status> {
    Json(build_status(&state))
}

/// The status document; shared by the endpoint and the agent's own logging.
pub fn build_status(state: &AgentState) -> Status {
    let cfg = state.config();
    let p = state.pipeline().stats();
    let o = state.output_stats();
    let spool = state.spool().stats();
    let plan = state.plan();
    let mut registry = RegistryStatus {
        source: cfg.registry.source.to_string(),
        location: match cfg.registry.source {
            crate::config::RegistrySource::File => cfg.registry.path.display().to_string(),
            crate::config::RegistrySource::Http => redact_address(&cfg.registry.url),
        },
        namespaces: plan.namespaces.len(),
        items: plan.item_count(),
        ..RegistryStatus::default()
    };
    state.registry().fill(&mut registry);
    // Anyone may read this answer: no credentials of the configured URLs, also inside messages.
    let hide = |text: String| {
        hide_credentials(&hide_credentials(&text, &cfg.registry.url), &cfg.output.url)
    };
    registry.last_error = registry.last_error.map(hide);
    registry.problems = registry.problems.into_iter().map(hide).collect();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build: crate::BUILD.to_owned(),
        hostname: state.hostname().to_owned(),
        uptime_secs: state.uptime_secs(),
        started_at: state.started_at(),
        registry,
        pipeline: PipelineStatus {
            accepted: p.accepted.load(Ordering::Relaxed),
            rejected: p.rejected.load(Ordering::Relaxed),
            queued: p.queued.load(Ordering::Relaxed),
        },
        output: OutputStatus {
            kind: cfg.output.kind.to_string(),
            connected: o.connected.load(Ordering::Relaxed),
            endpoint: o
                .endpoint
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .map(|e| redact_address(&e)),
            queue_batches: 0,
            spool_batches: spool.batches,
            spool_bytes: spool.bytes,
            spool_durable: spool.durable,
            spool_problem: state.spool().problem(),
            delivered_batches: o.delivered_batches.load(Ordering::Relaxed),
            delivered_points: o.delivered_points.load(Ordering::Relaxed),
            dropped_batches: spool.dropped_batches + o.rejected_batches.load(Ordering::Relaxed),
            dropped_points: spool.dropped_points + o.rejected_points.load(Ordering::Relaxed),
            spool_damaged_ranges: spool.damaged_ranges,
            lost_unknown_bytes: spool.lost_unknown_bytes,
            last_error: o.last_error.lock().ok().and_then(|g| g.clone()).map(hide),
            errors: o.errors.load(Ordering::Relaxed),
        },
        jobs: state.jobs().counts(),
        log_dir: Some(cfg.log_dir().display().to_string()),
        plugins: state.plugins().counts(),
    }
}

/// `text` with the `user:password@` of `url` replaced as [`redact_address`] shows it.
fn hide_credentials(text: &str, url: &str) -> String {
    let shown = redact_address(url);
    if shown == url {
        return text.to_owned();
    }
    let start = url.find("://").map_or(0, |i| i + 3);
    let userinfo = url[start..].rfind('@').map(|at| &url[start..start + at]);
    match userinfo {
        Some(u) if !u.is_empty() => {
            let hidden = &shown[start..shown.len() - (url.len() - start - u.len())];
            text.replace(u, hidden)
        }
        _ => text.to_owned(),
    }
}

/// `GET /me/ns`.
pub async fn namespaces(State(state): State<AgentState>) -> Json<NamespacesResponse> {
    Json(NamespacesResponse {
        namespaces: state.plan().namespace_names(),
    })
}

#[cfg(test)]
mod tests {
    use super::hide_credentials;

    #[test]
    fn credentials_of_configured_urls_never_reach_the_open_status() {
        let url = "https://bob:s3cret@registry.example.com:8080";
        let msg = "registry https://bob:s3cret@registry.example.com:8080/api/v1/agent/ns: \
                   error sending request for url (https://bob:s3cret@registry.example.com:8080/api)";
        let shown = hide_credentials(msg, url);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("https://bob:***@registry.example.com:8080/api"),
            "{shown}"
        );
        assert_eq!(hide_credentials(msg, "http://plain:8086"), msg);
        assert_eq!(hide_credentials("x", ""), "x");
        let token_only = hide_credentials("at https://tok@h/x", "https://tok@h");
        assert_eq!(token_only, "at https://***@h/x");
    }
}
