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
        // Only TIME and SOCKET (a syscall and netlink, not files) can have anything to say here.
        assert!(
            f == Family::Time || f == Family::Socket || m.is_empty(),
            "{f}: {m:?}"
        );
        assert!(
            empty.collect(f).len() == m.len(),
            "second failure is quiet and equal"
        );
        let m = real.collect(f);
        let ts = m.first().and_then(|m| m.timestamp);
        assert!(m.iter().all(|x| x.timestamp == ts && ts.is_some()), "{f}");
    }
}

/// Collects `family` twice, reading the kernel's counters with `read` just before and just after
/// each collection and running `between` in the gap, and checks every rate `names[i]` (tag `tag`)
/// against counter `i`: the collector's two reads lie inside the test's, so its delta lies
/// between `b0 - a1` and `b1 - a0`, over a time between `tb0 - ta1` and `tb1 - ta0`. Returns the
/// second collection. `scale` turns the counters' unit into the metric's.
fn rates_within_kernel_bounds(
    family: Family,
    names: &[&str],
    tag: Option<(&str, &str)>,
    scale: f64,
    read: impl Fn() -> Vec<u64>,
    between: impl FnOnce(),
) -> Vec<Metric> {
    let mut c = SystemCollector::new(SystemOptions::default());
    let ta0 = Instant::now();
    let a0 = read();
    let first = c.collect(family);
    let a1 = read();
    let ta1 = Instant::now();
    for n in names {
        assert!(
            get(&first, n, tag).is_none(),
            "{n}: first sample has no rate"
        );
    }
    between();
    std::thread::sleep(Duration::from_millis(30));
    let tb0 = Instant::now();
    let b0 = read();
    let m = c.collect(family);
    let b1 = read();
    let tb1 = Instant::now();
    let (long, short) = (
        tb1.duration_since(ta0).as_secs_f64(),
        tb0.duration_since(ta1).as_secs_f64(),
    );
    for (i, n) in names.iter().enumerate() {
        let r = get(&m, n, tag).unwrap_or_else(|| panic!("{n} missing: {m:?}"));
        let low = b0[i].saturating_sub(a1[i]) as f64 * scale / long;
        let high = b1[i].saturating_sub(a0[i]) as f64 * scale / short;
        assert!(
            r >= low * 0.999 && r <= high * 1.001,
            "{n}: {r}/s outside [{low}, {high}]"
        );
    }
    m
}

/// `(section, field)` counters of a `/proc/net/snmp`-shaped file, read now.
fn snmp_counters(path: &str, wanted: &[(&str, &str)]) -> Vec<u64> {
    let text = proc_file(path);
    let lines: Vec<&str> = text.lines().collect();
    wanted
        .iter()
        .map(|(sec, field)| {
            lines
                .windows(2)
                .find_map(|w| {
                    let (hs, h) = w[0].split_once(": ")?;
                    let (vs, v) = w[1].split_once(": ")?;
                    let i = h.split(' ').position(|x| x == *field)?;
                    (hs == *sec && vs == *sec).then(|| v.split(' ').nth(i)?.parse().ok())?
                })
                .unwrap_or_else(|| panic!("{sec} {field} in {path}"))
        })
        .collect()
}

#[test]
fn netstat_rates_count_the_connections_the_test_makes() {
    let wanted = [
        ("Tcp", "ActiveOpens"),
        ("Tcp", "PassiveOpens"),
        ("Tcp", "InSegs"),
        ("Tcp", "OutSegs"),
        ("Udp", "OutDatagrams"),
        ("Udp", "InDatagrams"),
    ];
    let names = [
        "netstat.tcp_active_opens",
        "netstat.tcp_passive_opens",
        "netstat.tcp_in_segs",
        "netstat.tcp_out_segs",
        "netstat.udp_out_datagrams",
        "netstat.udp_in_datagrams",
    ];
    let before = snmp_counters("/proc/net/snmp", &wanted);
    let m = rates_within_kernel_bounds(
        Family::Netstat,
        &names,
        None,
        1.0,
        || snmp_counters("/proc/net/snmp", &wanted),
        || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = l.local_addr().expect("addr");
            for _ in 0..20 {
                let c = std::net::TcpStream::connect(addr).expect("connect");
                drop(l.accept().expect("accept"));
                drop(c);
            }
            let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            let to = u.local_addr().expect("addr");
            for _ in 0..20 {
                u.send_to(b"x", to).expect("send");
            }
            let mut buf = [0u8; 4];
            for _ in 0..20 {
                u.recv_from(&mut buf).expect("recv");
            }
        },
    );
    let after = snmp_counters("/proc/net/snmp", &wanted);
    assert!(
        after[0] - before[0] >= 20 && after[4] - before[4] >= 20,
        "the kernel counted"
    );
    assert!(get(&m, "netstat.tcp_active_opens", None).expect("opens") > 0.0);
    let ext = snmp_counters("/proc/net/netstat", &[("TcpExt", "ListenOverflows")]);
    assert!(ext[0] < u64::MAX);
    for n in [
        "netstat.tcp_listen_overflows",
        "netstat.tcp_retrans_segs",
        "netstat.udp6_in_datagrams",
    ] {
        assert!(get(&m, n, None).expect(n) >= 0.0, "{n}");
    }
    assert!(get(&m, "netstat.tcp_curr_estab", None).expect("curr_estab") >= 0.0);
}

