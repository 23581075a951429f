//! The `nsq` output: publishes every batch to nsqd over the NSQ TCP protocol.
//!
//! ```text
//! agent                                   nsqd
//!   "  V2"                          ->
//!   IDENTIFY\n <len> {json}         ->
//!                                   <-    response {json} (feature negotiation) or OK
//!   MPUB <topic>\n <len> <n> [<len> <msg>]...  ->
//!                                   <-    response OK | error E_... | response _heartbeat_
//!   NOP\n                           ->    (the answer to every heartbeat)
//! ```
//!
//! One batch is one NSQ message (split at line boundaries only when it is larger than
//! `output.max_message_bytes`), published with `MPUB` and counted delivered only on `OK`.
//!
//! The connection is owned by one task, so heartbeats are answered while the output is idle,
//! not only while a batch is in flight. Its state machine is two states: no connection (connect
//! on the next batch), and connected (a batch to publish, or a frame from nsqd to answer).
//!
//! Failover: a connection is made to the first address that answers, in the configured order.
//! After a connection failed (I/O error, timeout, error frame, missed heartbeats) the search
//! starts at the address after the one that failed and wraps around, so an nsqd that accepts
//! connections but never answers cannot hold delivery. While on a fallback address the earlier
//! ones are tried again every `output.nsq_primary_retry_secs`, so delivery returns to the
//! primary once it is back. Reconnect backoff is the delivery loop's capped backoff
//! ([`super::run_delivery`]): a failed batch returns [`DeliveryError::Retry`] and the loop waits
//! (0.1 s doubling up to 10 s) before the next attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::{BoxFuture, DeliveryError, EncodedBatch, Output};
use crate::config::{Config, Format};

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
    out.extend_from_slice(b"IDENTIFY\n");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends `MPUB <topic>\n` + body size + message count + `[size, data]...`.
pub fn encode_mpub(topic: &str, messages: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(b"MPUB ");
    out.extend_from_slice(topic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(mpub_body_len(messages) as u32).to_be_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
}

/// The `MPUB` body size nsqd compares with `--max-body-size`: the count, then each size and data.
pub fn mpub_body_len(messages: &[&[u8]]) -> usize {
    4 + messages.iter().map(|m| 4 + m.len()).sum::<usize>()
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

/// Cuts `payload` into messages of at most `max` bytes, at line boundaries for line protocol.
///
/// The encoder already keeps batches under `output.max_message_bytes`; this only matters for
/// batches spooled under a larger limit, and keeps nsqd's `--max-msg-size` from refusing them.
pub fn split_messages(payload: &[u8], max: usize, format: Format) -> Result<Vec<&[u8]>, String> {
    if payload.len() <= max {
        return Ok(if payload.is_empty() {
            Vec::new()
        } else {
            vec![payload]
        });
    }
    if format == Format::Json {
        return Err(format!(
            "a JSON message of {} bytes is larger than the {max} bytes nsqd accepts and cannot be split",
            payload.len()
        ));
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < payload.len() {
        let rest = &payload[start..];
        if rest.len() <= max {
            out.push(rest);
            break;
        }
        match rest[..max].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                out.push(&rest[..=i]);
                start += i + 1;
            }
            None => {
                return Err(format!(
                    "a line of more than {max} bytes cannot be published (nsqd's message limit)"
                ))
            }
        }
    }
    Ok(out)
}

/// What nsqd's error frames mean for the batch that caused them.
///
/// Every error frame closes the connection (nsqd treats them as fatal) and it is re-established.
/// Codes about the data (`E_BAD_TOPIC`, `E_BAD_MESSAGE`, `E_BAD_BODY`) refuse the batch for good:
/// sending the same bytes again cannot succeed, and retrying would block every later batch.
/// Everything else (`E_MPUB_FAILED`, `E_PUB_FAILED`: nsqd is exiting; `E_INVALID`, `E_AUTH_*`,
/// `E_UNAUTHORIZED`: nsqd's configuration; unknown codes) is retried: the data waits in the spool.
pub fn error_is_permanent(code: &str) -> bool {
    matches!(code, "E_BAD_TOPIC" | "E_BAD_MESSAGE" | "E_BAD_BODY")
}

/// Connection settings, from the `[output]` table.
#[derive(Debug, Clone)]
pub struct NsqSettings {
    /// nsqd addresses, in order of preference.
    pub addrs: Vec<String>,
    /// Topic template.
    pub topic: String,
    /// Message encoding (decides whether a large message may be split).
    pub format: Format,
    /// Largest message.
    pub max_message_bytes: usize,
    /// Heartbeat interval asked of nsqd.
    pub heartbeat: Duration,
    /// Timeout of each connect, write and answer.
    pub timeout: Duration,
    /// While on a fallback, how often to try the earlier addresses again.
    pub primary_retry: Duration,
    /// The `hostname` sent in IDENTIFY.
    pub hostname: String,
}

impl NsqSettings {
    /// The settings of `config`'s output.
    pub fn from_config(config: &Config) -> NsqSettings {
        let o = &config.output;
        NsqSettings {
            addrs: o.nsqd.clone(),
            topic: o.topic.clone(),
            format: o.format,
            max_message_bytes: o.max_message_bytes,
            heartbeat: Duration::from_millis(o.nsq_heartbeat_ms),
            timeout: Duration::from_millis(o.nsq_timeout_ms),
            primary_retry: Duration::from_secs(o.nsq_primary_retry_secs),
            hostname: crate::hostname(config),
        }
    }

    fn message_limit(&self) -> usize {
        // One message alone must still fit an MPUB body (count + size + data).
        self.max_message_bytes.min(MAX_BODY_BYTES - 8)
    }
}

#[derive(Serialize)]
struct Identify<'a> {
    client_id: &'a str,
    hostname: &'a str,
    user_agent: String,
    heartbeat_interval: u64,
    feature_negotiation: bool,
}

