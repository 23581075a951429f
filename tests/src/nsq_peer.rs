//! An NSQ protocol peer: the TCP side of nsqd, written from the NSQ TCP protocol spec and nsqd
//! 1.x's behaviour, for the end-to-end tests and the pipeline benchmark.
//!
//! It speaks `  V2`, IDENTIFY (with feature negotiation: TLS, snappy, deflate), AUTH, PUB, MPUB
//! and NOP; answers with
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
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
    /// Add `max_msg_size` to the IDENTIFY answer. nsqd 1.x does not state it (its answer is
    /// the fields below); this is for testing a client that reads it when a server does.
    pub state_max_msg_size: bool,
    /// Require AUTH with this secret (nsqd's `--auth-http-address`, the auth server reduced to
    /// one secret); `auth_required: true` in the IDENTIFY answer.
    pub auth_secret: Option<String>,
    /// nsqd's `--tls-cert`/`--tls-key` (and client-certificate policy), as a rustls config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// nsqd's `--tls-required`: every command but IDENTIFY needs TLS first.
    pub tls_required: bool,
    /// nsqd's `--snappy` (default on).
    pub snappy: bool,
    /// nsqd's `--deflate` (default on).
    pub deflate: bool,
    /// nsqd's `--max-deflate-level` (default 6).
    pub max_deflate_level: u32,
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
            state_max_msg_size: false,
            auth_secret: None,
            tls: None,
            tls_required: false,
            snappy: true,
            deflate: true,
            max_deflate_level: 6,
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
    /// `PUB`s and `MPUB`s answered `OK`, per topic.
    pub publishes: BTreeMap<String, u64>,
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
    /// AUTH secrets received, in order.
    pub auths: Vec<String>,
    /// Upgrades made, in order: `tls`, `snappy`, `deflate`.
    pub upgrades: Vec<String>,
}

impl Received {
    /// Lines received on every topic.
    pub fn total_lines(&self) -> u64 {
        self.line_counts.values().sum()
    }
}

