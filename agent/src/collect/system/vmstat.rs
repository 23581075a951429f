//! Paging, swapping and OOM kills from `/proc/vmstat`, as per-second rates.

use std::time::Instant;

use super::{Out, Rates, Reader, SystemOptions};

/// (metric, `/proc/vmstat` key, scale): `pgpgin`/`pgpgout` count KiB, the rest count events or
/// pages.
const RATES: [(&str, &str, f64); 7] = [
    ("vmstat.page_faults", "pgfault", 1.0),
    ("vmstat.major_faults", "pgmajfault", 1.0),
    ("vmstat.paged_in_bytes", "pgpgin", 1024.0),
    ("vmstat.paged_out_bytes", "pgpgout", 1024.0),
    ("vmstat.swap_in_pages", "pswpin", 1.0),
    ("vmstat.swap_out_pages", "pswpout", 1.0),
    ("vmstat.oom_kills", "oom_kill", 1.0),
];

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut Rates,
    now: Instant,
    out: &mut Out,
) {
    let Some(text) = r.read(&o.proc_root.join("vmstat")) else {
        return;
    };
    let vals = parse(text);
    emit(st, now, vals, out);
}

fn emit(st: &mut Rates, now: Instant, vals: Vec<Option<u64>>, out: &mut Out) {
    st.advance(now, vals, |i, v| {
        if let Some((name, _, scale)) = RATES.get(i) {
            out.push(name, v * scale, &[]);
        }
    });
}

/// The counters of [`RATES`] in order; one a kernel lacks (`oom_kill` came in 4.13) is `None`.
pub(super) fn parse(text: &str) -> Vec<Option<u64>> {
    let mut vals = vec![None; RATES.len()];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = RATES.iter().position(|(_, k, _)| *k == key) {
            vals[i] = value.trim().parse().ok();
        }
    }
    vals
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::get;
    use super::*;

    #[test]
    fn captured_and_old_kernel_files() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/collect/system/fixtures");
        let v = parse(&std::fs::read_to_string(dir.join("vm-6.18/vmstat")).expect("fixture"));
        assert!(v.iter().all(Option::is_some), "{v:?}");
        let old = parse(&std::fs::read_to_string(dir.join("old-4.9/vmstat")).expect("fixture"));
        assert_eq!(old[0], Some(871_002_110), "pgfault");
        assert_eq!(old[5], Some(10_220), "pswpout");
        assert_eq!(old[6], None, "no oom_kill before 4.13");
    }

    #[test]
    fn oom_kills_and_kib_as_bytes_per_second() {
        let mut st = Rates::default();
        let t0 = Instant::now();
        let mut o = Out::new();
        emit(&mut st, t0, parse("pgpgin 100\noom_kill 1\n"), &mut o);
        assert!(o.metrics.is_empty(), "first sample");
        let cur = parse("pgpgin 110\noom_kill 3\n");
        emit(&mut st, t0 + Duration::from_secs(2), cur, &mut o);
        assert_eq!(get(&o, "vmstat.oom_kills"), Some(1.0));
        assert_eq!(get(&o, "vmstat.paged_in_bytes"), Some(5.0 * 1024.0));
        assert_eq!(get(&o, "vmstat.page_faults"), None, "never read");
    }
}