fn vmstat_counters(keys: &[&str]) -> Vec<u64> {
    let text = proc_file("/proc/vmstat");
    keys.iter()
        .map(|k| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{k} in /proc/vmstat"))
        })
        .collect()
}

#[test]
fn vmstat_rates_match_the_kernels_counters() {
    let keys = ["pgfault", "pgmajfault", "pswpin", "pswpout", "oom_kill"];
    let names = [
        "vmstat.page_faults",
        "vmstat.major_faults",
        "vmstat.swap_in_pages",
        "vmstat.swap_out_pages",
        "vmstat.oom_kills",
    ];
    let m = rates_within_kernel_bounds(
        Family::Vmstat,
        &names,
        None,
        1.0,
        || vmstat_counters(&keys),
        || {
            // 16 MiB touched page by page: thousands of minor faults in the window.
            let mut v = vec![0u8; 16 << 20];
            for i in (0..v.len()).step_by(4096) {
                v[i] = 1;
            }
            assert_eq!(std::hint::black_box(&v)[4096], 1);
        },
    );
    assert!(get(&m, "vmstat.page_faults", None).expect("faults") > 0.0);
    assert!(get(&m, "vmstat.paged_in_bytes", None).expect("pgpgin") >= 0.0);
}

#[test]
fn pressure_averages_equal_the_files_and_stall_rates_fit_the_totals() {
    if std::fs::read_to_string("/proc/pressure/cpu").is_err() {
        // A kernel without PSI: the family must then be empty (and is tested on fixtures).
        let m = SystemCollector::new(SystemOptions::default()).collect(Family::Pressure);
        assert!(m.is_empty(), "{m:?}");
        return;
    }
    let total = |res: &str, kind: &str| -> u64 {
        proc_file(&format!("/proc/pressure/{res}"))
            .lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.rsplit_once("total=")?.1.trim().parse().ok())
            .expect("total")
    };
    let avg10 = |text: &str, kind: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_once("avg10=")?.1.split(' ').next()?.parse().ok())
            .expect("avg10")
    };
    let res = ["cpu", "memory", "io"];
    for r in res {
        let before = proc_file(&format!("/proc/pressure/{r}"));
        let m = SystemCollector::new(SystemOptions::default()).collect(Family::Pressure);
        let after = proc_file(&format!("/proc/pressure/{r}"));
        for kind in ["some", "full"] {
            let got = m
                .iter()
                .find(|x| {
                    x.name == "pressure.avg10"
                        && x.tags.get("resource").map(String::as_str) == Some(r)
                        && x.tags.get("kind").map(String::as_str) == Some(kind)
                })
                .map(float)
                .expect("avg10 series");
            // The kernel recomputes the averages every 2 s: one of the two reads is the one seen.
            assert!(
                got == avg10(&before, kind) || got == avg10(&after, kind),
                "{r} {kind}: {got} vs {before:?} / {after:?}"
            );
        }
    }
    // The stall rate in percent is µs stalled per second / 10^4.
    let m = rates_within_kernel_bounds(
        Family::Pressure,
        &["pressure.stall_percent"],
        Some(("resource", "io")),
        1e-4,
        || vec![total("io", "some")],
        || std::thread::sleep(Duration::from_millis(20)),
    );
    let series = m
        .iter()
        .filter(|x| x.name == "pressure.stall_percent")
        .count();
    assert_eq!(series, 6, "some and full for each resource");
}

#[test]
fn conntrack_entries_and_limit_equal_the_kernels() {
    let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count");
    let m = SystemCollector::new(SystemOptions::default()).collect(Family::Conntrack);
    let Ok(before) = count else {
        assert!(m.is_empty(), "no module, no metrics: {m:?}");
        return;
    };
    let after = proc_file("/proc/sys/net/netfilter/nf_conntrack_count");
    let (lo, hi): (f64, f64) = (
        before.trim().parse().expect("count"),
        after.trim().parse().expect("count"),
    );
    let max: f64 = proc_file("/proc/sys/net/netfilter/nf_conntrack_max")
        .trim()
        .parse()
        .expect("max");
    let got = get(&m, "conntrack.entries", None).expect("entries");
    assert!(
        got >= lo.min(hi) && got <= lo.max(hi),
        "{got} vs {lo}..{hi}"
    );
    assert_eq!(get(&m, "conntrack.limit", None), Some(max));
    let pct = get(&m, "conntrack.used_percent", None).expect("pct");
    assert!((pct - got / max * 100.0).abs() < 1e-9);
}

