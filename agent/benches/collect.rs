//! System collection cost: CPU time per full collection (all families), measured with
//! getrusage(RUSAGE_THREAD) and with criterion, against a baseline of one read of /proc/stat in the
//! same run. Figures go into docs/benchmarks.md, section "System collection".
//!
//! Run: `cargo bench -p agent --bench collect`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent::collect::proc::ProcCollector;
use agent::collect::system::{Family, SystemCollector, SystemOptions};
use agent::registry::ProcItem;
use criterion::Criterion;
use nix::sys::resource::{getrusage, UsageWho};

/// Counts allocations so the run can report how many one collection makes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time of this thread so far, exact to the nanosecond: unlike getrusage, this clock includes
/// the time the thread has run since it was last switched in.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, owned timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User + system CPU time of this thread as getrusage(RUSAGE_THREAD) reports it. The kernel folds
/// the running slice in only at ticks and switches, so this is read around long loops only.
fn rusage_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn read_proc_stat(buf: &mut String) -> usize {
    buf.clear();
    std::fs::File::open("/proc/stat")
        .and_then(|mut f| f.read_to_string(buf))
        .expect("read /proc/stat")
}

fn full(c: &mut SystemCollector) -> usize {
    Family::ALL.iter().map(|f| c.collect(*f).len()).sum()
}

/// Mean CPU time and allocations per call of `f` over `n` calls, `gap` apart.
///
/// The gap lets a CPU tick pass between two CPU collections, as 10 s do in the agent; otherwise
/// that family has nothing to say and looks cheaper than it is. Sleeping is no CPU time of the
/// thread, so it does not bias the figure.
fn per_call(n: u32, gap: Duration, mut f: impl FnMut() -> usize) -> (Duration, u64, usize) {
    let mut cpu = Duration::ZERO;
    let mut allocs = 0;
    let mut out = 0;
    for _ in 0..n {
        std::thread::sleep(gap);
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = thread_cpu();
        out = black_box(f());
        cpu += thread_cpu() - t0;
        allocs += ALLOCS.load(Ordering::Relaxed) - a0;
    }
    (cpu / n, allocs / u64::from(n), out)
}

/// Mean CPU time per call over `n` back-to-back calls, by getrusage around the whole loop.
fn rusage_per_call(n: u32, mut f: impl FnMut() -> usize) -> Duration {
    let t0 = rusage_cpu();
    for _ in 0..n {
        black_box(f());
    }
    (rusage_cpu() - t0) / n
}

fn report(c: &mut SystemCollector) {
    const N: u32 = 200;
    const GAP: Duration = Duration::from_millis(12);
    let mut buf = String::with_capacity(8192);
    let (base, base_allocs, _) = per_call(N, GAP, || read_proc_stat(&mut buf));
    let (all, all_allocs, metrics) = per_call(N, GAP, || full(c));
    println!("clock_gettime(CLOCK_THREAD_CPUTIME_ID) around each call, calls 12 ms apart; mean per call:");
    println!("  baseline: one read of /proc/stat   {base:>10.2?}  ({base_allocs} allocations)");
    println!(
        "  full system collection (7 families) {all:>10.2?}  = {:.1} x baseline, {metrics} metrics, {all_allocs} allocations",
        all.as_secs_f64() / base.as_secs_f64()
    );
    for f in Family::ALL {
        let (t, a, m) = per_call(N / 2, GAP, || c.collect(f).len());
        println!(
            "    {:<7} {t:>10.2?}  = {:.1} x baseline, {m} metrics, {a} allocations",
            f.name(),
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
    let mut p = ProcCollector::new();
    let item = ProcItem {
        name: "bench".into(),
        bin_path: "/usr/sbin/no-such-daemon".into(),
        interval: 30,
    };
    let (t, a, _) = per_call(N / 2, GAP, || p.collect(&item).len());
    let procs = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count();
    println!(
        "  one process check (scans {procs} processes) {t:>10.2?} = {:.1} x baseline, {a} allocations",
        t.as_secs_f64() / base.as_secs_f64()
    );
    const LOOP: u32 = 4000;
    let base = rusage_per_call(LOOP, || read_proc_stat(&mut buf));
    let all = rusage_per_call(LOOP / 4, || full(c));
    println!("getrusage(RUSAGE_THREAD) around {LOOP} back-to-back calls (CPU collects nothing: no tick passes):");
    println!("  baseline: one read of /proc/stat   {base:>10.2?}");
    println!(
        "  full system collection (7 families) {all:>10.2?}  = {:.1} x baseline",
        all.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    let mut c = SystemCollector::new(SystemOptions::default());
    // Warm: the rate families have a previous sample, as in a running agent.
    full(&mut c);
    report(&mut c);

    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut buf = String::with_capacity(8192);
    crit.bench_function("baseline: read /proc/stat", |b| {
        b.iter(|| read_proc_stat(&mut buf))
    });
    crit.bench_function("full system collection", |b| b.iter(|| full(&mut c)));
    crit.final_summary();
}
