//! The `/post` fast path for line protocol: a line that is already in the form the encoder
//! writes is checked and copied, with the `host` tag inserted and the timestamp normalised,
//! instead of being parsed into an owned [`Point`](crate::pipeline::Point) and encoded again.
//!
//! A line qualifies when it is printable ASCII without escapes or quotes, has exactly one field
//! named `value` holding a number or a boolean, its tags are sorted with unique keys, and every
//! name passes the normaliser's limits. Anything else (comments, escapes, strings, several
//! fields, unsorted tags, `42u`, a bad line) returns `false` and takes the full path, which
//! accepts or refuses it exactly as before; so the fast path never decides a refusal.

use crate::pipeline::normalize::{
    MAX_NAME_BYTES, MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES,
};
use crate::pipeline::normalize::{MAX_SECS, MIN_SECS};

/// `,host=<host>` as the encoder writes it, made once per body.
pub fn host_tag(host: &str) -> Vec<u8> {
    let mut tag = b",host=".to_vec();
    super::escape(host.as_bytes(), super::is_tag_special, &mut tag);
    tag
}

/// Appends `line` (without its newline) as the encoder would write its point, and returns
/// `true`; returns `false` with `out` unchanged when the line needs the full path.
/// `host_tag` is [`host_tag`]'s; `now` replaces a timestamp that is missing or not in seconds.
pub fn pass_through(line: &[u8], host_tag: &[u8], now: i64, out: &mut Vec<u8>) -> bool {
    // Printable ASCII, no escapes, no quotes: names are then exactly what the encoder writes,
    // and none holds a control character (the normaliser's text check). A fold, not `any`, so
    // the check runs over the whole line without a branch per byte (it vectorises).
    let plain = line.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(b' ') <= b'~' - b' ') & (b != b'\\') & (b != b'"')
    });
    if !plain {
        return false;
    }
    let Some(series) = Series::scan(line) else {
        return false;
    };
    let space = series.end;
    let rest = &line[space + 1..];
    let (field, timestamp) = match rest.iter().position(|&b| b == b' ') {
        None => (rest, None),
        Some(at) => {
            let digits = &rest[at + 1..];
            match parse_digits(digits) {
                Some(t) => (&rest[..at], Some((t, digits))),
                None => return false,
            }
        }
    };
    let Some(value) = field.strip_prefix(b"value=") else {
        return false;
    };
    let Some(spelling) = canonical_value(value) else {
        return false;
    };
    out.reserve(line.len() + host_tag.len() + 24);
    // The line up to its field is copied in two pieces around the host tag; a boolean is
    // spelled anew.
    let i = if series.has_host {
        space
    } else {
        series.host_at.unwrap_or(space)
    };
    out.extend_from_slice(&line[..i]);
    if !series.has_host {
        out.extend_from_slice(host_tag);
    }
    match spelling {
        Spelling::AsWritten => out.extend_from_slice(&line[i..space + 1 + field.len()]),
        Spelling::Canonical(value) => {
            out.extend_from_slice(&line[i..space]);
            out.extend_from_slice(b" value=");
            out.extend_from_slice(value);
        }
    }
    out.push(b' ');
    match timestamp {
        // Seconds as the encoder writes them (no leading zero): copied.
        Some((t, digits)) if (MIN_SECS..MAX_SECS).contains(&t) && digits[0] != b'0' => {
            out.extend_from_slice(digits);
        }
        Some((t, _)) if (MIN_SECS..MAX_SECS).contains(&t) => {
            out.extend_from_slice(itoa::Buffer::new().format(t).as_bytes());
        }
        _ => out.extend_from_slice(itoa::Buffer::new().format(now).as_bytes()),
    }
    out.push(b'\n');
    true
}

