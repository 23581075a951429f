//! `GET /tap`: the points as they leave normalisation, live, one JSON object per line
//! ([`shared::api::TapLine`]), filtered by namespace, measurement glob and tags, at most `rate`
//! points per second. The pipeline never waits for a tap (pipeline/tap.rs): a reader slower
//! than the points loses some, and a `{"dropped": N}` line each second says how many.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use shared::Value;

use super::ApiError;
use crate::pipeline::lineproto;
use crate::pipeline::tap::{Filter, OpenError, Tap, TapBatch};
use crate::state::AgentState;

/// How often the stream reports points it dropped.
const DROPPED_EVERY: Duration = Duration::from_secs(1);

/// Highest `rate` a tap may ask for.
const MAX_RATE: u32 = 1_000_000;

/// What the query string asks for.
#[derive(Debug)]
struct Ask {
    filter: Filter,
    rate: Option<u32>,
}

fn parse_query(query: &str) -> Result<Ask, ApiError> {
    let mut filter = Filter::default();
    let mut rate = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "ns" if !v.is_empty() => filter.ns = Some(v.into_owned()),
            "match" if !v.is_empty() => {
                filter.measurement = Some(Filter::glob(&v).map_err(ApiError::bad_request)?);
            }
            "tag" => match v.split_once('=') {
                Some((tk, tv)) if !tk.is_empty() => filter.tags.push((tk.into(), tv.into())),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "bad tag filter {v:?}: give tag=KEY=VALUE"
                    )))
                }
            },
            "rate" => match v.parse::<u32>() {
                Ok(r) if (1..=MAX_RATE).contains(&r) => rate = Some(r),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "bad rate {v:?}: points per second, 1 to {MAX_RATE}"
                    )))
                }
            },
            "ns" | "match" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?} for /tap; it takes ns, match, tag (KEY=VALUE, repeatable) and rate"
                )))
            }
        }
    }
    Ok(Ask { filter, rate })
}

/// The handler.
pub async fn tap(State(state): State<AgentState>, uri: Uri) -> Result<Response, ApiError> {
    let ask = parse_query(uri.query().unwrap_or(""))?;
    if let Some(ns) = &ask.filter.ns {
        super::post::resolve_ns(&state, Some(ns))?;
    }
    let max = state.config().agent.max_taps;
    if max == 0 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the tap is turned off on this agent (agent.max_taps = 0)",
        ));
    }
    let tap = match state.pipeline().tap().open(ask.filter, ask.rate, max) {
        Ok(t) => t,
        Err(e @ OpenError::TooMany { .. }) => {
            let mut resp =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(resp);
        }
        Err(e @ OpenError::Closed) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
    };
    let mut resp = Body::from_stream(stream(tap)).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The stream of lines: batches as they come, and each second the dropped count if any. It
/// ends when the agent stops (the hub closes every tap) or the client leaves (the body is
/// dropped, and the tap with it).
fn stream(tap: Tap) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let mut tick = tokio::time::interval(DROPPED_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures_util::stream::unfold((tap, tick), |(mut tap, mut tick)| async move {
        loop {
            tokio::select! {
                batch = tap.recv() => {
                    let batch = batch?;
                    return Some((Ok(encode(&batch)), (tap, tick)));
                }
                _ = tick.tick() => {
                    let n = tap.take_dropped();
                    if n > 0 {
                        let line = format!("{{\"dropped\":{n}}}\n");
                        return Some((Ok(Bytes::from(line)), (tap, tick)));
                    }
                }
            }
        }
    })
}

/// A batch as JSON lines, in the shape of [`shared::api::TapPoint`], written without copying
/// the points.
pub fn encode(batch: &TapBatch) -> Bytes {
    #[derive(Serialize)]
    struct Line<'a> {
        ns: &'a str,
        measurement: &'a str,
        tags: Tags<'a>,
        value: &'a Value,
        timestamp: i64,
        producer: &'a str,
        line: &'a str,
    }
    struct Tags<'a>(&'a [(String, String)]);
    impl Serialize for Tags<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    let mut out = Vec::with_capacity(batch.points.len() * 240);
    let mut lp = Vec::with_capacity(128);
    for p in &batch.points {
        lp.clear();
        lineproto::encode_point(p, &mut lp);
        lp.pop();
        // Line protocol of valid UTF-8 names and values (normalisation checks) is UTF-8.
        let lp = std::str::from_utf8(&lp).unwrap_or_default();
        let line = Line {
            ns: &batch.ns,
            measurement: &p.measurement,
            tags: Tags(&p.tags),
            value: &p.value,
            timestamp: p.timestamp,
            producer: &batch.producer,
            line: lp,
        };
        // Writing to a Vec cannot fail; a point's floats are finite (normalisation checks).
        let _ = serde_json::to_writer(&mut out, &line);
        out.push(b'\n');
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Point;
    use shared::api::{TapLine, TapValue};

    #[test]
    fn lines_parse_back_with_ints_and_floats_apart() {
        let p = |v| Point {
            measurement: "m".into(),
            tags: vec![("host".into(), "h".into()), ("k".into(), "a\"b".into())],
            value: v,
            timestamp: 7,
        };
        let batch = TapBatch {
            ns: "ns".into(),
            producer: "POST /post".into(),
            points: vec![
                p(Value::Float(1.0)),
                p(Value::Int(1)),
                p(Value::Bool(true)),
                p(Value::Str("x y".into())),
            ],
        };
        let text = String::from_utf8(encode(&batch).to_vec()).expect("ok");
        let values: Vec<TapValue> = text
            .lines()
            .map(|l| match serde_json::from_str::<TapLine>(l).expect("ok") {
                TapLine::Point(p) => {
                    assert_eq!(p.tags["k"], "a\"b");
                    assert_eq!(p.producer, "POST /post");
                    assert!(p.line.starts_with("m,host=h,k=a\"b value="), "{}", p.line);
                    p.value
                }
                TapLine::Dropped { .. } => panic!("{l}"),
            })
            .collect();
        assert_eq!(
            values,
            [
                TapValue::Float(1.0),
                TapValue::Int(1),
                TapValue::Bool(true),
                TapValue::Str("x y".into())
            ]
        );
        assert_eq!(
            serde_json::from_str::<TapLine>("{\"dropped\":3}").expect("ok"),
            TapLine::Dropped { dropped: 3 }
        );
    }

    #[test]
    fn the_query_is_checked() {
        let ask = parse_query("ns=a&match=PLUGIN.*&tag=port=80&tag=x=&rate=10").expect("ok");
        assert_eq!(ask.filter.ns.as_deref(), Some("a"));
        assert_eq!(
            ask.filter.tags,
            [("port".into(), "80".into()), ("x".into(), String::new())]
        );
        assert_eq!(ask.rate, Some(10));
        for (q, want) in [
            ("rate=0", "bad rate"),
            ("rate=x", "bad rate"),
            ("tag=novalue", "give tag=KEY=VALUE"),
            ("match=[", "bad measurement glob"),
            ("nss=a", "unknown parameter \"nss\""),
        ] {
            let e = parse_query(q).expect_err("refused");
            assert!(e.message.contains(want), "{q}: {}", e.message);
        }
    }
}
