//! The `nsq` output: publishes every batch to nsqd over the NSQ TCP protocol.
//!
//! ```text
//! agent                                   nsqd
//!   "  V2"                          ->
//!   IDENTIFY\n <len> {json}         ->
//!                                   <-    response {json} (feature negotiation) or OK
//!   (TLS handshake)                 <->   when both said tls_v1; then nsqd sends OK over TLS
//!   (snappy | deflate from here)    <-    OK, compressed
//!   AUTH\n <len> <secret>           ->    when nsqd said auth_required
//!                                   <-    response {"identity", "identity_url", "permission_count"}
//!   MPUB <topic>\n <len> <n> [<len> <msg>]...  ->
//!                                   <-    response OK | error E_... | response _heartbeat_
//!   NOP\n                           ->    (the answer to every heartbeat)
//! ```
//!
//! One batch is one NSQ message (cut at line boundaries only when it is larger than the message
//! limit: the smaller of `output.max_message_bytes` and what nsqd's limit is known to be),
//! published with `MPUB` and counted delivered only on `OK`. When batches of one namespace wait
//! in the spool one after the other (a backlog, or `/post` outrunning the round trips), up to
//! [`RUN_LIMIT`] of them go in one `MPUB`, one message each, confirmed by one `OK`. nsqd's limits are learned: from a
//! `max_msg_size` in its IDENTIFY answer when it states one, and from its size refusals
//! (`E_BAD_MESSAGE ... message too big 48000 > 20000`, `E_BAD_BODY ... body too big`), after
//! which the rest of the batch is cut under the learned limit and sent again; only a single
//! point over the limit is refused for good.
//!
//! The connection is owned by one task, so heartbeats are answered while the output is idle,
//! not only while a batch is in flight. Its state machine is two states: no connection (connect
//! on the next batch), and connected (a batch to publish, a frame from nsqd to answer, or a
//! probed earlier address to move to).
//!
//! Failover: a connection is made to the first address that answers, in the configured order.
//! After a connection failed (I/O error, timeout, error frame, missed heartbeats) the search
//! starts at the address after the one that failed and wraps around, so an nsqd that accepts
//! connections but never answers cannot hold delivery. While on a fallback address a probe task
//! tries the earlier ones every `output.nsq_primary_retry_secs` on connections of its own, and
//! hands over a connection only once it answered IDENTIFY and a heartbeat round trip; delivery
//! never waits on it. Reconnect backoff is the delivery loop's capped backoff
//! ([`super::run_delivery`]): a failed batch returns [`DeliveryError::Retry`] and the loop waits
//! (0.1 s doubling up to 10 s) before the next attempt.

mod codec;
mod conn;
pub mod protocol;
mod tls;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::{BoxFuture, DeliveryError, EncodedBatch, Output, RunLimit};
use crate::config::{Config, Format, NsqCompression};
use conn::{Answer, Conn};
use protocol::{cut, points_in, size_refusal, Cut, SizeRefusal};
pub use protocol::{
    decode_frame, encode_identify, encode_mpub, error_is_permanent, is_valid_topic, mpub_body_len,
    split_messages, topic_for, Frame, HEARTBEAT, MAGIC, MAX_BODY_BYTES, MAX_TOPIC_LEN,
};

/// What one `MPUB` carries at most when the spool holds several batches of one namespace:
/// each batch stays one message, and one answer confirms them all, so a backlog costs one
/// round trip to nsqd per megabyte instead of one per batch. Well under nsqd's default
/// `--max-body-size` (5 MiB); a smaller limit learned from nsqd splits the run into several
/// `MPUB`s.
const RUN_LIMIT: RunLimit = RunLimit {
    batches: 64,
    bytes: 1024 * 1024,
};

/// Size refusals handled within one batch before its error counts as final; each one makes
/// the messages smaller, so a real nsqd needs a handful at most.
const MAX_SIZE_REFUSALS: usize = 32;

/// Connection settings, from the `[output]` table.
#[derive(Debug, Clone)]
pub struct NsqSettings {
    /// nsqd addresses, in order of preference.
    pub addrs: Vec<String>,
    /// Topic template.
    pub topic: String,
    /// Message encoding (decides how a large message is cut).
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
    /// TLS client configuration, when `output.nsq_tls` is on.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name nsqd's certificate must carry; empty: the host of the address.
    pub tls_server_name: String,
    /// Secret for `AUTH`.
    pub auth_secret: Option<String>,
    /// Compression asked of nsqd.
    pub compression: NsqCompression,
    /// Deflate level asked of nsqd.
    pub deflate_level: u32,
}

