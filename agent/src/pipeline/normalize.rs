//! Normalisation: renaming, the `host` tag, the seconds rule for timestamps, and validation.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use shared::{Metric, Value};

use super::Point;

/// Longest measurement name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 256;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// Most tags on one point.
pub const MAX_TAGS: usize = 64;
/// Longest string field value, in bytes.
pub const MAX_STRING_VALUE_BYTES: usize = 64 * 1024;

/// Timestamps in `[MIN_SECS, MAX_SECS)` are taken as seconds; anything else is replaced by now.
pub(crate) const MIN_SECS: i64 = 1_000_000_000;
pub(crate) const MAX_SECS: i64 = 10_000_000_000;

/// How a producer's metric names are renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rename<'a> {
    /// Kept as they are (`/post`, port and process checks, the agent's own metrics).
    Keep,
    /// `PLUGIN.<project>.<name>`, for script and built-in plugins.
    Plugin(&'a str),
}

/// Why one metric was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricError {
    /// The metric's name (possibly cut), so the producer can find it.
    pub metric: String,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metric {:?}: {}", self.metric, self.reason)
    }
}

impl std::error::Error for MetricError {}

/// The current unix time in seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Turns a producer's metric into a point, or says why it cannot be one.
pub fn normalize(
    m: Metric,
    rename: Rename<'_>,
    host: &str,
    now: i64,
) -> Result<Point, MetricError> {
    let tags = m.tags.into_iter().collect();
    normalize_parts(m.name, tags, m.value, m.timestamp, rename, host, now)
}

/// [`normalize`] for a metric already taken apart; `tags` must be sorted by key with unique keys
/// (line protocol builds these directly, sparing the map).
pub fn normalize_parts(
    name: String,
    mut tags: Vec<(String, String)>,
    value: Value,
    timestamp: Option<i64>,
    rename: Rename<'_>,
    host: &str,
    now: i64,
) -> Result<Point, MetricError> {
    let fail = |reason: String| MetricError {
        metric: cut(&name, 80),
        reason,
    };
    check_text(&name, MAX_NAME_BYTES).map_err(|r| fail(format!("name {r}")))?;
    if tags.len() > MAX_TAGS {
        return Err(fail(format!(
            "{} tags, at most {MAX_TAGS} are allowed",
            tags.len()
        )));
    }
    for (k, v) in &tags {
        check_text(k, MAX_TAG_KEY_BYTES).map_err(|r| fail(format!("tag key {r}")))?;
        if k == "time" {
            return Err(fail("tag key \"time\" is reserved by InfluxDB".into()));
        }
        check_text(v, MAX_TAG_VALUE_BYTES).map_err(|r| fail(format!("value of tag {k:?} {r}")))?;
    }
    match &value {
        Value::Float(f) if !f.is_finite() => {
            return Err(fail(format!("value {f} is not a finite number")));
        }
        Value::Str(s) if s.contains(['\n', '\r']) => {
            return Err(fail(
                "string value contains a line break, which line protocol cannot carry".into(),
            ));
        }
        Value::Str(s) if s.len() > MAX_STRING_VALUE_BYTES => {
            return Err(fail(format!(
                "string value is {} bytes, at most {MAX_STRING_VALUE_BYTES} are allowed",
                s.len()
            )));
        }
        _ => {}
    }
    let timestamp = match timestamp {
        Some(t) if (MIN_SECS..MAX_SECS).contains(&t) => t,
        _ => now,
    };
    let measurement = match rename {
        Rename::Keep => name,
        Rename::Plugin(project) => format!("PLUGIN.{project}.{name}"),
    };
    if let Err(at) = tags.binary_search_by(|(k, _)| k.as_str().cmp("host")) {
        tags.insert(at, ("host".to_owned(), host.to_owned()));
    }
    Ok(Point {
        measurement,
        tags,
        value,
        timestamp,
    })
}

/// Checks a name, tag key or tag value; the reason reads after the thing's name ("name is empty").
fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > max {
        return Err(format!("is {} bytes, at most {max} are allowed", s.len()));
    }
    // Control characters are all below 0x80 or in U+0080..U+009F; ASCII text is checked bytewise.
    if s.bytes().any(|b| b < 0x20 || b == 0x7f)
        || (!s.is_ascii() && s.chars().any(char::is_control))
    {
        return Err("contains a control character".into());
    }
    Ok(())
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_123;

    fn metric(name: &str) -> Metric {
        Metric::new(name, 1.5)
    }

    #[test]
    fn adds_host_tag_in_sorted_position() {
        let m = metric("m").tag("a", "1").tag("z", "2");
        let p = normalize(m, Rename::Keep, "web1", NOW).expect("valid");
        let keys: Vec<&str> = p.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "host", "z"]);
        assert_eq!(p.tags[1].1, "web1");
    }

    #[test]
    fn keeps_producer_host_tag() {
        let m = metric("m").tag("host", "other");
        let p = normalize(m, Rename::Keep, "web1", NOW).expect("valid");
        assert_eq!(p.tags, [("host".to_owned(), "other".to_owned())]);
    }

    #[test]
    fn seconds_rule() {
        for (given, want) in [
            (Some(1_764_000_000), 1_764_000_000),
            (None, NOW),
            (Some(0), NOW),
            (Some(1_764_000_000_000), NOW),         // milliseconds
            (Some(1_764_000_000_000_000_000), NOW), // nanoseconds
            (Some(-5), NOW),
        ] {
            let mut m = metric("m");
            m.timestamp = given;
            let p = normalize(m, Rename::Keep, "h", NOW).expect("valid");
            assert_eq!(p.timestamp, want, "{given:?}");
        }
    }

    #[test]
    fn plugin_rename() {
        let p = normalize(metric("conn"), Rename::Plugin("nginx-stats"), "h", NOW).expect("valid");
        assert_eq!(p.measurement, "PLUGIN.nginx-stats.conn");
    }

    #[test]
    fn refusals_name_the_metric_and_the_reason() {
        let cases = [
            (metric(""), "name is empty"),
            (metric("a\nb"), "name contains a control character"),
            (metric(&"x".repeat(300)), "name is 300 bytes"),
            (metric("m").tag("k", ""), "value of tag \"k\" is empty"),
            (metric("m").tag("time", "1"), "reserved"),
            (Metric::new("m", f64::NAN), "not a finite number"),
            (
                Metric::new("m", "s".repeat(70_000)),
                "string value is 70000 bytes",
            ),
            (Metric::new("m", "a\nb"), "line break"),
        ];
        for (m, want) in cases {
            let err = normalize(m, Rename::Keep, "h", NOW).expect_err(want);
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
        let err = normalize(metric("cpu\u{7}"), Rename::Keep, "h", NOW).expect_err("bell");
        assert!(err.to_string().starts_with("metric \"cpu\\u{7}\""), "{err}");
    }
}
