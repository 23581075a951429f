//! Process checks: the processes matching an item's `bin_path`, summed into
//! `PROC.<name>.procnum`, `.fdnum`, `.mem`, `.cpu`, `.io.read`, `.io.write`.
//!
//! Matching (one rule, so an operator can predict it):
//! - `bin_path` with a `/` is a path, compared exactly with the process's executable
//!   (`/proc/<pid>/exe`, a ` (deleted)` suffix from an upgraded binary ignored), with `argv[0]`, or
//!   with `argv[1]` (a script run by its interpreter: `python3 /opt/app/run.py`). An editor opened
//!   on that exact path matches too: that is the price of supporting scripts.
//! - `bin_path` without a `/` is a program name, compared with the last path component of the
//!   executable and of `argv[0]` (`nginx` matches `/usr/sbin/nginx`, and its workers, whose
//!   rewritten command line reads `nginx: worker process`, through their executable).
//!
//! Kernel threads and zombies (empty command line) never match. Rates (`cpu`, `io.*`) are derived
//! over the processes present in both this sample and the previous one (same pid and start time),
//! so the first check after start, or right after all processes restarted, emits no rate.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use shared::Metric;
use tracing::warn;

use super::system::rate;
use crate::registry::ProcItem;

/// Keeps the previous cpu/io samples per item for rates.
pub struct ProcCollector {
    proc_root: PathBuf,
    ticks_per_sec: f64,
    page_size: u64,
    /// Keyed by (name, bin_path): two namespaces may use one name for different programs.
    prev: HashMap<(String, String), Sampled>,
    buf: Vec<u8>,
    /// (item, what) pairs already warned about, so a permission problem logs once.
    warned: BTreeSet<(String, &'static str)>,
}

/// One item's processes at one instant.
struct Sampled {
    at: Instant,
    procs: Vec<ProcSample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcSample {
    pid: u32,
    /// Start time in ticks since boot: tells a reused pid from the process that had it.
    start: u64,
    /// utime + stime, in ticks.
    cpu_ticks: u64,
    rss_pages: u64,
    /// `None` when the fd directory is not readable (another user's process, not root).
    fds: Option<u64>,
    /// (read_bytes, write_bytes); `None` when `/proc/<pid>/io` is not readable.
    io: Option<(u64, u64)>,
}

impl Default for ProcCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcCollector {
    /// A collector with no previous samples.
    pub fn new() -> Self {
        Self::with_proc_root(PathBuf::from("/proc"))
    }

    /// A collector reading another procfs mount (a container's host `/proc`, tests).
    pub fn with_proc_root(proc_root: PathBuf) -> Self {
        ProcCollector {
            proc_root,
            ticks_per_sec: procfs::ticks_per_second() as f64,
            page_size: procfs::page_size(),
            prev: HashMap::new(),
            buf: Vec::with_capacity(4096),
            warned: BTreeSet::new(),
        }
    }

    /// Forgets the samples of items no longer checked (`keep(name, bin_path)` is false), so their
    /// memory goes with them.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        self.prev.retain(|(name, bin), _| keep(name, bin));
    }

    /// Checks one item now. Blocking: scans `/proc`.
    pub fn collect(&mut self, item: &ProcItem) -> Vec<Metric> {
        let now = Instant::now();
        let pids = match self.matching(&item.bin_path) {
            Ok(p) => p,
            Err(e) => {
                self.warn_once(&item.name, "scan", &e);
                return Vec::new();
            }
        };
        let procs: Vec<ProcSample> = pids.into_iter().filter_map(|p| self.sample(p)).collect();
        let key = (item.name.clone(), item.bin_path.clone());
        let prev = self.prev.remove(&key);
        let metrics = self.emit(item, prev.as_ref(), now, &procs);
        self.prev.insert(key, Sampled { at: now, procs });
        metrics
    }

