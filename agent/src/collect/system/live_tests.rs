//! The collectors against this machine's real `/proc`, read by the test at the same time.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shared::{Metric, Value};

use super::{Family, SystemCollector, SystemOptions};

fn float(m: &Metric) -> f64 {
    match m.value {
        Value::Float(v) => v,
        ref v => panic!("{} is not a float: {v:?}", m.name),
    }
}

/// The value of `name` whose tag `key` is `val` (or the untagged one when `tag` is None).
fn get(ms: &[Metric], name: &str, tag: Option<(&str, &str)>) -> Option<f64> {
    ms.iter()
        .find(|m| {
            m.name == name
                && match tag {
                    Some((k, v)) => m.tags.get(k).map(String::as_str) == Some(v),
                    None => true,
                }
        })
        .map(float)
}

fn proc_file(path: &str) -> String {
    std::fs::read_to_string(path).expect("read /proc file")
}

/// Field `i` (0-based, after the name) of the line of `/proc/net/dev` for `iface`.
fn net_dev(iface: &str, i: usize) -> u64 {
    proc_file("/proc/net/dev")
        .lines()
        .find_map(|l| {
            let (n, rest) = l.split_once(':')?;
            (n.trim() == iface).then(|| rest.split_ascii_whitespace().nth(i)?.parse().ok())?
        })
        .expect("iface in /proc/net/dev")
}

#[test]
fn load_average_equals_proc_loadavg() {
    let mut c = SystemCollector::new(SystemOptions::default());
    let before = proc_file("/proc/loadavg");
    let m = c.collect(Family::Kernel);
    let after = proc_file("/proc/loadavg");
    let load1 = get(&m, "kernel.load1", None).expect("load1");
    let load15 = get(&m, "kernel.load15", None).expect("load15");
    let parsed = |s: &str, i: usize| -> f64 {
        s.split_ascii_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .expect("loadavg field")
    };
    // The kernel updates the figures every 5 s, so one of the two reads is the one we saw.
    assert!(
        load1 == parsed(&before, 0) || load1 == parsed(&after, 0),
        "load1 {load1} vs {before:?} / {after:?}"
    );
    assert!(load15 == parsed(&before, 2) || load15 == parsed(&after, 2));

    let file_nr = proc_file("/proc/sys/fs/file-nr");
    let max: f64 = file_nr
        .split_ascii_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("file-max");
    assert_eq!(get(&m, "kernel.max_files", None), Some(max));
    assert!(get(&m, "kernel.open_files", None).expect("open files") > 0.0);

    let uptime_after: f64 = proc_file("/proc/uptime")
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("uptime");
    let up = get(&m, "kernel.uptime", None).expect("uptime");
    assert!(up > 0.0 && up <= uptime_after, "{up} vs {uptime_after}");

    let procs = get(&m, "kernel.processes", None).expect("processes");
    let listed = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count() as f64;
    // Other programs start and end processes meanwhile; the count must be of the same size.
    assert!(
        procs >= 1.0 && (procs - listed).abs() <= listed / 2.0,
        "{procs} processes reported, {listed} listed"
    );
    assert!(get(&m, "kernel.threads", None).expect("threads") >= 1.0);
    assert!(get(&m, "kernel.procs_running", None).expect("running") >= 1.0);
    assert!(
        get(&m, "kernel.context_switches", None).is_none(),
        "first sample has no rate"
    );

    std::thread::sleep(Duration::from_millis(50));
    let m = c.collect(Family::Kernel);
    assert!(get(&m, "kernel.context_switches", None).expect("ctxt rate") > 0.0);
    assert!(get(&m, "kernel.forks", None).expect("fork rate") >= 0.0);
}