/// The parts of nsqd's IDENTIFY answer this client cares about.
#[derive(Deserialize, Default)]
struct IdentifyAnswer {
    #[serde(default)]
    version: String,
    #[serde(default)]
    auth_required: bool,
}

/// One open, identified connection to nsqd.
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Index into the address list.
    index: usize,
    addr: String,
    last_read: Instant,
    /// When to try the earlier addresses again (fallback connections only).
    retry_primary_at: Option<Instant>,
}

impl Conn {
    /// Connects to `addr`, sends the magic and IDENTIFY, and waits for the answer.
    async fn open(s: &NsqSettings, index: usize) -> Result<Conn, String> {
        let addr = &s.addrs[index];
        let stream = tokio::time::timeout(s.timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| format!("nsqd {addr}: connect timed out after {:?}", s.timeout))?
            .map_err(|e| format!("nsqd {addr}: cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: Vec::with_capacity(64 * 1024),
            index,
            addr: addr.clone(),
            last_read: Instant::now(),
            retry_primary_at: (index > 0).then(|| Instant::now() + s.primary_retry),
        };
        let client_id = s.hostname.split('.').next().unwrap_or(&s.hostname);
        let body = serde_json::to_vec(&Identify {
            client_id,
            hostname: &s.hostname,
            user_agent: format!("agent/{}", env!("CARGO_PKG_VERSION")),
            heartbeat_interval: s.heartbeat.as_millis() as u64,
            feature_negotiation: true,
        })
        .map_err(|e| format!("cannot encode IDENTIFY: {e}"))?;
        let mut cmd = MAGIC.to_vec();
        encode_identify(&body, &mut cmd);
        conn.write(&cmd, s.timeout).await?;
        let answer = conn
            .answer(Instant::now() + s.timeout, s.timeout)
            .await
            .map_err(|e| match e {
                Answer::Error(code, text) => format!("nsqd {addr} refused IDENTIFY: {code} {text}"),
                Answer::Failed(e) => e,
            })?;
        if answer.first() == Some(&b'{') {
            let info: IdentifyAnswer = serde_json::from_slice(&answer)
                .map_err(|e| format!("nsqd {addr}: unreadable IDENTIFY answer: {e}"))?;
            if info.auth_required {
                return Err(format!(
                    "nsqd {addr} requires AUTH, which this agent does not support"
                ));
            }
            debug!(nsqd = %addr, version = %info.version, "Identified to nsqd.");
        } else if answer != b"OK" {
            return Err(format!(
                "nsqd {addr}: unexpected IDENTIFY answer {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
        Ok(conn)
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("nsqd {}: write failed: {e}", self.addr)),
            Err(_) => Err(format!(
                "nsqd {}: write timed out after {timeout:?}",
                self.addr
            )),
        }
    }

    /// The next frame; cancel-safe (a partly read frame stays in the buffer).
    async fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) =
                decode_frame(&mut self.rbuf).map_err(|e| format!("nsqd {}: {e}", self.addr))?
            {
                self.last_read = Instant::now();
                return Ok(f);
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| format!("nsqd {}: read failed: {e}", self.addr))?;
            if n == 0 {
                return Err(format!("nsqd {} closed the connection", self.addr));
            }
        }
    }

    /// Waits until `deadline` for the answer to a command, answering heartbeats meanwhile.
    async fn answer(&mut self, deadline: Instant, timeout: Duration) -> Result<Vec<u8>, Answer> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.read_frame())
                .await
                .map_err(|_| {
                    Answer::Failed(format!("nsqd {}: no answer within {timeout:?}", self.addr))
                })?
                .map_err(Answer::Failed)?;
            match frame {
                Frame::Response(data) if data == HEARTBEAT => {
                    self.write(b"NOP\n", timeout)
                        .await
                        .map_err(Answer::Failed)?;
                }
                Frame::Response(data) => return Ok(data),
                Frame::Error(data) => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let (code, rest) = text.split_once(' ').unwrap_or((&text, ""));
                    return Err(Answer::Error(code.to_owned(), rest.to_owned()));
                }
                Frame::Message(_) => {
                    return Err(Answer::Failed(format!(
                        "nsqd {}: sent a message to a publisher",
                        self.addr
                    )))
                }
            }
        }
    }

    /// Publishes `messages` to `topic` in as many `MPUB`s as the body limit needs.
    async fn publish(
        &mut self,
        s: &NsqSettings,
        topic: &str,
        messages: &[&[u8]],
    ) -> Result<(), DeliveryError> {
        let mut rest = messages;
        while !rest.is_empty() {
            let mut n = 0;
            let mut body = 4;
            while n < rest.len() && body + 4 + rest[n].len() <= MAX_BODY_BYTES {
                body += 4 + rest[n].len();
                n += 1;
            }
            let (group, tail) = rest.split_at(n.max(1));
            rest = tail;
            let mut cmd = std::mem::take(&mut self.wbuf);
            cmd.clear();
            encode_mpub(topic, group, &mut cmd);
            let written = self.write(&cmd, s.timeout).await;
            self.wbuf = cmd;
            written.map_err(DeliveryError::Retry)?;
            match self.answer(Instant::now() + s.timeout, s.timeout).await {
                Ok(data) if data == b"OK" => {}
                Ok(data) => {
                    return Err(DeliveryError::Retry(format!(
                        "nsqd {}: unexpected answer {:?} to MPUB",
                        self.addr,
                        String::from_utf8_lossy(&data)
                    )))
                }
                Err(Answer::Failed(e)) => return Err(DeliveryError::Retry(e)),
                Err(Answer::Error(code, text)) => {
                    warn!(topic, nsqd = %self.addr, code = %code, error = %text, "nsqd answered an error frame; reconnecting.");
                    let msg = format!(
                        "nsqd {} answered {code} {text} for topic {topic}",
                        self.addr
                    );
                    return Err(if error_is_permanent(&code) {
                        DeliveryError::Reject(msg)
                    } else {
                        DeliveryError::Retry(msg)
                    });
                }
            }
        }
        Ok(())
    }
}

