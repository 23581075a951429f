//! The live tap: copies of the points as they leave normalisation, for the operators and plugin
//! authors watching `GET /tap` (`agentctl tap`, the console's Points screen).
//!
//! A tap never slows the pipeline. Producers offer each submission to the open taps without
//! waiting: a tap whose reader is slow has its queue full, and what does not fit is counted as
//! dropped (the stream reports the count) instead of being waited for. With no tap open, a
//! submission costs one relaxed atomic load here.
//!
//! ```text
//! producer --submit--> [offer: filter, sample, try_send] --> pipeline channel (unchanged)
//!                          \--> tap queue (bounded in points) --> /tap stream
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Point;

/// Most points one tap holds queued for its reader; past it new points are dropped (and
/// counted). About 200 bytes each: a tap holds at most a few MiB.
pub const QUEUE_POINTS: usize = 16 * 1024;

/// Most batches one tap holds queued (each a submission's matching points).
const QUEUE_BATCHES: usize = 1024;

/// Which points a tap wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace.
    pub ns: Option<String>,
    /// Only measurements matching this glob (`PLUGIN.nginx.*`).
    pub measurement: Option<globset::GlobMatcher>,
    /// Only points carrying each of these tags with this value.
    pub tags: Vec<(String, String)>,
}

impl Filter {
    /// A measurement glob: `*` matches any run of characters (dots included), `?` one, `[..]`
    /// a class, `{a,b}` alternatives.
    pub fn glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
        globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| format!("bad measurement glob {pattern:?}: {}", e.kind()))
    }

    fn wants_ns(&self, ns: &str) -> bool {
        self.ns.as_deref().is_none_or(|want| want == ns)
    }

    fn wants(&self, p: &Point) -> bool {
        if let Some(m) = &self.measurement {
            if !m.is_match(&p.measurement) {
                return false;
            }
        }
        self.tags
            .iter()
            .all(|(k, v)| p.tags.iter().any(|(pk, pv)| pk == k && pv == v))
    }
}

/// Points of one submission that a tap wants.
#[derive(Debug)]
pub struct TapBatch {
    /// The namespace.
    pub ns: Arc<str>,
    /// Which job or API call produced them (`system CPU`, `plugin ns/nginx`, `POST /post`).
    pub producer: Arc<str>,
    /// The points, normalised (renamed, `host` tag added).
    pub points: Vec<Point>,
}

/// Keeps at most `rate` points per second, spread evenly over what arrives: from the second
/// window on, every n-th matching point, n being the last window's count over `rate`.
#[derive(Debug)]
struct Sampler {
    rate: u64,
    window: Instant,
    seen: u64,
    taken: u64,
    stride: u64,
    counter: u64,
}

impl Sampler {
    fn new(rate: u32, now: Instant) -> Self {
        Sampler {
            rate: u64::from(rate.max(1)),
            window: now,
            seen: 0,
            taken: 0,
            stride: 1,
            counter: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.stride = self.seen.div_ceil(self.rate).max(1);
            self.window = now;
            self.seen = 0;
            self.taken = 0;
        }
    }

    fn admit(&mut self) -> bool {
        self.seen += 1;
        self.counter += 1;
        if self.taken >= self.rate || !self.counter.is_multiple_of(self.stride) {
            return false;
        }
        self.taken += 1;
        true
    }
}

/// What a tap and the hub share.
#[derive(Debug)]
struct Shared {
    id: u64,
    filter: Filter,
    sampler: Option<Mutex<Sampler>>,
    /// Points queued for the reader, not yet taken.
    queued: AtomicUsize,
    /// Points that matched but did not fit the queue, since the reader last asked.
    dropped: AtomicU64,
}

struct Entry {
    shared: Arc<Shared>,
    tx: mpsc::Sender<TapBatch>,
}

/// The open taps; one per agent, shared by the pipeline's handles.
#[derive(Default)]
pub struct TapHub {
    open: AtomicUsize,
    /// Points every tap dropped since start (`/metrics`).
    dropped_total: AtomicU64,
    next_id: AtomicU64,
    entries: Mutex<Vec<Entry>>,
}

/// Why a tap was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The cap of concurrent taps is reached.
    #[error("{open} taps are open, the most this agent allows (agent.max_taps = {max}); close one or raise it")]
    TooMany {
        /// Taps open now.
        open: usize,
        /// The cap.
        max: usize,
    },
    /// The agent is stopping.
    #[error("the agent is shutting down")]
    Closed,
}

