//! `GET /update`: refresh from the registry now, through the same path as the periodic refresh.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::UpdateResponse;

use super::ApiError;
use crate::state::AgentState;

/// How long `/update` waits for the scheduler to apply a changed plan before answering.
const RECONCILE_WAIT: Duration = Duration::from_secs(5);

/// `GET /update`: 200 with what changed; 502 when the registry failed (the plan in force keeps
/// running); 503 while the registry service is not running.
pub async fn update(State(state): State<AgentState>) -> Result<Json<UpdateResponse>, ApiError> {
    let refreshed = state
        .registry()
        .refresh_now()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if let Err(e) = refreshed.result {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("{e}; the plan in force keeps running"),
        ));
    }
    let mut answer = UpdateResponse {
        ok: true,
        namespaces: state.plan().namespace_names(),
        problems: refreshed.problems,
        ..UpdateResponse::default()
    };
    let report = match &refreshed.applied {
        Some(plan) => state.jobs().wait_reconciled(plan, RECONCILE_WAIT).await,
        None => None,
    };
    match report {
        Some(r) => {
            answer.started = r.started;
            answer.stopped = r.stopped;
            answer.updated = r.updated;
            answer.unchanged = r.unchanged;
        }
        // Nothing changed, or the scheduler has not caught up: everything running stays.
        None => answer.unchanged = state.jobs().counts().total,
    }
    Ok(Json(answer))
}