/// The series of a plain line (`measurement,key=value,...` up to the first space), checked
/// as the normaliser would take it: one pass over its bytes.
struct Series {
    /// Where the space after it is.
    end: usize,
    /// Where the host tag goes: the comma of the first tag whose key sorts after `host`.
    host_at: Option<usize>,
    /// Whether the line has a `host` tag of its own.
    has_host: bool,
}

impl Series {
    fn scan(line: &[u8]) -> Option<Series> {
        let n = line.len();
        let mut i = until(line, 0, |b| b == b',' || b == b' ');
        let measurement = &line[..i];
        if measurement.is_empty() || measurement.len() > MAX_NAME_BYTES || measurement[0] == b'#' {
            return None;
        }
        let mut series = Series {
            end: 0,
            host_at: None,
            has_host: false,
        };
        let (mut previous, mut tags): (&[u8], usize) = (&[], 0);
        while i < n && line[i] == b',' {
            let comma = i;
            let eq = until(line, comma + 1, |b| matches!(b, b'=' | b',' | b' '));
            if eq == n || line[eq] != b'=' {
                return None;
            }
            let end = until(line, eq + 1, |b| matches!(b, b'=' | b',' | b' '));
            // The encoder would escape an `=` in a value.
            if end < n && line[end] == b'=' {
                return None;
            }
            let (key, value) = (&line[comma + 1..eq], &line[eq + 1..end]);
            tags += 1;
            if key.is_empty()
                || key.len() > MAX_TAG_KEY_BYTES
                || value.is_empty()
                || value.len() > MAX_TAG_VALUE_BYTES
                || compare(key, b"time").is_eq()
                || (tags > 1 && compare(key, previous).is_le())
                || tags > MAX_TAGS
            {
                return None;
            }
            match compare(key, b"host") {
                std::cmp::Ordering::Equal => series.has_host = true,
                std::cmp::Ordering::Greater if series.host_at.is_none() => {
                    series.host_at = Some(comma)
                }
                _ => {}
            }
            previous = key;
            i = end;
        }
        if i == n || line[i] != b' ' {
            return None;
        }
        series.end = i;
        Some(series)
    }
}

/// `a.cmp(b)` for names that are not empty, deciding on the first byte when it differs, as it
/// mostly does, instead of a call to `memcmp`.
fn compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The index of the first byte of `line` from `from` on that `stop`s, or the line's length.
fn until(line: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
    line[from..]
        .iter()
        .position(|&b| stop(b))
        .map_or(line.len(), |at| from + at)
}

/// How a value the fast path takes is written out.
enum Spelling {
    /// As it came: floats (InfluxDB reads `1` and `1.0` alike) and `i` integers.
    AsWritten,
    /// Booleans, spelled `true`/`false` as the encoder does.
    Canonical(&'static [u8]),
}

/// How to write the value, when the token is one the full path reads as the same float,
/// integer or boolean.
fn canonical_value(tok: &[u8]) -> Option<Spelling> {
    match tok {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => return Some(Spelling::Canonical(b"true")),
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => return Some(Spelling::Canonical(b"false")),
        _ => {}
    }
    if let Some(int) = tok.strip_suffix(b"i") {
        let digits = int.strip_prefix(b"-").unwrap_or(int);
        let valid = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits.len() == 1 || digits[0] != b'0')
            // Fits an i64: 18 digits always do; longer ones are left to the full path.
            && digits.len() <= 18;
        return valid.then_some(Spelling::AsWritten);
    }
    is_plain_float(tok).then_some(Spelling::AsWritten)
}

