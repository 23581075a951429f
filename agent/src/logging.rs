//! The agent's own log: tracing to a daily-rotated file in the log dir, and to stderr in the
//! foreground.
//!
//! The file is written by [`LogFile`]: each line with one `write(2)`, whole or not at all, so a
//! full disk loses lines (counted, and the count logged once writing works again) but never
//! leaves half a line with the next glued to it. Warnings that would repeat once per batch go
//! through [`Repeats`], which logs the first at once and then a count per window.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload};

/// Log files kept (one per day).
const KEEP_FILES: usize = 7;

/// Log lines queued for the writer thread.
const QUEUED_LINES: usize = 4096;

/// File name prefix of the agent's log (`agent.2026-11-25.log`).
pub const LOG_PREFIX: &str = "agent";

/// Parses `log.level`: a level (`info`), or comma-separated `target=level` directives with an
/// optional default (`info,agent::output=debug`). Span and field filters are not supported; the
/// plain target filter needs no regex engine, which keeps the daemon small.
pub fn filter(level: &str) -> Result<Targets, String> {
    for directive in level.split(',').map(str::trim) {
        if directive.is_empty() {
            return Err("empty directive".into());
        }
        // A bare word would otherwise be read as a target name ("verbose" = trace for a target
        // that does not exist, and nothing else logged).
        if !directive.contains('=') && directive.parse::<LevelFilter>().is_err() {
            return Err(format!("{directive:?} is not a level"));
        }
    }
    level.trim().parse().map_err(|e: ParseError| e.to_string())
}

/// Installs the global subscriber; keep the guard alive until exit so the file gets flushed.
pub fn init(dir: &Path, level: &str, to_stderr: bool) -> anyhow::Result<WorkerGuard> {
    crate::files::create_dir_all(dir, crate::files::PRIVATE_DIR)
        .map_err(|e| anyhow::anyhow!("cannot create log dir {}: {e}", dir.display()))?;
    let appender = LogFile::open(dir)
        .map_err(|e| anyhow::anyhow!("cannot open a log file in {}: {e}", dir.display()))?;
    // The default queue (128k lines) preallocates ~4 MiB; 4096 lines is plenty for a daemon
    // and keeps the idle agent small. Lines past it are dropped, not blocked on.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .finish(appender);
    let filter =
        filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    // One filter for both layers, behind a reload handle so `log.level` changes at run time.
    let (filter, handle) = reload::Layer::new(filter);
    let file_layer = fmt::layer().with_ansi(false).with_writer(writer);
    let stderr_layer = to_stderr.then(|| fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    let _ = LEVEL.set(handle);
    Ok(guard)
}

/// The handle on the installed logger's filter (unset when [`init`] was not called: tests).
static LEVEL: std::sync::OnceLock<reload::Handle<Targets, tracing_subscriber::Registry>> =
    std::sync::OnceLock::new();

/// Puts a new `log.level` in force (see [`filter`] for what it accepts). Without an installed
/// logger (the agent run in process by tests) there is nothing to change and this succeeds.
pub fn set_level(level: &str) -> Result<(), String> {
    let targets = filter(level)?;
    match LEVEL.get() {
        Some(handle) => handle
            .reload(targets)
            .map_err(|e| format!("cannot change the log level: {e}")),
        None => Ok(()),
    }
}

/// The current time as the log lines show it (`2026-11-25T10:00:00.123456Z`).
fn timestamp() -> String {
    let mut s = String::with_capacity(32);
    let _ = tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut s));
    s
}

/// The log file writer: `agent.YYYY-MM-DD.log` (UTC dates), a new file each day, the newest
/// [`KEEP_FILES`] kept. Each call of `write` is one formatted event (the non-blocking writer
/// hands them over one by one); it is written with one `write(2)` (retried for the rest on a
/// short write) and, if it could not be written whole, the file is cut back to where the line
/// began. Lost lines are counted, and the count is written as a line of its own before the next
/// line that can be written.
pub struct LogFile {
    dir: PathBuf,
    /// The date of the open file (`YYYY-MM-DD`).
    date: String,
    file: Option<File>,
    /// The file's length: where the next line starts.
    len: u64,
    /// Lines lost since the last line written, and why the last one was.
    lost: u64,
    error: Option<io::Error>,
}

impl LogFile {
    /// Opens today's file in `dir` (which must exist).
    pub fn open(dir: &Path) -> io::Result<LogFile> {
        let mut log = LogFile {
            dir: dir.to_path_buf(),
            date: String::new(),
            file: None,
            len: 0,
            lost: 0,
            error: None,
        };
        log.reopen(&timestamp()[..10])?;
        Ok(log)
    }