impl Default for NsqSettings {
    fn default() -> Self {
        NsqSettings {
            addrs: Vec::new(),
            topic: "{ns}".into(),
            format: Format::Line,
            max_message_bytes: 1024 * 1024,
            heartbeat: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            primary_retry: Duration::from_secs(60),
            hostname: String::new(),
            tls: None,
            tls_server_name: String::new(),
            auth_secret: None,
            compression: NsqCompression::None,
            deflate_level: 6,
        }
    }
}

impl NsqSettings {
    /// The settings of `config`'s output; fails when a TLS file cannot be used.
    pub fn from_config(config: &Config) -> Result<NsqSettings, String> {
        let o = &config.output;
        if !o.nsq_auth_secret.is_empty() {
            if let Some(path) = &config.source {
                warn_if_world_readable(path);
            }
        }
        Ok(NsqSettings {
            addrs: o.nsqd.clone(),
            topic: o.topic.clone(),
            format: o.format,
            max_message_bytes: o.max_message_bytes,
            heartbeat: Duration::from_millis(o.nsq_heartbeat_ms),
            timeout: Duration::from_millis(o.nsq_timeout_ms),
            primary_retry: Duration::from_secs(o.nsq_primary_retry_secs),
            hostname: crate::hostname(config),
            tls: tls::client_config(o)?,
            tls_server_name: o.nsq_tls_server_name.clone(),
            auth_secret: (!o.nsq_auth_secret.is_empty()).then(|| o.nsq_auth_secret.clone()),
            compression: o.nsq_compression,
            deflate_level: o.nsq_deflate_level,
        })
    }

    fn message_limit(&self) -> usize {
        // One message alone must still fit an MPUB body (count + size + data).
        self.max_message_bytes.min(MAX_BODY_BYTES - 8)
    }
}

/// Warns when the config file holding the AUTH secret can be read by users besides its owner.
fn warn_if_world_readable(path: &std::path::Path) {
    if let Some(who) = crate::files::readers_besides_owner(path) {
        warn!(config = %path.display(), readers = %who, "The config file holds output.nsq_auth_secret and can be read by users other than its owner; restrict it (chmod 600).");
    }
}

struct Request {
    /// Consecutive batches of one namespace, one message each, confirmed together.
    run: Vec<Arc<EncodedBatch>>,
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
        self.deliver_run(std::slice::from_ref(batch))
    }

    fn run_limit(&self) -> RunLimit {
        RUN_LIMIT
    }

    fn deliver_run<'a>(
        &'a mut self,
        run: &'a [Arc<EncodedBatch>],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let request = Request {
                run: run.to_vec(),
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

/// Limits learned from one nsqd, kept across its connections.
#[derive(Debug, Default, Clone, Copy)]
struct Learned {
    /// `--max-msg-size`.
    msg: Option<usize>,
    /// `--max-body-size`.
    body: Option<usize>,
}

/// The connection task's state: the connection, where to connect next, what was learned.
struct Link {
    conn: Option<Conn>,
    /// Where the next connection attempt starts: after the address that failed last.
    start: usize,
    learned: Vec<Learned>,
}

impl Link {
    fn message_limit(&self, s: &NsqSettings, index: usize) -> usize {
        let l = self.learned[index];
        let mut limit = s.message_limit();
        if let Some(m) = l.msg {
            limit = limit.min(m);
        }
        if let Some(b) = l.body {
            limit = limit.min(b.saturating_sub(8).max(1));
        }
        limit
    }

    fn body_limit(&self, index: usize) -> usize {
        self.learned[index]
            .body
            .map_or(MAX_BODY_BYTES, |b| b.min(MAX_BODY_BYTES))
    }

    /// Records a smaller limit for address `index`, logging each change once.
    fn learn(&mut self, s: &NsqSettings, index: usize, what: SizeRefusal, how: &str) {
        let l = &mut self.learned[index];
        let (slot, value, name) = match what {
            SizeRefusal::Message(Some(v)) => (&mut l.msg, v, "message size"),
            SizeRefusal::Body(Some(v)) => (&mut l.body, v, "MPUB body size"),
            _ => return,
        };
        if slot.is_some_and(|old| old <= value) {
            return;
        }
        *slot = Some(value);
        warn!(nsqd = %s.addrs[index], limit = value, learned_from = how,
            "Learned nsqd's {name} limit; messages are cut under it from now on.");
    }

    /// Takes what a new connection's IDENTIFY stated.
    fn adopt(&mut self, s: &NsqSettings, c: Conn) {
        if let Some(m) = c.stated_max_msg_size {
            self.learn(s, c.index, SizeRefusal::Message(Some(m)), "IDENTIFY");
        }
        self.conn = Some(c);
    }

    fn drop_conn(&mut self, n: usize, next: bool) {
        if let Some(c) = self.conn.take() {
            self.start = if next { (c.index + 1) % n } else { c.index };
        }
    }
}

