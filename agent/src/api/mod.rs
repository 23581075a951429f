//! The HTTP API: the router, its error type, and the handlers.

mod error;
mod plugins;
mod status;
mod update;

use axum::routing::get;
use axum::Router;
use shared::api::paths;

pub use error::ApiError;

use crate::state::AgentState;

/// The API's routes over the agent's state; tests call it with `oneshot`, no socket needed.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route(paths::ME_STATUS, get(status::status))
        .route(paths::ME_NS, get(status::namespaces))
        .route(paths::UPDATE, get(update::update))
        .route(paths::PLUGINS_LIST, get(plugins::list))
        .route(paths::PLUGINS_UPDATE, get(plugins::update))
        .route(paths::PLUGINS_RUN, get(plugins::run))
        .route(paths::PLUGINS_ENABLE, get(plugins::enable))
        .route(paths::PLUGINS_DISABLE, get(plugins::disable))
        .fallback(error::not_found)
        .with_state(state)
}
