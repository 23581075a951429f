//! The bearer token guard: with `agent.token` set, every endpoint but `/me/status` needs
//! `Authorization: Bearer <token>`.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::api::paths;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::state::AgentState;

/// Middleware: lets the request through when no token is configured, the path is `/me/status`,
/// or the request carries the right bearer token; answers 401 otherwise.
pub async fn require_token(State(state): State<AgentState>, req: Request, next: Next) -> Response {
    let token = state.config().agent.token.as_bytes();
    if token.is_empty() || req.uri().path() == paths::ME_STATUS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"Bearer "));
    match given {
        Some(given) if bool::from(given.ct_eq(token)) => next.run(req).await,
        Some(_) => unauthorized("the bearer token is wrong"),
        None => unauthorized(
            "this agent requires a token: send `Authorization: Bearer <agent.token>` \
             (agentctl: --token)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
