//! `GET /log/offset?fpath=&offset=&num=`: whole lines of a log file from a byte offset, so a
//! client can follow a growing file.
//!
//! Only regular files under `agent.log_roots` and the agent's own log dir are readable. The path
//! is checked as written (absolute, no `..`, under a root) before the file system is touched, then
//! resolved (symlinks) and checked again, and once more on the opened file descriptor, so a
//! symlink swapped in between cannot lead out of the roots.
//!
//! Bounded: an answer is at most [`MAX_CHUNK_BYTES`] as sent, JSON-encoded (each line is
//! counted as what it encodes to: a NUL byte as `\u0000`, six bytes), and at most
//! [`MAX_CONCURRENT_READS`] requests read at once, each holding its place until its answer is
//! sent; the others wait up to [`READ_WAIT`], then get 503 with `Retry-After`.

use std::convert::Infallible;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::api::LogChunk;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::extract::Query;
use super::ApiError;
use crate::state::AgentState;

/// Lines returned when `num` is not given.
pub const DEFAULT_LINES: usize = 100;
/// Most lines one request may ask for.
pub const MAX_LINES: usize = 1000;
/// A line longer than this is returned cut into pieces of this size, so a reader never gets
/// stuck behind a line that never ends.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Largest answer, in bytes of JSON as sent: lines stop before the one that would pass it (the
/// client continues at `next_offset`). A line piece of [`MAX_LINE_BYTES`] encodes to at most
/// six times that, so an answer always has room for at least one.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Requests that read (and hold their answer in memory) at once.
pub const MAX_CONCURRENT_READS: usize = 4;
/// How long a request waits for a turn before it is answered 503.
pub const READ_WAIT: Duration = Duration::from_secs(5);
/// The `Retry-After` of that 503, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;
/// Longest `fpath` accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// File systems that are never read, whatever the roots say.
const NEVER: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Query of `GET /log/offset`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Absolute path of the file.
    fpath: String,
    /// Byte offset to start at (0 when missing).
    #[serde(default)]
    offset: u64,
    /// Lines wanted (default [`DEFAULT_LINES`], at most [`MAX_LINES`]).
    num: Option<usize>,
}

/// Why a file is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The request itself is malformed (400).
    #[error("{0}")]
    Bad(String),
    /// The path leads outside what may be read (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such file (404).
    #[error("{0}")]
    NotFound(String),
    /// Reading failed (500).
    #[error("{0}")]
    Io(String),
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let status = match e {
            LogError::Bad(_) => StatusCode::BAD_REQUEST,
            LogError::Forbidden(_) => StatusCode::FORBIDDEN,
            LogError::NotFound(_) => StatusCode::NOT_FOUND,
            LogError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The places `/log/offset` hands out: [`MAX_CONCURRENT_READS`] of them.
pub fn read_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_CONCURRENT_READS))
}

