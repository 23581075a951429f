//! The router in process: every endpoint's success and failure answers, through `oneshot`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use shared::api::{LogChunk, PostResponse};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::router;
use crate::config::{Config, PostAck};
use crate::output::spool::Spool;
use crate::output::OutputStats;
use crate::pipeline::{Pipeline, Submission};
use crate::registry::{NamespacePlan, Plan};
use crate::state::AgentState;

struct Fixture {
    state: AgentState,
    rx: mpsc::Receiver<Submission>,
    _dir: tempfile::TempDir,
    logs: PathBuf,
}

fn fixture(namespaces: &[&str], token: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let logs = std::fs::canonicalize(dir.path())
        .expect("canon")
        .join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let mut config = Config::default();
    config.agent.token = token.to_owned();
    config.agent.log_roots = vec![logs.clone()];
    config.agent.data_dir = dir.path().join("data");
    config.agent.max_body_bytes = 64 * 1024;
    // The tests read what was queued from `rx`; none runs a batcher unless it says so.
    config.agent.post_ack = PostAck::Queued;
    let (pipeline, rx) = Pipeline::new("test-host", 64);
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).expect("spool");
    let state = AgentState::new(
        config,
        "test-host".into(),
        pipeline,
        spool,
        Arc::new(OutputStats::default()),
    );
    let mut plan = Plan::default();
    for ns in namespaces {
        plan.namespaces
            .insert((*ns).to_owned(), NamespacePlan::default());
    }
    state.set_plan(plan);
    Fixture {
        state,
        rx,
        _dir: dir,
        logs,
    }
}

async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let (status, _, v) = call_with_retry(f, req).await;
    (status, v)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn post(uri: &str, ctype: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, ctype)
        .body(body.into())
        .expect("request")
}

fn error_of(v: &serde_json::Value) -> &str {
    v["error"].as_str().expect("an error message")
}

