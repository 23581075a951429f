//! The older JSON message shape, for consumers built for it:
//! `{"database": ns, "retentionPolicy": "", "precision": "s", "points": [...]}`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use shared::{Metric, Value};

use super::{Message, Parsed, Point};

/// A `/post` body that is not a JSON list at all (one bad element is only a rejection).
#[derive(Debug, thiserror::Error)]
#[error("the body is not a JSON list of metrics: {0}")]
pub struct NotAList(#[from] serde_json::Error);

/// Parses a JSON list of metrics; an element that is not a valid metric is one rejection naming
/// its position, the other elements are kept.
pub fn parse_metrics(body: &[u8]) -> Result<Parsed<Metric>, NotAList> {
    // One pass checks the list's syntax and finds the elements without building them; each
    // element is then parsed on its own so that one bad element spoils only itself.
    let raw: Vec<&RawValue> = serde_json::from_slice(body)?;
    let mut out = Parsed::with_capacity(raw.len());
    for (i, el) in raw.into_iter().enumerate() {
        parse_element(el.get().as_bytes(), i, &mut out);
    }
    Ok(out)
}

/// Checks that `body` is a JSON list and returns where each element is in it (byte ranges), so
/// the elements can be parsed a group at a time (`/post` bounds its memory that way).
pub fn element_spans(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>, NotAList> {
    let raw: Vec<&RawValue> = serde_json::from_slice(body)?;
    let base = body.as_ptr() as usize;
    Ok(raw
        .iter()
        .map(|el| {
            let start = el.get().as_ptr() as usize - base;
            start..start + el.get().len()
        })
        .collect())
}

/// Parses element `i` of a list (its bytes), adding the metric or one rejection naming `i`.
pub fn parse_element(el: &[u8], i: usize, out: &mut Parsed<Metric>) {
    match serde_json::from_slice::<Metric>(el) {
        Ok(m) => out.items.push(m),
        Err(e) => out.reject(format!("element {i}: {e}")),
    }
}

#[derive(Serialize)]
struct JsonPoint<'a> {
    measurement: &'a str,
    timestamp: i64,
    tags: BTreeMap<&'a str, &'a str>,
    fields: BTreeMap<&'static str, &'a Value>,
}

/// Encodes the points of `ns` into JSON messages of at most `max_bytes` each.
pub fn encode_batch(ns: &str, points: &[Point], max_bytes: usize) -> Vec<Message> {
    let head = match serde_json::to_vec(ns) {
        Ok(ns) => [
            b"{\"database\":".as_slice(),
            &ns,
            b",\"retentionPolicy\":\"\",\"precision\":\"s\",\"points\":[",
        ]
        .concat(),
        Err(_) => return Vec::new(),
    };
    const TAIL: &[u8] = b"]}";
    let mut messages = Vec::new();
    let mut cur = head.clone();
    let mut n: u32 = 0;
    let mut one = Vec::with_capacity(256);
    for p in points {
        one.clear();
        let jp = JsonPoint {
            measurement: &p.measurement,
            timestamp: p.timestamp,
            tags: p
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            fields: BTreeMap::from([("value", &p.value)]),
        };
        if serde_json::to_writer(&mut one, &jp).is_err() {
            continue;
        }
        if n > 0 && cur.len() + 1 + one.len() + TAIL.len() > max_bytes {
            cur.extend_from_slice(TAIL);
            messages.push(Message {
                payload: std::mem::replace(&mut cur, head.clone()),
                points: n,
            });
            n = 0;
        }
        if n > 0 {
            cur.push(b',');
        }
        cur.extend_from_slice(&one);
        n += 1;
    }
    if n > 0 {
        cur.extend_from_slice(TAIL);
        messages.push(Message {
            payload: cur,
            points: n,
        });
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: i64) -> Point {
        Point {
            measurement: format!("m{i}"),
            tags: vec![("host".into(), "h".into())],
            value: Value::Float(i as f64),
            timestamp: 1_764_000_000 + i,
        }
    }

    #[test]
    fn bad_elements_are_rejections_and_the_rest_is_kept() {
        let body = br#"[{"name":"a","value":1}, 5, {"name":"b"}, {"name":"c","value":{}},
                        {"name":"d","value":"x","tags":{"k":"v"},"timestamp":1764000000}]"#;
        let p = parse_metrics(body).expect("a list");
        let names: Vec<&str> = p.items.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(p.rejected, 3);
        assert!(
            p.errors[0].starts_with("element 1: invalid type: integer"),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors[1].starts_with("element 2: missing field `value`"),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors[2].contains("a number, a string or a boolean"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn only_a_body_that_is_no_list_fails() {
        for body in [
            &b"{}"[..],
            b"",
            b"[1,",
            b"nope",
            b"[{\"name\":\"a\",\"value\":1}] x",
        ] {
            let e = parse_metrics(body).expect_err("not a list");
            assert!(e
                .to_string()
                .starts_with("the body is not a JSON list of metrics"));
        }
        assert_eq!(parse_metrics(b" [] ").expect("empty list").items.len(), 0);
    }

    #[test]
    fn shape_matches_the_older_consumers() {
        let msgs = encode_batch("web.shop", &[point(1)], 1 << 20);
        assert_eq!(msgs[0].points, 1);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].payload).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "database": "web.shop", "retentionPolicy": "", "precision": "s",
                "points": [{"measurement": "m1", "timestamp": 1764000001,
                            "tags": {"host": "h"}, "fields": {"value": 1.0}}]
            })
        );
    }

    #[test]
    fn splits_into_valid_documents_under_the_limit() {
        let points: Vec<Point> = (0..500).map(point).collect();
        let msgs = encode_batch("ns", &points, 4096);
        assert!(msgs.len() > 1);
        let mut total = 0;
        for m in &msgs {
            assert!(m.payload.len() <= 4096);
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("each is json");
            let n = v["points"].as_array().map_or(0, Vec::len);
            assert_eq!(m.points as usize, n, "each message counts its own points");
            total += n;
        }
        assert_eq!(total, 500);
    }
}
