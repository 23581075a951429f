//! `POST /post?ns=`: producers push metrics, as a JSON list or as InfluxDB line protocol.

use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use shared::api::PostResponse;

use super::extract::Query;
use super::ApiError;
use crate::pipeline::normalize::{self, Rename};
use crate::pipeline::{json, lineproto, Ingested, PipelineClosed, MAX_REPORTED_ERRORS};
use crate::state::AgentState;

/// How long a client may take to send its whole body: a slow client holds at most this long and
/// `agent.max_body_bytes` of memory.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Query of `POST /post`.
#[derive(Debug, Deserialize)]
pub struct PostQuery {
    /// The namespace; optional when the host has exactly one.
    ns: Option<String>,
}

/// `POST /post`.
pub async fn post(
    State(state): State<AgentState>,
    Query(q): Query<PostQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PostResponse>, ApiError> {
    let ns = resolve_ns(&state, q.ns.as_deref())?;
    let body = read_body(&headers, body, state.config().agent.max_body_bytes).await?;
    let pipeline = state.pipeline();
    let (ingested, parsed_rejected, mut errors) = if is_line_protocol(&headers) {
        let host = pipeline.host().to_owned();
        let now = normalize::now_secs();
        let parsed =
            parse_off_worker(body, move |b| lineproto::parse::parse_points(b, &host, now)).await?;
        let accepted = parsed.items.len();
        pipeline.submit(&ns, parsed.items).await.map_err(closed)?;
        let ingested = Ingested {
            accepted,
            ..Ingested::default()
        };
        (ingested, parsed.rejected, parsed.errors)
    } else {
        let parsed = parse_off_worker(body, |b| json::parse_metrics(b).map_err(|e| e.to_string()))
            .await?
            .map_err(ApiError::bad_request)?;
        let ingested = pipeline
            .submit_metrics(&ns, parsed.items, Rename::Keep)
            .await
            .map_err(closed)?;
        (ingested, parsed.rejected, parsed.errors)
    };
    // What submit_metrics did not see (unparsed parts, line protocol's own normalising) is
    // counted here, so /me/status counts every refusal once.
    pipeline
        .stats()
        .rejected
        .fetch_add(parsed_rejected as u64, std::sync::atomic::Ordering::Relaxed);
    let room = MAX_REPORTED_ERRORS.saturating_sub(errors.len());
    errors.extend(ingested.errors.into_iter().take(room));
    Ok(Json(PostResponse {
        ns,
        accepted: ingested.accepted,
        rejected: parsed_rejected + ingested.rejected,
        errors,
    }))
}

/// The namespace to post to: the given one if this host has it, or the only one.
pub fn resolve_ns(state: &AgentState, ns: Option<&str>) -> Result<String, ApiError> {
    let names = state.plan().namespace_names();
    let list = || {
        if names.is_empty() {
            "none (is the registry empty or not refreshed yet? see /me/status)".to_owned()
        } else {
            names.join(", ")
        }
    };
    match ns.filter(|n| !n.is_empty()) {
        Some(ns) if names.iter().any(|n| n == ns) => Ok(ns.to_owned()),
        Some(ns) => Err(ApiError::not_found(format!(
            "namespace {ns:?} is not one of this host's; its namespaces: {}",
            list()
        ))),
        None => match names.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::not_found(format!(
                "this host has no namespace to post to: {}",
                list()
            ))),
            _ => Err(ApiError::bad_request(format!(
                "ns is required when the host has several namespaces: {}",
                list()
            ))),
        },
    }
}

/// Reads the body, bounded in size and time.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {limit} bytes (agent.max_body_bytes); send smaller batches"
            ),
        )
    };
    // Refuse early when the client says up front that it will send too much.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "the body could not be read: {e}"
        ))),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    crate::error_chain::sources(e).any(|err| err.is::<http_body_util::LengthLimitError>())
}

/// `Content-Type: text/plain` (any parameters) means line protocol; anything else is JSON.
fn is_line_protocol(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/plain"))
}

fn closed(e: PipelineClosed) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// Bodies up to this size are parsed on the async worker: handing them to the blocking pool
/// costs more than parsing them.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Parses a body; big bodies go to the blocking pool so a 16 MiB body does not hold a worker.
async fn parse_off_worker<T: Send + 'static>(
    body: Bytes,
    parse: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() <= INLINE_PARSE_BYTES {
        return Ok(parse(&body));
    }
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "parsing the body failed"))
}
