//! `POST /post?ns=`: producers push metrics, as a JSON list or as InfluxDB line protocol.
//!
//! Memory is bounded twice: a body is read only once `agent.max_inflight_body_bytes` has room
//! for it, and it is parsed a piece ([`PIECE_BYTES`]) at a time, each piece taking its share of
//! the pipeline queue's byte bound (`output.queue_max_bytes`) before it is parsed. With
//! `agent.post_ack = "durable"` the answer waits until the batcher has written the points to
//! the spool file (a group commit shared by concurrent posts).

use std::ops::Range;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use shared::api::PostResponse;
use shared::Metric;
use tokio::sync::OwnedSemaphorePermit;

use super::extract::Query;
use super::ApiError;
use crate::config::{Format, PostAck};
use crate::pipeline::normalize::{self, Rename};
use crate::pipeline::{
    json, keep_reasons, lineproto, normalize_all, Encoded, Parsed, Point, Stored, SubmitError, Wait,
};
use crate::state::AgentState;

/// How long a client may take to send its whole body: a slow client holds at most this long and
/// `agent.max_body_bytes` of memory.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A body is parsed and queued in pieces of about this many bytes (whole lines or elements).
pub const PIECE_BYTES: usize = 1024 * 1024;

/// A piece reserves this many queue bytes per body byte before it is parsed (normalised points
/// take 4 to 8 times their line-protocol or JSON text); the reservation is fitted to the parsed
/// points afterwards.
const RESERVE_PER_BODY_BYTE: usize = 8;

/// The producer `/post` points are shown under in the taps.
const PRODUCER: &str = "POST /post";

/// `Retry-After` when the agent is busy (bodies or queue full), in seconds.
const BUSY_RETRY_SECS: u64 = 1;
/// `Retry-After` when the spool cannot write to disk: the spool tries the disk again every 5 s.
const SPOOL_RETRY_SECS: u64 = 5;

/// Query of `POST /post`.
#[derive(Debug, Deserialize)]
pub struct PostQuery {
    /// The namespace; optional when the host has exactly one.
    ns: Option<String>,
}

/// A refusal of `/post`: an [`ApiError`], or a 503 that says when to try again.
#[derive(Debug)]
pub enum PostError {
    /// Any other error answer.
    Api(ApiError),
    /// 503 with `Retry-After` (seconds).
    Unavailable {
        /// What happened, and whether retrying may duplicate points.
        message: String,
        /// Seconds.
        retry_after: u64,
    },
}

impl From<ApiError> for PostError {
    fn from(e: ApiError) -> Self {
        PostError::Api(e)
    }
}

impl IntoResponse for PostError {
    fn into_response(self) -> Response {
        match self {
            PostError::Api(e) => e.into_response(),
            PostError::Unavailable {
                message,
                retry_after,
            } => {
                let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after));
                r
            }
        }
    }
}

fn unavailable(message: String, retry_after: u64) -> PostError {
    PostError::Unavailable {
        message,
        retry_after,
    }
}

/// `POST /post`.
pub async fn post(
    State(state): State<AgentState>,
    Query(q): Query<PostQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PostResponse>, PostError> {
    let ns = resolve_ns(&state, q.ns.as_deref())?;
    let cfg = &state.config().agent;
    let durable = cfg.post_ack == PostAck::Durable;
    if durable {
        if let Some(problem) = state.spool().problem() {
            return Err(unavailable(
                format!(
                    "the spool cannot write to disk ({problem}), so no answer could promise the points are kept; nothing was accepted: retry later"
                ),
                SPOOL_RETRY_SECS,
            ));
        }
    }
    let limit = cfg.max_body_bytes;
    let wait = Duration::from_millis(cfg.post_wait_ms);
    let declared = declared_len(&headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit).into());
    }
    let want = declared.map_or(limit, |n| n as usize).max(1);
    let mut body_permit = reserve_body(&state, want, wait).await?;
    let body = read_body(body, limit, declared).await?;
    if body_permit.num_permits() > body.len().max(1) {
        drop(body_permit.split(body_permit.num_permits() - body.len().max(1)));
    }
    // The body arrived whole: from here the request runs to its end even if the client goes
    // away, so what it was told (or would have been told) is what happens.
    let line = is_line_protocol(&headers);
    let ingest = tokio::spawn(ingest(
        state.clone(),
        ns,
        body,
        body_permit,
        line,
        durable,
        wait,
    ));
    ingest.await.map_err(|_| {
        PostError::Api(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "handling the body failed (logged by the agent)",
        ))
    })?
}

fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Takes `want` bytes of the bodies' bound, waiting at most `wait`.
async fn reserve_body(
    state: &AgentState,
    want: usize,
    wait: Duration,
) -> Result<OwnedSemaphorePermit, PostError> {
    let bound = state.config().agent.max_inflight_body_bytes;
    let n = want.min(bound) as u32;
    let acquire = std::sync::Arc::clone(state.post_bodies()).acquire_many_owned(n);
    match tokio::time::timeout(wait, acquire).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(closed(0)),
        Err(_) => Err(unavailable(
            format!(
                "the agent is reading {bound} bytes of other bodies (agent.max_inflight_body_bytes) and had no room for this one within {} ms; nothing was accepted: retry later",
                wait.as_millis()
            ),
            BUSY_RETRY_SECS,
        )),
    }
}

/// One piece of a body: whole lines, or whole elements of the JSON list.
enum Piece {
    /// Lines of `range`, the first being line `first_line` of the body.
    Lines {
        range: Range<usize>,
        first_line: usize,
    },
    /// Elements (their byte ranges), the first being element `first` of the list.
    Elements {
        spans: Vec<Range<usize>>,
        first: usize,
    },
}

impl Piece {
    fn bytes(&self) -> usize {
        match self {
            Piece::Lines { range, .. } => range.len(),
            Piece::Elements { spans, .. } => spans.iter().map(Range::len).sum(),
        }
    }
}

/// Cuts a line-protocol body into pieces of about `size` bytes, at line ends.
fn line_pieces(body: &[u8], size: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let (mut start, mut line) = (0, 1);
    while start < body.len() {
        let mut end = (start + size).min(body.len());
        if let Some(nl) = memchr::memchr(b'\n', &body[end - 1..]) {
            end = end - 1 + nl + 1;
        } else {
            end = body.len();
        }
        pieces.push(Piece::Lines {
            range: start..end,
            first_line: line,
        });
        line += memchr::memchr_iter(b'\n', &body[start..end]).count();
        start = end;
    }
    pieces
}

