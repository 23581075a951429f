//! Small formatting helpers shared by the CLI tables and the TUI screens.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A span of seconds as `45s`, `12m05s`, `3h12m`, `4d03h`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago unix time `then` was, seen from `now`: `12s ago` (or `in 5m` for the future).
pub fn age(now: i64, then: i64) -> String {
    if then > now {
        format!("in {}", duration((then - now) as u64))
    } else {
        format!("{} ago", duration((now - then) as u64))
    }
}

/// A byte count with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `text` cut from the left to at most `max` characters, marked with `…`: the end of a path
/// (the file, the namespace) is the part worth keeping.
pub fn tail(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let keep: String = text.chars().skip(n + 1 - max.max(1)).collect();
    format!("…{keep}")
}

/// `n` and the noun, singular or plural: `1 namespace`, `2 namespaces`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    shared::count(n, noun)
}

/// An optional text, or `-`.
pub fn opt(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

/// The last run of a plugin in a few words: `ok 120ms`, `timeout 10.0s`.
pub fn run_summary(run: &shared::api::RunResult) -> String {
    let took = if run.duration_ms < 1000 {
        format!("{}ms", run.duration_ms)
    } else {
        format!("{:.1}s", run.duration_ms as f64 / 1000.0)
    };
    match run.exit_code {
        Some(code) if !run.ok && run.reason == "exit" => format!("exit {code} {took}"),
        _ => format!("{} {took}", run.reason),
    }
}

/// An I/O error's text without the OS error number (`Connection refused (os error 111)`).
pub fn without_os_error(reason: &str) -> &str {
    match reason.find(" (os error") {
        Some(i) => &reason[..i],
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_the_two_largest_units() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(725), "12m05s");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 7), "3h12m");
        assert_eq!(duration(2 * 86_400 + 3 * 3600), "2d03h");
        assert_eq!(age(100, 40), "1m00s ago");
        assert_eq!(age(100, 130), "in 30s");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