#[test]
fn mem_total_equals_meminfo() {
    let meminfo = proc_file("/proc/meminfo");
    let kib = |key: &str| -> f64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_ascii_whitespace().next()?.parse::<f64>().ok())
            .map(|v| v * 1024.0)
            .expect("meminfo key")
    };
    let m = SystemCollector::new(SystemOptions::default()).collect(Family::Mem);
    assert_eq!(get(&m, "mem.total", None), Some(kib("MemTotal")));
    assert_eq!(get(&m, "mem.swap_total", None), Some(kib("SwapTotal")));
    let total = kib("MemTotal");
    let used = get(&m, "mem.used", None).expect("used");
    let avail = get(&m, "mem.available", None).expect("available");
    assert_eq!(used + avail, total);
    let pct = get(&m, "mem.used_percent", None).expect("percent");
    assert!((pct - used / total * 100.0).abs() < 1e-9);
    // MemAvailable moves while other programs run; it must be near what the test read.
    let drift = (avail - kib("MemAvailable")).abs();
    assert!(drift < total * 0.05, "available drifted by {drift} bytes");
}

#[test]
fn fs_usage_matches_statvfs_and_skips_pseudo_filesystems() {
    let m = SystemCollector::new(SystemOptions::default()).collect(Family::Fs);
    let mut mounts: Vec<&str> = m
        .iter()
        .filter_map(|m| m.tags.get("mount").map(String::as_str))
        .collect();
    mounts.dedup();
    // What the test itself finds storage in the mount table (statvfs of each is done below).
    let table = proc_file("/proc/self/mounts");
    let mut want: Vec<String> = Vec::new();
    for line in table.lines() {
        let w: Vec<&str> = line.split_ascii_whitespace().collect();
        let point = w[1].replace("\\040", " ");
        want.retain(|p| *p != point);
        if super::fs::DEFAULT_SKIP_FSTYPES.contains(&w[2]) {
            continue;
        }
        if nix::sys::statvfs::statvfs(point.as_str()).is_ok_and(|s| s.blocks() > 0) {
            want.push(point);
        }
    }
    let mut sorted = mounts.clone();
    sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(sorted, want, "reported mounts");
    if mounts.is_empty() {
        return;
    }
    for m in &m {
        let fstype = m.tags.get("fstype").expect("fstype tag");
        assert!(
            !super::fs::DEFAULT_SKIP_FSTYPES.contains(&fstype.as_str()),
            "{m:?}"
        );
    }
    let point = mounts[0];
    let s = nix::sys::statvfs::statvfs(point).expect("statvfs");
    let fr = s.fragment_size() as f64;
    let tag = Some(("mount", point));
    assert_eq!(
        get(&m, "fs.total", tag),
        Some(s.blocks() as f64 * fr),
        "{point}"
    );
    // Others write to the disk meanwhile; 64 MiB of slack is far below any real error here.
    let used = get(&m, "fs.used", tag).expect("used");
    let want = (s.blocks() - s.blocks_free()) as f64 * fr;
    assert!(
        (used - want).abs() < 64.0 * 1024.0 * 1024.0,
        "{used} vs {want}"
    );
    if s.files() > 0 {
        assert_eq!(get(&m, "fs.inodes_total", tag), Some(s.files() as f64));
    }
    let pct = get(&m, "fs.used_percent", tag).expect("percent");
    assert!((0.0..=100.0).contains(&pct));
}

#[test]
fn net_rates_account_for_loopback_traffic() {
    let opts = SystemOptions {
        skip_interfaces: Vec::new(),
        ..SystemOptions::default()
    };
    let mut c = SystemCollector::new(opts);
    let start = Instant::now();
    let first = c.collect(Family::Net);
    assert!(first.is_empty(), "first sample has no rates: {first:?}");
    let before = net_dev("lo", 0);
    // 1 MiB through loopback, counted in and out on `lo`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read");
        buf.len()
    });
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(&vec![7u8; 1 << 20]).expect("write");
    drop(s);
    assert_eq!(reader.join().expect("reader"), 1 << 20);
    let m = c.collect(Family::Net);
    let elapsed = start.elapsed().as_secs_f64();
    let after = net_dev("lo", 0);
    let tag = Some(("iface", "lo"));
    let rate = get(&m, "net.in_bytes", tag).expect("lo in_bytes");
    assert!(after - before >= 1 << 20, "the kernel counted the traffic");
    // The collector's two reads lie within `elapsed`, so rate * elapsed bounds the bytes it saw from
    // above; those include the 1 MiB.
    assert!(
        rate * elapsed >= f64::from(1 << 20) * 0.999,
        "rate {rate} over {elapsed}s misses traffic"
    );
    assert!(get(&m, "net.out_bytes", tag).expect("out") > 0.0);
    for name in [
        "net.in_packets",
        "net.in_errors",
        "net.in_drops",
        "net.out_drops",
    ] {
        assert!(get(&m, name, tag).expect(name) >= 0.0);
    }

    let mut c = SystemCollector::new(SystemOptions::default());
    c.collect(Family::Net);
    let m = c.collect(Family::Net);
    assert!(
        m.iter()
            .all(|m| m.tags.get("iface").map(String::as_str) != Some("lo")),
        "loopback skipped by default"
    );
}

