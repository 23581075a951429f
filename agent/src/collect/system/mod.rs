//! System collectors: CPU, memory, disk io, network, filesystems, kernel counters and clock, TCP/UDP
//! counters, sockets, pressure, vmstat, conntrack, softnet, sensors, md RAID and core dumps, read
//! straight from `/proc` and `/sys` (and `statvfs`, `adjtimex`, sock_diag netlink).
//!
//! Direct parsing instead of sysinfo: one family costs one or two small file reads into a reused
//! buffer, with no process table kept in memory (see docs/metrics.md and docs/benchmarks.md).
//! Every metric name, unit and tag is documented in docs/metrics.md.

mod conntrack;
mod coredump;
mod cpu;
mod disk;
mod fs;
mod hwmon;
mod kernel;
mod mem;
mod net;
mod netstat;
mod pressure;
mod raid;
mod socket;
mod softnet;
mod time;
mod vmstat;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::{Metric, Value};
use tracing::{info, warn};

/// A system metric family; each runs on its own interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// CPU time shares, total and per core (`/proc/stat`).
    Cpu,
    /// Memory and swap (`/proc/meminfo`).
    Mem,
    /// Block device io rates (`/proc/diskstats`).
    Disk,
    /// Network interface rates (`/proc/net/dev`).
    Net,
    /// Filesystem usage and inodes (`/proc/self/mounts` + `statvfs`).
    Fs,
    /// Load, file handles, processes, context switches, forks, uptime.
    Kernel,
    /// Kernel clock discipline state (`adjtimex`).
    Time,
    /// TCP and UDP protocol counters as rates (`/proc/net/snmp`, `/proc/net/netstat`, `snmp6`).
    Netstat,
    /// TCP sockets by state (sock_diag netlink) and sockets per protocol (`/proc/net/sockstat{,6}`).
    Socket,
    /// Pressure stall information for cpu, memory and io (`/proc/pressure/*`).
    Pressure,
    /// Paging, swapping and OOM kills as rates (`/proc/vmstat`).
    Vmstat,
    /// Connection tracking table fill (`/proc/sys/net/netfilter/nf_conntrack_*`).
    Conntrack,
    /// Per-CPU packet drops and time squeezes (`/proc/net/softnet_stat`).
    Softnet,
    /// Temperatures and fan speeds (`/sys/class/hwmon`, `/sys/class/thermal`).
    Hwmon,
    /// Linux software RAID arrays (`/proc/mdstat`).
    Raid,
    /// Core dumps that appeared since the last collection.
    Coredump,
}

impl Family {
    /// Every family, in registry order.
    pub const ALL: [Family; 16] = [
        Family::Cpu,
        Family::Mem,
        Family::Disk,
        Family::Net,
        Family::Fs,
        Family::Kernel,
        Family::Time,
        Family::Netstat,
        Family::Socket,
        Family::Pressure,
        Family::Vmstat,
        Family::Conntrack,
        Family::Softnet,
        Family::Hwmon,
        Family::Raid,
        Family::Coredump,
    ];

