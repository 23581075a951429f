//! Block device io rates from `/proc/diskstats`, for whole disks only.
//!
//! Partitions are left out: their io is already in their disk's figures, and a host with many
//! partitions would multiply series without telling more. Whole disks are the names under
//! `/sys/block` (this includes device-mapper and md devices); `loop*` and `ram*` are skipped by
//! default, and so is a device whose counters are all zero (never used, e.g. an idle zram).

use std::collections::HashMap;
use std::time::Instant;

use super::{name_matches, percent, rate, ByName, Out, Reader, SystemOptions};

/// `/proc/diskstats` always counts 512-byte sectors, whatever the device's sector size.
const SECTOR: u64 = 512;

/// Counters of one device line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sample {
    reads: u64,
    read_sectors: u64,
    writes: u64,
    write_sectors: u64,
    in_progress: u64,
    /// Milliseconds during which the device had io in flight.
    busy_ms: u64,
}

#[derive(Default)]
pub(super) struct State {
    devices: ByName<Sample>,
    /// Whether a name is a whole disk; asked of sysfs once per name.
    whole: HashMap<String, bool>,
}

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut State,
    now: Instant,
    out: &mut Out,
) {
    let Some(text) = r.read(&o.proc_root.join("diskstats")) else {
        return;
    };
    let sys_block = o.sys_root.join("block");
    let State { devices, whole } = st;
    let have_sys = !whole.is_empty() || sys_block.is_dir();
    let current = parse(text).filter(|(name, cur)| {
        if name_matches(&o.skip_disks, name) || *cur == Sample::default() {
            return false;
        }
        // Partitions' io is already in their disk's figures: whole disks only.
        match whole.get(*name) {
            Some(w) => *w,
            None => {
                let w = !have_sys || sys_block.join(name).exists();
                whole.insert((*name).to_owned(), w);
                w
            }
        }
    });
    devices.advance(now, current, |prev, cur, secs, name| {
        emit(prev, cur, secs, name, out);
    });
}

/// Device name and counters per line; lines that do not parse are left out.
pub(super) fn parse(text: &str) -> impl Iterator<Item = (&str, Sample)> {
    text.lines().filter_map(|line| {
        let mut words = line.split_ascii_whitespace();
        let name = words.nth(2)?;
        let rest: Vec<u64> = words
            .take(10)
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        if rest.len() < 10 {
            return None;
        }
        Some((
            name,
            Sample {
                reads: rest[0],
                read_sectors: rest[2],
                writes: rest[4],
                write_sectors: rest[6],
                in_progress: rest[8],
                busy_ms: rest[9],
            },
        ))
    })
}

/// Rates between two samples of one device `secs` apart; a counter that went backwards emits
/// nothing for this sample.
pub(super) fn emit(prev: &Sample, cur: &Sample, secs: f64, device: &str, out: &mut Out) {
    let tags = [("device", device)];
    out.push_opt("disk.reads", rate(prev.reads, cur.reads, secs), &tags);
    out.push_opt("disk.writes", rate(prev.writes, cur.writes, secs), &tags);
    out.push_opt(
        "disk.read_bytes",
        rate(prev.read_sectors, cur.read_sectors, secs).map(|r| r * SECTOR as f64),
        &tags,
    );
    out.push_opt(
        "disk.write_bytes",
        rate(prev.write_sectors, cur.write_sectors, secs).map(|r| r * SECTOR as f64),
        &tags,
    );
    // Busy ms per elapsed ms; clamped because the two clocks are not read at the same instant.
    out.push_opt(
        "disk.busy_percent",
        rate(prev.busy_ms, cur.busy_ms, secs).map(|ms| percent(ms, 1000.0).min(100.0)),
        &tags,
    );
    out.push("disk.in_progress", cur.in_progress as f64, &tags);
}

#[cfg(test)]
mod tests {
    use super::super::tests::get;
    use super::*;

    #[test]
    fn rates_per_second_from_counters() {
        let a = parse(" 254 0 vda 100 0 2000 0 50 0 4000 0 0 1000 0\n")
            .next()
            .expect("line")
            .1;
        let b = parse(" 254 0 vda 300 0 6000 0 70 0 4000 0 2 6000 0 0 0 0 0\n")
            .next()
            .expect("line")
            .1;
        let mut out = Out::new();
        emit(&a, &b, 10.0, "vda", &mut out);
        assert_eq!(get(&out, "disk.reads"), Some(20.0));
        assert_eq!(get(&out, "disk.writes"), Some(2.0));
        assert_eq!(get(&out, "disk.read_bytes"), Some(400.0 * 512.0));
        assert_eq!(get(&out, "disk.write_bytes"), Some(0.0));
        assert_eq!(get(&out, "disk.busy_percent"), Some(50.0));
        assert_eq!(get(&out, "disk.in_progress"), Some(2.0));
        assert_eq!(
            out.metrics[0].tags.get("device").map(String::as_str),
            Some("vda")
        );
    }

    #[test]
    fn reset_counters_emit_no_rate() {
        let a = parse(" 254 0 vda 100 0 2000 0 50 0 4000 0 0 1000 0\n")
            .next()
            .expect("l")
            .1;
        let b = parse(" 254 0 vda 5 0 10 0 50 0 4000 0 0 1000 0\n")
            .next()
            .expect("l")
            .1;
        let mut out = Out::new();
        emit(&a, &b, 10.0, "vda", &mut out);
        assert_eq!(get(&out, "disk.reads"), None);
        assert_eq!(get(&out, "disk.read_bytes"), None);
        assert_eq!(get(&out, "disk.writes"), Some(0.0));
    }

    #[test]
    fn partitions_loops_and_unused_devices_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc_root = dir.path().join("proc");
        let sys_root = dir.path().join("sys");
        std::fs::create_dir_all(&proc_root).expect("mkdir");
        std::fs::create_dir_all(sys_root.join("block/sda")).expect("mkdir");
        std::fs::create_dir_all(sys_root.join("block/zram0")).expect("mkdir");
        let stats = |n: u64| {
            format!(
                "   7 0 loop0 {n} 0 {n} 0 0 0 0 0 0 {n} 0\n   8 0 sda {n} 0 {n} 0 {n} 0 {n} 0 0 {n} 0\n   \
                 8 1 sda1 {n} 0 {n} 0 {n} 0 {n} 0 0 {n} 0\n 253 0 zram0 0 0 0 0 0 0 0 0 0 0 0\n"
            )
        };
        let opts = SystemOptions {
            proc_root: proc_root.clone(),
            sys_root,
            ..SystemOptions::default()
        };
        let mut c = super::super::SystemCollector::new(opts);
        std::fs::write(proc_root.join("diskstats"), stats(10)).expect("w");
        assert!(
            c.collect(super::super::Family::Disk).is_empty(),
            "first sample has no rates"
        );
        std::fs::write(proc_root.join("diskstats"), stats(20)).expect("w");
        let m = c.collect(super::super::Family::Disk);
        assert!(!m.is_empty());
        for m in &m {
            assert_eq!(
                m.tags.get("device").map(String::as_str),
                Some("sda"),
                "{m:?}"
            );
        }
    }
}