impl TapHub {
    /// Whether any tap is open: the producers' only cost when none is.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    /// Taps open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Points the taps dropped since start, their readers being too slow.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    fn count_dropped(&self, s: &Shared, n: usize) {
        s.dropped.fetch_add(n as u64, Ordering::Relaxed);
        self.dropped_total.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Opens a tap, unless `max` are open already. `rate`: most points per second.
    pub fn open(
        self: &Arc<Self>,
        filter: Filter,
        rate: Option<u32>,
        max: usize,
    ) -> Result<Tap, OpenError> {
        let mut entries = self.lock();
        if self.next_id.load(Ordering::Relaxed) == u64::MAX {
            return Err(OpenError::Closed);
        }
        if entries.len() >= max {
            return Err(OpenError::TooMany {
                open: entries.len(),
                max,
            });
        }
        let shared = Arc::new(Shared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            filter,
            sampler: rate.map(|r| Mutex::new(Sampler::new(r, Instant::now()))),
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        entries.push(Entry {
            shared: Arc::clone(&shared),
            tx,
        });
        self.open.store(entries.len(), Ordering::Relaxed);
        Ok(Tap {
            rx,
            shared,
            hub: Arc::clone(self),
        })
    }

    /// Ends every tap (their streams finish) and opens no more: the agent is stopping.
    pub fn close(&self) {
        let mut entries = self.lock();
        self.next_id.store(u64::MAX, Ordering::Relaxed);
        entries.clear();
        self.open.store(0, Ordering::Relaxed);
    }

    /// Offers the points of one submission to every open tap; never waits.
    pub fn offer(&self, ns: &str, producer: &str, points: &[Point]) {
        let entries = self.lock();
        let mut names: Option<(Arc<str>, Arc<str>)> = None;
        for e in entries.iter() {
            let s = &e.shared;
            if !s.filter.wants_ns(ns) {
                continue;
            }
            let mut sampler = s
                .sampler
                .as_ref()
                .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner));
            if let Some(sm) = sampler.as_deref_mut() {
                sm.roll(Instant::now());
            }
            let mut admit =
                |p: &Point| s.filter.wants(p) && sampler.as_deref_mut().is_none_or(Sampler::admit);
            let room = QUEUE_POINTS.saturating_sub(s.queued.load(Ordering::Relaxed));
            if room == 0 || e.tx.capacity() == 0 {
                let n = points.iter().filter(|p| admit(p)).count();
                self.count_dropped(s, n);
                continue;
            }
            let mut taken: Vec<Point> = points.iter().filter(|p| admit(p)).cloned().collect();
            if taken.len() > room {
                self.count_dropped(s, taken.len() - room);
                taken.truncate(room);
            }
            if taken.is_empty() {
                continue;
            }
            let (ns, producer) = names
                .get_or_insert_with(|| (ns.into(), producer.into()))
                .clone();
            let n = taken.len();
            s.queued.fetch_add(n, Ordering::Relaxed);
            let batch = TapBatch {
                ns,
                producer,
                points: taken,
            };
            if e.tx.try_send(batch).is_err() {
                s.queued.fetch_sub(n, Ordering::Relaxed);
                self.count_dropped(s, n);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, id: u64) {
        let mut entries = self.lock();
        entries.retain(|e| e.shared.id != id);
        if self.next_id.load(Ordering::Relaxed) != u64::MAX {
            self.open.store(entries.len(), Ordering::Relaxed);
        }
    }
}

/// One open tap: the reader's end. Dropping it closes the tap.
pub struct Tap {
    rx: mpsc::Receiver<TapBatch>,
    shared: Arc<Shared>,
    hub: Arc<TapHub>,
}

impl Tap {
    /// The next batch of points; `None` once the agent is stopping.
    pub async fn recv(&mut self) -> Option<TapBatch> {
        let b = self.rx.recv().await?;
        self.shared
            .queued
            .fetch_sub(b.points.len(), Ordering::Relaxed);
        Some(b)
    }