enum Answer {
    /// nsqd answered an error frame: code and description.
    Error(String, String),
    /// No usable answer (I/O, timeout, protocol).
    Failed(String),
}

struct Request {
    batch: Arc<EncodedBatch>,
    reply: oneshot::Sender<Result<(), DeliveryError>>,
}

struct Worker {
    tx: mpsc::Sender<Request>,
    _stop: DropGuard,
}

/// Publishes batches to nsqd; see the module documentation.
pub struct NsqOutput {
    settings: Arc<NsqSettings>,
    endpoint: Arc<Mutex<String>>,
    worker: Option<Worker>,
}

impl NsqOutput {
    /// An output for `settings`; the connection task starts with the first batch.
    pub fn new(settings: NsqSettings) -> NsqOutput {
        let endpoint = Arc::new(Mutex::new(format!("nsqd {}", settings.addrs.join(","))));
        NsqOutput {
            settings: Arc::new(settings),
            endpoint,
            worker: None,
        }
    }

    fn worker(&mut self) -> &Worker {
        self.worker.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(1);
            let stop = CancellationToken::new();
            tokio::spawn(run_connection(
                Arc::clone(&self.settings),
                rx,
                stop.clone(),
                Arc::clone(&self.endpoint),
            ));
            Worker {
                tx,
                _stop: stop.drop_guard(),
            }
        })
    }
}