/// `GET /log/offset`.
pub async fn offset(
    State(state): State<AgentState>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let num = q.num.unwrap_or(DEFAULT_LINES);
    if num == 0 || num > MAX_LINES {
        return Err(ApiError::bad_request(format!(
            "num is {num}; ask for 1 to {MAX_LINES} lines"
        )));
    }
    let Ok(Ok(permit)) =
        tokio::time::timeout(READ_WAIT, Arc::clone(state.log_reads()).acquire_owned()).await
    else {
        return Ok(busy());
    };
    let cfg = state.config();
    let mut roots = cfg.agent.log_roots.clone();
    roots.push(cfg.log_dir());
    // The token is shared with this group: serve only what its members could read themselves.
    let group = (!cfg.agent.token_group.is_empty()).then(|| GroupReader {
        name: cfg.agent.token_group.clone(),
        // A group that vanished since the config was checked has no rights at all.
        gid: super::auth::token_gid(&cfg.agent.token_group)
            .ok()
            .flatten()
            .unwrap_or(u32::MAX),
        own_log_dir: cfg.log_dir(),
    });
    let json = tokio::task::spawn_blocking(move || {
        read_chunk_as(&roots, &q.fpath, q.offset, num, group.as_ref()).map(|chunk| encode(&chunk))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reading the file failed"))??;
    Ok(answer(json, permit))
}

/// 503 with `Retry-After`: every read place is taken.
fn busy() -> Response {
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{MAX_CONCURRENT_READS} /log/offset reads are in progress and none ended within {} s; \
             try again in {RETRY_AFTER_SECS} s",
            READ_WAIT.as_secs()
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    resp
}

/// The answer's body keeps the read's place until the server has written it out (it asks the
/// stream for more only once its buffer has room again) or the connection is gone, so answers
/// waiting to be sent count against [`MAX_CONCURRENT_READS`] too.
fn answer(json: Vec<u8>, permit: OwnedSemaphorePermit) -> Response {
    let stream = futures_util::stream::unfold(
        (Some(Bytes::from(json)), permit),
        |(json, permit)| async move { json.map(|j| (Ok::<_, Infallible>(j), (None, permit))) },
    );
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The answer as sent.
pub fn encode(chunk: &LogChunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(json_len(chunk));
    // Writing to a Vec cannot fail, and a LogChunk has no map with non-string keys.
    let _ = serde_json::to_writer(&mut out, chunk);
    out
}

/// Bytes `value` takes as JSON, by serde_json's own escaping.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// The group `agent.token_group` names, when the token is shared with it.
#[derive(Debug, Clone)]
pub struct GroupReader {
    /// The group's name, for messages.
    pub name: String,
    /// Its gid.
    pub gid: u32,
    /// The agent's own log dir, served to every token holder.
    pub own_log_dir: PathBuf,
}

/// Checks `fpath` against `roots`, opens it, and reads up to `num` whole lines from `offset`.
pub fn read_chunk(
    roots: &[PathBuf],
    fpath: &str,
    offset: u64,
    num: usize,
) -> Result<LogChunk, LogError> {
    read_chunk_as(roots, fpath, offset, num, None)
}

/// [`read_chunk`], refusing with `group` set what that group could not read itself outside
/// the agent's own log dir.
pub fn read_chunk_as(
    roots: &[PathBuf],
    fpath: &str,
    offset: u64,
    num: usize,
    group: Option<&GroupReader>,
) -> Result<LogChunk, LogError> {
    let (file, path) = open_checked(roots, fpath)?;
    let meta = file
        .metadata()
        .map_err(|e| LogError::Io(format!("{path}: {e}")))?;
    if let Some(g) = group {
        let own = std::fs::canonicalize(&g.own_log_dir).unwrap_or_else(|_| g.own_log_dir.clone());
        if !Path::new(&path).starts_with(own) && !group_may_read(&meta, Path::new(&path), g.gid) {
            return Err(LogError::Forbidden(format!(
                "{path} is not readable by group {} itself, and the agent's token is shared \
                 with that group (agent.token_group), so it is not served",
                g.name
            )));
        }
    }
    let size = meta.len();
    if offset > size {
        return Ok(LogChunk {
            path,
            offset,
            lines: Vec::new(),
            next_offset: 0,
            size,
            truncated: true,
        });
    }
    // What the answer costs besides its lines, with the widest numbers it could carry.
    let envelope = json_len(&LogChunk {
        path: path.clone(),
        offset,
        lines: Vec::new(),
        next_offset: u64::MAX,
        size: u64::MAX,
        truncated: false,
    });
    let budget = MAX_CHUNK_BYTES.saturating_sub(envelope);
    let (lines, next_offset) =
        read_lines(file, offset, num, budget).map_err(|e| LogError::Io(format!("{path}: {e}")))?;
    Ok(LogChunk {
        path,
        offset,
        lines,
        next_offset,
        size,
        truncated: false,
    })
}

/// Opens `fpath` if it is a regular file under one of `roots`; returns it with its real path.
pub fn open_checked(roots: &[PathBuf], fpath: &str) -> Result<(File, String), LogError> {
    let roots_text = || {
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if fpath.is_empty() {
        return Err(LogError::Bad(
            "fpath is empty; give an absolute file path".into(),
        ));
    }
    if fpath.len() > MAX_PATH_BYTES {
        return Err(LogError::Bad(format!(
            "fpath is {} bytes long, at most {MAX_PATH_BYTES} are allowed",
            fpath.len()
        )));
    }
    if fpath.contains('\0') {
        return Err(LogError::Bad("fpath contains a NUL byte".into()));
    }
    // The query decoder replaces bytes that are not UTF-8 with U+FFFD.
    if fpath.contains('\u{FFFD}') {
        return Err(LogError::Bad(
            "fpath is not valid UTF-8; only UTF-8 paths can be read".into(),
        ));
    }
    let asked = Path::new(fpath);
    if !asked.is_absolute() {
        return Err(LogError::Bad(format!(
            "fpath {fpath:?} is not absolute; give the full path"
        )));
    }
    if asked.components().any(|c| c == Component::ParentDir) {
        return Err(LogError::Forbidden(format!(
            "fpath {fpath:?} contains '..'; give the path without it"
        )));
    }
    // Roots as configured and as resolved (a root may itself be a symlink, e.g. /var/log).
    let real_roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let under = |p: &Path, roots: &[PathBuf]| roots.iter().any(|r| p.starts_with(r));
    // Checked before touching the file system, so nothing is told about files outside.
    if !under(asked, roots) && !under(asked, &real_roots) {
        return Err(LogError::Forbidden(format!(
            "fpath {fpath:?} is outside the readable roots ({}); see agent.log_roots",
            roots_text()
        )));
    }
    let real = std::fs::canonicalize(asked).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LogError::NotFound(format!("no file {fpath:?}")),
        _ => LogError::Forbidden(format!("fpath {fpath:?} cannot be resolved: {e}")),
    })?;
    check_real(&real, fpath, &real_roots, &roots_text)?;

    // O_NONBLOCK: opening a FIFO swapped in must not hang; it has no effect on regular files.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LogError::NotFound(format!("no file {fpath:?}")),
            _ => LogError::Forbidden(format!("{} cannot be opened: {e}", real.display())),
        })?;
    // What was actually opened, in case a path component was swapped for a symlink meanwhile.
    let opened = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .map_err(|e| LogError::Io(format!("cannot check the opened file: {e}")))?;
    check_real(&opened, fpath, &real_roots, &roots_text)?;
    let meta = file
        .metadata()
        .map_err(|e| LogError::Io(format!("{}: {e}", opened.display())))?;
    if meta.is_dir() {
        return Err(LogError::Bad(format!(
            "fpath {fpath:?} is a directory; give a file"
        )));
    }
    if !meta.is_file() {
        return Err(LogError::Forbidden(format!(
            "fpath {fpath:?} is not a regular file (a device, socket or FIFO)"
        )));
    }
    let text = opened.to_str().map(str::to_owned).ok_or_else(|| {
        LogError::Bad(format!(
            "fpath {fpath:?} resolves to a path that is not UTF-8"
        ))
    })?;
    Ok((file, text))
}