struct State {
    opts: PeerOptions,
    behaviour: Mutex<Behaviour>,
    /// Send a heartbeat just before every publish answer (nsqd may interleave them anywhere).
    heartbeat_before_answer: AtomicBool,
    received: Mutex<Received>,
    /// Signalled whenever a publish was counted in `received` (for [`NsqPeer::wait_for_lines`]).
    counted: Condvar,
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
                counted: Condvar::new(),
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
        lock(&self.state.received).total_lines()
    }

    /// Waits until the peer counted at least `lines` lines on every topic together, or `timeout`
    /// passed; says whether it got there. Woken by each publish as it is counted, so a benchmark
    /// learns the moment its last point arrived (polling on tokio's timer would add up to its
    /// 1 ms tick to every run).
    pub fn wait_for_lines(&self, lines: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut r = lock(&self.state.received);
        loop {
            if r.total_lines() >= lines {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            r = self
                .state
                .counted
                .wait_timeout(r, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
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

/// What to do after an answer is sent: nsqd's IDENTIFY upgrades, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    Tls,
    Snappy,
    Deflate(u32),
}

enum Step {
    /// More bytes are needed.
    Incomplete,
    /// A command of `used` bytes was handled; `answer` is its response frame data, if any,
    /// and `upgrades` follow it.
    Done {
        used: usize,
        answer: Option<Vec<u8>>,
        upgrades: Vec<Upgrade>,
    },
}

fn done(used: usize, answer: Option<Vec<u8>>) -> Result<Step, Fatal> {
    Ok(Step::Done {
        used,
        answer,
        upgrades: Vec::new(),
    })
}

/// The connection's byte stream: TCP, or TLS over it after the upgrade.
enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// The stream's compression after the upgrade, written from the formats' definitions (the
/// snappy framing format with its masked CRC-32C; raw deflate with a sync flush per write, as
/// Go's compress/flate does on Flush), independently of the agent's.
enum Codec {
    Plain,
    Snappy {
        enc: Box<snap::write::FrameEncoder<Vec<u8>>>,
        pending: Vec<u8>,
        started: bool,
    },
    Deflate {
        enc: Box<Compress>,
        dec: Box<Decompress>,
    },
}

/// CRC-32C (Castagnoli), bitwise: small and slow is fine for a test peer.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn snappy_mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

impl Codec {
    fn encode(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Codec::Plain => Ok(plain.to_vec()),
            Codec::Snappy { enc, .. } => {
                enc.write_all(plain)
                    .and_then(|()| enc.flush())
                    .map_err(|e| e.to_string())?;
                Ok(std::mem::take(enc.get_mut()))
            }
            Codec::Deflate { enc, .. } => {
                let mut out = Vec::with_capacity(plain.len() + 64);
                let mut input = plain;
                loop {
                    out.reserve(input.len() + 64);
                    let before = enc.total_in();
                    enc.compress_vec(input, &mut out, FlushCompress::Sync)
                        .map_err(|e| e.to_string())?;
                    input = &input[(enc.total_in() - before) as usize..];
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                }
            }
        }
    }

    fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Codec::Plain => {
                out.extend_from_slice(raw);
                Ok(())
            }
            Codec::Snappy {
                pending, started, ..
            } => {
                pending.extend_from_slice(raw);
                let mut at = 0;
                while pending.len() - at >= 4 {
                    let h = &pending[at..at + 4];
                    let (kind, len) = (
                        h[0],
                        usize::from(h[1]) | usize::from(h[2]) << 8 | usize::from(h[3]) << 16,
                    );
                    if pending.len() - at < 4 + len {
                        break;
                    }
                    let body = &pending[at + 4..at + 4 + len];
                    at += 4 + len;
                    match kind {
                        0xff => {
                            if body != b"sNaPpY" {
                                return Err("bad snappy stream identifier".into());
                            }
                            *started = true;
                        }
                        _ if !*started => return Err("snappy stream without identifier".into()),
                        0x00 | 0x01 => {
                            if body.len() < 4 {
                                return Err("short snappy chunk".into());
                            }
                            let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                            let data = if kind == 0 {
                                snap::raw::Decoder::new()
                                    .decompress_vec(&body[4..])
                                    .map_err(|e| e.to_string())?
                            } else {
                                body[4..].to_vec()
                            };
                            if snappy_mask(crc32c(&data)) != crc {
                                return Err("snappy chunk CRC mismatch".into());
                            }
                            out.extend_from_slice(&data);
                        }
                        0x02..=0x7f => return Err(format!("reserved snappy chunk {kind:#x}")),
                        _ => {}
                    }
                }
                pending.drain(..at);
                Ok(())
            }
            Codec::Deflate { dec, .. } => {
                let mut input = raw;
                let mut buf = Vec::with_capacity(64 * 1024);
                loop {
                    buf.clear();
                    let before = dec.total_in();
                    dec.decompress_vec(input, &mut buf, FlushDecompress::Sync)
                        .map_err(|e| e.to_string())?;
                    let used = (dec.total_in() - before) as usize;
                    input = &input[used..];
                    out.extend_from_slice(&buf);
                    let full = buf.len() == buf.capacity();
                    if input.is_empty() && !full {
                        return Ok(());
                    }
                    if used == 0 && buf.is_empty() {
                        return Err("deflate makes no progress".into());
                    }
                }
            }
        }
    }
}

struct Conn<'a> {
    io: Io,
    codec: Codec,
    state: &'a State,
    identified: bool,
    /// Set by IDENTIFY: the heartbeat ticker restarts with the negotiated interval.
    identified_now: bool,
    heartbeat: Option<Duration>,
    authed: bool,
    tls: bool,
}

