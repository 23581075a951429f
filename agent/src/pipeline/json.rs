//! The older JSON message shape, for consumers built for it:
//! `{"database": ns, "retentionPolicy": "", "precision": "s", "points": [...]}`.

use std::collections::BTreeMap;

use serde::Serialize;
use shared::Value;

use super::Point;

#[derive(Serialize)]
struct JsonPoint<'a> {
    measurement: &'a str,
    timestamp: i64,
    tags: BTreeMap<&'a str, &'a str>,
    fields: BTreeMap<&'static str, &'a Value>,
}

/// Encodes the points of `ns` into JSON messages of at most `max_bytes` each.
pub fn encode_batch(ns: &str, points: &[Point], max_bytes: usize) -> Vec<Vec<u8>> {
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
    let mut empty = true;
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
        if !empty && cur.len() + 1 + one.len() + TAIL.len() > max_bytes {
            cur.extend_from_slice(TAIL);
            messages.push(std::mem::replace(&mut cur, head.clone()));
            empty = true;
        }
        if !empty {
            cur.push(b',');
        }
        cur.extend_from_slice(&one);
        empty = false;
    }
    if !empty {
        cur.extend_from_slice(TAIL);
        messages.push(cur);
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
    fn shape_matches_the_older_consumers() {
        let msgs = encode_batch("web.shop", &[point(1)], 1 << 20);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0]).expect("json");
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
            assert!(m.len() <= 4096);
            let v: serde_json::Value = serde_json::from_slice(m).expect("each is json");
            total += v["points"].as_array().map_or(0, Vec::len);
        }
        assert_eq!(total, 500);
    }
}
