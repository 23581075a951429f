//! Pressure stall information (PSI, `/proc/pressure/{cpu,memory,io}`): the share of time some or
//! all runnable tasks were stalled on a resource, as the kernel's 10, 60 and 300 s averages, and
//! the stall time counter as a rate. A kernel without PSI (older than 4.20, built without it, or
//! booted with `psi=0`) has no such files, or refuses to read them; the family then says nothing
//! and logs nothing.

use std::time::Instant;

use super::{Out, Rates, Reader, SystemOptions};

const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];
const KINDS: [&str; 2] = ["some", "full"];

/// The three averages and the stall time (µs) of one `some`/`full` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Line {
    pub avg: [Option<f64>; 3],
    pub total_us: Option<u64>,
}

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut Rates,
    now: Instant,
    out: &mut Out,
) {
    let dir = o.proc_root.join("pressure");
    let mut totals = vec![None; RESOURCES.len() * KINDS.len()];
    for (ri, res) in RESOURCES.iter().enumerate() {
        let Some(text) = r.read_optional(&dir.join(res)) else {
            continue;
        };
        for (ki, line) in parse(text).into_iter().enumerate() {
            let Some(line) = line else {
                continue;
            };
            let tags = [("resource", *res), ("kind", KINDS[ki])];
            for (name, v) in ["pressure.avg10", "pressure.avg60", "pressure.avg300"]
                .iter()
                .zip(line.avg)
            {
                out.push_opt(name, v, &tags);
            }
            totals[ri * KINDS.len() + ki] = line.total_us;
        }
    }
    st.advance(now, totals, |i, us_per_s| {
        let tags = [
            ("resource", RESOURCES[i / KINDS.len()]),
            ("kind", KINDS[i % KINDS.len()]),
        ];
        out.push("pressure.stall_percent", us_per_s / 1e4, &tags);
    });
}

/// The `some` and `full` lines of one pressure file (`cpu` has no `full` line before 5.13).
pub(super) fn parse(text: &str) -> [Option<Line>; 2] {
    let mut lines = [None, None];
    for l in text.lines() {
        let mut w = l.split_ascii_whitespace();
        let Some(ki) = w.next().and_then(|k| KINDS.iter().position(|x| *x == k)) else {
            continue;
        };
        let mut line = Line::default();
        for kv in w {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => line.avg[0] = v.parse().ok(),
                "avg60" => line.avg[1] = v.parse().ok(),
                "avg300" => line.avg[2] = v.parse().ok(),
                "total" => line.total_us = v.parse().ok(),
                _ => {}
            }
        }
        lines[ki] = Some(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SystemCollector;
    use super::*;

    fn fixtures(dir: &str) -> SystemOptions {
        SystemOptions {
            proc_root: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/collect/system/fixtures")
                .join(dir),
            ..SystemOptions::default()
        }
    }

    #[test]
    fn parses_some_and_full() {
        let [some, full] = parse(
            "some avg10=13.79 avg60=32.77 avg300=18.16 total=90609643\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        let some = some.expect("some");
        assert_eq!(some.avg, [Some(13.79), Some(32.77), Some(18.16)]);
        assert_eq!(some.total_us, Some(90_609_643));
        assert_eq!(full.expect("full").total_us, Some(0));
        let [some, full] = parse("some avg10=0.50 avg60=x total=12\n");
        assert_eq!(some.expect("some").avg, [Some(0.5), None, None]);
        assert!(full.is_none(), "a 4.20 cpu file has no full line");
    }

    #[test]
    fn captured_psi_gives_every_series_and_stall_rates() {
        let mut st = Rates::default();
        let o = fixtures("vm-6.18");
        let mut r = Reader::default();
        let mut out = Out::new();
        let t0 = Instant::now();
        collect(&mut r, &o, &mut st, t0, &mut out);
        // 3 resources x some/full x 3 averages; no rate yet.
        assert_eq!(out.metrics.len(), 18, "{:?}", out.metrics);
        let mut out = Out::new();
        collect(&mut r, &o, &mut st, t0 + Duration::from_secs(10), &mut out);
        let stalls = out
            .metrics
            .iter()
            .filter(|m| m.name == "pressure.stall_percent")
            .count();
        assert_eq!(stalls, 6, "same files: a zero rate for each line");
    }

    #[test]
    fn a_kernel_without_psi_yields_nothing_and_logs_nothing() {
        let mut c = SystemCollector::new(fixtures("old-4.19-noipv6"));
        assert!(c.collect(super::super::Family::Pressure).is_empty());
        assert!(c.collect(super::super::Family::Pressure).is_empty());
        assert!(c.reader.failing.is_empty(), "no missing file is a failure");
    }
}