    fn emit(
        &mut self,
        item: &ProcItem,
        prev: Option<&Sampled>,
        now: Instant,
        procs: &[ProcSample],
    ) -> Vec<Metric> {
        let name = |m: &str| format!("PROC.{}.{m}", item.name);
        let mut out = vec![Metric::new(name("procnum"), procs.len() as f64)];
        if procs.is_empty() {
            return out;
        }
        let rss: u64 = procs.iter().map(|p| p.rss_pages).sum();
        out.push(Metric::new(name("mem"), (rss * self.page_size) as f64));
        match procs.iter().map(|p| p.fds).sum::<Option<u64>>() {
            Some(fds) => out.push(Metric::new(name("fdnum"), fds as f64)),
            None => self.warn_once(&item.name, "fd", &"permission denied on /proc/<pid>/fd"),
        }
        let io_readable = procs.iter().all(|p| p.io.is_some());
        if !io_readable {
            self.warn_once(&item.name, "io", &"permission denied on /proc/<pid>/io");
        }
        let Some(prev) = prev else {
            return out;
        };
        let secs = now.duration_since(prev.at).as_secs_f64();
        let pairs: Vec<(&ProcSample, &ProcSample)> = procs
            .iter()
            .filter_map(|c| {
                prev.procs
                    .iter()
                    .find(|p| p.pid == c.pid && p.start == c.start)
                    .map(|p| (p, c))
            })
            .collect();
        if pairs.is_empty() {
            return out;
        }
        let (a, b) = pairs
            .iter()
            .fold((0, 0), |(a, b), (p, c)| (a + p.cpu_ticks, b + c.cpu_ticks));
        if let Some(ticks) = rate(a, b, secs) {
            out.push(Metric::new(name("cpu"), ticks / self.ticks_per_sec * 100.0));
        }
        if io_readable {
            let sum = |f: fn(&ProcSample) -> u64| {
                pairs
                    .iter()
                    .fold((0, 0), |(a, b), (p, c)| (a + f(p), b + f(c)))
            };
            let (ra, rb) = sum(|p| p.io.map_or(0, |io| io.0));
            let (wa, wb) = sum(|p| p.io.map_or(0, |io| io.1));
            if let Some(r) = rate(ra, rb, secs) {
                out.push(Metric::new(name("io.read"), r));
            }
            if let Some(w) = rate(wa, wb, secs) {
                out.push(Metric::new(name("io.write"), w));
            }
        }
        out
    }

    fn warn_once(&mut self, item: &str, what: &'static str, err: &dyn std::fmt::Display) {
        if self.warned.insert((item.to_owned(), what)) {
            warn!(check = item, part = what, error = %err, "Process check cannot read a part; leaving it out.");
        }
    }

    /// Pids of the processes that match `bin_path` (see the module doc).
    fn matching(&mut self, bin_path: &str) -> io::Result<Vec<u32>> {
        let mut found = Vec::new();
        let mut path = self.proc_root.clone();
        for entry in fs::read_dir(&self.proc_root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            path.push(entry.file_name());
            if self.matches(&mut path, bin_path) {
                found.push(pid);
            }
            path.pop();
        }
        Ok(found)
    }

    /// Whether the process at `dir` (`/proc/<pid>`) matches; a process gone meanwhile does not.
    fn matches(&mut self, dir: &mut PathBuf, bin_path: &str) -> bool {
        dir.push("cmdline");
        let cmdline = read_into(dir, &mut self.buf);
        dir.pop();
        if cmdline.is_err() || self.buf.is_empty() {
            return false;
        }
        let mut argv = self.buf.split(|b| *b == 0);
        let argv0 = argv.next().unwrap_or_default();
        let is_path = bin_path.contains('/');
        if is_path {
            let argv1 = argv.next().unwrap_or_default();
            if argv0 == bin_path.as_bytes() || argv1 == bin_path.as_bytes() {
                return true;
            }
        } else if basename(argv0) == bin_path.as_bytes() {
            return true;
        }
        dir.push("exe");
        let exe = fs::read_link(&*dir);
        dir.pop();
        let Ok(exe) = exe else {
            return false;
        };
        let exe = exe.as_os_str().as_encoded_bytes();
        let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
        if is_path {
            exe == bin_path.as_bytes()
        } else {
            basename(exe) == bin_path.as_bytes()
        }
    }