impl Output for NsqOutput {
    fn endpoint(&self) -> String {
        self.endpoint.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let request = Request {
                batch: Arc::clone(batch),
                reply,
            };
            let stopped = || DeliveryError::Retry("the nsq connection task stopped".into());
            self.worker()
                .tx
                .send(request)
                .await
                .map_err(|_| stopped())?;
            answer.await.unwrap_or_else(|_| Err(stopped()))
        })
    }
}

/// The connection task: publishes requested batches and answers nsqd's heartbeats until
/// `stop` is cancelled or the output is dropped.
async fn run_connection(
    s: Arc<NsqSettings>,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
    endpoint: Arc<Mutex<String>>,
) {
    // nsqd closes a client silent for two heartbeat intervals; we give nsqd the same grace.
    let silence_limit = s.heartbeat * 2 + s.timeout;
    let mut conn: Option<Conn> = None;
    // Where the next connection attempt starts: after the address that failed last.
    let mut start = 0;
    loop {
        let request = match conn.as_mut() {
            None => tokio::select! {
                () = stop.cancelled() => return,
                r = rx.recv() => r,
            },
            Some(c) => {
                let idle = tokio::select! {
                    () = stop.cancelled() => return,
                    r = rx.recv() => Ok(r),
                    f = tokio::time::timeout_at(c.last_read + silence_limit, c.read_frame()) => Err(f),
                };
                match idle {
                    Ok(r) => r,
                    Err(frame) => {
                        if let Err(e) = answer_idle(c, frame, &s).await {
                            info!(nsqd = %c.addr, reason = %e, "Connection to nsqd lost while idle; reconnecting on the next batch.");
                            start = (c.index + 1) % s.addrs.len();
                            conn = None;
                        }
                        continue;
                    }
                }
            }
        };
        let Some(request) = request else { return };
        let result = publish(&s, &mut conn, &mut start, &request.batch).await;
        if let Some(c) = &conn {
            if let Ok(mut g) = endpoint.lock() {
                if *g != c.addr {
                    g.clone_from(&c.addr);
                }
            }
        }
        let _ = request.reply.send(result);
    }
}

/// Handles a frame nsqd sent while no batch was in flight.
async fn answer_idle(
    c: &mut Conn,
    frame: Result<Result<Frame, String>, tokio::time::error::Elapsed>,
    s: &NsqSettings,
) -> Result<(), String> {
    match frame {
        Err(_) => Err(format!(
            "nothing heard from nsqd for {:?}, not even a heartbeat",
            s.heartbeat * 2 + s.timeout
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Frame::Response(d))) if d == HEARTBEAT => c.write(b"NOP\n", s.timeout).await,
        Ok(Ok(Frame::Error(d))) => Err(format!(
            "nsqd sent an error frame: {}",
            String::from_utf8_lossy(&d)
        )),
        Ok(Ok(other)) => Err(format!("unexpected frame from nsqd: {other:?}")),
    }
}

