//! Kernel-wide figures: load, file handles, processes, context switches and forks, uptime.

use std::time::Instant;

use super::{rate, Out, Reader, SystemOptions};

/// The `/proc/stat` counters between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub ctxt: Option<u64>,
    pub forks: Option<u64>,
    pub running: Option<u64>,
    pub blocked: Option<u64>,
}

#[derive(Default)]
pub(super) struct State {
    prev: Option<(Instant, Counters)>,
}

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut State,
    now: Instant,
    out: &mut Out,
) {
    if let Some(text) = r.read(&o.proc_root.join("loadavg")) {
        emit_loadavg(text, out);
    }
    if let Some(text) = r.read(&o.proc_root.join("sys/fs/file-nr")) {
        let v: Vec<u64> = text
            .split_ascii_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [allocated, unused, max] = v[..] {
            out.push(
                "kernel.open_files",
                allocated.saturating_sub(unused) as f64,
                &[],
            );
            out.push("kernel.max_files", max as f64, &[]);
        }
    }
    if let Some(text) = r.read(&o.proc_root.join("stat")) {
        let cur = parse_stat(text);
        let secs = st
            .prev
            .map(|(at, prev)| (now.duration_since(at).as_secs_f64(), prev));
        emit_stat(secs.as_ref().map(|(s, p)| (*s, p)), &cur, out);
        st.prev = Some((now, cur));
    }
    if let Some(text) = r.read(&o.proc_root.join("uptime")) {
        if let Some(up) = text
            .split_ascii_whitespace()
            .next()
            .and_then(|w| w.parse::<f64>().ok())
        {
            out.push("kernel.uptime", up, &[]);
        }
    }
    match std::fs::read_dir(&o.proc_root) {
        Ok(dir) => {
            let n = dir
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .as_encoded_bytes()
                        .iter()
                        .all(u8::is_ascii_digit)
                })
                .count();
            // Zero means this is no procfs (the reading process itself would be listed).
            if n > 0 {
                out.push("kernel.processes", n as f64, &[]);
            }
        }
        Err(e) => r.failed(&o.proc_root, &e),
    }
}

/// `/proc/loadavg`: `0.10 0.20 0.30 2/345 6789`.
pub(super) fn emit_loadavg(text: &str, out: &mut Out) {
    let mut w = text.split_ascii_whitespace();
    for name in ["kernel.load1", "kernel.load5", "kernel.load15"] {
        if let Some(v) = w.next().and_then(|v| v.parse::<f64>().ok()) {
            out.push(name, v, &[]);
        }
    }
    if let Some(threads) = w
        .next()
        .and_then(|v| v.split_once('/'))
        .and_then(|(_, total)| total.parse::<f64>().ok())
    {
        out.push("kernel.threads", threads, &[]);
    }
}

pub(super) fn parse_stat(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines() {
        let Some((key, v)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "ctxt" => &mut c.ctxt,
            "processes" => &mut c.forks,
            "procs_running" => &mut c.running,
            "procs_blocked" => &mut c.blocked,
            _ => continue,
        };
        *slot = v.trim().parse().ok();
    }
    c
}

/// Gauges always; rates when there is a previous sample (`secs` apart) and the counter did not go
/// backwards.
pub(super) fn emit_stat(prev: Option<(f64, &Counters)>, cur: &Counters, out: &mut Out) {
    if let Some(v) = cur.running {
        out.push("kernel.procs_running", v as f64, &[]);
    }
    if let Some(v) = cur.blocked {
        out.push("kernel.procs_blocked", v as f64, &[]);
    }
    let Some((secs, prev)) = prev else {
        return;
    };
    let r = |a: Option<u64>, b: Option<u64>| rate(a?, b?, secs);
    out.push_opt("kernel.context_switches", r(prev.ctxt, cur.ctxt), &[]);
    out.push_opt("kernel.forks", r(prev.forks, cur.forks), &[]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::get;
    use super::*;

    #[test]
    fn loadavg_and_threads() {
        let mut out = Out::new();
        emit_loadavg("1.90 1.10 0.56 6/125 18405\n", &mut out);
        assert_eq!(get(&out, "kernel.load1"), Some(1.90));
        assert_eq!(get(&out, "kernel.load15"), Some(0.56));
        assert_eq!(get(&out, "kernel.threads"), Some(125.0));
    }

    #[test]
    fn switches_and_forks_per_second_no_rate_first() {
        let a = parse_stat(
            "cpu 1 2\nctxt 1000\nbtime 5\nprocesses 50\nprocs_running 3\nprocs_blocked 1\n",
        );
        assert_eq!(a.ctxt, Some(1000));
        assert_eq!(a.blocked, Some(1));
        let mut out = Out::new();
        emit_stat(None, &a, &mut out);
        assert_eq!(get(&out, "kernel.procs_running"), Some(3.0));
        assert_eq!(get(&out, "kernel.context_switches"), None, "first sample");
        let b = parse_stat("ctxt 3000\nprocesses 40\nprocs_running 1\nprocs_blocked 0\n");
        let mut out = Out::new();
        emit_stat(Some((10.0, &a)), &b, &mut out);
        assert_eq!(get(&out, "kernel.context_switches"), Some(200.0));
        assert_eq!(get(&out, "kernel.forks"), None, "went backwards");
    }
}
