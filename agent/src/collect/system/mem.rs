//! Memory and swap from `/proc/meminfo`, in bytes.

use super::{percent, Out, Reader, SystemOptions};

/// The `/proc/meminfo` fields the agent reports, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: Option<u64>,
    pub buffers: u64,
    pub cached: u64,
    pub sreclaimable: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, out: &mut Out) {
    let path = o.proc_root.join("meminfo");
    let Some(text) = r.read(&path) else {
        return;
    };
    let m = parse(text);
    if m.total == 0 {
        r.failed(&path, &"MemTotal missing or 0");
        return;
    }
    emit(&m, out);
}

pub(super) fn parse(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_ascii_whitespace();
        let Some(v) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        let bytes = if words.next() == Some("kB") {
            v.saturating_mul(1024)
        } else {
            v
        };
        match key {
            "MemTotal" => m.total = bytes,
            "MemFree" => m.free = bytes,
            "MemAvailable" => m.available = Some(bytes),
            "Buffers" => m.buffers = bytes,
            "Cached" => m.cached = bytes,
            "SReclaimable" => m.sreclaimable = bytes,
            "SwapTotal" => m.swap_total = bytes,
            "SwapFree" => m.swap_free = bytes,
            _ => {}
        }
    }
    m
}

/// `used` is what `free` (procps-ng 4) shows: total minus available, i.e. what cannot be had back
/// without swapping. Kernels before 3.14 lack MemAvailable; there it is estimated as free plus
/// buffers plus page cache plus reclaimable slab.
pub(super) fn emit(m: &MemInfo, out: &mut Out) {
    let cached = m.cached + m.sreclaimable;
    let available = m
        .available
        .unwrap_or(m.free + m.buffers + cached)
        .min(m.total);
    let used = m.total - available;
    out.push("mem.total", m.total as f64, &[]);
    out.push("mem.used", used as f64, &[]);
    out.push("mem.free", m.free as f64, &[]);
    out.push("mem.available", available as f64, &[]);
    out.push("mem.buffers", m.buffers as f64, &[]);
    out.push("mem.cached", cached as f64, &[]);
    out.push(
        "mem.used_percent",
        percent(used as f64, m.total as f64),
        &[],
    );
    let swap_used = m.swap_total.saturating_sub(m.swap_free);
    out.push("mem.swap_total", m.swap_total as f64, &[]);
    out.push("mem.swap_used", swap_used as f64, &[]);
    out.push("mem.swap_free", m.swap_free as f64, &[]);
    out.push(
        "mem.swap_used_percent",
        percent(swap_used as f64, m.swap_total as f64),
        &[],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_into_bytes_and_derives_used() {
        let m = parse(
            "MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nBuffers: 50 kB\n\
             Cached: 300 kB\nSReclaimable: 20 kB\nSwapTotal: 200 kB\nSwapFree: 150 kB\n",
        );
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, Some(614_400));
        let mut out = Out::new();
        emit(&m, &mut out);
        let get = |n: &str| {
            out.metrics
                .iter()
                .find(|m| m.name == n)
                .map(|m| m.value.clone())
        };
        assert_eq!(get("mem.used"), Some(shared::Value::Float(409_600.0)));
        assert_eq!(get("mem.used_percent"), Some(shared::Value::Float(40.0)));
        assert_eq!(get("mem.cached"), Some(shared::Value::Float(327_680.0)));
        assert_eq!(
            get("mem.swap_used_percent"),
            Some(shared::Value::Float(25.0))
        );
    }
}