#[test]
fn softnet_total_processed_fits_the_kernels_sum() {
    let sum = || -> Vec<u64> {
        let mut s = vec![0u64; 2];
        for l in proc_file("/proc/net/softnet_stat").lines() {
            let c: Vec<u64> = l
                .split(' ')
                .map(|w| u64::from_str_radix(w, 16).expect("hex"))
                .collect();
            s[0] += c[0];
            s[1] += c[1];
        }
        s
    };
    let m = rates_within_kernel_bounds(
        Family::Softnet,
        &["softnet.processed", "softnet.dropped"],
        Some(("cpu", "cpu-total")),
        1.0,
        sum,
        || {
            // Loopback packets go through the backlog of the sending CPU.
            let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            let to = u.local_addr().expect("addr");
            for _ in 0..50 {
                u.send_to(b"x", to).expect("send");
            }
        },
    );
    let lines = proc_file("/proc/net/softnet_stat").lines().count();
    let per_cpu = m
        .iter()
        .filter(|x| {
            x.name == "softnet.processed" && x.tags.get("cpu").is_some_and(|c| c != "cpu-total")
        })
        .count();
    assert_eq!(per_cpu, lines, "one series per online CPU");
}

/// Sockets `ss` lists for one IP version and state, now.
fn ss_count(ip: &str, state: &str) -> f64 {
    let out = std::process::Command::new("ss")
        .args(["-H", "-tan", &format!("-{ip}"), "state", state])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count() as f64
}

#[test]
fn socket_states_agree_with_ss_for_sockets_the_test_opens() {
    use std::net::{TcpListener, TcpStream};
    let mut keep = Vec::new();
    let mut listeners = Vec::new();
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let l = TcpListener::bind(host).expect("bind");
        let addr = l.local_addr().expect("addr");
        // Two established pairs (4 sockets), kept open.
        for _ in 0..2 {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = l.accept().expect("accept");
            keep.push((c, s));
        }
        // Three closed connections whose client closed first: the client side sits in TIME_WAIT.
        for _ in 0..3 {
            let c = TcpStream::connect(addr).expect("connect");
            let (mut s, _) = l.accept().expect("accept");
            drop(c);
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).expect("eof"), 0);
        }
        listeners.push(l);
    }
    let mine = [("established", 4.0), ("listen", 1.0), ("time_wait", 3.0)];
    fn ss_name(s: &str) -> &str {
        match s {
            "listen" => "listening",
            "time_wait" => "time-wait",
            s => s,
        }
    }
    let mut c = SystemCollector::new(SystemOptions::default());
    // Other programs on the machine open and close sockets too: a figure must lie between what
    // `ss` saw just before and just after the collection; a few tries absorb a burst of churn.
    let mut last = String::new();
    for _ in 0..5 {
        let before: Vec<f64> = ["4", "6"]
            .iter()
            .flat_map(|ip| mine.iter().map(move |(s, _)| ss_count(ip, ss_name(s))))
            .collect();
        let m = c.collect(Family::Socket);
        let after: Vec<f64> = ["4", "6"]
            .iter()
            .flat_map(|ip| mine.iter().map(move |(s, _)| ss_count(ip, ss_name(s))))
            .collect();
        let mut ok = true;
        for (i, (ip, (state, at_least))) in ["4", "6"]
            .iter()
            .flat_map(|ip| mine.iter().map(move |s| (*ip, *s)))
            .enumerate()
        {
            let got = m
                .iter()
                .find(|x| {
                    x.name == "socket.tcp"
                        && x.tags.get("ip").map(String::as_str) == Some(ip)
                        && x.tags.get("state").map(String::as_str) == Some(state)
                })
                .map(float)
                .expect("series present");
            assert!(
                got >= at_least,
                "ip{ip} {state}: {got} < the test's own {at_least}"
            );
            let (lo, hi) = (before[i].min(after[i]), before[i].max(after[i]));
            if got < lo || got > hi {
                ok = false;
                last = format!("ip{ip} {state}: {got}, ss {lo}..{hi}");
            }
        }
        // sockstat: TCP in use counts the IPv4 sockets, `tw` both versions' TIME_WAIT.
        assert!(get(&m, "socket.inuse", Some(("proto", "tcp"))).expect("inuse") >= 5.0);
        assert!(get(&m, "socket.time_wait", Some(("proto", "tcp"))).expect("tw") >= 6.0);
        assert!(get(&m, "socket.inuse", Some(("proto", "tcp6"))).expect("tcp6") >= 5.0);
        if ok {
            drop(keep);
            return;
        }
    }
    panic!("socket counts never matched ss: {last}");
}
