//! The NSQ TCP protocol's bytes: commands, frames, topic rules, and how a batch is cut into
//! messages under nsqd's limits. Pure functions, no I/O.

use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Format;

/// The protocol magic that opens every connection.
pub const MAGIC: &[u8; 4] = b"  V2";
/// nsqd's default `--max-body-size`: the largest `MPUB` body.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Longest topic name nsqd accepts.
pub const MAX_TOPIC_LEN: usize = 64;
/// The data of nsqd's heartbeat response frame.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Largest frame accepted from nsqd; a publisher only gets small responses and errors.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Frame types of the NSQ protocol.
const FRAME_RESPONSE: u32 = 0;
const FRAME_ERROR: u32 = 1;
const FRAME_MESSAGE: u32 = 2;

/// One frame from nsqd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A response: `OK`, `_heartbeat_`, or the IDENTIFY JSON.
    Response(Vec<u8>),
    /// An error: `E_CODE description`.
    Error(Vec<u8>),
    /// A message (only sent to subscribers; unexpected here).
    Message(Vec<u8>),
}

/// Decodes the next frame from `buf`, consuming it; `Ok(None)` while it is incomplete.
///
/// A frame is `size` (4 bytes, big endian, counting the type and data), `type` (4 bytes), data.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(4..=MAX_FRAME_BYTES).contains(&size) {
        return Err(format!("invalid frame size {size} from nsqd"));
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let kind = buf.get_u32();
    let data = buf.split_to(size - 4).to_vec();
    match kind {
        FRAME_RESPONSE => Ok(Some(Frame::Response(data))),
        FRAME_ERROR => Ok(Some(Frame::Error(data))),
        FRAME_MESSAGE => Ok(Some(Frame::Message(data))),
        other => Err(format!("unknown frame type {other} from nsqd")),
    }
}

/// Appends `IDENTIFY\n` with its size-prefixed JSON body.
pub fn encode_identify(body: &[u8], out: &mut Vec<u8>) {
    encode_with_body(b"IDENTIFY\n", body, out);
}

/// Appends `AUTH\n` with the size-prefixed secret.
pub fn encode_auth(secret: &[u8], out: &mut Vec<u8>) {
    encode_with_body(b"AUTH\n", secret, out);
}

