//! Parsing InfluxDB line protocol pushed to `POST /post` (`Content-Type: text/plain`).
//!
//! ```text
//! # comment lines and blank lines are skipped
//! measurement,tag1=v1,tag2=v2 value=12.5 1764000000
//! ```
//!
//! - Escapes as InfluxDB writes them: `\,` and `\ ` in measurements; `\,`, `\=` and `\ ` in tag
//!   keys, tag values and field keys; `\"` and `\\` inside string field values. A backslash before
//!   any other character is kept as it is.
//! - Field values: floats (`1`, `-2.5`, `1e3`), integers (`42i`, and `42u` when it fits an i64),
//!   booleans (`t`, `T`, `true`, `True`, `TRUE` and the same for false), strings (`"..."`).
//! - Fields: a line with one field becomes one metric named after the measurement, whatever the
//!   field's key. A line with several fields becomes one metric per field: the field `value` keeps
//!   the measurement's name, every other field `f` becomes `<measurement>.<f>`; all of them carry
//!   the line's tags and timestamp.
//! - The timestamp is optional; any precision may be sent, the pipeline's seconds rule then keeps
//!   it (seconds) or replaces it by the current time (anything else).
//! - A bad line is one rejection whose reason names the line number and what was wrong; the
//!   other lines are still accepted.

use std::borrow::Cow;

use shared::{Metric, Value};

use crate::pipeline::normalize::{normalize_parts, Rename};
use crate::pipeline::{Encoded, Parsed, Point};

/// Parses a whole body into metrics; every line is either metrics or one counted rejection.
pub fn parse_body(body: &[u8]) -> Parsed<Metric> {
    let mut out = Parsed::with_capacity(body.len() / 64);
    for (i, line) in lines(body) {
        if let Err(reason) = parse_line(line, &mut out.items) {
            out.reject(format!("line {i}: {reason}"));
        }
    }
    out
}

/// Parses a whole body straight into normalised points (the `/post` hot path: no intermediate
/// metric and tag map). A line that does not parse, or a metric of it that does not normalise,
/// is a rejection naming the line.
pub fn parse_points(body: &[u8], host: &str, now: i64) -> Parsed<Point> {
    parse_points_from(body, 1, host, now)
}

/// [`parse_points`] of a part of a body whose first line is line `first_line` of the body, so
/// rejections name the body's line numbers.
pub fn parse_points_from(body: &[u8], first_line: usize, host: &str, now: i64) -> Parsed<Point> {
    // A typical line is 50 to 100 bytes; reserving avoids regrowing on big bodies.
    let mut out = Parsed::with_capacity(body.len() / 64);
    for (i, line) in lines(body) {
        let i = i + first_line - 1;
        match parse_parts(line) {
            Ok(None) => {}
            Ok(Some(parts)) => {
                // One spare slot: normalising inserts the host tag.
                let mut tags = Vec::with_capacity(parts.tags.len() + 1);
                tags.extend(
                    parts
                        .tags
                        .iter()
                        .map(|(k, v)| (String::from(k.as_ref()), String::from(v.as_ref()))),
                );
                let timestamp = parts.timestamp;
                for (name, value, tags) in parts.metrics(tags) {
                    match normalize_parts(name, tags, value, timestamp, Rename::Keep, host, now) {
                        Ok(p) => out.items.push(p),
                        Err(e) => out.reject(format!("line {i}: {e}")),
                    }
                }
            }
            Err(reason) => out.reject(format!("line {i}: {reason}")),
        }
    }
    out
}

/// [`parse_points_from`], encoded: lines already in the encoder's form are checked and copied
/// ([`pass_through`](super::pass::pass_through)), the others are parsed, normalised and
/// encoded. Accepts and refuses exactly what [`parse_points_from`] does.
pub fn encode_points_from(body: &[u8], first_line: usize, host: &str, now: i64) -> Encoded {
    let host_tag = super::pass::host_tag(host);
    let mut out = Encoded::default();
    // The host tag makes each line longer than it came.
    out.lines.bytes.reserve(body.len() + body.len() / 4);
    for (i, line) in lines(body) {
        if super::pass::pass_through(line, &host_tag, now, &mut out.lines.bytes) {
            out.lines.points += 1;
        } else {
            out.add(parse_points_from(line, i + first_line - 1, host, now));
        }
    }
    out
}

