//! The HTTP API: the router, its error type, and the handlers.

pub mod auth;
mod error;
pub mod exposition;
mod extract;
pub mod log;
pub mod metrics;
mod plugins;
pub mod post;
pub mod server;
mod status;
pub mod tap;
mod update;

use std::any::Any;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use shared::api::paths;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use extract::Query;

use crate::state::AgentState;

/// The API's routes over the agent's state; tests call it with `oneshot`, no socket needed.
pub fn router(state: AgentState) -> Router {
    // Every endpoint goes here, before `guard`, so the token and the JSON errors cover it.
    let routes = Router::new()
        .route(paths::ME_STATUS, get(status::status))
        .route(paths::ME_NS, get(status::namespaces))
        .route(paths::UPDATE, get(update::update))
        .route(paths::PLUGINS_LIST, get(plugins::list))
        .route(paths::PLUGINS_UPDATE, get(plugins::update))
        .route(paths::PLUGINS_RUN, get(plugins::run))
        .route(paths::PLUGINS_ENABLE, get(plugins::enable))
        .route(paths::PLUGINS_DISABLE, get(plugins::disable))
        .route(paths::POST, post(post::post))
        .route(paths::LOG_OFFSET, get(log::offset))
        .route(paths::METRICS, get(metrics::metrics))
        .route(paths::TAP, get(tap::tap));
    guard(routes, state)
}

/// The layers every endpoint shares: JSON answers for unknown paths and wrong methods, the token
/// check, a JSON 500 instead of a dropped connection should a handler ever panic, and, around
/// them all, the request counters of `/metrics` (so 401s and 500s are counted too).
fn guard(routes: Router<AgentState>, state: AgentState) -> Router {
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let want = if uri.path() == paths::POST {
        "POST"
    } else {
        "GET"
    };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}; use {want}", uri.path()),
    )
}

fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("An API handler panicked; this is a bug.");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error while handling the request (logged by the agent)",
    )
    .into_response()
}

#[cfg(test)]
mod tests;