    /// The registry's spelling (`measurement_type`), e.g. `CPU`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Cpu => "CPU",
            Family::Mem => "MEM",
            Family::Disk => "DISK",
            Family::Net => "NET",
            Family::Fs => "FS",
            Family::Kernel => "KERNEL",
            Family::Time => "TIME",
            Family::Netstat => "NETSTAT",
            Family::Socket => "SOCKET",
            Family::Pressure => "PRESSURE",
            Family::Vmstat => "VMSTAT",
            Family::Conntrack => "CONNTRACK",
            Family::Softnet => "SOFTNET",
            Family::Hwmon => "HWMON",
            Family::Raid => "RAID",
            Family::Coredump => "COREDUMP",
        }
    }

    /// Parses the registry's spelling, ignoring case.
    pub fn from_name(s: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// SPEC 4: fast-moving families every 10 s, slow ones every 300 s; sensors, arrays and core
    /// dumps every 60 s, so an overheating disk, a degraded array or a crash shows within a minute.
    /// SOCKET every 60 s too: counting TCP states walks the kernel's whole established hash
    /// (about 1 ms per collection on a 24 GiB host, the largest single cost of an idle agent;
    /// node_exporter leaves its `tcpstat` collector off for this cost). `SOCKET = 10` restores it.
    pub fn default_interval(self) -> Duration {
        match self {
            Family::Cpu
            | Family::Mem
            | Family::Disk
            | Family::Net
            | Family::Netstat
            | Family::Pressure
            | Family::Vmstat
            | Family::Conntrack
            | Family::Softnet => Duration::from_secs(10),
            Family::Socket | Family::Hwmon | Family::Raid | Family::Coredump => {
                Duration::from_secs(60)
            }
            Family::Fs | Family::Kernel | Family::Time => Duration::from_secs(300),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the system collectors read and what they leave out.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Where procfs is mounted; tests point this at a directory of fixture files.
    pub proc_root: PathBuf,
    /// Where sysfs is mounted (whole disks vs partitions, sensors).
    pub sys_root: PathBuf,
    /// The root filesystem, under which the core dump directory is looked up; tests point it at
    /// a temporary directory.
    pub root: PathBuf,
    /// Network interfaces left out: names, or prefixes ending in `*` ([`name_matches`]).
    pub skip_interfaces: Vec<String>,
    /// Block devices left out, as names or prefixes.
    pub skip_disks: Vec<String>,
    /// Filesystem types left out, as names or prefixes.
    pub skip_fstypes: Vec<String>,
    /// How long a network filesystem's `statvfs` may take before its mount is left out.
    pub statvfs_timeout: Duration,
}

/// Interfaces left out by default: loopback, and container and bridge plumbing whose traffic is
/// also seen on a real interface.
pub const DEFAULT_SKIP_INTERFACES: [&str; 5] = ["lo", "veth*", "docker*", "br-*", "virbr*"];

/// Block devices left out by default: loop devices and RAM disks.
pub const DEFAULT_SKIP_DISKS: [&str; 2] = ["loop*", "ram*"];

pub use fs::DEFAULT_SKIP_FSTYPES;

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions::with_skips(
            &DEFAULT_SKIP_INTERFACES.map(String::from),
            &DEFAULT_SKIP_DISKS.map(String::from),
            &DEFAULT_SKIP_FSTYPES.map(String::from),
        )
    }
}

impl SystemOptions {
    /// Reads the real `/proc` and `/sys`, leaving out what the three pattern lists match.
    pub fn with_skips(interfaces: &[String], disks: &[String], fstypes: &[String]) -> Self {
        SystemOptions {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            root: PathBuf::from("/"),
            skip_interfaces: interfaces.to_vec(),
            skip_disks: disks.to_vec(),
            skip_fstypes: fstypes.to_vec(),
            statvfs_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `name` matches one of `patterns`: a pattern is a whole name, or a prefix followed by
/// `*` (`veth*`).
pub fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// Why `pattern` cannot be a skip pattern, if it cannot: empty, blank inside, or a `*`
/// anywhere but at the end.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing; remove it".into());
    }
    if pattern.chars().any(char::is_whitespace) {
        return Err(format!("{pattern:?}: names have no spaces"));
    }
    if pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**") {
        return Err(format!(
            "{pattern:?}: '*' may only end a pattern (a prefix, like \"veth*\")"
        ));
    }
    Ok(())
}

/// Holds the previous counter samples per family so rates can be derived. Blocking (reads /proc):
/// callers run it in spawn_blocking.
pub struct SystemCollector {
    options: SystemOptions,
    reader: Reader,
    cpu: cpu::State,
    disk: disk::State,
    net: net::State,
    fs: fs::State,
    kernel: kernel::State,
    netstat: Rates,
    socket: socket::State,
    pressure: Rates,
    vmstat: Rates,
    softnet: softnet::State,
    coredump: coredump::State,
}