/// Parses one line (without its newline), appending its metrics to `out`; blank lines and
/// comments add nothing. On error nothing is appended and the reason is returned.
pub fn parse_line(line: &[u8], out: &mut Vec<Metric>) -> Result<(), String> {
    if let Some(parts) = parse_parts(line)? {
        let tags: Vec<(String, String)> = parts
            .tags
            .iter()
            .map(|(k, v)| (String::from(k.as_ref()), String::from(v.as_ref())))
            .collect();
        let timestamp = parts.timestamp;
        out.extend(parts.metrics(tags).map(|(name, value, tags)| Metric {
            name,
            timestamp,
            tags: tags.into_iter().collect(),
            value,
        }));
    }
    Ok(())
}

/// Lines of a body with their 1-based numbers (the last one may be empty).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    let mut start = 0;
    ends.enumerate().map(move |(i, end)| {
        let line = &body[start..end];
        start = end + 1;
        (i + 1, line)
    })
}

/// One line taken apart, borrowing from the body wherever nothing needed unescaping.
struct Parts<'a> {
    measurement: Cow<'a, str>,
    /// Sorted by key, keys unique.
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: Vec<(Cow<'a, str>, Value)>,
    timestamp: Option<i64>,
}

impl<'a> Parts<'a> {
    /// The line's metrics as (name, value, tags): one field keeps the measurement's name, several
    /// fields become `<measurement>.<field>` except the field `value`.
    fn metrics(
        self,
        tags: Vec<(String, String)>,
    ) -> impl Iterator<Item = (String, Value, Vec<(String, String)>)> + 'a {
        let single = self.fields.len() == 1;
        let measurement = self.measurement;
        let mut tags = Some(tags);
        let last = self.fields.len().saturating_sub(1);
        self.fields
            .into_iter()
            .enumerate()
            .map(move |(i, (key, value))| {
                let name = if single || key == "value" {
                    String::from(measurement.as_ref())
                } else {
                    format!("{measurement}.{key}")
                };
                // The last field takes the tags; the others get copies.
                let t = if i == last {
                    tags.take().unwrap_or_default()
                } else {
                    tags.clone().unwrap_or_default()
                };
                (name, value, t)
            })
    }
}

/// Takes one line apart; `None` for blank lines and comments.
fn parse_parts(line: &[u8]) -> Result<Option<Parts<'_>>, String> {
    let line = std::str::from_utf8(line)
        .map_err(|e| format!("not valid UTF-8 (at byte {})", e.valid_up_to()))?;
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let b = line.as_bytes();

    let (measurement, mut i) = scan(line, 0, b", ", b", ");
    if measurement.is_empty() {
        return Err("the measurement name is empty".into());
    }

    let mut tags = Vec::with_capacity(4);
    while i < b.len() && b[i] == b',' {
        let (key, at) = scan(line, i + 1, b",= ", b",= ");
        if at >= b.len() || b[at] != b'=' {
            return Err(format!("tag {key:?} has no '=' and value"));
        }
        let (value, at) = scan(line, at + 1, b", ", b",= ");
        if key.is_empty() {
            return Err("a tag key is empty".into());
        }
        if value.is_empty() {
            return Err(format!("tag {key:?} has an empty value"));
        }
        tags.push((key, value));
        i = at;
    }
    if !tags.is_sorted_by(|a, b| a.0 < b.0) {
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("tag {:?} is given twice", w[0].0));
        }
    }

    i = skip_spaces(b, i);
    if i >= b.len() {
        return Err(format!(
            "measurement {measurement:?} has no fields (expected e.g. `value=1`)"
        ));
    }
    let mut fields = Vec::with_capacity(1);
    loop {
        let (key, at) = scan(line, i, b",= ", b",= ");
        if key.is_empty() {
            return Err("a field key is empty".into());
        }
        if at >= b.len() || b[at] != b'=' {
            return Err(format!("field {key:?} has no '=' and value"));
        }
        let (value, at) = field_value(line, at + 1).map_err(|e| format!("field {key:?}: {e}"))?;
        fields.push((key, value));
        i = at;
        if i < b.len() && b[i] == b',' {
            i += 1;
            continue;
        }
        break;
    }

    let timestamp = if i < b.len() {
        // Only spaces can end the fields here: anything else was consumed by scan/field_value.
        let rest = line[i..].trim_start_matches([' ', '\t']);
        let ts = rest.parse::<i64>().map_err(|_| {
            format!(
                "timestamp {:?} is not an integer",
                rest.chars().take(40).collect::<String>()
            )
        })?;
        Some(ts)
    } else {
        None
    };
    Ok(Some(Parts {
        measurement,
        tags,
        fields,
        timestamp,
    }))
}