    fn reopen(&mut self, date: &str) -> io::Result<()> {
        self.file = None;
        let path = self.dir.join(format!("{LOG_PREFIX}.{date}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        if self.date != date {
            self.date = date.to_owned();
            self.prune();
        }
        Ok(())
    }

    /// Removes the oldest log files past [`KEEP_FILES`].
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{LOG_PREFIX}.")) && n.ends_with(".log")
                })
            })
            .collect();
        // The date in the name sorts as text.
        logs.sort();
        let excess = logs.len().saturating_sub(KEEP_FILES);
        for old in &logs[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }

    /// Writes one line; false (and nothing of it left in the file) if it could not be written.
    fn append(&mut self, line: &[u8]) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut done = 0;
        while done < line.len() {
            match file.write(&line[done..]) {
                Ok(0) => {
                    self.error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        if done == line.len() {
            self.len += done as u64;
            return true;
        }
        if done > 0 && file.set_len(self.len).is_err() {
            // Could not take the partial line back: start after it, on a line of its own.
            self.len = file.metadata().map_or(self.len + done as u64, |m| m.len());
        }
        // Reopened on the next line: the directory or the file may have been replaced meanwhile.
        self.file = None;
        false
    }

    fn write_line(&mut self, line: &[u8]) {
        let now = timestamp();
        let date = now.get(..10).unwrap_or_default();
        if (self.file.is_none() || self.date != date) && self.reopen(date).is_err() {
            self.lost += 1;
            return;
        }
        if self.lost > 0 {
            let why = match &self.error {
                Some(e) if e.kind() == io::ErrorKind::StorageFull => {
                    "while the disk was full".to_owned()
                }
                Some(e) => format!("while the log could not be written ({e})"),
                None => "while the log could not be written".to_owned(),
            };
            let lost = self.lost;
            let notice = format!(
                "{now}  WARN {}: {lost} log lines were lost {why}. lost_lines={lost}\n",
                module_path!()
            );
            if !self.append(notice.as_bytes()) {
                self.lost += 1;
                return;
            }
            self.lost = 0;
            self.error = None;
        }
        if !self.append(line) {
            self.lost += 1;
        }
    }
}

impl Write for LogFile {
    /// Takes one whole line; it is written whole or counted as lost, never half.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rate-limits a warning that would repeat once per batch: the first is logged at once, then at
/// most one line per window, with how much happened since the last line.
#[derive(Debug)]
pub struct Repeats {
    window: Duration,
    state: Mutex<RepeatState>,
}

#[derive(Debug, Default)]
struct RepeatState {
    logged_at: Option<Instant>,
    events: u64,
    batches: u64,
    points: u64,
}

/// What a line of a rate-limited warning reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Occurrences since the last line.
    pub events: u64,
    /// Batches they concerned.
    pub batches: u64,
    /// Points in those batches.
    pub points: u64,
    /// Seconds since the last line (0: the first line).
    pub secs: u64,
}

impl std::fmt::Display for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let es = if self.batches == 1 { "" } else { "es" };
        write!(f, "{} batch{es} ({} points)", self.batches, self.points)?;
        if self.events > 1 && self.secs > 0 {
            write!(f, " in the last {} s", self.secs)?;
        }
        Ok(())
    }
}

impl Repeats {
    /// A limiter logging at most once per `window`.
    pub fn new(window: Duration) -> Repeats {
        Repeats {
            window,
            state: Mutex::new(RepeatState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RepeatState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one occurrence; `Some` when a line is due now (the first, or the first after a
    /// quiet window), with everything counted since the last line.
    pub fn record(&self, batches: u64, points: u64) -> Option<Burst> {
        let mut st = self.state();
        st.events += 1;
        st.batches += batches;
        st.points += points;
        let due = st.logged_at.is_none_or(|t| t.elapsed() >= self.window);
        due.then(|| Self::take(&mut st))
    }

    /// Whether something was counted that no line reported yet.
    pub fn has_unreported(&self) -> bool {
        self.state().events > 0
    }

    /// What was counted since the last line, if the window passed (or `all`: at shutdown).
    pub fn pending(&self, all: bool) -> Option<Burst> {
        let mut st = self.state();
        let due = all || st.logged_at.is_none_or(|t| t.elapsed() >= self.window);
        (st.events > 0 && due).then(|| Self::take(&mut st))
    }

    fn take(st: &mut RepeatState) -> Burst {
        let now = Instant::now();
        let burst = Burst {
            events: st.events,
            batches: st.batches,
            points: st.points,
            secs: st
                .logged_at
                .map_or(0, |t| now.duration_since(t).as_secs_f64().ceil() as u64),
        };
        *st = RepeatState {
            logged_at: Some(now),
            ..RepeatState::default()
        };
        burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_directives_parse() {
        for ok in [
            "info",
            "debug",
            " warn ",
            "info,agent::output=debug",
            "agent=trace,hyper=off",
        ] {
            assert!(filter(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn a_repeated_warning_is_logged_first_then_counted_per_window() {
        let r = Repeats::new(Duration::from_secs(3600));
        let first = r.record(1, 8).expect("the first is logged at once");
        assert_eq!(first.to_string(), "1 batch (8 points)");
        for _ in 0..74 {
            assert_eq!(
                r.record(1, 8),
                None,
                "within the window: counted, not logged"
            );
        }
        assert_eq!(r.pending(false), None, "the window has not passed");
        let rest = r.pending(true).expect("the count is logged at shutdown");
        assert_eq!((rest.events, rest.batches, rest.points), (74, 74, 592));
        assert_eq!(r.pending(true), None, "logged once");

        let r = Repeats::new(Duration::ZERO);
        assert!(r.record(2, 16).is_some());
        assert!(r.record(3, 24).is_some(), "a passed window logs at once");
    }

    #[test]
    fn log_lines_lost_to_a_full_disk_are_counted_and_reported_once_it_works() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = LogFile::open(dir.path()).expect("open");
        log.write_all(b"first line\n").expect("write");
        // Today's file becomes /dev/full: every write fails with ENOSPC.
        let path = dir.path().join(format!("{LOG_PREFIX}.{}.log", log.date));
        let kept = std::fs::read(&path).expect("read");
        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
        log.file = None;
        for i in 0..3 {
            log.write_all(format!("lost {i}\n").as_bytes())
                .expect("never an error");
        }
        assert_eq!(log.lost, 3);
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, kept).expect("restore");
        log.write_all(b"after\n").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "first line");
        assert!(
            lines[1]
                .contains(" WARN agent::logging: 3 log lines were lost while the disk was full."),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "after");
    }

    #[test]
    fn bare_words_and_bad_levels_are_refused() {
        for bad in ["", "verbose", "info,loud", "agent=loud", "agent=debug,"] {
            assert!(filter(bad).is_err(), "{bad:?}");
        }
    }
}