impl SystemCollector {
    /// A collector with no previous samples: the first collection of a rate family emits no rates.
    pub fn new(options: SystemOptions) -> Self {
        SystemCollector {
            options,
            reader: Reader::default(),
            cpu: cpu::State::default(),
            disk: disk::State::default(),
            net: net::State::default(),
            fs: fs::State::default(),
            kernel: kernel::State::default(),
            netstat: Rates::default(),
            socket: socket::State::default(),
            pressure: Rates::default(),
            vmstat: Rates::default(),
            softnet: softnet::State::default(),
            coredump: coredump::State::default(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &SystemOptions {
        &self.options
    }

    /// Replaces the options (a config reload); the previous samples stay, so rates go on.
    pub fn set_options(&mut self, options: SystemOptions) {
        self.options = options;
    }

    /// Collects one family now. Never panics; a failed read logs once and yields nothing for that
    /// part.
    pub fn collect(&mut self, family: Family) -> Vec<Metric> {
        let mut out = Out::new();
        let now = Instant::now();
        let r = &mut self.reader;
        let o = &self.options;
        match family {
            Family::Cpu => cpu::collect(r, o, &mut self.cpu, &mut out),
            Family::Mem => mem::collect(r, o, &mut out),
            Family::Disk => disk::collect(r, o, &mut self.disk, now, &mut out),
            Family::Net => net::collect(r, o, &mut self.net, now, &mut out),
            Family::Fs => fs::collect(r, o, &mut self.fs, &mut out),
            Family::Kernel => kernel::collect(r, o, &mut self.kernel, now, &mut out),
            Family::Time => time::collect(r, &mut out),
            Family::Netstat => netstat::collect(r, o, &mut self.netstat, now, &mut out),
            Family::Socket => socket::collect(r, o, &mut self.socket, &mut out),
            Family::Pressure => pressure::collect(r, o, &mut self.pressure, now, &mut out),
            Family::Vmstat => vmstat::collect(r, o, &mut self.vmstat, now, &mut out),
            Family::Conntrack => conntrack::collect(r, o, &mut out),
            Family::Softnet => softnet::collect(r, o, &mut self.softnet, now, &mut out),
            Family::Hwmon => hwmon::collect(r, o, &mut out),
            Family::Raid => raid::collect(r, o, &mut out),
            Family::Coredump => coredump::collect(r, o, &mut self.coredump, &mut out),
        }
        out.metrics
    }
}

/// Per-second rate between two readings of a monotonic counter. `None` when the counter went
/// backwards (wrap or reset: the true delta is unknown, so no value beats a bogus spike) or when no
/// time passed.
pub(crate) fn rate(prev: u64, cur: u64, secs: f64) -> Option<f64> {
    if cur < prev || secs <= 0.0 {
        return None;
    }
    Some((cur - prev) as f64 / secs)
}

/// The previous reading of a fixed list of counters, so the next one can turn them into rates.
#[derive(Default)]
pub(super) struct Rates {
    prev: Option<(Instant, Vec<Option<u64>>)>,
}

impl Rates {
    /// Keeps `cur` for next time, calling `emit(i, rate)` for every counter `i` read both times
    /// that did not go backwards.
    pub(super) fn advance(
        &mut self,
        now: Instant,
        cur: Vec<Option<u64>>,
        mut emit: impl FnMut(usize, f64),
    ) {
        if let Some((at, prev)) = &self.prev {
            let secs = now.duration_since(*at).as_secs_f64();
            for (i, (p, c)) in prev.iter().zip(&cur).enumerate() {
                if let Some(r) = p.zip(*c).and_then(|(p, c)| rate(p, c, secs)) {
                    emit(i, r);
                }
            }
        }
        self.prev = Some((now, cur));
    }
}

/// The metrics of one collection, all stamped with the same second.
struct Out {
    timestamp: i64,
    metrics: Vec<Metric>,
}

impl Out {
    fn new() -> Self {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Out {
            timestamp,
            metrics: Vec::with_capacity(32),
        }
    }

    /// Adds `name = value` with the given tags.
    fn push(&mut self, name: &str, value: f64, tags: &[(&str, &str)]) {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.metrics.push(Metric {
            name: name.to_owned(),
            timestamp: Some(self.timestamp),
            tags,
            value: Value::Float(value),
        });
    }

    /// Adds `name = value` when there is a value.
    fn push_opt(&mut self, name: &str, value: Option<f64>, tags: &[(&str, &str)]) {
        if let Some(v) = value {
            self.push(name, v, tags);
        }
    }
}

/// Most procfs and sysfs files the [`Reader`] keeps open between collections. The families read
/// about twenty-five; the rest (a host with hundreds of sensors) are opened for each read.
const MAX_KEPT_OPEN: usize = 64;

/// How much of a file one read asks for. A sysctl read (`/proc/sys/...`) makes the kernel
/// allocate and zero a buffer of the size asked for, so asking for the whole reused buffer at
/// once would cost more than the file (a 1 MiB read of `nf_conntrack_count` took 400 µs).
const READ_CHUNK: usize = 16 << 10;

/// Reads small procfs and sysfs files into one reused buffer and logs each failing path once
/// (again only after it has recovered), so a missing file does not flood the log every 10 s.
///
/// procfs and sysfs files stay open between collections and are read again from offset 0: the
/// kernel makes their text anew on every read from the start, so the figures are those of the
/// moment, and the path lookup that opening costs (half the cost of a small procfs read, see
/// docs/benchmarks.md) is paid once. Files of any other filesystem (test fixtures) are opened
/// for every read, since they can be replaced under the same name.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
    kept: Vec<(PathBuf, File)>,
    failing: BTreeSet<PathBuf>,
}

impl Reader {
    /// The file's whole text, or `None` (logged once) when it cannot be read.
    fn read(&mut self, path: &Path) -> Option<&str> {
        self.read_unless(path, |_| false)
    }

    /// Like [`Reader::read`], but a file that does not exist (or that the kernel was built or booted
    /// without, `EOPNOTSUPP`) is no failure: `None` without a log line.
    fn read_optional(&mut self, path: &Path) -> Option<&str> {
        self.read_unless(path, |e| {
            e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
        })
    }

    /// The file's text; an error `absent` accepts is `None` without a log line, any other is
    /// logged once.
    fn read_unless(
        &mut self,
        path: &Path,
        absent: impl Fn(&std::io::Error) -> bool,
    ) -> Option<&str> {
        match self.read_text(path) {
            Ok(()) => {
                self.recovered(path);
                // read_text checked the bytes are UTF-8.
                std::str::from_utf8(&self.buf).ok()
            }
            Err(e) if absent(&e) => None,
            Err(e) => {
                self.failed(path, &e);
                None
            }
        }
    }

    /// Reads `path` into `buf`, through the file kept open for it when there is one. A kept file
    /// that fails (a sysfs device removed, a module unloaded) is closed and the path opened once
    /// more, so what the error says is about the path as it is now.
    fn read_text(&mut self, path: &Path) -> std::io::Result<()> {
        // Byte equality: `Path`'s own compares component by component.
        let key = path.as_os_str();
        if let Some(i) = self.kept.iter().position(|(p, _)| p.as_os_str() == key) {
            if read_all_at(&self.kept[i].1, &mut self.buf).is_ok() {
                return check_utf8(&self.buf);
            }
            self.kept.swap_remove(i);
        }
        let file = File::open(path)?;
        read_all_at(&file, &mut self.buf)?;
        check_utf8(&self.buf)?;
        if self.kept.len() < MAX_KEPT_OPEN && made_anew_on_read(&file) {
            self.kept.push((path.to_owned(), file));
        }
        Ok(())
    }

    /// Records a failure of `path`; logs only the first one in a row.
    fn failed(&mut self, path: &Path, err: &dyn std::fmt::Display) {
        if self.failing.insert(path.to_owned()) {
            warn!(path = %path.display(), error = %err, "System metrics source unreadable; skipping it until it recovers.");
        }
    }

    fn recovered(&mut self, path: &Path) {
        if !self.failing.is_empty() && self.failing.remove(path) {
            info!(path = %path.display(), "System metrics source readable again.");
        }
    }
}

/// Reads the whole of `file` from offset 0 into `buf`, in chunks of [`READ_CHUNK`].
fn read_all_at(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + READ_CHUNK, 0);
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(());
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

fn check_utf8(b: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(b) {
        Ok(_) => Ok(()),
        Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    }
}

/// Whether `file` is on procfs or sysfs, whose files the kernel writes anew for every read from
/// offset 0 (and which cannot be replaced by another file under the same name).
fn made_anew_on_read(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == PROC_SUPER_MAGIC || t == SYSFS_MAGIC
    })
}