    /// Points dropped since the last call, because the reader was too slow.
    pub fn take_dropped(&self) -> u64 {
        self.shared.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.hub.remove(self.shared.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Value;

    fn point(m: &str, tags: &[(&str, &str)]) -> Point {
        Point {
            measurement: m.to_owned(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: Value::Float(1.0),
            timestamp: 1,
        }
    }

    fn drain(tap: &mut Tap) -> Vec<TapBatch> {
        let mut out = Vec::new();
        while let Ok(b) = tap.rx.try_recv() {
            tap.shared
                .queued
                .fetch_sub(b.points.len(), Ordering::Relaxed);
            out.push(b);
        }
        out
    }

    #[test]
    fn no_tap_open_means_nothing_is_copied() {
        let hub = Arc::new(TapHub::default());
        assert!(!hub.is_open());
        let tap = hub.open(Filter::default(), None, 4).expect("ok");
        assert!(hub.is_open());
        drop(tap);
        assert!(!hub.is_open(), "closing the last tap turns the hook off");
    }

    #[test]
    fn filters_by_namespace_glob_and_tags() {
        let hub = Arc::new(TapHub::default());
        let filter = Filter {
            ns: Some("web".into()),
            measurement: Some(Filter::glob("PLUGIN.nginx.*").expect("ok")),
            tags: vec![("port".into(), "80".into())],
        };
        let mut tap = hub.open(filter, None, 4).expect("ok");
        let pts = vec![
            point("PLUGIN.nginx.active", &[("host", "h"), ("port", "80")]),
            point("PLUGIN.nginx.active", &[("host", "h"), ("port", "81")]),
            point("PLUGIN.redis.used", &[("host", "h"), ("port", "80")]),
            point("PLUGIN.nginx.x.y", &[("port", "80")]),
        ];
        hub.offer("web", "plugin web/nginx", &pts);
        hub.offer("db", "plugin db/nginx", &pts);
        let got = drain(&mut tap);
        assert_eq!(got.len(), 1, "only the web namespace");
        let names: Vec<_> = got[0].points.iter().map(|p| &p.measurement).collect();
        assert_eq!(names, ["PLUGIN.nginx.active", "PLUGIN.nginx.x.y"]);
        assert_eq!(&*got[0].producer, "plugin web/nginx");
    }

    #[test]
    fn a_slow_reader_loses_points_and_is_told_how_many() {
        let hub = Arc::new(TapHub::default());
        let mut tap = hub.open(Filter::default(), None, 4).expect("ok");
        let pts: Vec<Point> = (0..1000).map(|_| point("m", &[])).collect();
        for _ in 0..20 {
            hub.offer("a", "p", &pts);
        }
        let got: usize = drain(&mut tap).iter().map(|b| b.points.len()).sum();
        assert_eq!(got, QUEUE_POINTS, "the queue holds its bound and no more");
        assert_eq!(tap.take_dropped(), (20_000 - QUEUE_POINTS) as u64);
        assert_eq!(tap.take_dropped(), 0, "the count restarts once read");
        assert_eq!(hub.dropped_total(), (20_000 - QUEUE_POINTS) as u64);
        hub.offer("a", "p", &pts);
        assert_eq!(
            drain(&mut tap)
                .iter()
                .map(|b| b.points.len())
                .sum::<usize>(),
            1000
        );
    }

    #[test]
    fn the_rate_cap_samples_evenly_after_the_first_second() {
        let t0 = Instant::now();
        let mut s = Sampler::new(10, t0);
        let first: usize = (0..100).filter(|_| s.admit()).count();
        assert_eq!(first, 10, "never more than the rate");
        s.roll(t0 + Duration::from_secs(1));
        let taken: Vec<usize> = (0..100).filter(|_| s.admit()).collect();
        assert_eq!(taken.len(), 10);
        let gaps: Vec<usize> = taken.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == 10), "every 10th point: {taken:?}");
    }

    #[test]
    fn the_cap_of_open_taps_holds_and_a_closed_hub_opens_none() {
        let hub = Arc::new(TapHub::default());
        let a = hub.open(Filter::default(), None, 2).expect("ok");
        let _b = hub.open(Filter::default(), None, 2).expect("ok");
        let err = hub.open(Filter::default(), None, 2).err().expect("refused");
        assert!(err.to_string().contains("agent.max_taps = 2"), "{err}");
        drop(a);
        let mut c = hub.open(Filter::default(), None, 2).expect("ok");
        hub.close();
        assert!(!hub.is_open());
        assert!(matches!(
            hub.open(Filter::default(), None, 2),
            Err(OpenError::Closed)
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("ok");
        assert!(
            rt.block_on(c.recv()).is_none(),
            "a closed hub ends the stream"
        );
    }
}