/// Cuts a JSON list into pieces of whole elements of about `size` bytes; not a list: 400.
fn element_pieces(body: &[u8], size: usize) -> Result<Vec<Piece>, String> {
    let spans = json::element_spans(body).map_err(|e| e.to_string())?;
    let mut pieces = Vec::new();
    let (mut cur, mut bytes, mut first) = (Vec::new(), 0, 0);
    for (i, span) in spans.into_iter().enumerate() {
        bytes += span.len();
        cur.push(span);
        if bytes >= size {
            pieces.push(Piece::Elements {
                spans: std::mem::take(&mut cur),
                first,
            });
            first = i + 1;
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        pieces.push(Piece::Elements { spans: cur, first });
    }
    Ok(pieces)
}

/// Parses one piece into normalised points, with its rejections.
fn parse_piece(body: &[u8], piece: &Piece, host: &str, now: i64) -> Parsed<Point> {
    match piece {
        Piece::Lines { range, first_line } => {
            lineproto::parse::parse_points_from(&body[range.clone()], *first_line, host, now)
        }
        Piece::Elements { spans, first } => {
            let mut metrics: Parsed<Metric> = Parsed::with_capacity(spans.len());
            for (k, span) in spans.iter().enumerate() {
                json::parse_element(&body[span.clone()], first + k, &mut metrics);
            }
            let (points, ingested) = normalize_all(metrics.items, Rename::Keep, host, now);
            let mut out = Parsed {
                items: points,
                rejected: metrics.rejected + ingested.rejected,
                errors: metrics.errors,
            };
            keep_reasons(&mut out.errors, ingested.errors);
            out
        }
    }
}

/// [`parse_piece`], encoded as line protocol on this task (lines already in the encoder's form
/// are copied: [`lineproto::parse::encode_points_from`]).
fn encode_piece(body: &[u8], piece: &Piece, host: &str, now: i64) -> Encoded {
    match piece {
        Piece::Lines { range, first_line } => {
            lineproto::parse::encode_points_from(&body[range.clone()], *first_line, host, now)
        }
        Piece::Elements { .. } => {
            let mut out = Encoded::default();
            out.add(parse_piece(body, piece, host, now));
            out
        }
    }
}

/// A piece ready for the pipeline: points, or (for a line-protocol output) encoded lines.
enum Ready {
    Points(Parsed<Point>),
    Lines(Encoded),
}

/// Parses, queues and (when durable) waits for the spool: the body's whole life after it was
/// read. Runs as its own task, so a client that leaves does not cut it short.
async fn ingest(
    state: AgentState,
    ns: String,
    body: Bytes,
    body_permit: OwnedSemaphorePermit,
    line: bool,
    durable: bool,
    wait: Duration,
) -> Result<Json<PostResponse>, PostError> {
    let pipeline = state.pipeline().clone();
    let host: std::sync::Arc<str> = pipeline.host().into();
    let now = normalize::now_secs();
    // With a line-protocol output the body is encoded here, on the request's task, so bodies
    // are encoded on every core at once instead of by the one batcher.
    let encode_here = state.config().output.format == Format::Line;
    let pieces = {
        let body = body.clone();
        off_worker(body.len(), move || {
            if line {
                Ok(line_pieces(&body, PIECE_BYTES))
            } else {
                element_pieces(&body, PIECE_BYTES)
            }
        })
        .await?
        .map_err(ApiError::bad_request)?
    };
    let mut out = PostResponse {
        ns,
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
    };
    let mut answers = Vec::new();
    for (k, piece) in pieces.into_iter().enumerate() {
        // Only the first piece may be refused for a full queue: once points of a body are
        // accepted, the rest follows (or the answer says exactly how much was taken).
        let w = if k == 0 {
            Wait::AtMost(wait)
        } else {
            Wait::WhileRunning
        };
        let permit = match pipeline
            .reserve(piece.bytes() * RESERVE_PER_BODY_BYTE, w)
            .await
        {
            Ok(p) => p,
            Err(SubmitError::Full(waited)) => {
                return Err(unavailable(
                    format!(
                        "the agent's point queue is full (output.queue_max_bytes) and had no room within {} ms; nothing was accepted: retry later",
                        waited.as_millis()
                    ),
                    BUSY_RETRY_SECS,
                ))
            }
            Err(SubmitError::Closed(_)) => return Err(closed(out.accepted)),
        };
        let ready = {
            let (body, host) = (body.clone(), std::sync::Arc::clone(&host));
            off_worker(piece.bytes(), move || {
                if encode_here {
                    Ready::Lines(encode_piece(&body, &piece, &host, now))
                } else {
                    Ready::Points(parse_piece(&body, &piece, &host, now))
                }
            })
            .await?
        };
        let (accepted, rejected, errors) = match &ready {
            Ready::Points(p) => (p.items.len(), p.rejected, &p.errors),
            Ready::Lines(e) => (e.lines.points, e.rejected, &e.errors),
        };
        out.accepted += accepted;
        out.rejected += rejected;
        keep_reasons(&mut out.errors, errors.iter().cloned());
        pipeline
            .stats()
            .rejected
            .fetch_add(rejected as u64, std::sync::atomic::Ordering::Relaxed);
        let accepted_before = out.accepted - accepted;
        let queued = match ready {
            Ready::Points(p) => {
                pipeline
                    .submit_reserved(&out.ns, PRODUCER, p.items, permit, durable)
                    .await
            }
            Ready::Lines(e) => {
                pipeline
                    .submit_lines_reserved(&out.ns, PRODUCER, e.lines, permit, durable)
                    .await
            }
        };
        match queued {
            Ok(Some(answer)) => answers.push(answer),
            Ok(None) => {}
            Err(_) => return Err(closed(accepted_before)),
        }
    }
    drop(body);
    drop(body_permit);
    let mut in_memory = false;
    for answer in answers {
        // No answer: the batcher ended without writing them (it always answers when it drains).
        in_memory |= !matches!(answer.await, Ok(Stored::Disk));
    }
    if in_memory {
        let problem = state
            .spool()
            .problem()
            .unwrap_or_else(|| "a write failed".to_owned());
        return Err(unavailable(
            format!(
                "{} points were accepted but are held in memory only, because the spool cannot write to disk ({problem}); they are delivered unless the agent stops first, and retrying may duplicate them",
                out.accepted
            ),
            SPOOL_RETRY_SECS,
        ));
    }
    Ok(Json(out))
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

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body is larger than {limit} bytes (agent.max_body_bytes); send smaller batches"
        ),
    )
}

/// Reads the body, bounded in size and time (a declared `Content-Length` over the limit was
/// refused before).
async fn read_body(body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, collect(body, limit, declared)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(result) => result,
    }
}

/// The body's bytes in one buffer, sized by `Content-Length` when the client sent one, each
/// chunk copied in as it arrives and freed: a body is in memory once, where collecting the
/// chunks and joining them held it twice at the end.
async fn collect(body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// `Content-Type: text/plain` (any parameters) means line protocol; anything else is JSON.
fn is_line_protocol(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/plain"))
}

/// The agent started stopping while the body was handled.
fn closed(accepted: usize) -> PostError {
    let taken = if accepted == 0 {
        "nothing was accepted".to_owned()
    } else {
        format!("{accepted} of the body's points were accepted and will be delivered, the rest were not")
    };
    unavailable(
        format!(
            "the agent is shutting down and accepts no more points; {taken}: retry once it is back"
        ),
        BUSY_RETRY_SECS,
    )
}

/// Bodies (or pieces) up to this size are handled on the async worker: handing them to the
/// blocking pool costs more than parsing them.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Runs `work` over `len` bytes of a body; big ones go to the blocking pool so a 16 MiB body
/// does not hold a worker.
async fn off_worker<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if len <= INLINE_PARSE_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "parsing the body failed"))
}
