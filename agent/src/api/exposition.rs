//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! A small encoder rather than the `prometheus-client` crate: that crate wants the counters to
//! be its own metric objects (ours are the atomics `/me/status` reads, so the two answers agree),
//! emits OpenMetrics, and does not escape label values (prometheus/client_rust#151), which here
//! carry namespace and plugin names from the registry: hostile input.
//!
//! The format, as Prometheus parses it: per family one `# HELP name text` and one
//! `# TYPE name counter|gauge` line, then its samples `name{label="value",...} value`, every line
//! ending in `\n`. In HELP text `\` and a line feed are escaped as `\\` and `\n`; in label values
//! also `"` as `\"`. Names are fixed by the agent (checked in debug builds and by the tests);
//! values come from outside and are always escaped.

use std::fmt::Write as _;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets to 0 when the agent restarts); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count, written as an integer.
    Int(u64),
    /// Anything else.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Float(v as f64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// A document being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// Families written so far, so none is written twice (Prometheus refuses the scrape).
    #[cfg(debug_assertions)]
    names: std::collections::BTreeSet<&'static str>,
}

impl Exposition {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`; its samples follow through the returned handle, so a family's
    /// lines always stay together.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(is_name(name), "bad metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        #[cfg(debug_assertions)]
        debug_assert!(self.names.insert(name), "family {name} written twice");
        let t = &mut self.text;
        t.push_str("# HELP ");
        t.push_str(name);
        t.push(' ');
        escape_into(t, help, false);
        t.push_str("\n# TYPE ");
        t.push_str(name);
        t.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
        Family { doc: self, name }
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The family being written.
pub struct Family<'a> {
    doc: &'a mut Exposition,
    name: &'static str,
}

impl Family<'_> {
    /// One sample with these labels (names fixed by the agent, values escaped).
    pub fn sample(
        &mut self,
        labels: &[(&'static str, &str)],
        value: impl Into<Value>,
    ) -> &mut Self {
        let t = &mut self.doc.text;
        t.push_str(self.name);
        if !labels.is_empty() {
            t.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(name), "bad label name {name:?}");
                if i > 0 {
                    t.push(',');
                }
                t.push_str(name);
                t.push_str("=\"");
                escape_into(t, value, true);
                t.push('"');
            }
            t.push('}');
        }
        t.push(' ');
        match value.into() {
            Value::Int(v) => {
                let _ = write!(t, "{v}");
            }
            Value::Float(v) => write_float(t, v),
        }
        t.push('\n');
        self
    }

    /// The one sample of a family without labels.
    pub fn value(&mut self, value: impl Into<Value>) -> &mut Self {
        self.sample(&[], value)
    }
}

/// Appends `s` escaped: `\` and line feed always, `"` in label values.
fn escape_into(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Floats as Go's `strconv.ParseFloat` reads them, with the format's spellings of the
/// special values.
fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_help_type_then_its_samples() {
        let mut doc = Exposition::new();
        doc.family("agent_points_total", Kind::Counter, "Points.")
            .sample(&[("reason", "a")], 3u64)
            .sample(&[("reason", "b")], 0u64);
        doc.family("agent_up", Kind::Gauge, "Up.").value(true);
        assert_eq!(
            doc.finish(),
            "# HELP agent_points_total Points.\n# TYPE agent_points_total counter\n\
             agent_points_total{reason=\"a\"} 3\nagent_points_total{reason=\"b\"} 0\n\
             # HELP agent_up Up.\n# TYPE agent_up gauge\nagent_up 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped_so_no_input_can_break_a_line_or_a_quote() {
        let mut doc = Exposition::new();
        doc.family("m", Kind::Gauge, "h")
            .sample(&[("ns", "a\"b\\c\nd} e=\"f"), ("plugin", "\\")], 1u64);
        let text = doc.finish();
        let sample = text.lines().nth(2).expect("sample line");
        assert_eq!(sample, r#"m{ns="a\"b\\c\nd} e=\"f",plugin="\\"} 1"#);
        assert_eq!(text.lines().count(), 3, "the line feed stayed escaped");
        // Multi-byte UTF-8 is kept as it is; the format allows any UTF-8 in values.
        let mut doc = Exposition::new();
        doc.family("m", Kind::Gauge, "h")
            .sample(&[("ns", "név\u{0}\t")], 1u64);
        assert!(doc.finish().ends_with("m{ns=\"név\u{0}\t\"} 1\n"));
    }

    #[test]
    fn help_text_escapes_backslash_and_line_feed_but_not_quotes() {
        let mut doc = Exposition::new();
        doc.family("m", Kind::Gauge, "a \"b\" c\\d\ne");
        assert_eq!(
            doc.finish(),
            "# HELP m a \"b\" c\\\\d\\ne\n# TYPE m gauge\n"
        );
    }

    #[test]
    fn floats_use_the_formats_spellings() {
        let mut doc = Exposition::new();
        doc.family("m", Kind::Gauge, "h")
            .value(1.5)
            .value(f64::NAN)
            .value(f64::INFINITY)
            .value(f64::NEG_INFINITY)
            .value(1_764_000_000i64)
            .value(u64::MAX);
        let text = doc.finish();
        let values: Vec<&str> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        assert_eq!(
            values,
            [
                "1.5",
                "NaN",
                "+Inf",
                "-Inf",
                "1764000000",
                "18446744073709551615"
            ]
        );
    }

    #[test]
    fn names_follow_the_formats_grammar() {
        assert!(is_name("agent_build_info"));
        assert!(is_name("a:b_c9"));
        assert!(!is_name("9a"));
        assert!(!is_name("a-b"));
        assert!(!is_name(""));
        assert!(is_label_name("ns"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name("1a"));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "written twice")]
    fn a_family_written_twice_is_a_bug_caught_in_debug_builds() {
        let mut doc = Exposition::new();
        doc.family("m", Kind::Gauge, "h");
        doc.family("m", Kind::Gauge, "h");
    }
}
