//! One connection to nsqd: connect, IDENTIFY and what it negotiates (TLS, compression, AUTH),
//! frames in both directions, and the probe's round trip.
//!
//! The order is nsqd's (nsqd/protocol_v2.go `IDENTIFY`, go-nsq `conn.go`): nsqd answers
//! IDENTIFY in clear; when it agreed to `tls_v1` it then runs the TLS handshake on the same
//! connection and sends `OK` over TLS; when it agreed to snappy or deflate it then switches its
//! stream to that compression and sends `OK` compressed. `AUTH` comes after all of that.

use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::codec::Codec;
use super::protocol::{decode_frame, encode_auth, encode_identify, Frame, HEARTBEAT, MAGIC};
use super::{tls, NsqSettings};
use crate::config::NsqCompression;

/// A byte stream to nsqd: TCP, or TLS over it.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Serialize)]
struct Identify<'a> {
    client_id: &'a str,
    hostname: &'a str,
    user_agent: String,
    heartbeat_interval: u64,
    feature_negotiation: bool,
    tls_v1: bool,
    snappy: bool,
    deflate: bool,
    deflate_level: u32,
}

/// The parts of nsqd's IDENTIFY answer this client uses.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct IdentifyAnswer {
    version: String,
    auth_required: bool,
    tls_v1: bool,
    snappy: bool,
    deflate: bool,
    deflate_level: u32,
    /// Not sent by nsqd 1.x; read when an nsqd (or a compatible server) states it.
    max_msg_size: Option<u64>,
    msg_timeout: Option<u64>,
    max_rdy_count: Option<u64>,
}

/// nsqd's answer to a successful `AUTH`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthAnswer {
    identity: String,
    identity_url: String,
    permission_count: u64,
}

/// How a command went.
pub(super) enum Answer {
    /// nsqd answered an error frame: code and description.
    Error(String, String),
    /// No usable answer (I/O, timeout, protocol).
    Failed(String),
}

/// One open, identified connection to nsqd.
pub(super) struct Conn {
    stream: Box<dyn Io>,
    codec: Codec,
    /// Decoded bytes from nsqd not yet taken as frames.
    rbuf: BytesMut,
    /// Raw bytes as read.
    scratch: Vec<u8>,
    /// The command being written.
    pub(super) wbuf: Vec<u8>,
    /// The command compressed.
    cbuf: Vec<u8>,
    /// Index into the address list.
    pub(super) index: usize,
    pub(super) addr: String,
    pub(super) last_read: Instant,
    /// The message size limit nsqd stated in IDENTIFY, if it did.
    pub(super) stated_max_msg_size: Option<usize>,
}