/// Publishes one batch, (re)connecting first when needed; drops the connection on any failure.
async fn publish(
    s: &NsqSettings,
    conn: &mut Option<Conn>,
    start: &mut usize,
    batch: &EncodedBatch,
) -> Result<(), DeliveryError> {
    let topic = topic_for(&s.topic, &batch.ns).map_err(DeliveryError::Reject)?;
    let messages = split_messages(&batch.payload, s.message_limit(), s.format)
        .map_err(|e| DeliveryError::Reject(format!("topic {topic}: {e}")))?;
    if messages.is_empty() {
        return Ok(());
    }
    try_primary(s, conn).await;
    if conn.is_none() {
        *conn = Some(connect(s, *start).await.map_err(DeliveryError::Retry)?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(DeliveryError::Retry("no nsqd connection".into()));
    };
    let result = c.publish(s, &topic, &messages).await;
    if result.is_err() {
        *start = (c.index + 1) % s.addrs.len();
        *conn = None;
    }
    result
}

/// Connects to the first nsqd that answers, in the configured order beginning at `start`.
async fn connect(s: &NsqSettings, start: usize) -> Result<Conn, String> {
    let mut errors = Vec::new();
    let n = s.addrs.len();
    for i in (0..n).map(|k| (start + k) % n) {
        match Conn::open(s, i).await {
            Ok(c) => {
                if i > 0 {
                    warn!(nsqd = %c.addr, primary = %s.addrs[0], "Earlier nsqd addresses are unreachable; publishing to a fallback.");
                } else {
                    info!(nsqd = %c.addr, "Connected to nsqd.");
                }
                return Ok(c);
            }
            Err(e) => errors.push(e),
        }
    }
    Err(format!("no nsqd reachable: {}", errors.join("; ")))
}

/// On a fallback connection, now and then tries the earlier addresses and moves back to one.
async fn try_primary(s: &NsqSettings, conn: &mut Option<Conn>) {
    let Some(c) = conn.as_mut() else { return };
    let Some(at) = c.retry_primary_at else { return };
    if Instant::now() < at {
        return;
    }
    for i in 0..c.index {
        if let Ok(better) = Conn::open(s, i).await {
            info!(nsqd = %better.addr, fallback = %c.addr, "Back on an earlier nsqd.");
            *conn = Some(better);
            return;
        }
    }
    c.retry_primary_at = Some(Instant::now() + s.primary_retry);
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
        encode_mpub("web.shop", &[b"a 1 1\n", b"bc"], &mut out);
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
    fn identify_framing_is_byte_exact() {
        let mut out = Vec::new();
        encode_identify(b"{}", &mut out);
        assert_eq!(out, b"IDENTIFY\n\x00\x00\x00\x02{}");
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

    #[test]
    fn large_line_payloads_split_at_line_boundaries() {
        let payload = b"aaaa 1 1\nbbbb 2 2\ncccc 3 3\n";
        let parts = split_messages(payload, 18, Format::Line).expect("splits");
        assert_eq!(parts, [&b"aaaa 1 1\nbbbb 2 2\n"[..], &b"cccc 3 3\n"[..]]);
        assert_eq!(
            split_messages(payload, 1 << 20, Format::Line).expect("fits"),
            [&payload[..]]
        );
        assert!(
            split_messages(payload, 5, Format::Line).is_err(),
            "a line over the limit"
        );
        assert!(
            split_messages(payload, 18, Format::Json).is_err(),
            "JSON cannot be cut"
        );
        assert!(split_messages(b"", 18, Format::Line)
            .expect("empty")
            .is_empty());
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