fn encode_with_body(line: &[u8], body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(line);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends `MPUB <topic>\n` + body size + message count + `[size, data]...`.
pub fn encode_mpub<M: AsRef<[u8]>>(topic: &str, messages: &[M], out: &mut Vec<u8>) {
    out.extend_from_slice(b"MPUB ");
    out.extend_from_slice(topic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(mpub_body_len(messages) as u32).to_be_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        let m = m.as_ref();
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
}

/// The `MPUB` body size nsqd compares with `--max-body-size`: the count, then each size and data.
pub fn mpub_body_len<M: AsRef<[u8]>>(messages: &[M]) -> usize {
    4 + messages.iter().map(|m| 4 + m.as_ref().len()).sum::<usize>()
}

/// Whether `name` is a topic nsqd accepts: `^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1 to 64 characters.
pub fn is_valid_topic(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN {
        return false;
    }
    let base = name.strip_suffix("#ephemeral").unwrap_or(name);
    !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The topic of namespace `ns` under `template` (`{ns}` replaced), or why it is not usable.
pub fn topic_for(template: &str, ns: &str) -> Result<String, String> {
    let topic = template.replace("{ns}", ns);
    if is_valid_topic(&topic) {
        Ok(topic)
    } else {
        Err(format!(
            "namespace {ns:?} gives topic {topic:?} (output.topic = {template:?}), which nsqd refuses: \
             a topic is 1 to 64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
        ))
    }
}

/// What nsqd's error frames mean for the batch that caused them.
///
/// Every error frame closes the connection (nsqd treats them as fatal) and it is re-established.
/// Codes about the data (`E_BAD_TOPIC`, `E_BAD_MESSAGE`, `E_BAD_BODY`) refuse the batch for good:
/// sending the same bytes again cannot succeed, and retrying would block every later batch.
/// (Size refusals, [`size_refusal`], are not sent again unchanged: the batch is cut smaller.)
/// Everything else (`E_MPUB_FAILED`, `E_PUB_FAILED`: nsqd is exiting; `E_INVALID`, `E_AUTH_*`,
/// `E_UNAUTHORIZED`: nsqd's configuration; unknown codes) is retried: the data waits in the spool.
pub fn error_is_permanent(code: &str) -> bool {
    matches!(code, "E_BAD_TOPIC" | "E_BAD_MESSAGE" | "E_BAD_BODY")
}

/// A size limit nsqd refused a publish for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRefusal {
    /// A message over `--max-msg-size`; the limit, when the error states it.
    Message(Option<usize>),
    /// The `MPUB` body over `--max-body-size`; the limit, when the error states it.
    Body(Option<usize>),
}

/// Whether an error frame is nsqd refusing a size, and which limit it names.
///
/// nsqd's texts (nsqd/protocol_v2.go): `E_BAD_MESSAGE MPUB message too big 48000 > 20000`
/// (one message over `--max-msg-size`) and `E_BAD_BODY MPUB body too big 6000000 > 5242880`
/// (the body over `--max-body-size`).
pub fn size_refusal(code: &str, text: &str) -> Option<SizeRefusal> {
    let kind: fn(Option<usize>) -> SizeRefusal = match code {
        "E_BAD_MESSAGE" => SizeRefusal::Message,
        "E_BAD_BODY" => SizeRefusal::Body,
        _ => return None,
    };
    let (_, tail) = text.split_once("too big")?;
    let limit = tail
        .split_once('>')
        .and_then(|(_, l)| l.trim().parse::<usize>().ok())
        .filter(|&l| l > 0);
    Some(kind(limit))
}

/// Points in one message: lines of line protocol, entries of a JSON message's `points`.
pub fn points_in(message: &[u8], format: Format) -> u32 {
    match format {
        Format::Line => message.iter().filter(|&&b| b == b'\n').count() as u32,
        Format::Json => JsonMessage::parse(message).map_or(1, |m| m.points.len() as u32),
    }
}

/// The result of cutting messages under a limit.
#[derive(Debug, Default)]
pub struct Cut<'a> {
    /// Messages within the limit, in order.
    pub messages: Vec<Cow<'a, [u8]>>,
    /// Points that cannot be made to fit (a single line or JSON point over the limit).
    pub refused_points: u32,
    /// Why, for the first refused piece.
    pub refused: Option<String>,
}

/// Cuts `message` into messages of at most `max` bytes: line protocol at line boundaries, a
/// JSON message by halving its `points`. A single point over `max` is refused and counted.
pub fn cut<'a>(message: Cow<'a, [u8]>, max: usize, format: Format, out: &mut Cut<'a>) {
    if message.is_empty() {
        return;
    }
    if message.len() <= max {
        out.messages.push(message);
        return;
    }
    match format {
        Format::Line => cut_lines(message, max, out),
        Format::Json => match JsonMessage::parse(&message).and_then(|m| m.halves()) {
            Some((a, b)) => {
                cut(Cow::Owned(a), max, format, out);
                cut(Cow::Owned(b), max, format, out);
            }
            None => refuse(out, 1, message.len(), max),
        },
    }
}

fn refuse(out: &mut Cut<'_>, points: u32, len: usize, max: usize) {
    out.refused_points += points;
    out.refused.get_or_insert_with(|| {
        format!("a single point of {len} bytes is over nsqd's message size limit of {max} bytes")
    });
}

fn cut_lines<'a>(message: Cow<'a, [u8]>, max: usize, out: &mut Cut<'a>) {
    // Whole lines are packed into messages up to `max`; borrowed input stays borrowed.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut at) = (0, 0);
    let bytes: &[u8] = &message;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| at + i + 1);
        if end - at > max {
            if at > start {
                pieces.push((start, at));
            }
            refuse(out, 1, end - at, max);
            start = end;
        } else if end - start > max {
            pieces.push((start, at));
            start = at;
        }
        at = end;
    }
    if at > start {
        pieces.push((start, at));
    }
    match message {
        Cow::Borrowed(b) => out
            .messages
            .extend(pieces.into_iter().map(|(s, e)| Cow::Borrowed(&b[s..e]))),
        Cow::Owned(v) => out.messages.extend(
            pieces
                .into_iter()
                .map(|(s, e)| Cow::Owned(v[s..e].to_vec())),
        ),
    }
}

/// Cuts `payload` into messages of at most `max` bytes, at line boundaries for line protocol.
///
/// The encoder already keeps batches under `output.max_message_bytes`; this matters for batches
/// spooled under a larger limit and for a smaller limit learned from nsqd.
pub fn split_messages(payload: &[u8], max: usize, format: Format) -> Cut<'_> {
    let mut out = Cut::default();
    cut(Cow::Borrowed(payload), max, format, &mut out);
    out
}

