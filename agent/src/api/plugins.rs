//! `/plugins/list`, `/plugins/update`, `/plugins/run`, `/plugins/enable`, `/plugins/disable`.
//!
//! `ns` and `repo` are required on every call that names a plugin; `repo` is the git address
//! as the registry gives it, or the project name (the repository's name), whichever is handier.

use std::time::Duration;

use axum::extract::State;

use crate::api::Query;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shared::api::{ActionResponse, PluginList, RunResponse};

use super::ApiError;
use crate::plugins::{PluginError, RunKind, DEFAULT_CALL_TIMEOUT};
use crate::state::AgentState;

/// Bounds of `/plugins/run`'s `timeout`, in seconds.
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

/// The query of calls that name a plugin; everything optional so a missing key gets our message.
#[derive(Debug, Deserialize)]
pub struct PluginQuery {
    ns: Option<String>,
    repo: Option<String>,
    timeout: Option<String>,
    param: Option<String>,
}

impl PluginQuery {
    fn target(&self) -> Result<(&str, &str), ApiError> {
        let need = |v: &Option<String>, key: &str| {
            match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(ApiError::bad_request(format!(
                "query parameter '{key}' is required (the namespace and the plugin's repository address or project name)"
            ))),
        }
        };
        need(&self.ns, "ns")?;
        need(&self.repo, "repo")?;
        Ok((
            self.ns.as_deref().unwrap_or_default().trim(),
            self.repo.as_deref().unwrap_or_default().trim(),
        ))
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let status = match &e {
            PluginError::NotFound { .. } => StatusCode::NOT_FOUND,
            PluginError::Refused { .. } | PluginError::Busy { .. } | PluginError::Checkout(_) => {
                StatusCode::CONFLICT
            }
            PluginError::Git(_) => StatusCode::BAD_GATEWAY,
            PluginError::State(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `GET /plugins/list`.
pub async fn list(State(state): State<AgentState>) -> Json<PluginList> {
    Json(state.plugins().list())
}

/// `GET /plugins/run?ns=&repo=&timeout=&param=`.
pub async fn run(
    State(state): State<AgentState>,
    Query(q): Query<PluginQuery>,
) -> Result<Json<RunResponse>, ApiError> {
    let (ns, repo) = q.target()?;
    let timeout = match q.timeout.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_CALL_TIMEOUT,
        Some(t) => match t.parse::<u64>() {
            Ok(s) if TIMEOUT_RANGE.contains(&s) => Duration::from_secs(s),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "timeout={t:?}: expected whole seconds from {} to {}",
                    TIMEOUT_RANGE.start(),
                    TIMEOUT_RANGE.end()
                )))
            }
        },
    };
    let kind = RunKind::Call {
        timeout,
        param: q.param.clone(),
    };
    Ok(Json(state.plugins().run(ns, repo, kind).await?))
}

/// `GET /plugins/update?ns=&repo=`.
pub async fn update(
    State(state): State<AgentState>,
    Query(q): Query<PluginQuery>,
) -> Result<Json<ActionResponse>, ApiError> {
    let (ns, repo) = q.target()?;
    Ok(Json(state.plugins().update(ns, repo).await?))
}

/// `GET /plugins/enable?ns=&repo=`.
pub async fn enable(
    State(state): State<AgentState>,
    Query(q): Query<PluginQuery>,
) -> Result<Json<ActionResponse>, ApiError> {
    let (ns, repo) = q.target()?;
    Ok(Json(state.plugins().enable(ns, repo).await?))
}

/// `GET /plugins/disable?ns=&repo=`.
pub async fn disable(
    State(state): State<AgentState>,
    Query(q): Query<PluginQuery>,
) -> Result<Json<ActionResponse>, ApiError> {
    let (ns, repo) = q.target()?;
    Ok(Json(state.plugins().disable(ns, repo).await?))
}
