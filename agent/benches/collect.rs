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

/// User and system CPU time of this thread, as getrusage(RUSAGE_THREAD) splits them (the split
/// is sampled at ticks, so it is read around loops of a second or more).
fn rusage_split() -> (Duration, Duration) {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    (tv(u.user_time()), tv(u.system_time()))
}

/// Mean user and system time per call of `f`, calls back to back for about `secs` seconds.
fn split_per_call(secs: f64, mut f: impl FnMut() -> usize) -> (Duration, Duration) {
    let t0 = std::time::Instant::now();
    let (u0, s0) = rusage_split();
    let mut n = 0u32;
    while t0.elapsed().as_secs_f64() < secs {
        black_box(f());
        n += 1;
    }
    let (u1, s1) = rusage_split();
    ((u1 - u0) / n, (s1 - s0) / n)
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
        "  full system collection ({} families) {all:>10.2?}  = {:.1} x baseline, {metrics} metrics, {all_allocs} allocations",
        Family::ALL.len(),
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
        "  full system collection ({} families) {all:>10.2?}  = {:.1} x baseline",
        Family::ALL.len(),
        all.as_secs_f64() / base.as_secs_f64()
    );
    let (rest, _, _) = per_call(N, GAP, || {
        Family::ALL
            .iter()
            .filter(|f| **f != Family::Socket)
            .map(|f| c.collect(*f).len())
            .sum()
    });
    println!(
        "  full system collection without SOCKET {rest:>10.2?}  = {:.1} x baseline",
        rest.as_secs_f64() / base.as_secs_f64()
    );
    println!("getrusage, user / system time per call, back to back for 1 s each (hot):");
    let (u, s) = split_per_call(1.0, || full(c));
    println!("  full system collection  user {u:>10.2?}  system {s:>10.2?}");
    for f in Family::ALL {
        let (u, s) = split_per_call(1.0, || c.collect(f).len());
        println!("    {:<9} user {u:>10.2?}  system {s:>10.2?}", f.name());
    }
}

/// SOCKET against the alternative it replaces (reading `/proc/net/tcp` and `tcp6`), cold, with
/// the sockets now open.
fn socket_cost(c: &mut SystemCollector, label: &str) {
    const GAP: Duration = Duration::from_millis(12);
    let (t, a, m) = per_call(50, GAP, || c.collect(Family::Socket).len());
    let mut buf = String::with_capacity(1 << 20);
    let (p, _, _) = per_call(10, GAP, || {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .map(|f| {
                buf.clear();
                std::fs::File::open(f)
                    .and_then(|mut f| f.read_to_string(&mut buf))
                    .expect("read /proc/net/tcp")
            })
            .sum()
    });
    println!(
        "  SOCKET, {label}: {t:>10.2?} ({m} metrics, {a} allocations); reading /proc/net/tcp + tcp6 instead: {p:>10.2?}"
    );
}

/// The environment variable that makes this program a socket holder (see [`hold_sockets`]).
const HOLD: &str = "COLLECT_BENCH_HOLD_PAIRS";

/// Loopback TCP connections one holder process opens at most: two descriptors each, under the
/// usual hard limit of 20,000 open files (which an unprivileged bench cannot raise).
const PAIRS_PER_HOLDER: usize = 9_000;

/// A holder: opens `pairs` loopback connections to a listener of its own (so each has its own
/// ephemeral port range), says `ready`, and keeps them until its stdin closes.
fn hold_sockets(pairs: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::io::{BufRead, Write};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut socks = Vec::with_capacity(pairs * 2);
    for _ in 0..pairs {
        socks.push(std::net::TcpStream::connect(addr).expect("connect"));
        socks.push(l.accept().expect("accept").0);
    }
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(socks);
}

/// Opens `pairs` loopback TCP connections (2 sockets each), held by child processes of this
/// program; dropping the children (their stdin closes) closes the sockets.
fn open_sockets(pairs: usize) -> Vec<std::process::Child> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().expect("current_exe");
    let mut children = Vec::new();
    let mut left = pairs;
    while left > 0 {
        let n = left.min(PAIRS_PER_HOLDER);
        left -= n;
        let mut child = Command::new(&exe)
            .env(HOLD, n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a socket holder");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("holder");
        assert_eq!(line.trim(), "ready", "a socket holder failed");
        children.push(child);
    }
    children
}

fn main() {
    if let Some(pairs) = std::env::var(HOLD).ok().and_then(|v| v.parse().ok()) {
        hold_sockets(pairs);
        return;
    }
    let mut c = SystemCollector::new(SystemOptions::default());
    // Warm: the rate families have a previous sample, as in a running agent.
    full(&mut c);
    report(&mut c);
    socket_cost(&mut c, "sockets of the machine as it is");
    let tcp_inuse = || {
        std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("TCP:"))?.to_owned();
                Some(l)
            })
            .unwrap_or_default()
    };
    let pairs = 50_000;
    let holders = open_sockets(pairs);
    socket_cost(
        &mut c,
        &format!(
            "{} more sockets open in {} processes ({})",
            pairs * 2,
            holders.len(),
            tcp_inuse()
        ),
    );
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.wait();
    }

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