/// A message of the JSON format, with its points kept as raw JSON.
#[derive(Deserialize)]
struct JsonMessage<'a> {
    #[serde(borrow)]
    database: Cow<'a, str>,
    #[serde(rename = "retentionPolicy", borrow)]
    retention_policy: Cow<'a, str>,
    #[serde(borrow)]
    precision: Cow<'a, str>,
    #[serde(borrow)]
    points: Vec<&'a RawValue>,
}

impl<'a> JsonMessage<'a> {
    fn parse(bytes: &'a [u8]) -> Option<JsonMessage<'a>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The message as two messages of half the points each, in the encoder's layout.
    fn halves(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.points.len() < 2 {
            return None;
        }
        let (a, b) = self.points.split_at(self.points.len() / 2);
        Some((self.encode(a)?, self.encode(b)?))
    }

    fn encode(&self, points: &[&RawValue]) -> Option<Vec<u8>> {
        let mut out = b"{\"database\":".to_vec();
        serde_json::to_writer(&mut out, &self.database).ok()?;
        out.extend_from_slice(b",\"retentionPolicy\":");
        serde_json::to_writer(&mut out, &self.retention_policy).ok()?;
        out.extend_from_slice(b",\"precision\":");
        serde_json::to_writer(&mut out, &self.precision).ok()?;
        out.extend_from_slice(b",\"points\":[");
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(p.get().as_bytes());
        }
        out.extend_from_slice(b"]}");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u32, data: &[u8]) -> Vec<u8> {
        let mut f = ((data.len() + 4) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&kind.to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn mpub_framing_is_byte_exact() {
        let mut out = Vec::new();
        encode_mpub("web.shop", &[&b"a 1 1\n"[..], b"bc"], &mut out);
        let mut want = b"MPUB web.shop\n".to_vec();
        want.extend_from_slice(&[0, 0, 0, 20]); // count 4 + (4 + 6) + (4 + 2)
        want.extend_from_slice(&[0, 0, 0, 2]);
        want.extend_from_slice(&[0, 0, 0, 6]);
        want.extend_from_slice(b"a 1 1\n");
        want.extend_from_slice(&[0, 0, 0, 2]);
        want.extend_from_slice(b"bc");
        assert_eq!(out, want);
    }

    #[test]
    fn identify_and_auth_framing_is_byte_exact() {
        let mut out = Vec::new();
        encode_identify(b"{}", &mut out);
        assert_eq!(out, b"IDENTIFY\n\x00\x00\x00\x02{}");
        out.clear();
        encode_auth(b"s3cret", &mut out);
        assert_eq!(out, b"AUTH\n\x00\x00\x00\x06s3cret");
    }

    #[test]
    fn frames_decode_whole_split_and_back_to_back() {
        let mut bytes = frame(0, b"OK");
        bytes.extend(frame(
            1,
            b"E_BAD_TOPIC MPUB topic name \"a b\" is not valid",
        ));
        bytes.extend(frame(0, HEARTBEAT));
        // Fed one byte at a time, nothing decodes early and everything decodes in order.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode_frame(&mut buf).expect("valid") {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            [
                Frame::Response(b"OK".to_vec()),
                Frame::Error(b"E_BAD_TOPIC MPUB topic name \"a b\" is not valid".to_vec()),
                Frame::Response(HEARTBEAT.to_vec()),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut tiny = BytesMut::from(&[0u8, 0, 0, 2, 0, 0][..]);
        assert!(decode_frame(&mut tiny).is_err(), "size below 4");
        let mut huge = BytesMut::from(&[0x7f_u8, 0, 0, 0][..]);
        assert!(decode_frame(&mut huge).is_err(), "size above the cap");
        let mut kind = BytesMut::from(&frame(9, b"x")[..]);
        assert!(decode_frame(&mut kind).is_err(), "unknown type");
    }

    #[test]
    fn topic_rules_are_nsqds() {
        for ok in ["web.shop", "a", "A-b_c.9", "x#ephemeral", &"t".repeat(64)] {
            assert!(is_valid_topic(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "ü",
            "#ephemeral",
            "a#eph",
            &"t".repeat(65),
            &format!("{}#ephemeral", "t".repeat(60)),
        ] {
            assert!(!is_valid_topic(bad), "{bad}");
        }
        assert_eq!(
            topic_for("metrics.{ns}", "web").as_deref(),
            Ok("metrics.web")
        );
        let err = topic_for("{ns}", "web shop").expect_err("space");
        assert!(
            err.contains("\"web shop\"") && err.contains("output.topic"),
            "{err}"
        );
    }

    fn parts<'a>(c: &'a Cut<'_>) -> Vec<&'a [u8]> {
        c.messages.iter().map(|m| m.as_ref()).collect()
    }

    #[test]
    fn large_line_payloads_split_at_line_boundaries() {
        let payload = b"aaaa 1 1\nbbbb 2 2\ncccc 3 3\n";
        let c = split_messages(payload, 18, Format::Line);
        assert_eq!(
            parts(&c),
            [&b"aaaa 1 1\nbbbb 2 2\n"[..], &b"cccc 3 3\n"[..]]
        );
        assert_eq!(c.refused_points, 0);
        let c = split_messages(payload, 1 << 20, Format::Line);
        assert_eq!(parts(&c), [&payload[..]]);
        assert!(split_messages(b"", 18, Format::Line).messages.is_empty());
    }

    #[test]
    fn only_a_line_over_the_limit_is_refused_and_counted() {
        let payload = b"a 1 1\nbbbbbbbbbbbbbbbbbbbb 2 2\nc 3 3\nd 4 4\n";
        let c = split_messages(payload, 12, Format::Line);
        assert_eq!(parts(&c), [&b"a 1 1\n"[..], &b"c 3 3\nd 4 4\n"[..]]);
        assert_eq!(c.refused_points, 1);
        assert!(
            c.refused.as_deref().is_some_and(|r| r.contains("12 bytes")),
            "{:?}",
            c.refused
        );
    }

    #[test]
    fn json_messages_are_halved_until_they_fit() {
        let msg = br#"{"database":"web","retentionPolicy":"","precision":"s","points":[{"measurement":"a","timestamp":1,"tags":{},"fields":{"value":1.0}},{"measurement":"b","timestamp":2,"tags":{},"fields":{"value":2.0}},{"measurement":"c","timestamp":3,"tags":{},"fields":{"value":3.0}}]}"#;
        assert_eq!(points_in(msg, Format::Json), 3);
        let c = split_messages(msg, 150, Format::Json);
        assert_eq!(c.refused_points, 0);
        assert_eq!(c.messages.len(), 3, "{:?}", parts(&c));
        let mut names = Vec::new();
        for m in &c.messages {
            assert!(m.len() <= 150);
            let v: serde_json::Value = serde_json::from_slice(m).expect("valid JSON");
            assert_eq!(v["database"], "web");
            assert_eq!(v["precision"], "s");
            for p in v["points"].as_array().expect("points") {
                names.push(p["measurement"].as_str().expect("name").to_owned());
            }
        }
        assert_eq!(names, ["a", "b", "c"]);
        let c = split_messages(msg, 40, Format::Json);
        assert_eq!(c.refused_points, 3, "each point alone is over 40 bytes");
        assert!(c.messages.is_empty());
    }

    #[test]
    fn size_refusals_are_read_from_nsqds_texts() {
        assert_eq!(
            size_refusal("E_BAD_MESSAGE", "MPUB message too big 48000 > 20000"),
            Some(SizeRefusal::Message(Some(20000)))
        );
        assert_eq!(
            size_refusal("E_BAD_BODY", "MPUB body too big 6000000 > 5242880"),
            Some(SizeRefusal::Body(Some(5_242_880)))
        );
        assert_eq!(
            size_refusal("E_BAD_MESSAGE", "PUB message too big"),
            Some(SizeRefusal::Message(None))
        );
        assert_eq!(
            size_refusal("E_BAD_MESSAGE", "MPUB failed to read message body"),
            None
        );
        assert_eq!(size_refusal("E_MPUB_FAILED", "too big 2 > 1"), None);
    }

    #[test]
    fn data_errors_are_permanent_and_the_rest_retried() {
        for code in ["E_BAD_TOPIC", "E_BAD_MESSAGE", "E_BAD_BODY"] {
            assert!(error_is_permanent(code), "{code}");
        }
        for code in [
            "E_MPUB_FAILED",
            "E_PUB_FAILED",
            "E_INVALID",
            "E_UNAUTHORIZED",
            "E_NEW",
        ] {
            assert!(!error_is_permanent(code), "{code}");
        }
    }
}