/// Whether members of group `gid` could read the file at `real` (resolved) by its mode bits:
/// the file readable by its group (when that is `gid`) or by all, and every folder above it
/// searchable the same way.
fn group_may_read(meta: &std::fs::Metadata, real: &Path, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let allows = |m: &std::fs::Metadata, group_bit: u32, other_bit: u32| {
        m.mode() & other_bit != 0 || (m.gid() == gid && m.mode() & group_bit != 0)
    };
    allows(meta, 0o040, 0o004)
        && real
            .ancestors()
            .skip(1)
            .all(|dir| std::fs::metadata(dir).is_ok_and(|m| allows(&m, 0o010, 0o001)))
}

/// Checks a resolved path: under a resolved root, not in a pseudo file system.
fn check_real(
    real: &Path,
    fpath: &str,
    real_roots: &[PathBuf],
    roots_text: &dyn Fn() -> String,
) -> Result<(), LogError> {
    if real.to_str().is_none() {
        return Err(LogError::Bad(format!(
            "fpath {fpath:?} resolves to a path that is not UTF-8"
        )));
    }
    if NEVER.iter().any(|n| real.starts_with(n)) {
        return Err(LogError::Forbidden(format!(
            "fpath {fpath:?} resolves to {}, in /proc, /sys or /dev, which are never read",
            real.display()
        )));
    }
    if !real_roots.iter().any(|r| real.starts_with(r)) {
        return Err(LogError::Forbidden(format!(
            "fpath {fpath:?} resolves to {}, outside the readable roots ({}); see agent.log_roots",
            real.display(),
            roots_text()
        )));
    }
    Ok(())
}

