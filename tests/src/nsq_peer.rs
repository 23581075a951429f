//! An NSQ protocol peer: the TCP side of nsqd, written from the NSQ TCP protocol spec and nsqd
//! 1.x's behaviour, for the end-to-end tests and the pipeline benchmark.
//!
//! It speaks `  V2`, IDENTIFY (with feature negotiation), PUB, MPUB and NOP; answers with
//! response and error frames framed as nsqd frames them; sends heartbeats at the negotiated
//! interval and closes a client that stays silent for two of them, as nsqd does; enforces
//! nsqd's default limits (`--max-msg-size` 1 MiB -> `E_BAD_MESSAGE`, `--max-body-size` 5 MiB ->
//! `E_BAD_BODY`) and topic rules (`E_BAD_TOPIC`). Every error frame closes the connection, as
//! nsqd's fatal client errors do. It records what it received per topic, and can be told to
//! answer errors, stall (never answer), or drop its connections; it can be stopped and restarted
//! on the same port. Every loop stops by itself: on `stop`, on drop, on EOF or on a dropped
//! connection.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// nsqd's defaults, which the peer enforces.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// `--max-msg-size`.
    pub max_msg_size: usize,
    /// `--max-body-size`.
    pub max_body_size: usize,
    /// Heartbeat interval before IDENTIFY changes it (nsqd: half of `--client-timeout`, 30 s).
    pub default_heartbeat: Duration,
    /// `--max-heartbeat-interval`.
    pub max_heartbeat: Duration,
    /// Keep message bodies (tests) or only count them (benchmarks).
    pub record_bodies: bool,
    /// Answer `feature_negotiation` with the feature JSON (nsqd 1.x); `false` answers a plain
    /// `OK`, as an nsqd without feature negotiation does.
    pub negotiate: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            default_heartbeat: Duration::from_secs(30),
            max_heartbeat: Duration::from_secs(60),
            record_bodies: true,
            negotiate: true,
        }
    }
}

/// How the peer answers publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Behaviour {
    Normal,
    /// Answer the next `times` publishes with error frame `code` (and close, as nsqd does).
    Fail {
        code: String,
        times: usize,
    },
    /// Accept connections, read nothing, answer nothing, send no heartbeats: a hung nsqd.
    Stall,
}

/// What the peer received, across restarts.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Message bodies per topic (when `record_bodies`).
    pub messages: BTreeMap<String, Vec<Vec<u8>>>,
    /// Messages per topic.
    pub message_counts: BTreeMap<String, u64>,
    /// Newline-terminated lines (points, for line protocol) per topic.
    pub line_counts: BTreeMap<String, u64>,
    /// IDENTIFY bodies, in order.
    pub identifies: Vec<serde_json::Value>,
    /// `NOP`s received.
    pub nops: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed because the client missed heartbeats.
    pub missed_heartbeat_closes: u64,
    /// Error frames sent, as sent.
    pub errors_sent: Vec<String>,
}

struct State {
    opts: PeerOptions,
    behaviour: Mutex<Behaviour>,
    /// Send a heartbeat just before every publish answer (nsqd may interleave them anywhere).
    heartbeat_before_answer: AtomicBool,
    received: Mutex<Received>,
    drop_generation: AtomicU64,
    open: AtomicU64,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// A running (or stopped) NSQ peer on a fixed loopback port.
pub struct NsqPeer {
    port: u16,
    state: Arc<State>,
    running: Option<Running>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NsqPeer {
    /// A peer with nsqd's defaults on a free port.
    pub fn start() -> NsqPeer {
        NsqPeer::start_with(PeerOptions::default())
    }

    /// A peer with `opts` on a free port.
    pub fn start_with(opts: PeerOptions) -> NsqPeer {
        NsqPeer::start_on(crate::free_port(), opts)
    }

    /// A peer with `opts` on `port`.
    pub fn start_on(port: u16, opts: PeerOptions) -> NsqPeer {
        let mut peer = NsqPeer::stopped_on(port, opts);
        peer.restart();
        peer
    }

    /// A peer that does not listen yet (an nsqd that is down); [`NsqPeer::restart`] starts it.
    pub fn stopped_on(port: u16, opts: PeerOptions) -> NsqPeer {
        NsqPeer {
            port,
            state: Arc::new(State {
                opts,
                behaviour: Mutex::new(Behaviour::Normal),
                heartbeat_before_answer: AtomicBool::new(false),
                received: Mutex::default(),
                drop_generation: AtomicU64::new(0),
                open: AtomicU64::new(0),
            }),
            running: None,
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts listening again on the same port (what it received so far is kept).
    pub fn restart(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = bind_retrying(self.port);
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::clone(&self.state);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("nsq-peer-{}", self.port))
            .spawn(move || accept_loop(listener, state, flag))
            .expect("spawn peer");
        self.running = Some(Running { stop, thread });
    }

    /// Closes the listener and every connection, and waits for them (an nsqd going down).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop.store(true, Ordering::SeqCst);
            let _ = r.thread.join();
        }
    }