/// Splits a line into whitespace-separated numbers, `None` for anything that is not one.
fn numbers(s: &str) -> impl Iterator<Item = Option<u64>> + '_ {
    s.split_ascii_whitespace().map(|w| w.parse().ok())
}

/// Percent of `part` in `whole`; 0 when `whole` is 0.
fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// Counter samples by name (disk, interface) from the previous collection, so each name's rates
/// come from its own last sample; a name seen for the first time emits nothing.
pub(super) struct ByName<S> {
    at: Option<Instant>,
    samples: Vec<(String, S)>,
}

impl<S> Default for ByName<S> {
    fn default() -> Self {
        ByName {
            at: None,
            samples: Vec::new(),
        }
    }
}

impl<S> ByName<S> {
    /// Keeps `current` as the samples for next time, calling `emit(previous, current, seconds,
    /// name)` for every name that also had a sample last time.
    pub(super) fn advance<'a>(
        &mut self,
        now: Instant,
        current: impl Iterator<Item = (&'a str, S)>,
        mut emit: impl FnMut(&S, &S, f64, &str),
    ) {
        let secs = self.at.map(|p| now.duration_since(p).as_secs_f64());
        let mut next = Vec::with_capacity(self.samples.len());
        for (name, cur) in current {
            let prev = self.samples.iter().find(|(n, _)| n == name);
            if let (Some(secs), Some((_, prev))) = (secs, prev) {
                emit(prev, &cur, secs, name);
            }
            next.push((name.to_owned(), cur));
        }
        self.samples = next;
        self.at = Some(now);
    }
}