/// The failover probe in flight, aborted when dropped.
struct Probe {
    /// The fallback address it tries to leave.
    from: usize,
    handle: JoinHandle<Conn>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Every `primary_retry`, tries the addresses before `from` (in order) on connections of its
/// own, until one answers IDENTIFY and a heartbeat round trip; returns that connection.
async fn probe(s: Arc<NsqSettings>, from: usize) -> Conn {
    loop {
        tokio::time::sleep(s.primary_retry).await;
        for i in 0..from {
            match Conn::open_probed(&s, i).await {
                Ok(c) => return c,
                Err(e) => {
                    // Once a period for as long as the primary is down: debug, not info.
                    debug!(task = "nsq-probe", nsqd = %s.addrs[i], reason = %e, "Earlier nsqd still unusable; staying on the fallback.")
                }
            }
        }
    }
}

async fn probed(probe: &mut Option<Probe>) -> Option<Conn> {
    match probe {
        Some(p) => (&mut p.handle).await.ok(),
        None => std::future::pending().await,
    }
}

enum Event {
    Request(Option<Request>),
    Frame(Result<Result<Frame, String>, tokio::time::error::Elapsed>),
    Probed(Option<Conn>),
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
    let n = s.addrs.len();
    let mut link = Link {
        conn: None,
        start: 0,
        learned: vec![Learned::default(); n],
    };
    let mut probe: Option<Probe> = None;
    let set_endpoint = |addr: &str| {
        if let Ok(mut g) = endpoint.lock() {
            if *g != addr {
                *g = addr.to_owned();
            }
        }
    };
    loop {
        // A probe runs exactly while the connection is on a fallback address.
        match link.conn.as_ref().map(|c| c.index) {
            Some(i) if i > 0 => {
                if probe.as_ref().is_none_or(|p| p.from != i) {
                    probe = Some(Probe {
                        from: i,
                        handle: tokio::spawn(self::probe(Arc::clone(&s), i)),
                    });
                }
            }
            _ => probe = None,
        }
        let event = match link.conn.as_mut() {
            None => tokio::select! {
                () = stop.cancelled() => return,
                r = rx.recv() => Event::Request(r),
            },
            Some(c) => tokio::select! {
                () = stop.cancelled() => return,
                r = rx.recv() => Event::Request(r),
                f = tokio::time::timeout_at(c.last_read + silence_limit, c.read_frame()) => Event::Frame(f),
                p = probed(&mut probe) => Event::Probed(p),
            },
        };
        match event {
            Event::Request(None) => return,
            Event::Request(Some(request)) => {
                let result = publish(&s, &mut link, &request.run).await;
                if let Some(c) = &link.conn {
                    set_endpoint(&c.addr);
                }
                let _ = request.reply.send(result);
            }
            Event::Frame(frame) => {
                if let Some(c) = link.conn.as_mut() {
                    if let Err(e) = answer_idle(c, frame, &s).await {
                        info!(nsqd = %c.addr, reason = %e, "Connection to nsqd lost while idle; reconnecting on the next batch.");
                        link.drop_conn(n, true);
                    }
                }
            }
            Event::Probed(better) => {
                probe = None;
                if let Some(better) = better {
                    let fallback = link.conn.as_ref().map(|c| (c.index, c.addr.clone()));
                    if let Some((index, addr)) = fallback.filter(|(i, _)| better.index < *i) {
                        info!(nsqd = %better.addr, fallback = %addr, index, "Back on an earlier nsqd.");
                        set_endpoint(&better.addr);
                        link.adopt(&s, better);
                    }
                }
            }
        }
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

/// Cuts every message of `pending` over `limit`, counting what cannot be made to fit.
fn recut<'a>(
    pending: &mut VecDeque<Cow<'a, [u8]>>,
    limit: usize,
    format: Format,
    refused: &mut Cut<'a>,
) {
    if pending.iter().all(|m| m.len() <= limit) {
        return;
    }
    let mut out = Cut::default();
    for m in pending.drain(..) {
        cut(m, limit, format, &mut out);
    }
    refused.refused_points += out.refused_points;
    if refused.refused.is_none() {
        refused.refused = out.refused;
    }
    pending.extend(out.messages);
}

/// Publishes a run of batches of one namespace (one message each), (re)connecting first when
/// needed; drops the connection on any failure.
///
/// Messages go out in as many `MPUB`s as the body limit needs; each `OK` takes its messages off
/// the run. A size refusal makes the rest smaller (under the limit nsqd stated, or half the
/// refused size when it stated none) and sends it again on a new connection to the same nsqd;
/// any other failure returns, and the delivery loop sends the whole run again (at least once).
async fn publish(
    s: &NsqSettings,
    link: &mut Link,
    run: &[Arc<EncodedBatch>],
) -> Result<(), DeliveryError> {
    let Some(ns) = run.first().map(|b| b.ns.as_str()) else {
        return Ok(());
    };
    let topic = topic_for(&s.topic, ns).map_err(DeliveryError::Reject)?;
    let n = s.addrs.len();
    let mut pending: VecDeque<Cow<'_, [u8]>> =
        run.iter().map(|b| Cow::Borrowed(&b.payload[..])).collect();
    let points = run.iter().fold(0u32, |sum, b| sum.saturating_add(b.points));
    let mut refused = Cut::default();
    let mut refusals = 0;
    loop {
        if link.conn.is_none() {
            let c = connect(s, link.start).await.map_err(DeliveryError::Retry)?;
            link.adopt(s, c);
        }
        let Some(index) = link.conn.as_ref().map(|c| c.index) else {
            return Err(DeliveryError::Retry("no nsqd connection".into()));
        };
        recut(
            &mut pending,
            link.message_limit(s, index),
            s.format,
            &mut refused,
        );
        if pending.is_empty() {
            break;
        }
        let body_limit = link.body_limit(index);
        let group = {
            let (mut k, mut body) = (0, 4);
            while k < pending.len() && body + 4 + pending[k].len() <= body_limit {
                body += 4 + pending[k].len();
                k += 1;
            }
            k.max(1)
        };
        let Some(c) = link.conn.as_mut() else {
            return Err(DeliveryError::Retry("no nsqd connection".into()));
        };
        c.wbuf.clear();
        encode_mpub(&topic, &pending.make_contiguous()[..group], &mut c.wbuf);
        if let Err(e) = c.write_wbuf(s.timeout).await {
            link.drop_conn(n, true);
            return Err(DeliveryError::Retry(e));
        }
        let (code, text) = match c.answer(Instant::now() + s.timeout, s.timeout).await {
            Ok(data) if data == b"OK" => {
                pending.drain(..group);
                continue;
            }
            Ok(data) => {
                let e = format!(
                    "nsqd {}: unexpected answer {:?} to MPUB",
                    c.addr,
                    String::from_utf8_lossy(&data)
                );
                link.drop_conn(n, true);
                return Err(DeliveryError::Retry(e));
            }
            Err(Answer::Failed(e)) => {
                link.drop_conn(n, true);
                return Err(DeliveryError::Retry(e));
            }
            Err(Answer::Error(code, text)) => (code, text),
        };
        let addr = c.addr.clone();
        warn!(topic, nsqd = %addr, code = %code, error = %text, "nsqd answered an error frame; reconnecting.");
        let refusal = size_refusal(&code, &text).filter(|_| refusals < MAX_SIZE_REFUSALS);
        let Some(refusal) = refusal else {
            link.drop_conn(n, true);
            let msg = format!("nsqd {addr} answered {code} {text} for topic {topic}");
            return Err(if error_is_permanent(&code) {
                DeliveryError::Reject(msg)
            } else {
                DeliveryError::Retry(msg)
            });
        };
        // nsqd closed the connection; the rest goes to the same nsqd, cut smaller.
        refusals += 1;
        link.drop_conn(n, false);
        let sent = &pending.make_contiguous()[..group];
        let largest = sent.iter().map(|m| m.len()).max().unwrap_or(0);
        match refusal {
            SizeRefusal::Message(Some(_)) | SizeRefusal::Body(Some(_)) => {
                link.learn(s, index, refusal, "an error frame");
                if let SizeRefusal::Body(Some(b)) = refusal {
                    if group == 1 {
                        link.learn(
                            s,
                            index,
                            SizeRefusal::Message(Some(b - 8)),
                            "an error frame",
                        );
                    }
                }
            }
            SizeRefusal::Message(None) => {
                // nsqd did not say its limit: halve, down to single points.
                let at = sent.iter().position(|m| m.len() == largest).unwrap_or(0);
                if points_in(&pending[at], s.format) <= 1 {
                    let alone = pending.remove(at).unwrap_or_default();
                    refused.refused_points += 1;
                    refused.refused.get_or_insert_with(|| {
                        format!(
                            "nsqd refused a single point of {} bytes as too big",
                            alone.len()
                        )
                    });
                } else {
                    let half = (largest / 2).max(1);
                    link.learn(s, index, SizeRefusal::Message(Some(half)), "halving");
                }
            }
            SizeRefusal::Body(None) => {
                let body = mpub_body_len(sent);
                link.learn(
                    s,
                    index,
                    SizeRefusal::Body(Some((body / 2).max(16))),
                    "halving",
                );
            }
        }
    }
    match refused.refused {
        Some(reason) if refused.refused_points > 0 => Err(DeliveryError::PartlyRefused {
            points: refused.refused_points.min(points),
            reason: format!("topic {topic}: {reason}"),
        }),
        _ => Ok(()),
    }
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