impl Conn {
    /// Connects to address `index`, sends the magic and IDENTIFY, and completes what the answer
    /// negotiated (TLS, compression, AUTH).
    pub(super) async fn open(s: &NsqSettings, index: usize) -> Result<Conn, String> {
        let addr = &s.addrs[index];
        let stream = tokio::time::timeout(s.timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| format!("nsqd {addr}: connect timed out after {:?}", s.timeout))?
            .map_err(|e| format!("nsqd {addr}: cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream: Box::new(stream),
            codec: Codec::Plain,
            rbuf: BytesMut::with_capacity(4096),
            scratch: vec![0; 16 * 1024],
            wbuf: Vec::with_capacity(64 * 1024),
            cbuf: Vec::new(),
            index,
            addr: addr.clone(),
            last_read: Instant::now(),
            stated_max_msg_size: None,
        };
        let client_id = s.hostname.split('.').next().unwrap_or(&s.hostname);
        let body = serde_json::to_vec(&Identify {
            client_id,
            hostname: &s.hostname,
            user_agent: format!("agent/{}", env!("CARGO_PKG_VERSION")),
            heartbeat_interval: s.heartbeat.as_millis() as u64,
            feature_negotiation: true,
            tls_v1: s.tls.is_some(),
            snappy: s.compression == NsqCompression::Snappy,
            deflate: s.compression == NsqCompression::Deflate,
            deflate_level: s.deflate_level,
        })
        .map_err(|e| format!("cannot encode IDENTIFY: {e}"))?;
        let mut cmd = MAGIC.to_vec();
        encode_identify(&body, &mut cmd);
        conn.write(&cmd, s.timeout).await?;
        let answer = conn
            .answer(Instant::now() + s.timeout, s.timeout)
            .await
            .map_err(|e| conn.refused("IDENTIFY", e))?;
        if answer == b"OK" {
            // An nsqd that does not negotiate features can do none of them.
            if s.tls.is_some() {
                return Err(format!(
                    "nsqd {addr} answered IDENTIFY without feature negotiation, so it cannot \
                     upgrade to TLS (output.nsq_tls = true); refusing to publish in clear"
                ));
            }
            return Ok(conn);
        }
        if answer.first() != Some(&b'{') {
            return Err(format!(
                "nsqd {addr}: unexpected IDENTIFY answer {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
        let info: IdentifyAnswer = serde_json::from_slice(&answer)
            .map_err(|e| format!("nsqd {addr}: unreadable IDENTIFY answer: {e}"))?;
        debug!(nsqd = %addr, version = %info.version, tls = info.tls_v1, snappy = info.snappy,
            deflate = info.deflate, auth_required = info.auth_required,
            msg_timeout = ?info.msg_timeout, max_rdy_count = ?info.max_rdy_count,
            "Identified to nsqd.");
        if let Some(config) = &s.tls {
            if !info.tls_v1 {
                return Err(format!(
                    "nsqd {addr} did not agree to TLS (its IDENTIFY answer says tls_v1: false; \
                     start nsqd with --tls-cert and --tls-key); refusing to publish in clear"
                ));
            }
            conn.upgrade_tls(s, config).await?;
        }
        match s.compression {
            NsqCompression::Snappy if info.snappy => {
                conn.upgrade_codec(Codec::snappy(), "snappy", s).await?;
            }
            NsqCompression::Deflate if info.deflate => {
                conn.upgrade_codec(Codec::deflate(info.deflate_level), "deflate", s)
                    .await?;
            }
            NsqCompression::None => {}
            asked => {
                info!(nsqd = %addr, compression = ?asked, "nsqd did not agree to compression; publishing uncompressed.");
            }
        }
        if info.auth_required {
            conn.auth(s).await?;
        } else if s.auth_secret.is_some() {
            debug!(nsqd = %addr, "nsqd does not require AUTH; the configured secret is not sent.");
        }
        conn.stated_max_msg_size = info
            .max_msg_size
            .filter(|&m| m > 0)
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        Ok(conn)
    }

    /// Opens a connection for the failover probe and proves nsqd serves it: IDENTIFY (and what
    /// it negotiated) answered, then one heartbeat from nsqd answered with `NOP`. nsqd answers
    /// nothing to a `NOP`, so nsqd's heartbeat and our `NOP` are the round trip.
    pub(super) async fn open_probed(s: &NsqSettings, index: usize) -> Result<Conn, String> {
        let mut conn = Conn::open(s, index).await?;
        let deadline = Instant::now() + s.heartbeat + s.timeout;
        let frame = tokio::time::timeout_at(deadline, conn.read_frame())
            .await
            .map_err(|_| {
                format!(
                    "nsqd {}: no heartbeat within {:?} of IDENTIFY",
                    conn.addr,
                    s.heartbeat + s.timeout
                )
            })??;
        if frame != Frame::Response(HEARTBEAT.to_vec()) {
            return Err(format!(
                "nsqd {}: unexpected frame while probing: {frame:?}",
                conn.addr
            ));
        }
        conn.write(b"NOP\n", s.timeout).await?;
        Ok(conn)
    }

    fn refused(&self, what: &str, e: Answer) -> String {
        match e {
            Answer::Error(code, text) => {
                format!("nsqd {} refused {what}: {code} {text}", self.addr)
            }
            Answer::Failed(e) => e,
        }
    }

    async fn upgrade_tls(
        &mut self,
        s: &NsqSettings,
        config: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<(), String> {
        if !self.rbuf.is_empty() {
            return Err(format!(
                "nsqd {}: sent data before the TLS handshake",
                self.addr
            ));
        }
        let name = tls::server_name(&s.tls_server_name, &self.addr)?;
        let plain = std::mem::replace(
            &mut self.stream,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config));
        let stream = tokio::time::timeout(s.timeout, connector.connect(name, plain))
            .await
            .map_err(|_| {
                format!(
                    "nsqd {}: TLS handshake timed out after {:?}",
                    self.addr, s.timeout
                )
            })?
            .map_err(|e| format!("nsqd {}: TLS handshake failed: {e}", self.addr))?;
        self.stream = Box::new(stream);
        self.expect_ok("the TLS upgrade", s).await?;
        debug!(nsqd = %self.addr, "TLS to nsqd established.");
        Ok(())
    }

    async fn upgrade_codec(
        &mut self,
        mut codec: Codec,
        name: &str,
        s: &NsqSettings,
    ) -> Result<(), String> {
        // nsqd may already have sent its compressed OK behind the IDENTIFY answer.
        let early = self.rbuf.split();
        let mut decoded = Vec::new();
        codec
            .decode(&early, &mut decoded)
            .map_err(|e| format!("nsqd {}: {e}", self.addr))?;
        self.rbuf.extend_from_slice(&decoded);
        self.codec = codec;
        self.expect_ok(&format!("the {name} upgrade"), s).await?;
        debug!(nsqd = %self.addr, compression = name, "Compression to nsqd negotiated.");
        Ok(())
    }

    async fn expect_ok(&mut self, what: &str, s: &NsqSettings) -> Result<(), String> {
        let answer = self
            .answer(Instant::now() + s.timeout, s.timeout)
            .await
            .map_err(|e| self.refused(what, e))?;
        if answer == b"OK" {
            Ok(())
        } else {
            Err(format!(
                "nsqd {}: unexpected answer {:?} to {what}",
                self.addr,
                String::from_utf8_lossy(&answer)
            ))
        }
    }

    async fn auth(&mut self, s: &NsqSettings) -> Result<(), String> {
        let Some(secret) = &s.auth_secret else {
            return Err(format!(
                "nsqd {} requires AUTH (auth_required in its IDENTIFY answer) and \
                 output.nsq_auth_secret is not set",
                self.addr
            ));
        };
        let mut cmd = Vec::new();
        encode_auth(secret.as_bytes(), &mut cmd);
        self.write(&cmd, s.timeout).await?;
        let answer = self
            .answer(Instant::now() + s.timeout, s.timeout)
            .await
            .map_err(|e| match e {
                Answer::Error(code, text) => format!(
                    "nsqd {} refused AUTH: {code} {text} (check output.nsq_auth_secret)",
                    self.addr
                ),
                Answer::Failed(e) => e,
            })?;
        let who: AuthAnswer = serde_json::from_slice(&answer).map_err(|e| {
            format!(
                "nsqd {}: unreadable AUTH answer {:?}: {e}",
                self.addr,
                String::from_utf8_lossy(&answer)
            )
        })?;
        info!(nsqd = %self.addr, identity = %who.identity, identity_url = %who.identity_url,
            permissions = who.permission_count, "Authenticated to nsqd.");
        if who.permission_count == 0 {
            warn!(nsqd = %self.addr, identity = %who.identity, "nsqd's AUTH answer grants no permissions; publishing will be refused.");
        }
        Ok(())
    }

    /// Writes `bytes` (one or more whole commands) through the codec and flushes them.
    pub(super) async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), String> {
        let out: &[u8] = if self.codec.is_plain() {
            bytes
        } else {
            self.cbuf.clear();
            self.codec
                .encode(bytes, &mut self.cbuf)
                .map_err(|e| format!("nsqd {}: {e}", self.addr))?;
            &self.cbuf
        };
        let io = async {
            self.stream.write_all(out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("nsqd {}: write failed: {e}", self.addr)),
            Err(_) => Err(format!(
                "nsqd {}: write timed out after {timeout:?}",
                self.addr
            )),
        }
    }

    /// Writes the command in `wbuf`.
    pub(super) async fn write_wbuf(&mut self, timeout: Duration) -> Result<(), String> {
        let cmd = std::mem::take(&mut self.wbuf);
        let written = self.write(&cmd, timeout).await;
        self.wbuf = cmd;
        written
    }

    /// The next frame; cancel-safe (a partly read frame stays in the buffers).
    pub(super) async fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) =
                decode_frame(&mut self.rbuf).map_err(|e| format!("nsqd {}: {e}", self.addr))?
            {
                self.last_read = Instant::now();
                return Ok(f);
            }
            let n = self
                .stream
                .read(&mut self.scratch)
                .await
                .map_err(|e| format!("nsqd {}: read failed: {e}", self.addr))?;
            if n == 0 {
                return Err(format!("nsqd {} closed the connection", self.addr));
            }
            let raw = &self.scratch[..n];
            if self.codec.is_plain() {
                self.rbuf.extend_from_slice(raw);
            } else {
                self.codec
                    .decode(raw, &mut self.rbuf)
                    .map_err(|e| format!("nsqd {}: {e}", self.addr))?;
            }
        }
    }

    /// Waits until `deadline` for the answer to a command, answering heartbeats meanwhile.
    pub(super) async fn answer(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, Answer> {
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
}