    /// Reads what the check needs of one process; `None` when it exited meanwhile.
    fn sample(&mut self, pid: u32) -> Option<ProcSample> {
        let mut dir = self.proc_root.join(pid.to_string());
        dir.push("stat");
        read_into(&dir, &mut self.buf).ok()?;
        let (start, cpu_ticks) = parse_stat(&self.buf)?;
        dir.set_file_name("statm");
        read_into(&dir, &mut self.buf).ok()?;
        let rss_pages = std::str::from_utf8(&self.buf)
            .ok()?
            .split_ascii_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        dir.set_file_name("fd");
        let fds = fs::read_dir(&dir).ok().map(|d| d.count() as u64);
        dir.set_file_name("io");
        let io = read_into(&dir, &mut self.buf)
            .ok()
            .and_then(|()| parse_io(&self.buf));
        Some(ProcSample {
            pid,
            start,
            cpu_ticks,
            rss_pages,
            fds,
            io,
        })
    }
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// `(starttime, utime + stime)` from `/proc/<pid>/stat`. The command name in parentheses may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
fn parse_stat(buf: &[u8]) -> Option<(u64, u64)> {
    let close = buf.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&buf[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // After the name: state(0) ... utime(11) stime(12) ... starttime(19).
    Some((num(19)?, num(11)? + num(12)?))
}

/// `(read_bytes, write_bytes)`: what reached the storage layer, not socket or page-cache reads.
fn parse_io(buf: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut read = None;
    let mut write = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("read_bytes:") {
            read = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("write_bytes:") {
            write = v.trim().parse().ok();
        }
    }
    Some((read?, write?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_from_the_last_paren() {
        let stat = b"42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((12345, 10)));
        assert_eq!(parse_stat(b"42 (x"), None);
    }

    #[test]
    fn io_storage_bytes() {
        let io = b"rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io(b"rchar: 1\n"), None);
        assert_eq!(basename(b"/usr/sbin/nginx"), b"nginx");
        assert_eq!(basename(b"nginx"), b"nginx");
    }

    /// A started process killed when the test ends, whatever happens.
    struct Running(std::process::Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start(cmd: &mut std::process::Command) -> Running {
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        // A binary this process just copied can be briefly "text file busy" while another test
        // thread forks with the copy's write handle inherited; that passes at once.
        for _ in 0..50 {
            match cmd.spawn() {
                Ok(c) => return Running(c),
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("spawn {cmd:?}: {e}"),
            }
        }
        panic!("{cmd:?} stayed text-busy");
    }

    fn item(bin_path: &str) -> ProcItem {
        ProcItem {
            name: "t".into(),
            bin_path: bin_path.into(),
            interval: 30,
        }
    }

    fn value(ms: &[Metric], name: &str) -> Option<f64> {
        ms.iter()
            .find(|m| m.name == format!("PROC.t.{name}"))
            .map(|m| match m.value {
                shared::Value::Float(v) => v,
                ref v => panic!("not a float: {v:?}"),
            })
    }

    /// Waits (bounded) until the started processes have exec'd and show up.
    fn collect_until(c: &mut ProcCollector, it: &ProcItem, n: f64) -> Vec<Metric> {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = c.collect(it);
            if value(&m, "procnum") == Some(n) || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn counts_and_measures_the_processes_of_a_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("collect-sleep-{}", std::process::id());
        let bin = dir.path().join(&name);
        std::fs::copy("/bin/sleep", &bin).expect("copy sleep");
        let bin_s = bin.to_str().expect("utf-8 path").to_owned();
        let by_path = item(&bin_s);
        let mut c = ProcCollector::new();
        assert_eq!(value(&c.collect(&by_path), "procnum"), Some(0.0));

        let one = start(std::process::Command::new(&bin).arg("30"));
        let m = collect_until(&mut c, &by_path, 1.0);
        assert_eq!(value(&m, "procnum"), Some(1.0), "{m:?}");
        assert!(value(&m, "mem").expect("mem") > 0.0);
        assert!(value(&m, "fdnum").expect("fdnum") > 0.0);
        let m = c.collect(&by_path);
        assert!(value(&m, "cpu").expect("cpu after two samples") >= 0.0);
        assert!(value(&m, "io.read").expect("io readable as root") >= 0.0);
        assert!(value(&m, "io.write").expect("io.write") >= 0.0);

        let two = start(std::process::Command::new(&bin).arg("31"));
        let m = collect_until(&mut c, &by_path, 2.0);
        assert_eq!(value(&m, "procnum"), Some(2.0));
        // By program name (no `/`): the executable's last component.
        let mut by_name = ProcCollector::new();
        assert_eq!(value(&by_name.collect(&item(&name)), "procnum"), Some(2.0));
        // A prefix or another program's name is no match.
        assert_eq!(
            value(&by_name.collect(&item(&name[..name.len() - 1])), "procnum"),
            Some(0.0)
        );
        drop(one);
        drop(two);
        assert_eq!(value(&c.collect(&by_path), "procnum"), Some(0.0));
    }

    /// A copy of `program` under a name no other process has, in `dir`.
    fn private_copy(program: &str, dir: &Path, what: &str) -> String {
        let bin = dir.join(format!("collect-{what}-{}", std::process::id()));
        std::fs::copy(program, &bin).expect("copy the program");
        bin.to_str().expect("utf-8 path").to_owned()
    }

    /// A directory on a filesystem that accounts `write_bytes` (not tmpfs, which has no
    /// storage to send bytes to).
    fn disk_backed_tempdir() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let on_tmpfs = nix::sys::statfs::statfs(&tmp)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if on_tmpfs {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir")
        } else {
            tempfile::tempdir().expect("tempdir")
        }
    }

    #[test]
    fn values_agree_with_what_the_kernel_says_and_rates_are_per_second() {
        let dir = disk_backed_tempdir();
        let sleeper = private_copy("/bin/sleep", dir.path(), "still");
        let bash_busy = private_copy("/bin/bash", dir.path(), "busy");
        let bash_writer = private_copy("/bin/bash", dir.path(), "writer");
        let still = start(std::process::Command::new(&sleeper).arg("30"));
        let _busy =
            start(std::process::Command::new(&bash_busy).args(["-c", "while :; do :; done"]));
        // About 10 MiB/s written by bash itself (printf is a builtin), into one 1 MiB file.
        let out = dir.path().join("written");
        let _writer = start(std::process::Command::new(&bash_writer).args([
            "-c",
            "while :; do printf '%01048576d' 0 > \"$1\"; sleep 0.1; done",
            "writer",
            out.to_str().expect("utf-8 path"),
        ]));

        let mut c = ProcCollector::new();
        let (still_it, busy_it, writer_it) = (item(&sleeper), item(&bash_busy), item(&bash_writer));
        collect_until(&mut c, &still_it, 1.0);
        collect_until(&mut c, &busy_it, 1.0);
        collect_until(&mut c, &writer_it, 1.0);
        std::thread::sleep(std::time::Duration::from_secs(2));

        // Gauges: what /proc says of the same process at the same moment.
        let m = c.collect(&still_it);
        let pid = still.0.id();
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm");
        let resident: f64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("resident pages");
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .expect("page size") as f64;
        assert_eq!(value(&m, "mem"), Some(resident * page), "{m:?}");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .count();
        assert_eq!(value(&m, "fdnum"), Some(fds as f64), "{m:?}");
        let idle = value(&m, "cpu").expect("cpu");
        assert!(idle < 5.0, "sleep uses (almost) no CPU: {m:?}");
        assert_eq!(value(&m, "io.write"), Some(0.0), "{m:?}");

        // A process spinning on one core: close to 100 (percent of a core, not a fraction
        // and not clock ticks); at least a tenth of a core even on a loaded machine.
        let cpu = value(&c.collect(&busy_it), "cpu").expect("cpu");
        assert!(
            (10.0..=105.0).contains(&cpu),
            "busy loop: {cpu} % of a core"
        );

        // Writing ~10 MiB/s: bytes per second, so well over a MiB (not per interval, not KiB).
        let written = value(&c.collect(&writer_it), "io.write").expect("io.write");
        assert!(
            (1024.0 * 1024.0..64.0 * 1024.0 * 1024.0).contains(&written),
            "writer: {written} bytes/s"
        );
    }

    #[test]
    fn a_script_matches_by_its_path_as_argv1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("wait.sh");
        std::fs::write(&script, "read line\n").expect("script");
        let path = script.to_str().expect("utf-8").to_owned();
        let _sh = start(std::process::Command::new("/bin/sh").arg(&script));
        let mut c = ProcCollector::new();
        let m = collect_until(&mut c, &item(&path), 1.0);
        assert_eq!(value(&m, "procnum"), Some(1.0), "{m:?}");
        assert!(value(&m, "mem").expect("mem") > 0.0);
    }
}
