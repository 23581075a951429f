//! InfluxDB line protocol, precision seconds: encoding points with InfluxDB's exact escaping.
//!
//! ```text
//! measurement,tag1=v1,tag2=v2 value=12.5 1764000000
//! ```
//! Escaping (InfluxDB 1.x): measurement: commas and spaces; tag keys, tag values and field keys:
//! commas, equals signs and spaces; string field values: double quotes and backslashes.
//! Integers carry an `i` suffix; floats never do; booleans are `true`/`false`.

pub mod parse;
pub mod pass;

use shared::Value;

use super::{Message, Point};

/// Appends one point as a line (with its trailing newline) to `out`.
pub fn encode_point(p: &Point, out: &mut Vec<u8>) {
    // One reservation per point instead of a capacity check per piece; 48 covers the field,
    // the timestamp and the separators of a numeric point.
    out.reserve(
        p.measurement.len()
            + p.tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
            + 48,
    );
    escape(p.measurement.as_bytes(), is_measurement_special, out);
    for (k, v) in &p.tags {
        out.push(b',');
        escape(k.as_bytes(), is_tag_special, out);
        out.push(b'=');
        escape(v.as_bytes(), is_tag_special, out);
    }
    out.extend_from_slice(b" value=");
    encode_value(&p.value, out);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(p.timestamp).as_bytes());
    out.push(b'\n');
}

/// Appends a field value in line-protocol form.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Float(f) => out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes()),
        Value::Int(i) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'i');
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Str(s) => {
            out.push(b'"');
            escape(s.as_bytes(), is_string_special, out);
            out.push(b'"');
        }
    }
}

/// Encodes points into messages of at most `max_bytes` each (a point larger than that on its
/// own still gets a message of its own; normalisation bounds points far below nsqd's limit).
pub fn encode_batch(points: &[Point], max_bytes: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut cur = Vec::with_capacity((points.len() * 96).min(max_bytes));
    let mut n = 0;
    for p in points {
        let start = cur.len();
        encode_point(p, &mut cur);
        if cur.len() > max_bytes && start > 0 {
            let tail = cur.split_off(start);
            messages.push(Message {
                payload: std::mem::replace(&mut cur, tail),
                points: n,
            });
            n = 0;
        }
        n += 1;
    }
    if !cur.is_empty() {
        messages.push(Message {
            payload: cur,
            points: n,
        });
    }
    messages
}

/// Cuts encoded lines into messages of at most `max_bytes` each, at line ends (a line longer
/// than that gets a message of its own). The usual batch fits whole and is not copied.
pub fn split_lines(lines: super::Lines, max_bytes: usize) -> Vec<Message> {
    if lines.bytes.len() <= max_bytes {
        if lines.points == 0 {
            return Vec::new();
        }
        return vec![Message {
            payload: lines.bytes,
            points: lines.points as u32,
        }];
    }
    let mut messages = Vec::new();
    let (mut start, mut last_end, mut n) = (0, 0, 0);
    for nl in memchr::memchr_iter(b'\n', &lines.bytes) {
        let end = nl + 1;
        if end - start > max_bytes && last_end > start {
            messages.push(Message {
                payload: lines.bytes[start..last_end].to_vec(),
                points: n,
            });
            start = last_end;
            n = 0;
        }
        last_end = end;
        n += 1;
    }
    if last_end > start {
        messages.push(Message {
            payload: lines.bytes[start..last_end].to_vec(),
            points: n,
        });
    }
    messages
}

fn is_measurement_special(b: u8) -> bool {
    matches!(b, b',' | b' ')
}

pub(crate) fn is_tag_special(b: u8) -> bool {
    matches!(b, b',' | b'=' | b' ')
}

fn is_string_special(b: u8) -> bool {
    matches!(b, b'"' | b'\\')
}

/// Copies `s`, putting a backslash before every byte `special` picks. Most names need no
/// escaping, so they are scanned once and copied whole (the encoder's hot path).
#[inline]
pub(crate) fn escape(s: &[u8], special: impl Fn(u8) -> bool, out: &mut Vec<u8>) {
    let Some(first) = s.iter().position(|&b| special(b)) else {
        out.extend_from_slice(s);
        return;
    };
    let mut last = 0;
    for (i, &b) in s.iter().enumerate().skip(first) {
        if special(b) {
            out.extend_from_slice(&s[last..i]);
            out.push(b'\\');
            last = i;
        }
    }
    out.extend_from_slice(&s[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(measurement: &str, tags: &[(&str, &str)], value: Value) -> Point {
        Point {
            measurement: measurement.to_owned(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
            timestamp: 1_764_000_000,
        }
    }

    fn line(p: &Point) -> String {
        let mut out = Vec::new();
        encode_point(p, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn typical_point() {
        let p = point(
            "cpu.idle",
            &[("cpu", "cpu0"), ("host", "web1")],
            Value::Float(97.5),
        );
        assert_eq!(
            line(&p),
            "cpu.idle,cpu=cpu0,host=web1 value=97.5 1764000000\n"
        );
    }

    #[test]
    fn value_types() {
        let cases = [
            (Value::Float(1.0), "1.0"),
            (Value::Float(-0.25), "-0.25"),
            (Value::Float(1e21), "1e21"),
            (Value::Int(-42), "-42i"),
            (Value::Bool(true), "true"),
            (Value::Bool(false), "false"),
            (Value::Str("ok".into()), "\"ok\""),
        ];
        for (v, want) in cases {
            let got = line(&point("m", &[], v));
            assert_eq!(got, format!("m value={want} 1764000000\n"));
        }
    }

    #[test]
    fn escaping_is_exactly_influxdbs() {
        let p = point(
            "my measure,x=y",
            &[("tag key,=", "tag val,=x"), ("host", "h")],
            Value::Str(r#"say "hi" \ bye, a=b"#.into()),
        );
        assert_eq!(
            line(&p),
            "my\\ measure\\,x=y,tag\\ key\\,\\==tag\\ val\\,\\=x,host=h \
             value=\"say \\\"hi\\\" \\\\ bye, a=b\" 1764000000\n"
        );
    }

    #[test]
    fn batches_split_under_the_limit_at_line_boundaries() {
        let points: Vec<Point> = (0..1000)
            .map(|i| point(&format!("m{i}"), &[("host", "h")], Value::Float(i as f64)))
            .collect();
        let whole = encode_batch(&points, usize::MAX);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].points, 1000);
        let messages = encode_batch(&points, 4096);
        assert!(messages.len() > 1);
        for m in &messages {
            assert!(m.payload.len() <= 4096 && m.payload.ends_with(b"\n"));
            let lines = m.payload.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(
                m.points as usize, lines,
                "each message counts its own points"
            );
        }
        let joined: Vec<u8> = messages.iter().flat_map(|m| m.payload.clone()).collect();
        assert_eq!(joined, whole[0].payload);
    }
}
