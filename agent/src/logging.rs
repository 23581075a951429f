//! The agent's own log: tracing to a daily-rotated file in the log dir, and to stderr in the
//! foreground.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

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
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_PREFIX)
        .filename_suffix("log")
        .max_log_files(KEEP_FILES)
        .build(dir)
        .map_err(|e| anyhow::anyhow!("cannot open a log file in {}: {e}", dir.display()))?;
    // The default queue (128k lines) preallocates ~4 MiB; 4096 lines is plenty for a daemon
    // and keeps the idle agent small. Lines past it are dropped, not blocked on.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .finish(appender);
    let filter =
        filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let file_layer = fmt::layer()
        .with_ansi(false)
        .with_writer(writer)
        .with_filter(filter.clone());
    let stderr_layer = to_stderr.then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
    });
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::filter;

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
    fn bare_words_and_bad_levels_are_refused() {
        for bad in ["", "verbose", "info,loud", "agent=loud", "agent=debug,"] {
            assert!(filter(bad).is_err(), "{bad:?}");
        }
    }
}