    /// Answers the next `times` publishes with error frame `code`, closing the connection.
    pub fn fail_next(&self, code: &str, times: usize) {
        *lock(&self.state.behaviour) = Behaviour::Fail {
            code: code.to_owned(),
            times,
        };
    }

    /// Stops answering anything (`true`), or resumes normal service (`false`).
    pub fn stall(&self, on: bool) {
        *lock(&self.state.behaviour) = if on {
            Behaviour::Stall
        } else {
            Behaviour::Normal
        };
    }

    /// Sends a heartbeat right before every publish answer, so the client must answer a
    /// heartbeat while it waits for `OK`.
    pub fn heartbeat_before_answer(&self, on: bool) {
        self.state
            .heartbeat_before_answer
            .store(on, Ordering::SeqCst);
    }

    /// Closes every open connection now (the listener stays up).
    pub fn drop_connections(&self) {
        self.state.drop_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A snapshot of what was received.
    pub fn received(&self) -> Received {
        lock(&self.state.received).clone()
    }

    /// Message bodies received on `topic`.
    pub fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        lock(&self.state.received)
            .messages
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Every line received on `topic`, in order.
    pub fn lines(&self, topic: &str) -> Vec<String> {
        self.messages(topic)
            .iter()
            .flat_map(|m| {
                String::from_utf8_lossy(m)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Lines received on `topic` (counted even when bodies are not recorded).
    pub fn line_count(&self, topic: &str) -> u64 {
        lock(&self.state.received)
            .line_counts
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// Lines received on every topic.
    pub fn total_lines(&self) -> u64 {
        lock(&self.state.received).line_counts.values().sum()
    }

    /// Topics that received something.
    pub fn topics(&self) -> Vec<String> {
        lock(&self.state.received)
            .message_counts
            .keys()
            .cloned()
            .collect()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.state.open.load(Ordering::SeqCst)
    }
}

impl Drop for NsqPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `port`, retrying briefly: a port just released by `stop` may take a moment.
fn bind_retrying(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() >= deadline => panic!("peer cannot bind port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                lock(&state.received).connections += 1;
                let state = Arc::clone(&state);
                let stop = Arc::clone(&stop);
                if let Ok(h) = std::thread::Builder::new()
                    .name("nsq-peer-conn".into())
                    .spawn(move || {
                        state.open.fetch_add(1, Ordering::SeqCst);
                        serve(stream, &state, &stop);
                        state.open.fetch_sub(1, Ordering::SeqCst);
                    })
                {
                    conns.push(h);
                }
                conns.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    drop(listener);
    for h in conns {
        let _ = h.join();
    }
}

/// A fatal client error: the error frame's text; the connection closes after it.
struct Fatal(String);

fn fatal(code: &str, desc: impl std::fmt::Display) -> Fatal {
    Fatal(format!("{code} {desc}"))
}

enum Step {
    /// More bytes are needed.
    Incomplete,
    /// A command of `used` bytes was handled; `answer` is its response frame data, if any.
    Done {
        used: usize,
        answer: Option<Vec<u8>>,
    },
}

struct Conn<'a> {
    stream: TcpStream,
    state: &'a State,
    identified: bool,
    /// Set by IDENTIFY: the heartbeat ticker restarts with the negotiated interval.
    identified_now: bool,
    heartbeat: Option<Duration>,
}

fn serve(stream: TcpStream, state: &State, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let generation = state.drop_generation.load(Ordering::SeqCst);
    let mut c = Conn {
        stream,
        state,
        identified: false,
        identified_now: false,
        heartbeat: Some(state.opts.default_heartbeat),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut magic = false;
    let mut last_recv = Instant::now();
    let mut next_heartbeat = c.heartbeat.map(|h| Instant::now() + h);
    loop {
        if stop.load(Ordering::SeqCst) || state.drop_generation.load(Ordering::SeqCst) != generation
        {
            return;
        }
        match c.stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_recv = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        let stalled = *lock(&state.behaviour) == Behaviour::Stall;
        if !magic && buf.len() >= 4 {
            if &buf[..4] != b"  V2" {
                c.send_error("E_BAD_PROTOCOL bad protocol magic");
                return;
            }
            buf.drain(..4);
            magic = true;
        }
        if magic && !stalled {
            let mut off = 0;
            loop {
                match c.step(&buf[off..]) {
                    Ok(Step::Incomplete) => break,
                    Ok(Step::Done { used, answer }) => {
                        off += used;
                        if let Some(a) = answer {
                            if !c.send(0, &a) {
                                return;
                            }
                        }
                        if used > 0 && c.heartbeat_changed() {
                            next_heartbeat = c.heartbeat.map(|h| Instant::now() + h);
                        }
                    }
                    Err(Fatal(text)) => {
                        c.send_error(&text);
                        return;
                    }
                }
            }
            buf.drain(..off);
        }
        if stalled {
            continue;
        }
        if let (Some(h), Some(at)) = (c.heartbeat, next_heartbeat) {
            if Instant::now() >= at {
                if !c.send(0, b"_heartbeat_") {
                    return;
                }
                lock(&state.received).heartbeats_sent += 1;
                next_heartbeat = Some(at + h);
            }
            if last_recv.elapsed() > h * 2 {
                lock(&state.received).missed_heartbeat_closes += 1;
                return;
            }
        }
    }
}

fn read_len(b: &[u8]) -> Option<i32> {
    b.get(..4)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn valid_topic(name: &str) -> bool {
    if name.is_empty() || name.len() > 64 {
        return false;
    }
    let base = name.strip_suffix("#ephemeral").unwrap_or(name);
    !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Conn<'_> {
    fn send(&mut self, kind: u32, data: &[u8]) -> bool {
        let mut frame = Vec::with_capacity(8 + data.len());
        frame.extend_from_slice(&((data.len() + 4) as u32).to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.extend_from_slice(data);
        self.stream.write_all(&frame).is_ok()
    }

    fn send_error(&mut self, text: &str) {
        lock(&self.state.received).errors_sent.push(text.to_owned());
        self.send(1, text.as_bytes());
    }

    fn heartbeat_changed(&mut self) -> bool {
        // IDENTIFY restarts nsqd's heartbeat ticker; the flag is consumed once.
        std::mem::take(&mut self.identified_now)
    }

    /// Parses and handles one command at the start of `b`.
    fn step(&mut self, b: &[u8]) -> Result<Step, Fatal> {
        let Some(nl) = b.iter().position(|&x| x == b'\n') else {
            if b.len() > 4096 {
                return Err(fatal("E_INVALID", "command line too long"));
            }
            return Ok(Step::Incomplete);
        };
        let mut line = &b[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let params: Vec<&[u8]> = line.split(|&x| x == b' ').collect();
        let rest = &b[nl + 1..];
        let head = nl + 1;
        let opts = &self.state.opts;
        match params[0] {
            b"NOP" => {
                lock(&self.state.received).nops += 1;
                Ok(Step::Done {
                    used: head,
                    answer: None,
                })
            }
            b"IDENTIFY" => {
                if self.identified {
                    return Err(fatal("E_INVALID", "cannot IDENTIFY in current state"));
                }
                let Some(len) = read_len(rest) else {
                    return Ok(Step::Incomplete);
                };
                if i64::from(len) > opts.max_body_size as i64 {
                    return Err(fatal(
                        "E_BAD_BODY",
                        format!("IDENTIFY body too big {len} > {}", opts.max_body_size),
                    ));
                }
                if len <= 0 {
                    return Err(fatal(
                        "E_BAD_BODY",
                        format!("IDENTIFY invalid body size {len}"),
                    ));
                }
                let len = len as usize;
                let Some(body) = rest.get(4..4 + len) else {
                    return Ok(Step::Incomplete);
                };
                let v: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|_| fatal("E_BAD_BODY", "IDENTIFY failed to decode JSON body"))?;
                match v
                    .get("heartbeat_interval")
                    .and_then(serde_json::Value::as_i64)
                {
                    None | Some(0) => {}
                    Some(-1) => self.heartbeat = None,
                    Some(ms) if ms >= 1000 && ms <= opts.max_heartbeat.as_millis() as i64 => {
                        self.heartbeat = Some(Duration::from_millis(ms as u64));
                    }
                    Some(ms) => {
                        return Err(fatal(
                            "E_BAD_BODY",
                            format!("IDENTIFY heartbeat interval ({ms}) is invalid"),
                        ))
                    }
                }
                let negotiate = v
                    .get("feature_negotiation")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                lock(&self.state.received).identifies.push(v);
                self.identified = true;
                self.identified_now = true;
                let answer = if negotiate && opts.negotiate {
                    serde_json::json!({
                        "max_rdy_count": 2500,
                        "version": "1.3.0",
                        "max_msg_timeout": 900000,
                        "msg_timeout": 60000,
                        "tls_v1": false,
                        "deflate": false,
                        "deflate_level": 6,
                        "max_deflate_level": 6,
                        "snappy": false,
                        "sample_rate": 0,
                        "auth_required": false,
                        "output_buffer_size": 16384,
                        "output_buffer_timeout": 250
                    })
                    .to_string()
                    .into_bytes()
                } else {
                    b"OK".to_vec()
                };
                Ok(Step::Done {
                    used: head + 4 + len,
                    answer: Some(answer),
                })
            }
            b"PUB" | b"MPUB" => {
                let multi = params[0] == b"MPUB";
                let cmd = if multi { "MPUB" } else { "PUB" };
                if params.len() < 2 {
                    return Err(fatal(
                        "E_INVALID",
                        format!("{cmd} insufficient number of parameters"),
                    ));
                }
                let topic = String::from_utf8_lossy(params[1]).into_owned();
                if !valid_topic(&topic) {
                    return Err(fatal(
                        "E_BAD_TOPIC",
                        format!("{cmd} topic name {topic:?} is not valid"),
                    ));
                }
                let Some(len) = read_len(rest) else {
                    return Ok(Step::Incomplete);
                };
                let (limit, code) = if multi {
                    (opts.max_body_size, "E_BAD_BODY")
                } else {
                    (opts.max_msg_size, "E_BAD_MESSAGE")
                };
                if len <= 0 {
                    let what = if multi { "body" } else { "message body" };
                    return Err(fatal(code, format!("{cmd} invalid {what} size {len}")));
                }
                if len as usize > limit {
                    let what = if multi { "body" } else { "message" };
                    return Err(fatal(code, format!("{cmd} {what} too big {len} > {limit}")));
                }
                let len = len as usize;
                let Some(body) = rest.get(4..4 + len) else {
                    return Ok(Step::Incomplete);
                };
                let messages = if multi {
                    self.read_mpub(body)?
                } else {
                    vec![body]
                };
                let used = head + 4 + len;
                let mut behaviour = lock(&self.state.behaviour);
                match &mut *behaviour {
                    Behaviour::Stall => return Ok(Step::Incomplete),
                    Behaviour::Fail { code, times } if *times > 0 => {
                        *times -= 1;
                        let text = format!("{code} {cmd} failed (the test peer was told to fail)");
                        if *times == 0 {
                            *behaviour = Behaviour::Normal;
                        }
                        return Err(Fatal(text));
                    }
                    _ => {}
                }
                drop(behaviour);
                if self.state.heartbeat_before_answer.load(Ordering::SeqCst) {
                    if !self.send(0, b"_heartbeat_") {
                        return Err(fatal("E_INVALID", "cannot send a heartbeat"));
                    }
                    lock(&self.state.received).heartbeats_sent += 1;
                }
                let mut r = lock(&self.state.received);
                *r.message_counts.entry(topic.clone()).or_default() += messages.len() as u64;
                let lines: usize = messages
                    .iter()
                    .map(|m| m.iter().filter(|&&x| x == b'\n').count())
                    .sum();
                *r.line_counts.entry(topic.clone()).or_default() += lines as u64;
                if opts.record_bodies {
                    r.messages
                        .entry(topic)
                        .or_default()
                        .extend(messages.iter().map(|m| m.to_vec()));
                }
                Ok(Step::Done {
                    used,
                    answer: Some(b"OK".to_vec()),
                })
            }
            other => Err(fatal(
                "E_INVALID",
                format!("invalid command {}", String::from_utf8_lossy(other)),
            )),
        }
    }

    /// Splits an MPUB body (count, then size-prefixed messages) with nsqd's checks, and also
    /// refuses a body whose stated size disagrees with its messages (nsqd would desynchronise).
    fn read_mpub<'b>(&self, body: &'b [u8]) -> Result<Vec<&'b [u8]>, Fatal> {
        let opts = &self.state.opts;
        let n = read_len(body)
            .ok_or_else(|| fatal("E_BAD_BODY", "MPUB failed to read message count"))?;
        let max_messages = (opts.max_body_size as i64 - 4) / 5;
        if n <= 0 || i64::from(n) > max_messages {
            return Err(fatal(
                "E_BAD_BODY",
                format!("MPUB invalid message count {n}"),
            ));
        }
        let mut at = 4;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let size = read_len(&body[at..]).ok_or_else(|| {
                fatal(
                    "E_BAD_MESSAGE",
                    format!("MPUB failed to read message({i}) body size"),
                )
            })?;
            if size <= 0 {
                return Err(fatal(
                    "E_BAD_MESSAGE",
                    format!("MPUB invalid message({i}) body size {size}"),
                ));
            }
            if size as usize > opts.max_msg_size {
                return Err(fatal(
                    "E_BAD_MESSAGE",
                    format!("MPUB message too big {size} > {}", opts.max_msg_size),
                ));
            }
            at += 4;
            let m = body
                .get(at..at + size as usize)
                .ok_or_else(|| fatal("E_BAD_MESSAGE", "MPUB failed to read message body"))?;
            out.push(m);
            at += size as usize;
        }
        if at != body.len() {
            return Err(fatal(
                "E_BAD_BODY",
                format!(
                    "MPUB body size {} does not match its messages ({at} bytes)",
                    body.len()
                ),
            ));
        }
        Ok(out)
    }
}
