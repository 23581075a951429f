//! When a periodic registry call happens: spread per host, so a fleet restarted together does not
//! call the registry in lock-step, and backed off while the registry fails.
//!
//! A call is due at the host's **slot**: the wall-clock instants `t` with
//! `t mod period == phase`, where `phase` is the FNV-1a hash of a per-call key (the hostname)
//! modulo the splay window. Hosts with different names fall at different points of the window,
//! and each host keeps its point across restarts. Each call adds a **random part** of up to a
//! tenth of the window, so hosts that share a name (or a hash) do not stay together.
//!
//! After `n` calls in a row failed, the next call skips to the slot `2^(n-1)` periods on (the
//! first failure costs nothing: the next slot as usual), at most [`BACKOFF_CAP`] (or one period,
//! when the period is longer) ahead. The phase stays, so a fleet that backs off stays spread and
//! comes back spread when the registry answers again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a failing registry is left alone between two calls (unless the period itself
/// is longer): the registry's recovery is noticed within this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);

/// The random part of each call: up to this fraction (1 / N) of the splay window.
const JITTER_DIVISOR: u64 = 10;

/// FNV-1a, 64 bits: a stable hash (the same on every host, build and run), cheap and well
/// spread over short strings such as hostnames.
pub fn fnv1a(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The clock of one periodic call of one host.
#[derive(Debug, Clone)]
pub struct Spread {
    period_ms: u64,
    phase_ms: u64,
    jitter_ms: u64,
    max_skip: u64,
    failures: u32,
}

impl Spread {
    /// The clock for the call named by `key` (the hostname, or the hostname and the call's
    /// name), every `period`, its phase within `splay` (zero or more than the period: the
    /// whole period).
    pub fn new(key: &str, period: Duration, splay: Duration) -> Spread {
        let period_ms = millis(period).max(1);
        let window_ms = match millis(splay) {
            0 => period_ms,
            s => s.min(period_ms),
        };
        Spread {
            period_ms,
            phase_ms: fnv1a(key) % window_ms,
            jitter_ms: window_ms / JITTER_DIVISOR,
            max_skip: (millis(BACKOFF_CAP) / period_ms).max(1),
            failures: 0,
        }
    }

    /// Where in each period this host's slot is.
    pub fn phase(&self) -> Duration {
        Duration::from_millis(self.phase_ms)
    }

    /// The most the random part adds to a slot.
    pub fn max_jitter(&self) -> Duration {
        Duration::from_millis(self.jitter_ms)
    }

    /// Calls failed in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts the outcome of a call: a success ends the backoff, a failure lengthens it.
    pub fn record(&mut self, ok: bool) {
        self.failures = if ok {
            0
        } else {
            self.failures.saturating_add(1)
        };
    }

    /// How many periods on the next slot is (1 unless backing off).
    pub fn skip(&self) -> u64 {
        match self.failures {
            0 => 1,
            n => 1u64
                .checked_shl(n - 1)
                .unwrap_or(u64::MAX)
                .min(self.max_skip),
        }
    }

    /// How long from `now` (since the Unix epoch) until the next call: the next slot after
    /// `now` (further on while backing off), plus `random` (taken modulo the random part's range).
    pub fn delay_at(&self, now: Duration, random: u64) -> Duration {
        let now_ms = millis(now);
        let earliest = now_ms.saturating_add((self.skip() - 1).saturating_mul(self.period_ms));
        // The first slot strictly after `earliest`.
        let since_phase =
            (earliest % self.period_ms + self.period_ms - self.phase_ms) % self.period_ms;
        let slot = earliest + (self.period_ms - since_phase);
        let jitter = random % (self.jitter_ms + 1);
        Duration::from_millis(slot - now_ms + jitter)
    }

    /// How long from now until the next call (wall clock, random part from the thread's RNG).
    pub fn delay(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.delay_at(now, rand::random())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_phase_is_stable_per_host_and_differs_between_hosts() {
        let a = Spread::new("web-01", 60 * S, Duration::ZERO);
        let again = Spread::new("web-01", 60 * S, Duration::ZERO);
        let b = Spread::new("web-02", 60 * S, Duration::ZERO);
        assert_eq!(a.phase(), again.phase());
        assert_ne!(a.phase(), b.phase());
        assert!(a.phase() < 60 * S && b.phase() < 60 * S);
    }

    #[test]
    fn calls_come_at_the_slot_plus_at_most_a_tenth_of_the_window() {
        let s = Spread::new("db-7", 60 * S, Duration::ZERO);
        let phase = s.phase();
        assert_eq!(s.max_jitter(), 6 * S);
        // Just before the slot of period 1000, and just after it.
        let slot = 1000 * 60 * S + phase;
        assert_eq!(s.delay_at(slot - S, 0), S);
        assert_eq!(s.delay_at(slot, 0), 60 * S, "strictly after now");
        assert_eq!(s.delay_at(slot - S, 6000), 7 * S, "the largest random part");
        assert_eq!(s.delay_at(slot - S, 6001), S, "taken modulo its range");
        // Whenever it is asked, the call lands on a slot plus the random part.
        for now_ms in [0u64, 1, 59_999, 61_234, 3_600_000_017] {
            let now = Duration::from_millis(now_ms);
            for random in [0, 777, 6000] {
                let at = now + s.delay_at(now, random);
                let into = (at.as_millis() as u64 + 60_000 - phase.as_millis() as u64) % 60_000;
                assert!(into <= 6000, "{now_ms} {random}: {into} ms past the slot");
                assert!(s.delay_at(now, random) <= 66 * S);
            }
        }
    }

    #[test]
    fn the_splay_window_bounds_the_phase_and_the_random_part() {
        let hosts: Vec<Spread> = (0..200)
            .map(|i| Spread::new(&format!("h{i}"), 3600 * S, 60 * S))
            .collect();
        assert!(hosts.iter().all(|s| s.phase() < 60 * S));
        assert!(hosts.iter().all(|s| s.max_jitter() == 6 * S));
        // A window longer than the period is the period.
        let s = Spread::new("h", 10 * S, 100 * S);
        assert!(s.phase() < 10 * S);
        assert_eq!(s.max_jitter(), S);
    }

    #[test]
    fn hosts_named_alike_are_spread_over_the_window() {
        // 1000 hosts, 60 s: no second of the period holds more than twice the mean (16.7).
        let mut per_second = [0u32; 60];
        for i in 0..1000 {
            let s = Spread::new(&format!("web-{i:04}.dc1.example"), 60 * S, Duration::ZERO);
            per_second[s.phase().as_secs() as usize] += 1;
        }
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(busiest <= 33, "{per_second:?}");
        assert!(per_second.iter().all(|n| *n > 0), "{per_second:?}");
    }

    #[test]
    fn failures_back_off_exponentially_on_the_same_phase_up_to_the_cap() {
        let mut s = Spread::new("h", 10 * S, Duration::ZERO);
        let now = 1_000_000 * S + s.phase() - S; // one second before a slot
        assert_eq!(s.delay_at(now, 0), S);
        let mut waits = Vec::new();
        for _ in 0..10 {
            s.record(false);
            waits.push(s.delay_at(now, 0).as_secs());
        }
        assert_eq!(waits, [1, 11, 31, 71, 151, 311, 591, 591, 591, 591]);
        assert_eq!(s.failures(), 10);
        s.record(true);
        assert_eq!(s.delay_at(now, 0), S, "an answer ends the backoff");

        // A period longer than the cap is never backed off beyond one period.
        let mut long = Spread::new("h", 3600 * S, Duration::ZERO);
        for _ in 0..40 {
            long.record(false);
        }
        assert_eq!(long.skip(), 1);
        assert!(long.delay_at(now, u64::MAX) <= 3600 * S + 360 * S);
    }
}
