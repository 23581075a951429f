//! The connection to the agent as a small state machine: connecting, connected, or disconnected
//! with a retry time that backs off (1, 2, 4, 8, 16, then every 30 s).

/// Seconds between refreshes while connected.
pub const REFRESH_SECS: i64 = 2;
/// The longest wait between reconnect attempts.
pub const MAX_BACKOFF_SECS: i64 = 30;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// No answer yet (start-up).
    Connecting,
    /// The last refresh succeeded at `last_ok` (unix seconds).
    Connected {
        /// When the last refresh succeeded.
        last_ok: i64,
    },
    /// The last `attempt` refreshes failed; the next try is at `retry_at`.
    Disconnected {
        /// What went wrong, for the banner.
        reason: String,
        /// Consecutive failures.
        attempt: u32,
        /// Unix seconds of the next try.
        retry_at: i64,
        /// When the agent last answered, if ever.
        last_ok: Option<i64>,
    },
}

impl Conn {
    /// A refresh succeeded.
    pub fn succeeded(&mut self, now: i64) {
        *self = Conn::Connected { last_ok: now };
    }

    /// A refresh failed: back off before the next one.
    pub fn failed(&mut self, reason: String, now: i64) {
        let (attempt, last_ok) = match self {
            Conn::Disconnected {
                attempt, last_ok, ..
            } => (*attempt + 1, *last_ok),
            Conn::Connected { last_ok } => (1, Some(*last_ok)),
            Conn::Connecting => (1, None),
        };
        *self = Conn::Disconnected {
            reason,
            attempt,
            retry_at: now + backoff(attempt),
            last_ok,
        };
    }

    /// Whether a refresh is due at `now`, given when the last one was sent.
    pub fn refresh_due(&self, now: i64, last_sent: Option<i64>) -> bool {
        match self {
            Conn::Connecting => last_sent.is_none(),
            Conn::Connected { .. } => last_sent.is_none_or(|t| now - t >= REFRESH_SECS),
            Conn::Disconnected { retry_at, .. } => now >= *retry_at,
        }
    }

    /// True when the agent is not answering (data on screen is stale).
    pub fn is_down(&self) -> bool {
        matches!(self, Conn::Disconnected { .. })
    }
}

/// Seconds to wait after `attempt` consecutive failures: doubling from 1 s, capped.
pub fn backoff(attempt: u32) -> i64 {
    let exp = attempt.saturating_sub(1).min(16);
    (1i64 << exp).min(MAX_BACKOFF_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<i64> = (1..=8).map(backoff).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn failures_count_up_and_a_success_resets() {
        let mut c = Conn::Connected { last_ok: 100 };
        c.failed("refused".into(), 110);
        assert_eq!(
            c,
            Conn::Disconnected {
                reason: "refused".into(),
                attempt: 1,
                retry_at: 111,
                last_ok: Some(100)
            }
        );
        assert!(!c.refresh_due(110, Some(110)));
        assert!(c.refresh_due(111, Some(110)));
        c.failed("refused".into(), 111);
        c.failed("refused".into(), 113);
        assert!(matches!(
            c,
            Conn::Disconnected {
                attempt: 3,
                retry_at: 117,
                ..
            }
        ));
        c.succeeded(117);
        assert_eq!(c, Conn::Connected { last_ok: 117 });
        assert!(!c.refresh_due(118, Some(117)));
        assert!(c.refresh_due(119, Some(117)));
    }
}