#[cfg(test)]
mod live_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first metric called `name` in `out`.
    pub(super) fn get(out: &Out, name: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| match m.value {
                shared::Value::Float(v) => v,
                ref v => panic!("not a float: {v:?}"),
            })
    }

    #[test]
    fn family_names_round_trip_ignoring_case() {
        for f in Family::ALL {
            assert_eq!(Family::from_name(f.name()), Some(f));
            assert_eq!(Family::from_name(&f.name().to_lowercase()), Some(f));
        }
        assert_eq!(Family::from_name("PORT"), None);
        assert_eq!(Family::Cpu.default_interval(), Duration::from_secs(10));
        assert_eq!(Family::Fs.default_interval(), Duration::from_secs(300));
        assert_eq!(Family::Socket.default_interval(), Duration::from_secs(60));
    }

    #[test]
    fn collectors_can_move_into_spawn_blocking() {
        fn send<T: Send + 'static>() {}
        send::<SystemCollector>();
        send::<crate::collect::proc::ProcCollector>();
    }

    /// `rchar` of `/proc/self/io`: bytes this process has read so far.
    fn rchar(text: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|v| v.parse().ok())
            .expect("rchar")
    }

    #[test]
    fn kept_procfs_files_are_read_anew_every_time() {
        let mut r = Reader::default();
        let path = Path::new("/proc/self/io");
        let first = rchar(r.read(path).expect("io"));
        let second = rchar(r.read(path).expect("io"));
        // The first read itself counts in the second reading: a cached text would be equal.
        assert!(second > first, "{first} then {second}");
        assert_eq!(r.kept.len(), 1, "kept open");
    }

    #[test]
    fn a_kept_file_that_goes_away_is_reopened_and_then_absent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let path = PathBuf::from(format!("/proc/{}/stat", child.id()));
        let mut r = Reader::default();
        assert!(r.read_optional(&path).is_some());
        assert!(r.read_optional(&path).is_some());
        assert_eq!(r.kept.len(), 1);
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(r.read_optional(&path), None, "gone, not the old text");
        assert!(r.kept.is_empty(), "its file closed");
        assert!(r.failing.is_empty(), "absent is no failure");
    }

    #[test]
    fn files_elsewhere_are_opened_for_every_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("stat");
        std::fs::write(&path, "one").expect("w");
        let mut r = Reader::default();
        assert_eq!(r.read(&path), Some("one"));
        // Replaced under the same name, as fixtures and editors do: a kept file would still
        // show the old one.
        let new = dir.path().join("stat.new");
        std::fs::write(&new, "two").expect("w");
        std::fs::rename(&new, &path).expect("rename");
        assert_eq!(r.read(&path), Some("two"));
        assert!(r.kept.is_empty());
        std::fs::write(&path, [0xff, 0xfe]).expect("w");
        assert_eq!(r.read(&path), None, "not UTF-8");
        assert!(r.failing.contains(&path));
    }

    #[test]
    fn a_file_larger_than_a_read_chunk_is_read_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("big");
        let text = "x".repeat(READ_CHUNK * 3 + 17);
        std::fs::write(&path, &text).expect("w");
        let mut r = Reader::default();
        assert_eq!(r.read(&path).map(str::len), Some(text.len()));
    }

    #[test]
    fn rate_refuses_backwards_counters_and_zero_time() {
        assert_eq!(rate(100, 300, 2.0), Some(100.0));
        assert_eq!(rate(100, 100, 2.0), Some(0.0));
        assert_eq!(
            rate(u64::from(u32::MAX) - 5, 10, 10.0),
            None,
            "a wrap is no spike"
        );
        assert_eq!(rate(1, 2, 0.0), None);
    }
}