fn serve(stream: TcpStream, state: &State, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let generation = state.drop_generation.load(Ordering::SeqCst);
    let mut c = Conn {
        io: Io::Plain(stream),
        codec: Codec::Plain,
        state,
        identified: false,
        identified_now: false,
        heartbeat: Some(state.opts.default_heartbeat),
        authed: false,
        tls: false,
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
        match c.io.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                if c.codec.decode(&chunk[..n], &mut buf).is_err() {
                    return;
                }
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
                    Ok(Step::Done {
                        used,
                        answer,
                        upgrades,
                    }) => {
                        off += used;
                        if let Some(a) = answer {
                            if !c.send(0, &a) {
                                return;
                            }
                        }
                        if used > 0 && c.heartbeat_changed() {
                            next_heartbeat = c.heartbeat.map(|h| Instant::now() + h);
                        }
                        if !upgrades.is_empty() {
                            // The client sends nothing more until it has the upgrades' OKs.
                            if off != buf.len() {
                                return;
                            }
                            for u in upgrades {
                                if !c.upgrade(u, stop) || !c.send(0, b"OK") {
                                    return;
                                }
                            }
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
        let Ok(wire) = self.codec.encode(&frame) else {
            return false;
        };
        self.io
            .write_all(&wire)
            .and_then(|()| self.io.flush())
            .is_ok()
    }

    /// Switches the connection as nsqd's `UpgradeTLS`/`UpgradeSnappy`/`UpgradeDeflate` do.
    fn upgrade(&mut self, u: Upgrade, stop: &AtomicBool) -> bool {
        let name = match u {
            Upgrade::Tls => {
                let (Some(config), Io::Plain(tcp)) = (&self.state.opts.tls, &self.io) else {
                    return false;
                };
                let (Ok(tcp), Ok(conn)) = (
                    tcp.try_clone(),
                    rustls::ServerConnection::new(Arc::clone(config)),
                ) else {
                    return false;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let deadline = Instant::now() + Duration::from_secs(5);
                while tls.conn.is_handshaking() {
                    match tls.conn.complete_io(&mut tls.sock) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                                && Instant::now() < deadline
                                && !stop.load(Ordering::SeqCst) => {}
                        Err(_) => return false,
                    }
                }
                self.io = Io::Tls(Box::new(tls));
                self.tls = true;
                "tls"
            }
            Upgrade::Snappy => {
                self.codec = Codec::Snappy {
                    enc: Box::new(snap::write::FrameEncoder::new(Vec::new())),
                    pending: Vec::new(),
                    started: false,
                };
                "snappy"
            }
            Upgrade::Deflate(level) => {
                self.codec = Codec::Deflate {
                    enc: Box::new(Compress::new(Compression::new(level), false)),
                    dec: Box::new(Decompress::new(false)),
                };
                "deflate"
            }
        };
        lock(&self.state.received).upgrades.push(name.to_owned());
        true
    }

    /// nsqd's `enforceTLSPolicy`.
    fn check_tls(&self, cmd: &[u8]) -> Result<(), Fatal> {
        if self.state.opts.tls_required && !self.tls {
            return Err(fatal(
                "E_INVALID",
                format!(
                    "cannot {} in current state (TLS required)",
                    String::from_utf8_lossy(cmd)
                ),
            ));
        }
        Ok(())
    }

    /// nsqd's `CheckAuth` for a publish.
    fn check_auth(&self, cmd: &str) -> Result<(), Fatal> {
        if self.state.opts.auth_secret.is_some() && !self.authed {
            return Err(fatal("E_AUTH_FIRST", format!("AUTH required before {cmd}")));
        }
        Ok(())
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
                self.check_tls(params[0])?;
                lock(&self.state.received).nops += 1;
                done(head, None)
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
                let flag = |k: &str| {
                    v.get(k)
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false)
                };
                let negotiate = flag("feature_negotiation");
                lock(&self.state.received).identifies.push(v.clone());
                self.identified = true;
                self.identified_now = true;
                if !(negotiate && opts.negotiate) {
                    return done(head + 4 + len, Some(b"OK".to_vec()));
                }
                let tls = opts.tls.is_some() && flag("tls_v1");
                let deflate = opts.deflate && flag("deflate");
                let asked_level = v
                    .get("deflate_level")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0) as u32;
                let deflate_level = if deflate && asked_level > 0 {
                    asked_level.min(opts.max_deflate_level)
                } else {
                    6.min(opts.max_deflate_level)
                };
                let snappy = opts.snappy && flag("snappy");
                if deflate && snappy {
                    return Err(fatal(
                        "E_IDENTIFY_FAILED",
                        "cannot enable both deflate and snappy compression",
                    ));
                }
                let mut answer = serde_json::json!({
                    "max_rdy_count": 2500,
                    "version": "1.3.0",
                    "max_msg_timeout": 900000,
                    "msg_timeout": 60000,
                    "tls_v1": tls,
                    "deflate": deflate,
                    "deflate_level": deflate_level,
                    "max_deflate_level": opts.max_deflate_level,
                    "snappy": snappy,
                    "sample_rate": 0,
                    "auth_required": opts.auth_secret.is_some(),
                    "output_buffer_size": 16384,
                    "output_buffer_timeout": 250
                });
                if opts.state_max_msg_size {
                    answer["max_msg_size"] = serde_json::json!(opts.max_msg_size);
                }
                let mut upgrades = Vec::new();
                if tls {
                    upgrades.push(Upgrade::Tls);
                }
                if snappy {
                    upgrades.push(Upgrade::Snappy);
                }
                if deflate {
                    upgrades.push(Upgrade::Deflate(deflate_level));
                }
                Ok(Step::Done {
                    used: head + 4 + len,
                    answer: Some(answer.to_string().into_bytes()),
                    upgrades,
                })
            }
            b"AUTH" => {
                self.check_tls(params[0])?;
                if params.len() != 1 {
                    return Err(fatal("E_INVALID", "AUTH invalid number of parameters"));
                }
                let Some(len) = read_len(rest) else {
                    return Ok(Step::Incomplete);
                };
                if i64::from(len) > opts.max_body_size as i64 {
                    return Err(fatal(
                        "E_BAD_BODY",
                        format!("AUTH body too big {len} > {}", opts.max_body_size),
                    ));
                }
                if len <= 0 {
                    return Err(fatal("E_BAD_BODY", format!("AUTH invalid body size {len}")));
                }
                let len = len as usize;
                let Some(body) = rest.get(4..4 + len) else {
                    return Ok(Step::Incomplete);
                };
                let secret = String::from_utf8_lossy(body).into_owned();
                lock(&self.state.received).auths.push(secret.clone());
                if self.authed {
                    return Err(fatal("E_INVALID", "AUTH Already set"));
                }
                let Some(want) = &opts.auth_secret else {
                    return Err(fatal("E_AUTH_DISABLED", "AUTH Disabled"));
                };
                if secret != *want {
                    return Err(fatal("E_AUTH_FAILED", "AUTH failed"));
                }
                self.authed = true;
                let answer = serde_json::json!({
                    "identity": "e2e-agent",
                    "identity_url": "https://auth.example/e2e-agent",
                    "permission_count": 1
                });
                done(head + 4 + len, Some(answer.to_string().into_bytes()))
            }
            b"PUB" | b"MPUB" => {
                self.check_tls(params[0])?;
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
                    // nsqd's MPUB repeats the code in its description (nsqd/protocol_v2.go).
                    let prefix = if multi { "E_BAD_TOPIC " } else { "" };
                    return Err(fatal(
                        "E_BAD_TOPIC",
                        format!("{prefix}{cmd} topic name {topic:?} is not valid"),
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
                self.check_auth(cmd)?;
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
                *r.publishes.entry(topic.clone()).or_default() += 1;
                let lines: usize = messages
                    .iter()
                    .map(|m| m.iter().filter(|&&x| x == b'\n').count())
                    .sum();
                *r.line_counts.entry(topic.clone()).or_default() += lines as u64;
                self.state.counted.notify_all();
                if opts.record_bodies {
                    r.messages
                        .entry(topic)
                        .or_default()
                        .extend(messages.iter().map(|m| m.to_vec()));
                }
                done(used, Some(b"OK".to_vec()))
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

/// A throwaway CA, an nsqd certificate it signed (for `localhost` and `127.0.0.1`), and a
/// client certificate it signed, as PEM files and as the peer's rustls configurations.
pub struct NsqTls {
    dir: tempfile::TempDir,
    /// nsqd's TLS without client certificates.
    pub server: Arc<rustls::ServerConfig>,
    /// nsqd's TLS with `--tls-client-auth-policy=require-verify` against the CA.
    pub server_verifying_clients: Arc<rustls::ServerConfig>,
}

impl NsqTls {
    /// Generates the CA and both certificates.
    pub fn new() -> NsqTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "e2e nsqd CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).expect("CA certificate");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(names).expect("params");
            p.distinguished_name.push(DnType::CommonName, "e2e");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &ca, &ca_key).expect("certificate");
            (cert, key)
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["e2e-agent".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = tempfile::tempdir().expect("TLS dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![server_cert.der().clone(), ca.der().clone()];
        let key = || rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key())
            .expect("server TLS config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("CA root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("client verifier");
        let verifying = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key())
            .expect("server TLS config");
        NsqTls {
            dir,
            server: Arc::new(server),
            server_verifying_clients: Arc::new(verifying),
        }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The client certificate (PEM).
    pub fn client_cert(&self) -> std::path::PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key (PEM).
    pub fn client_key(&self) -> std::path::PathBuf {
        self.dir.path().join("client.key")
    }
}

impl Default for NsqTls {
    fn default() -> Self {
        NsqTls::new()
    }
}

/// A TCP listener that accepts connections and never reads or answers: an nsqd that is hung
/// (SIGSTOP) while its kernel still completes handshakes. Stops on drop.
pub struct SilentListener {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SilentListener {
    /// Listens on a free loopback port.
    pub fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SilentListener {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