#[test]
fn cpu_shares_sum_to_100_for_total_and_each_core() {
    let stat = proc_file("/proc/stat");
    let cores: Vec<String> = stat
        .lines()
        .filter_map(|l| l.split_ascii_whitespace().next())
        .filter(|n| n.starts_with("cpu") && *n != "cpu")
        .map(str::to_owned)
        .collect();
    let mut c = SystemCollector::new(SystemOptions::default());
    assert!(c.collect(Family::Cpu).is_empty(), "first sample");
    // Burn a little CPU so at least one tick passes on some core.
    let deadline = Instant::now() + Duration::from_millis(60);
    let mut x = 0u64;
    while Instant::now() < deadline {
        x = x.wrapping_add(1);
    }
    assert!(x > 0);
    let m = c.collect(Family::Cpu);
    let total = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let sum = |tag: &str| -> Option<f64> {
        total
            .iter()
            .map(|s| get(&m, &format!("cpu.{s}"), Some(("cpu", tag))))
            .sum()
    };
    let t = sum("cpu-total").expect("cpu-total present after 60 ms of work");
    assert!((t - 100.0).abs() < 1e-6, "{t}");
    for core in &cores {
        // A core that saw no tick in 60 ms emits nothing; one that did sums to 100.
        if let Some(s) = sum(core) {
            assert!((s - 100.0).abs() < 1e-6, "{core}: {s}");
        }
    }
    assert!(m.iter().all(|m| m
        .tags
        .get("cpu")
        .is_some_and(|c| c == "cpu-total" || cores.contains(c))));
}

#[test]
fn disk_reports_whole_used_disks_with_counters_from_diskstats() {
    let stats = proc_file("/proc/diskstats");
    let used_whole: Vec<&str> = stats
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_ascii_whitespace().collect();
            let name = *w.get(2)?;
            let used = w[3..].iter().any(|v| *v != "0");
            let whole = std::path::Path::new("/sys/block").join(name).exists();
            (used && whole && !name.starts_with("loop") && !name.starts_with("ram")).then_some(name)
        })
        .collect();
    let mut c = SystemCollector::new(SystemOptions::default());
    c.collect(Family::Disk);
    std::thread::sleep(Duration::from_millis(20));
    let m = c.collect(Family::Disk);
    let mut devices: Vec<&str> = m
        .iter()
        .filter_map(|m| m.tags.get("device").map(String::as_str))
        .collect();
    devices.dedup();
    assert_eq!(devices, used_whole);
    for d in devices {
        let busy = get(&m, "disk.busy_percent", Some(("device", d))).expect("busy");
        assert!((0.0..=100.0).contains(&busy));
        assert!(get(&m, "disk.read_bytes", Some(("device", d))).expect("rb") >= 0.0);
    }
}

#[test]
fn every_family_stamps_one_second_and_never_panics_on_a_missing_proc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SystemOptions {
        proc_root: dir.path().to_owned(),
        sys_root: dir.path().to_owned(),
        ..SystemOptions::default()
    };
    let mut empty = SystemCollector::new(opts);
    let mut real = SystemCollector::new(SystemOptions::default());
    for f in Family::ALL {
        let m = empty.collect(f);
        // Only TIME (a syscall, not a file) can have anything to say here.
        assert!(f == Family::Time || m.is_empty(), "{f}: {m:?}");
        assert!(
            empty.collect(f).len() == m.len(),
            "second failure is quiet and equal"
        );
        let m = real.collect(f);
        let ts = m.first().and_then(|m| m.timestamp);
        assert!(m.iter().all(|x| x.timestamp == ts && ts.is_some()), "{f}");
    }
}