/// `-?digits(.digits)?` without leading zeros and with at most 300 integer digits: finite, and
/// spelled the way InfluxDB reads it (no `+1`, `.5`, `1e3`, `inf`, which take the full path).
fn is_plain_float(tok: &[u8]) -> bool {
    let unsigned = tok.strip_prefix(b"-").unwrap_or(tok);
    let (int, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
        None => (unsigned, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    digits(int) && frac.is_none_or(digits) && int.len() <= 300 && (int.len() == 1 || int[0] != b'0')
}

/// A timestamp of digits only that fits an i64 (a sign or anything else takes the full path).
fn parse_digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0i64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(i64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::lineproto::encode_point;
    use crate::pipeline::lineproto::parse::{encode_points_from, parse_points, parse_points_from};

    const NOW: i64 = 1_764_000_999;

    fn fast(line: &str, host: &str) -> Option<String> {
        let mut out = b"kept".to_vec();
        let taken = pass_through(line.as_bytes(), &host_tag(host), NOW, &mut out);
        if !taken {
            assert_eq!(out, b"kept", "a line not taken leaves the output alone");
            return None;
        }
        Some(String::from_utf8(out[4..].to_vec()).expect("ascii"))
    }

    /// What the full path makes of `line`: its points, encoded.
    fn full(line: &str, host: &str) -> String {
        let parsed = parse_points_from(line.as_bytes(), 1, host, NOW);
        let mut out = Vec::new();
        for p in &parsed.items {
            encode_point(p, &mut out);
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn inserts_the_host_tag_where_the_encoder_puts_it_and_normalises_the_timestamp() {
        for (line, want) in [
            ("m value=1.5 1764000000", "m,host=h1 value=1.5 1764000000\n"),
            (
                "m,a=1 value=2 1764000000",
                "m,a=1,host=h1 value=2 1764000000\n",
            ),
            (
                "m,z=1 value=2 1764000000",
                "m,host=h1,z=1 value=2 1764000000\n",
            ),
            (
                "cpu,a=1,hosts=2,z=3 value=-0.25",
                "cpu,a=1,host=h1,hosts=2,z=3 value=-0.25 1764000999\n",
            ),
            (
                "m,host=other value=1i 1764000000",
                "m,host=other value=1i 1764000000\n",
            ),
            (
                "m value=T 1764000000123",
                "m,host=h1 value=true 1764000999\n",
            ),
            (
                "m,a=1 value=TRUE 1764000000",
                "m,a=1,host=h1 value=true 1764000000\n",
            ),
            ("m,host=x value=True", "m,host=x value=true 1764000999\n"),
            ("m value=1 01764000000", "m,host=h1 value=1 1764000000\n"),
            (
                "m value=FALSE 9223372036854775807",
                "m,host=h1 value=false 1764000999\n",
            ),
        ] {
            assert_eq!(fast(line, "h1").as_deref(), Some(want), "{line}");
        }
        // A host name the encoder escapes is escaped the same way.
        assert_eq!(
            fast("m value=1 1764000000", "a b,c").as_deref(),
            Some("m,host=a\\ b\\,c value=1 1764000000\n")
        );
    }

    #[test]
    fn what_it_takes_means_what_the_full_path_makes_of_it() {
        let lines = [
            "app.requests.7,code=201,endpoint=/api/v3 value=1498.5 1764000000",
            "m value=1",
            "m value=0.5 1764000000",
            "m,a=1,b=2,c=3,d=4 value=-7i 1764000000",
            "m,host=web value=t",
            "m,zone=eu value=42 1764000000000000000",
            "x.y-z_w/v,k:1=v:2 value=0 1999999999",
        ];
        for line in lines {
            let got = fast(line, "h1").unwrap_or_else(|| panic!("{line} is taken"));
            // Parsed back, the copy and the full path's encoding are the same points.
            let a = parse_points(got.as_bytes(), "other", 0);
            let b = parse_points(full(line, "h1").as_bytes(), "other", 0);
            assert_eq!(a.rejected, 0, "{got}");
            assert_eq!(a.items, b.items, "{line}");
        }
    }

    #[test]
    fn over_every_line_of_a_small_grammar_the_copy_is_what_the_full_path_makes() {
        // Each line is a measurement, a tag list, a separator, a field and a timestamp, each
        // picked from spellings the fast path takes and ones it must leave alone.
        let measurements = ["m", "#m", "cpu.load", "", "m=x", "h"];
        let tag_lists = [
            "",
            ",a=1",
            ",host=x",
            ",a=1,host=x,z=2",
            ",b=1,a=2",
            ",a=1,a=1",
            ",hosta=1",
            ",a=b=c",
            ",a=",
            ",=a",
            ",a",
            ",",
            ",a=1,",
            ",ho=1,hosu=2",
            ",time=1",
        ];
        let separators = [" ", "  ", ","];
        let fields = [
            "value=1",
            "value=-2.5",
            "value=7i",
            "value=T",
            "value=x",
            "v=1",
            "value=",
        ];
        let timestamps = ["", " 1764000000", " 01764000000", " 1", " x", " ", " -5"];
        let (mut taken, mut all) = (0, 0);
        for m in measurements {
            for t in tag_lists {
                for sep in separators {
                    for f in fields {
                        for ts in timestamps {
                            let line = format!("{m}{t}{sep}{f}{ts}");
                            all += 1;
                            let Some(got) = fast(&line, "h1") else {
                                continue;
                            };
                            taken += 1;
                            // Floats may be spelled differently (`1`, `1.0`): compared as
                            // points read back.
                            let a = parse_points(got.as_bytes(), "other", 0);
                            let b = parse_points(full(&line, "h1").as_bytes(), "other", 0);
                            assert_eq!((a.rejected, &a.items), (0, &b.items), "{line:?}");
                        }
                    }
                }
            }
        }
        // Most combinations are bad on purpose; 384 of the 13,230 are taken.
        assert!(taken >= 300, "{taken} of {all} lines were taken");
    }

    #[test]
    fn everything_else_takes_the_full_path() {
        for line in [
            "",
            "# a comment",
            " m value=1",
            "m value=1 ",
            "m value=1\r",
            "m  value=1",
            "m\tvalue=1",
            "m value=1 1764000000 extra",
            "m value=\"text\"",
            "m\\ x value=1",
            "m,t=a\\,b value=1",
            "m v=1",
            "m value=1,other=2",
            "m value=9u",
            "m value=+1",
            "m value=.5",
            "m value=1.",
            "m value=1e3",
            "m value=007",
            "m value=inf",
            "m value=1.5i",
            "m value=99999999999999999999i",
            "m value=1 -5",
            "m value=1 12x",
            "m value=1 99999999999999999999",
            "m,b=1,a=2 value=1",
            "m,a=1,a=2 value=1",
            "m,a= value=1",
            "m,=1 value=1",
            "m,a value=1",
            "m,a=b=c value=1",
            "m,time=1 value=1",
            ",a=1 value=1",
            "m",
            "mé value=1",
        ] {
            assert_eq!(fast(line, "h1"), None, "{line:?} needs the full path");
        }
        let long = format!("{} value=1", "x".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(fast(&long, "h"), None);
        let many: String = (0..=MAX_TAGS).map(|i| format!(",t{i:03}=v")).collect();
        assert_eq!(fast(&format!("m{many} value=1"), "h"), None);
    }

    #[test]
    fn a_body_is_accepted_and_refused_as_the_full_path_does() {
        let body = b"good,a=1 value=1.5 1764000000\n# c\n\nm,b=2,a=1 value=2\nm value=abc\n\
                     m value=\"s\",n=2i\nm,time=1 value=1\nlast value=t\n";
        let e = encode_points_from(body, 10, "h1", NOW);
        let p = parse_points_from(body, 10, "h1", NOW);
        assert_eq!((e.rejected, &e.errors), (p.rejected, &p.errors));
        assert_eq!(e.lines.points, p.items.len());
        let back = parse_points(&e.lines.bytes, "other", 0);
        assert_eq!(back.items, p.items, "the same points, in the same order");
        assert!(e.errors[0].starts_with("line 14: "), "{:?}", e.errors);
    }
}