#[tokio::test]
async fn post_json_accepts_valid_metrics_and_reports_the_rest() {
    let mut f = fixture(&["web.shop"], "");
    let body = r#"[{"name":"conn.active","value":12.5,"tags":{"pool":"a"},"timestamp":1764000000},
                   {"name":"","value":1}, "nope", {"name":"up","value":true}]"#;
    let (st, v) = call(&f, post("/post?ns=web.shop", "application/json", body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r: PostResponse = serde_json::from_value(v).expect("PostResponse");
    assert_eq!((r.ns.as_str(), r.accepted, r.rejected), ("web.shop", 2, 2));
    assert!(
        r.errors.iter().any(|e| e.starts_with("element 2:")),
        "{r:?}"
    );
    assert!(
        r.errors.iter().any(|e| e.contains("name is empty")),
        "{r:?}"
    );
    let sub = f.rx.try_recv().expect("submitted");
    assert_eq!(&*sub.ns, "web.shop");
    // The output writes line protocol: the request encoded the points itself.
    assert_eq!((sub.points.len(), sub.lines.points), (0, 2));
    let points = points_of(&sub);
    assert_eq!(points[0].measurement, "conn.active");
    assert!(points[0]
        .tags
        .contains(&("host".to_owned(), "test-host".to_owned())));
    assert_eq!(points[0].timestamp, 1_764_000_000);
}

/// The points of a submission, whichever form they were queued in.
fn points_of(sub: &crate::pipeline::Submission) -> Vec<crate::pipeline::Point> {
    let mut points = sub.points.clone();
    let lines = crate::pipeline::lineproto::parse::parse_points(&sub.lines.bytes, "unused", 0);
    assert_eq!(lines.rejected, 0, "{:?}", lines.errors);
    points.extend(lines.items);
    points
}

#[tokio::test]
async fn post_line_protocol_with_the_only_namespace_implied() {
    let mut f = fixture(&["only.one"], "");
    let body = "# from a script\ncpu,core=0 value=1.5 1764000000\nbad line\nmem used=3i,free=4i\n";
    let (st, v) = call(&f, post("/post", "text/plain; charset=utf-8", body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ns"], "only.one");
    assert_eq!(v["accepted"], 3);
    assert_eq!(v["rejected"], 1);
    assert!(v["errors"][0]
        .as_str()
        .is_some_and(|e| e.starts_with("line 3: field \"line\" has no '='")));
    let sub = f.rx.try_recv().expect("submitted");
    let points = points_of(&sub);
    let names: Vec<&str> = points.iter().map(|p| p.measurement.as_str()).collect();
    assert_eq!(names, ["cpu", "mem.used", "mem.free"]);
    assert!(points[0]
        .tags
        .contains(&("host".to_owned(), "test-host".to_owned())));
}

#[tokio::test]
async fn post_namespace_errors_name_the_hosts_namespaces() {
    let f = fixture(&["a.one", "b.two"], "");
    let (st, v) = call(&f, post("/post?ns=nope", "application/json", "[]")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        error_of(&v).contains("\"nope\" is not one of this host's"),
        "{v}"
    );
    assert!(error_of(&v).contains("a.one, b.two"), "{v}");
    let (st, v) = call(&f, post("/post", "application/json", "[]")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("ns is required"), "{v}");
    let empty = fixture(&[], "");
    let (st, v) = call(&empty, post("/post", "application/json", "[]")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("no namespace"), "{v}");
}

#[tokio::test]
async fn post_body_that_is_no_list_is_a_400_and_too_large_is_a_413() {
    let f = fixture(&["n"], "");
    let (st, v) = call(&f, post("/post", "application/json", r#"{"name":"a"}"#)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&v).starts_with("the body is not a JSON list of metrics"),
        "{v}"
    );
    let big = vec![b' '; 64 * 1024 + 1];
    let (st, v) = call(&f, post("/post", "application/json", big.clone())).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        error_of(&v).contains("65536 bytes (agent.max_body_bytes)"),
        "{v}"
    );
    // Without a content length (chunked), the limit still holds.
    let stream = Body::from_stream(futures_stream(big));
    let (st, _) = call(&f, post("/post", "text/plain", stream)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(
    data: Vec<u8>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    futures_util::stream::iter(chunks)
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_is_a_408_after_the_body_timeout() {
    let f = fixture(&["n"], "");
    let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let started = tokio::time::Instant::now();
    let (st, v) = call(&f, post("/post", "text/plain", Body::from_stream(never))).await;
    assert_eq!(st, StatusCode::REQUEST_TIMEOUT, "{v}");
    assert!(error_of(&v).contains("within 30 s"), "{v}");
    assert!(started.elapsed() >= super::post::BODY_TIMEOUT);
}

/// Like [`call`], with the `Retry-After` header.
async fn call_with_retry(
    f: &Fixture,
    req: Request<Body>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let resp = router(f.state.clone())
        .oneshot(req)
        .await
        .expect("router answers");
    let status = resp.status();
    let value_of = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let ctype = value_of(header::CONTENT_TYPE).unwrap_or_default();
    let retry = value_of(header::RETRY_AFTER);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(ctype, "application/json", "every answer is JSON: {bytes:?}");
    (
        status,
        retry,
        serde_json::from_slice(&bytes).expect("json body"),
    )
}

/// A fixture whose `/post` answers only once the points are in the spool, with a batcher that
/// would flush a partial batch only after a minute.
fn durable_fixture() -> (
    Fixture,
    tokio::task::JoinHandle<()>,
    tokio_util::sync::CancellationToken,
) {
    let mut f = fixture(&["n"], "");
    let mut config = (*f.state.config()).clone();
    config.agent.post_ack = PostAck::Durable;
    let (pipeline, rx) = Pipeline::new("test-host", 64);
    let spool = f.state.spool().clone();
    f.state = AgentState::new(
        config,
        "test-host".into(),
        pipeline.clone(),
        spool.clone(),
        Arc::new(OutputStats::default()),
    );
    f.state.set_plan(Plan {
        namespaces: [("n".to_owned(), NamespacePlan::default())].into(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let batcher = tokio::spawn(crate::pipeline::batch::run_batcher(
        rx,
        crate::pipeline::batch::BatchConfig {
            batch_size: 1000,
            flush_every: std::time::Duration::from_secs(60),
            format: crate::config::Format::Line,
            max_message_bytes: 1 << 20,
        },
        spool,
        Arc::clone(pipeline.stats()),
        stop.clone(),
    ));
    (f, batcher, stop)
}

#[tokio::test]
async fn a_durable_post_answers_once_its_points_are_in_the_spool() {
    let (f, batcher, stop) = durable_fixture();
    let (st, v) = call(&f, post("/post", "text/plain", "a value=1\nb value=2\n")).await;
    assert_eq!(
        (st, v["accepted"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    // flush_ms is a minute away: the answer itself waited for the spool.
    let spooled = f.state.spool().stats();
    assert_eq!((spooled.batches, spooled.durable), (1, true), "{spooled:?}");
    assert_eq!(
        f.state
            .pipeline()
            .stats()
            .queued
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    stop.cancel();
    batcher.await.expect("batcher");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_or_body_bound_answers_503_with_retry_after_and_takes_nothing() {
    let mut f = fixture(&["n"], "");
    // Everything the queue may hold is taken (by points the batcher has not encoded yet).
    let all = f
        .state
        .pipeline()
        .reserve(usize::MAX, crate::pipeline::Wait::Forever)
        .await
        .expect("the whole bound");
    let (st, retry, v) = call_with_retry(&f, post("/post", "text/plain", "a value=1\n")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        error_of(&v).contains("queue is full (output.queue_max_bytes)")
            && error_of(&v).contains("nothing was accepted: retry later"),
        "{v}"
    );
    assert!(f.rx.try_recv().is_err(), "nothing was queued");
    drop(all);
    let (st, v) = call(&f, post("/post", "text/plain", "a value=1\n")).await;
    assert_eq!(st, StatusCode::OK, "room again: {v}");

    // Every byte of the bodies' bound is held by bodies being read.
    let bound = f.state.config().agent.max_inflight_body_bytes as u32;
    let reading = Arc::clone(f.state.post_bodies())
        .acquire_many_owned(bound)
        .await
        .expect("the whole bound");
    let (st, retry, v) = call_with_retry(&f, post("/post", "text/plain", "a value=1\n")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        error_of(&v).contains("agent.max_inflight_body_bytes"),
        "{v}"
    );
    drop(reading);
}

#[tokio::test]
async fn a_durable_post_is_refused_before_reading_while_the_spool_is_in_memory() {
    let (mut f, batcher, stop) = durable_fixture();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("spool"), "a file in the way").expect("file");
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).expect("spool");
    let config = (*f.state.config()).clone();
    let (pipeline, rx) = Pipeline::new("test-host", 64);
    f.rx = rx;
    f.state = AgentState::new(
        config,
        "test-host".into(),
        pipeline,
        spool,
        Arc::new(OutputStats::default()),
    );
    f.state.set_plan(Plan {
        namespaces: [("n".to_owned(), NamespacePlan::default())].into(),
    });
    let (st, retry, v) = call_with_retry(&f, post("/post", "text/plain", "a value=1\n")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(
        error_of(&v).contains("spool cannot write to disk")
            && error_of(&v).contains("nothing was accepted"),
        "{v}"
    );
    assert!(f.rx.try_recv().is_err(), "nothing was queued");
    stop.cancel();
    batcher.await.expect("batcher");
}

#[tokio::test]
async fn token_guards_everything_but_status() {
    let f = fixture(&["n"], "s3cret");
    let (st, _) = call(&f, get("/me/status")).await;
    assert_eq!(st, StatusCode::OK);
    for uri in ["/me/ns", "/log/offset?fpath=/x", "/nowhere"] {
        let (st, v) = call(&f, get(uri)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(error_of(&v).contains("requires a token"), "{v}");
    }
    let (st, v) = call(&f, post("/post", "application/json", "[]")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let wrong = Request::get("/me/ns")
        .header(header::AUTHORIZATION, "Bearer s3creT")
        .body(Body::empty())
        .expect("request");
    let (st, v) = call(&f, wrong).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).contains("wrong"), "{v}");
    let right = Request::get("/me/ns")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    let (st, v) = call(&f, right).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["namespaces"][0], "n");
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_without_regard_to_case_or_spacing() {
    let f = fixture(&["n"], "s3cret-0123456789");
    for value in [
        "Bearer s3cret-0123456789",
        "bearer s3cret-0123456789",
        "BEARER s3cret-0123456789",
        "bEaReR    s3cret-0123456789",
        "Bearer\ts3cret-0123456789",
        "  Bearer s3cret-0123456789  ",
    ] {
        let req = Request::get("/me/ns")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .expect("request");
        let (st, v) = call(&f, req).await;
        assert_eq!(st, StatusCode::OK, "{value:?}: {v}");
    }
    for value in [
        "Bearers3cret-0123456789",
        "Basic s3cret-0123456789",
        "Bearer",
        "s3cret-0123456789",
    ] {
        let req = Request::get("/me/ns")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .expect("request");
        let (st, v) = call(&f, req).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{value:?}: {v}");
        assert!(error_of(&v).contains("Bearer <token>"), "{value:?}: {v}");
    }
}

#[tokio::test]
async fn axum_rejections_are_json_with_a_useful_message() {
    let f = fixture(&["n"], "");
    let (st, v) = call(&f, get("/post")).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&v), "/post does not take GET; use POST");
    let (st, v) = call(&f, post("/me/status", "application/json", "")).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(&v).contains("use GET"), "{v}");
    let (st, v) = call(&f, get("/log/offset")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("missing field `fpath`"), "{v}");
    let (st, v) = call(&f, get("/log/offset?fpath=/x&offset=-1")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("offset"), "{v}");
    let (st, v) = call(&f, get("/nowhere")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("no endpoint /nowhere"), "{v}");
}

#[tokio::test]
async fn log_offset_reads_lines_and_refuses_what_it_must() {
    let f = fixture(&["n"], "");
    let file = f.logs.join("app.log");
    std::fs::write(&file, "a\nb\nc\npartial").expect("write");
    let p = file.to_str().expect("utf8");
    let (st, v) = call(&f, get(&format!("/log/offset?fpath={p}&num=2"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let c: LogChunk = serde_json::from_value(v).expect("LogChunk");
    assert_eq!(
        (c.lines, c.next_offset, c.size),
        (vec!["a".to_owned(), "b".to_owned()], 4, 13)
    );
    let (st, v) = call(&f, get(&format!("/log/offset?fpath={p}&offset=4"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["lines"], serde_json::json!(["c"]));
    for (query, want, code) in [
        (format!("fpath={p}&num=1001"), "1 to 1000", 400),
        (format!("fpath={p}&num=0"), "1 to 1000", 400),
        (
            "fpath=/etc/passwd".to_owned(),
            "outside the readable roots",
            403,
        ),
        (format!("fpath={p}/%2e%2e/%2e%2e/x"), "contains '..'", 403),
        (
            format!("fpath={}/%FF.log", f.logs.display()),
            "not valid UTF-8",
            400,
        ),
        (format!("fpath={}/a%00", f.logs.display()), "NUL byte", 400),
        (format!("fpath={}", f.logs.display()), "is a directory", 400),
        (
            format!("fpath={}/none.log", f.logs.display()),
            "no file",
            404,
        ),
    ] {
        let (st, v) = call(&f, get(&format!("/log/offset?{query}"))).await;
        assert_eq!(st.as_u16(), code, "{query}: {v}");
        assert!(error_of(&v).contains(want), "{query}: {v}");
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_a_json_500_and_the_router_lives_on() {
    let f = fixture(&["n"], "");
    async fn boom() -> &'static str {
        panic!("a bug")
    }
    let app = super::guard(
        axum::Router::new().route("/boom", axum::routing::get(boom)),
        f.state.clone(),
    );
    let resp = app.clone().oneshot(get("/boom")).await.expect("answers");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(error_of(&v).contains("internal error"), "{v}");
    let resp = app.oneshot(get("/boom")).await.expect("answers again");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// `GET /metrics` with the token `s3cret`: status, content type and body.
async fn scrape(f: &Fixture) -> (StatusCode, String, String) {
    let req = Request::get("/metrics")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    let resp = router(f.state.clone()).oneshot(req).await.expect("answer");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        ctype,
        String::from_utf8(bytes.to_vec()).expect("utf-8"),
    )
}

/// The value of the sample line that starts with `series` (name and labels as written).
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_needs_the_token_and_agrees_with_status() {
    let mut f = fixture(&["web.shop"], "s3cret");
    let (st, v) = call(&f, get("/metrics")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).contains("requires a token"), "{v}");

    let body = r#"[{"name":"a","value":1},{"name":"b","value":2},{"name":"","value":3}]"#;
    let req = Request::post("/post?ns=web.shop")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let (st, v) = call(&f, req).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(f.rx.try_recv().is_ok(), "queued");
    let (st, ctype, text) = scrape(&f).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let status = super::status::build_status(&f.state);
    assert_eq!(status.pipeline.accepted, 2);
    assert_eq!(
        sample(&text, "agent_points_accepted_total"),
        Some(status.pipeline.accepted)
    );
    assert_eq!(
        sample(&text, "agent_points_rejected_total"),
        Some(status.pipeline.rejected)
    );
    assert_eq!(sample(&text, "agent_registry_namespaces"), Some(1));
    let version = format!(
        "agent_build_info{{version=\"{}\",build=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        crate::BUILD
    );
    assert_eq!(sample(&text, &version), Some(1), "{text}");
    // Every family has its HELP and TYPE line, before its samples.
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().expect("name").to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().expect("name");
            assert!(typed.contains(name), "{name} has no TYPE before it");
        }
    }
    assert!(typed.len() > 20, "{typed:?}");
}

#[tokio::test]
async fn metrics_counts_requests_by_route_template_and_status() {
    let f = fixture(&["n"], "s3cret");
    let with_token = |uri: &str| {
        Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::empty())
            .expect("request")
    };
    for uri in ["/me/status", "/me/status", "/me/ns", "/x/1", "/x/2?y"] {
        let _ = call(&f, with_token(uri)).await;
    }
    let _ = call(&f, get("/me/ns")).await; // no token
    let _ = call(&f, with_token("/log/offset")).await; // missing fpath
    let (_, _, text) = scrape(&f).await;
    let count = |endpoint: &str, status: u16| {
        sample(
            &text,
            &format!("agent_api_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(count("/me/status", 200), Some(2), "{text}");
    assert_eq!(count("/me/ns", 200), Some(1));
    assert_eq!(count("/me/ns", 401), Some(1));
    assert_eq!(count("unmatched", 404), Some(2), "paths are never labels");
    assert_eq!(count("/log/offset", 400), Some(1));
    assert!(!text.contains("/x/"), "{text}");
}

#[tokio::test]
async fn plugin_names_from_the_registry_are_escaped_in_labels() {
    let f = fixture(&["n"], "s3cret");
    f.state
        .plugins()
        .runs()
        .record("ns\"}\nx", "p\\", "regular", "timeout");
    let (_, _, text) = scrape(&f).await;
    let want = "agent_plugin_runs_total{ns=\"ns\\\"}\\nx\",plugin=\"p\\\\\",kind=\"regular\",\
                result=\"failed\",reason=\"timeout\"} 1";
    assert!(text.lines().any(|l| l == want), "{text}");
}