/// Reads up to `num` lines from `offset` whose JSON array fits in `budget` bytes. A last line
/// without its newline is left for later (it is probably still being written) unless it
/// reached [`MAX_LINE_BYTES`].
fn read_lines(
    file: File,
    offset: u64,
    num: usize,
    budget: usize,
) -> std::io::Result<(Vec<String>, u64)> {
    let mut r = BufReader::with_capacity(64 * 1024, file);
    r.seek(SeekFrom::Start(offset))?;
    let mut lines = Vec::new();
    let mut next = offset;
    let mut total = 0usize;
    let mut line = Vec::new();
    while lines.len() < num {
        line.clear();
        // `consumed` counts bytes taken from the file for this line, newline included.
        let mut consumed = 0usize;
        let complete = loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                break false;
            }
            let room = MAX_LINE_BYTES - line.len();
            let window = &buf[..buf.len().min(room + 1)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                consumed += i + 1;
                break true;
            }
            let take = buf.len().min(room);
            line.extend_from_slice(&buf[..take]);
            r.consume(take);
            consumed += take;
            if line.len() == MAX_LINE_BYTES {
                // At the cap: a newline right after still belongs to this line.
                if r.fill_buf()?.first() == Some(&b'\n') {
                    r.consume(1);
                    consumed += 1;
                }
                break true;
            }
        };
        if !complete {
            break;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        // Its quotes and escapes, and the comma before it.
        let cost = json_len(&text) + usize::from(!lines.is_empty());
        if total + cost > budget {
            break;
        }
        total += cost;
        next += consumed as u64;
        lines.push(text);
    }
    Ok((lines, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(dir.path())
            .expect("canon")
            .join("logs");
        std::fs::create_dir(&root).expect("mkdir");
        (dir, root)
    }

    fn read(root: &Path, path: &str, offset: u64, num: usize) -> Result<LogChunk, LogError> {
        read_chunk(&[root.to_path_buf()], path, offset, num)
    }

    #[test]
    fn follows_a_growing_file_and_holds_back_a_half_written_line() {
        let (_d, root) = setup();
        let f = root.join("app.log");
        std::fs::write(&f, "one\ntwo\r\nthr").expect("write");
        let p = f.to_str().expect("utf8");
        let c = read(&root, p, 0, 10).expect("read");
        assert_eq!(c.lines, ["one", "two"]);
        assert_eq!(c.next_offset, 9);
        assert_eq!(c.size, 12);
        let c2 = read(&root, p, c.next_offset, 10).expect("read");
        assert!(c2.lines.is_empty(), "half-written line held back");
        assert_eq!(c2.next_offset, 9);
        let mut h = std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .expect("open");
        h.write_all(b"ee\nfour\n").expect("append");
        let c3 = read(&root, p, 9, 1).expect("read");
        assert_eq!(c3.lines, ["three"]);
        let c4 = read(&root, p, c3.next_offset, 10).expect("read");
        assert_eq!(c4.lines, ["four"]);
        assert_eq!(c4.next_offset, c4.size);
    }

    #[test]
    fn an_answer_of_nul_bytes_stays_within_the_cap_once_encoded() {
        let (_d, root) = setup();
        let f = root.join("nul.log");
        std::fs::write(&f, vec![0u8; 8 * 1024 * 1024]).expect("write");
        let p = f.to_str().expect("utf8");
        let c = read(&root, p, 0, MAX_LINES).expect("read");
        let encoded = serde_json::to_vec(&c).expect("json");
        assert!(encoded.len() <= MAX_CHUNK_BYTES, "{} bytes", encoded.len());
        assert!(!c.lines.is_empty(), "a reader still moves on");
        // Bytes that are not UTF-8 (each becomes U+FFFD, 3 bytes) and quotes (2) count too.
        std::fs::write(
            &f,
            [b"\xff\"".repeat(4 * 1024 * 1024), b"\n".to_vec()].concat(),
        )
        .expect("write");
        let c = read(&root, p, 0, MAX_LINES).expect("read");
        let encoded = serde_json::to_vec(&c).expect("json");
        assert!(encoded.len() <= MAX_CHUNK_BYTES, "{} bytes", encoded.len());
        assert!(
            encoded.len() > MAX_CHUNK_BYTES - MAX_LINE_BYTES * 6,
            "filled up"
        );
    }

    #[test]
    fn with_a_token_group_only_what_that_group_could_read_is_served() {
        use std::os::unix::fs::PermissionsExt;
        let (d, root) = setup();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(d.path(), 0o755);
        mode(&root, 0o755);
        const GID: u32 = 54321;
        let own = root.join("agent");
        std::fs::create_dir(&own).expect("mkdir");
        mode(&own, 0o700);
        let file = |name: &str, m: u32| {
            let p = root.join(name);
            std::fs::write(&p, "line\n").expect("write");
            mode(&p, m);
            p
        };
        let private = file("private.log", 0o600);
        let group_only = file("group.log", 0o640);
        std::os::unix::fs::chown(&group_only, None, Some(GID)).expect("chgrp");
        let other_group = file("other-group.log", 0o640);
        let public = file("public.log", 0o644);
        std::fs::create_dir(root.join("closed")).expect("mkdir");
        mode(&root.join("closed"), 0o750);
        let hidden = root.join("closed/public.log");
        std::fs::write(&hidden, "line\n").expect("write");
        mode(&hidden, 0o644);
        let agent_log = own.join("agent.log");
        std::fs::write(&agent_log, "line\n").expect("write");
        mode(&agent_log, 0o600);
        let g = GroupReader {
            name: "adm".into(),
            gid: GID,
            own_log_dir: own.clone(),
        };
        let roots = [root.clone()];
        let as_group = |p: &Path| read_chunk_as(&roots, p.to_str().expect("utf8"), 0, 5, Some(&g));
        for p in [&private, &other_group, &hidden] {
            let e = as_group(p).expect_err("not the group's to read");
            assert!(e.to_string().contains("not readable by group adm"), "{e}");
            assert!(
                read(&root, p.to_str().expect("utf8"), 0, 5).is_ok(),
                "no group: root's"
            );
        }
        for p in [&group_only, &public, &agent_log] {
            assert_eq!(
                as_group(p).expect("readable").lines,
                ["line"],
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn offset_past_the_end_says_truncated_and_restarts_at_zero() {
        let (_d, root) = setup();
        let f = root.join("a.log");
        std::fs::write(&f, "x\n").expect("write");
        let c = read(&root, f.to_str().expect("utf8"), 100, 10).expect("read");
        assert!(c.truncated);
        assert_eq!((c.next_offset, c.size, c.lines.len()), (0, 2, 0));
    }

    #[test]
    fn a_very_long_line_comes_cut_so_the_reader_moves_on() {
        let (_d, root) = setup();
        let f = root.join("long.log");
        let mut body = vec![b'a'; MAX_LINE_BYTES * 2 + 10];
        body.push(b'\n');
        body.extend_from_slice(&vec![b'b'; MAX_LINE_BYTES]);
        body.extend_from_slice(b"\nend\n");
        std::fs::write(&f, &body).expect("write");
        let c = read(&root, f.to_str().expect("utf8"), 0, 10).expect("read");
        let lens: Vec<usize> = c.lines.iter().map(String::len).collect();
        assert_eq!(
            lens,
            [MAX_LINE_BYTES, MAX_LINE_BYTES, 10, MAX_LINE_BYTES, 3]
        );
        assert_eq!(c.next_offset, body.len() as u64);
        // An unterminated line at the cap is returned too: nothing would ever end it otherwise.
        std::fs::write(&f, vec![b'c'; MAX_LINE_BYTES + 5]).expect("write");
        let c = read(&root, f.to_str().expect("utf8"), 0, 10).expect("read");
        assert_eq!(c.lines.len(), 1);
        assert_eq!(c.next_offset, MAX_LINE_BYTES as u64);
    }

    #[test]
    fn traversal_corpus_all_fails() {
        let (d, root) = setup();
        let outside = std::fs::canonicalize(d.path())
            .expect("canon")
            .join("secret");
        std::fs::write(&outside, "secret\n").expect("write");
        std::fs::write(root.join("ok.log"), "ok\n").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("link.log")).expect("symlink");
        std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink dir");
        std::os::unix::fs::symlink("/proc/self/environ", root.join("env")).expect("symlink");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        let r = root.to_str().expect("utf8");
        let long = format!("{r}/{}", "a/".repeat(3000));
        let cases: Vec<(String, &str)> = vec![
            (format!("{r}/../secret"), "contains '..'"),
            (format!("{r}/sub/../../secret"), "contains '..'"),
            (format!("{r}//..//secret"), "contains '..'"),
            (format!("{r}/link.log"), "outside the readable roots"),
            (format!("{r}/etc/passwd"), "outside the readable roots"),
            (format!("{r}/env"), "in /proc, /sys or /dev"),
            (format!("{r}/sub"), "is a directory"),
            (format!("{r}/ok.log\0"), "NUL byte"),
            (format!("{r}/ok\u{FFFD}.log"), "not valid UTF-8"),
            (long, "at most 4096"),
            ("ok.log".into(), "not absolute"),
            ("".into(), "fpath is empty"),
            ("/etc/passwd".into(), "outside the readable roots"),
            ("/proc/self/environ".into(), "outside the readable roots"),
            ("/dev/zero".into(), "outside the readable roots"),
            (format!("{r}/%2e%2e/secret"), "no file"),
            (format!("{r}/nope.log"), "no file"),
        ];
        for (path, want) in cases {
            let e = read(&root, &path, 0, 10).expect_err(&path);
            assert!(e.to_string().contains(want), "{path:?}: {e} (want {want})");
        }
        // Even with / as a root, pseudo file systems stay closed.
        let e = read_chunk(&[PathBuf::from("/")], "/proc/self/environ", 0, 1).expect_err("proc");
        assert!(e.to_string().contains("never read"), "{e}");
        let e = read_chunk(&[PathBuf::from("/")], "/dev/zero", 0, 1).expect_err("dev");
        assert!(matches!(e, LogError::Forbidden(_)), "{e}");
        assert!(
            read(&root, &format!("{r}//ok.log"), 0, 1).is_ok(),
            "double slash inside is fine"
        );
    }

    #[test]
    fn a_file_swapped_for_a_symlink_out_is_refused_from_then_on() {
        let (d, root) = setup();
        let outside = std::fs::canonicalize(d.path())
            .expect("canon")
            .join("secret");
        std::fs::write(&outside, "secret\n").expect("write");
        let f = root.join("app.log");
        std::fs::write(&f, "fine\n").expect("write");
        let p = f.to_str().expect("utf8");
        assert_eq!(read(&root, p, 0, 5).expect("inside").lines, ["fine"]);
        std::fs::remove_file(&f).expect("rm");
        std::os::unix::fs::symlink(&outside, &f).expect("swap");
        let e = read(&root, p, 0, 5).expect_err("swapped out");
        assert!(e.to_string().contains("outside the readable roots"), "{e}");
        // A directory of the path swapped for a symlink out, too.
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/x.log"), "x\n").expect("write");
        assert!(read(&root, &format!("{}/sub/x.log", root.display()), 0, 1).is_ok());
        std::fs::rename(root.join("sub"), root.join("old")).expect("mv");
        std::fs::create_dir(d.path().join("evil")).expect("mkdir");
        std::fs::write(d.path().join("evil/x.log"), "evil\n").expect("write");
        std::os::unix::fs::symlink(d.path().join("evil"), root.join("sub")).expect("swap dir");
        let e = read(&root, &format!("{}/sub/x.log", root.display()), 0, 1).expect_err("dir swap");
        assert!(e.to_string().contains("outside the readable roots"), "{e}");
    }

    #[test]
    fn a_symlink_inside_the_root_pointing_inside_is_followed() {
        let (_d, root) = setup();
        std::fs::write(root.join("real.log"), "hi\n").expect("write");
        std::os::unix::fs::symlink(root.join("real.log"), root.join("current.log")).expect("ln");
        let c = read(
            &root,
            root.join("current.log").to_str().expect("utf8"),
            0,
            5,
        )
        .expect("ok");
        assert_eq!(c.lines, ["hi"]);
        assert!(c.path.ends_with("real.log"));
    }
}