/// Reads from `i` up to the first unescaped byte of `stop` (or the end), removing the backslash of
/// escapes of `escapable` bytes. Borrows when there is nothing to unescape.
fn scan<'a>(s: &'a str, start: usize, stop: &[u8], escapable: &[u8]) -> (Cow<'a, str>, usize) {
    let b = s.as_bytes();
    let mut i = start;
    let mut seg = start;
    let mut owned: Option<String> = None;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() && escapable.contains(&b[i + 1]) {
            owned.get_or_insert_with(String::new).push_str(&s[seg..i]);
            seg = i + 1;
            i += 2;
            continue;
        }
        if stop.contains(&c) {
            break;
        }
        i += 1;
    }
    let text = match owned {
        Some(mut o) => {
            o.push_str(&s[seg..i]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(&s[start..i]),
    };
    (text, i)
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Parses a field value starting at `i`; returns it and the index just past it.
fn field_value(s: &str, i: usize) -> Result<(Value, usize), String> {
    let b = s.as_bytes();
    if i < b.len() && b[i] == b'"' {
        return string_value(s, i + 1);
    }
    let end = b[i..]
        .iter()
        .position(|c| *c == b',' || *c == b' ' || *c == b'\t')
        .map_or(b.len(), |p| i + p);
    let tok = &s[i..end];
    if tok.is_empty() {
        return Err("the value is empty".into());
    }
    let value = match tok {
        "t" | "T" | "true" | "True" | "TRUE" => Value::Bool(true),
        "f" | "F" | "false" | "False" | "FALSE" => Value::Bool(false),
        _ if tok.ends_with('i') => Value::Int(
            tok[..tok.len() - 1]
                .parse()
                .map_err(|_| format!("{tok:?} is not a valid integer"))?,
        ),
        _ if tok.ends_with('u') => {
            let u: u64 = tok[..tok.len() - 1]
                .parse()
                .map_err(|_| format!("{tok:?} is not a valid unsigned integer"))?;
            Value::Int(
                i64::try_from(u).map_err(|_| format!("{tok:?} is larger than an i64 can hold"))?,
            )
        }
        _ => {
            // Rust also parses "inf" and "NaN"; line protocol has no such literals.
            let numeric_start = matches!(tok.as_bytes()[0], b'0'..=b'9' | b'-' | b'+' | b'.');
            match tok.parse::<f64>() {
                Ok(f) if numeric_start && f.is_finite() => Value::Float(f),
                _ => {
                    return Err(format!(
                        "{:?} is not a number, an integer (42i), a boolean or a \"string\"",
                        tok.chars().take(40).collect::<String>()
                    ))
                }
            }
        }
    };
    Ok((value, end))
}

/// Parses a string value whose opening quote is just before `start`.
fn string_value(s: &str, start: usize) -> Result<(Value, usize), String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut seg = start;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && (b[i + 1] == b'"' || b[i + 1] == b'\\') => {
                out.push_str(&s[seg..i]);
                seg = i + 1;
                i += 2;
            }
            b'"' => {
                out.push_str(&s[seg..i]);
                return Ok((Value::Str(out), i + 1));
            }
            _ => i += 1,
        }
    }
    Err("the string value has no closing quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::lineproto::encode_point;
    use crate::pipeline::normalize::normalize;

    fn one(line: &str) -> Metric {
        let mut out = Vec::new();
        parse_line(line.as_bytes(), &mut out).expect("valid line");
        assert_eq!(out.len(), 1, "{line}");
        out.remove(0)
    }

    #[test]
    fn typical_line() {
        let m = one("cpu.idle,cpu=cpu0,dc=eu value=97.5 1764000000");
        assert_eq!(
            m,
            Metric::new("cpu.idle", 97.5)
                .tag("cpu", "cpu0")
                .tag("dc", "eu")
                .at(1_764_000_000)
        );
    }

    #[test]
    fn value_types() {
        for (text, want) in [
            ("1", Value::Float(1.0)),
            ("-2.5", Value::Float(-2.5)),
            ("1e3", Value::Float(1000.0)),
            ("42i", Value::Int(42)),
            ("-7i", Value::Int(-7)),
            ("9u", Value::Int(9)),
            ("t", Value::Bool(true)),
            ("TRUE", Value::Bool(true)),
            ("False", Value::Bool(false)),
            ("\"ok\"", Value::Str("ok".into())),
            (
                "\"a \\\"b\\\" \\\\ c, d=e\"",
                Value::Str("a \"b\" \\ c, d=e".into()),
            ),
            ("\"back\\slash\"", Value::Str("back\\slash".into())),
        ] {
            assert_eq!(one(&format!("m value={text}")).value, want, "{text}");
        }
    }

    #[test]
    fn escapes_round_trip_with_the_encoder() {
        let m = Metric::new("my measure,x=y", r#"say "hi" \ bye, a=b"#)
            .tag("tag key,=", "tag val,=x")
            .at(1_764_000_000);
        let p = normalize(m.clone(), Rename::Keep, "h", 0).expect("valid");
        let mut line = Vec::new();
        encode_point(&p, &mut line);
        let back = one(std::str::from_utf8(&line).expect("utf8").trim_end());
        assert_eq!(back, m.tag("host", "h"));
    }

    #[test]
    fn several_fields_become_one_metric_each() {
        let mut out = Vec::new();
        parse_line(b"mem,h=a value=1,used=2i,ok=t 1764000000", &mut out).expect("valid");
        let names: Vec<&str> = out.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["mem", "mem.used", "mem.ok"]);
        assert!(out
            .iter()
            .all(|m| m.tags["h"] == "a" && m.timestamp == Some(1_764_000_000)));
        assert_eq!(
            one("disk free=5").name,
            "disk",
            "a single field keeps the name"
        );
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let p = parse_body(b"# header\n\n  m value=1  \r\n\t\nm2 value=2 1764000000\r\n");
        assert_eq!(p.rejected, 0, "{:?}", p.errors);
        assert_eq!(p.items.len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_the_problem_and_the_rest_is_kept() {
        let body = "good value=1\n,t=1 value=1\nm value=\nm value=abc\nm value=\"open\nm\n\
                    m,t value=1\nm value=1 12x\nm value=1.5i\ngood2 value=2\nm,t= value=1\n\
                    m =1\nm value=inf\n";
        let p = parse_body(body.as_bytes());
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.rejected, 11);
        let want = [
            "line 2: the measurement name is empty",
            "line 3: field \"value\": the value is empty",
            "line 4: field \"value\": \"abc\" is not a number",
            "line 5: field \"value\": the string value has no closing quote",
            "line 6: measurement \"m\" has no fields",
            "line 7: tag \"t\" has no '='",
            "line 8: timestamp \"12x\" is not an integer",
            "line 9: field \"value\": \"1.5i\" is not a valid integer",
            // line 10 is good
            "line 11: tag \"t\" has an empty value",
        ];
        for (got, want) in p.errors.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn points_path_normalises_and_names_the_line_of_a_refused_metric() {
        let body =
            b"cpu,z=1,a=2 value=1.5 1764000000\nm,time=1 value=1\nm,a=1,a=2 value=1\nx y=1,z=2i\n";
        let p = parse_points(body, "h1", 1_764_000_999);
        assert_eq!(p.rejected, 2, "{:?}", p.errors);
        assert!(
            p.errors[0].starts_with("line 2: metric \"m\": tag key \"time\""),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors[1].starts_with("line 3: tag \"a\" is given twice"),
            "{:?}",
            p.errors
        );
        let cpu = &p.items[0];
        let keys: Vec<&str> = cpu.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "host", "z"], "sorted, host added");
        assert_eq!(cpu.timestamp, 1_764_000_000);
        let names: Vec<&str> = p.items.iter().map(|p| p.measurement.as_str()).collect();
        assert_eq!(names, ["cpu", "x.y", "x.z"]);
        assert_eq!(p.items[2].timestamp, 1_764_000_999, "no timestamp: now");
        // Both paths agree on what a line means.
        let via_metrics: Vec<Point> = parse_body(body)
            .items
            .into_iter()
            .filter_map(|m| normalize(m, Rename::Keep, "h1", 1_764_000_999).ok())
            .collect();
        assert_eq!(via_metrics, p.items);
    }

    #[test]
    fn invalid_utf8_is_one_rejection() {
        let p = parse_body(b"m value=1\nm\xff value=1\n");
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.rejected, 1);
        assert!(p.errors[0].starts_with("line 2: not valid UTF-8"));
    }

    #[test]
    fn timestamps_of_any_precision_are_passed_on() {
        assert_eq!(
            one("m value=1 1764000000000000000").timestamp,
            Some(1_764_000_000_000_000_000)
        );
        assert_eq!(one("m value=1").timestamp, None);
    }
}
