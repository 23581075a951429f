//! Per-CPU receive path figures from `/proc/net/softnet_stat`: packets processed, dropped (the
//! backlog queue was full) and time squeezed (the NAPI budget or time ran out with work left), as
//! per-second rates per CPU and summed (`cpu=cpu-total`).
//!
//! The file has one line of hexadecimal columns per online CPU. Since 5.10 the 13th column is the
//! CPU's number; before, lines are in CPU order but skip offline CPUs, so the line's position is
//! the best name there is.

use std::time::Instant;

use super::{rate, ByName, Out, Reader, SystemOptions};

/// processed, dropped, time_squeeze.
type Sample = [u64; 3];

#[derive(Default)]
pub(super) struct State {
    cpus: ByName<Sample>,
}

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut State,
    now: Instant,
    out: &mut Out,
) {
    let Some(text) = r.read(&o.proc_root.join("net/softnet_stat")) else {
        return;
    };
    let per_cpu = parse(text);
    let mut total = [0u64; 3];
    for (_, s) in &per_cpu {
        for (t, v) in total.iter_mut().zip(s) {
            *t = t.wrapping_add(*v);
        }
    }
    let names: Vec<String> = per_cpu.iter().map(|(n, _)| format!("cpu{n}")).collect();
    let current = std::iter::once(("cpu-total", total)).chain(
        names
            .iter()
            .map(String::as_str)
            .zip(per_cpu.iter().map(|(_, s)| *s)),
    );
    st.cpus.advance(now, current, |prev, cur, secs, cpu| {
        let tags = [("cpu", cpu)];
        for (i, name) in [
            "softnet.processed",
            "softnet.dropped",
            "softnet.time_squeezed",
        ]
        .iter()
        .enumerate()
        {
            out.push_opt(name, rate(prev[i], cur[i], secs), &tags);
        }
    });
}

/// CPU number and counters per line; lines with fewer than 3 hexadecimal columns are left out.
pub(super) fn parse(text: &str) -> Vec<(u32, Sample)> {
    let mut v = Vec::new();
    for (pos, line) in text.lines().enumerate() {
        let cols: Vec<u64> = line
            .split_ascii_whitespace()
            .map_while(|w| u64::from_str_radix(w, 16).ok())
            .collect();
        if cols.len() < 3 {
            continue;
        }
        let cpu = cols
            .get(12)
            .and_then(|c| u32::try_from(*c).ok())
            .unwrap_or(pos as u32);
        v.push((cpu, [cols[0], cols[1], cols[2]]));
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn metric(out: &Out, name: &str, cpu: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|m| m.name == name && m.tags.get("cpu").map(String::as_str) == Some(cpu))
            .map(|m| match m.value {
                shared::Value::Float(v) => v,
                ref v => panic!("{v:?}"),
            })
    }

    #[test]
    fn cpu_numbers_from_the_column_or_the_line() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/collect/system/fixtures");
        let new = parse(&std::fs::read_to_string(dir.join("vm-6.18/net/softnet_stat")).expect("f"));
        assert_eq!(new.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [0, 1]);
        let old =
            parse(&std::fs::read_to_string(dir.join("router-5.4/net/softnet_stat")).expect("f"));
        assert_eq!(old.len(), 4);
        assert_eq!(old[1], (1, [0x2c1f_3a20, 0x1b, 0x3e8]));
        assert_eq!(parse("zz 1 2\n1 2\n"), vec![]);
    }

    #[test]
    fn per_cpu_and_summed_rates() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = SystemOptions {
            proc_root: dir.path().to_owned(),
            ..SystemOptions::default()
        };
        std::fs::create_dir(dir.path().join("net")).expect("mkdir");
        let f = dir.path().join("net/softnet_stat");
        let line = |cpu: u32, p: u64, d: u64, s: u64| {
            format!("{p:08x} {d:08x} {s:08x} 0 0 0 0 0 0 0 0 0 {cpu:08x} 0 0\n")
        };
        let (mut r, mut st, t0) = (Reader::default(), State::default(), Instant::now());
        std::fs::write(&f, line(0, 100, 0, 1) + &line(3, 50, 2, 0)).expect("w");
        let mut out = Out::new();
        collect(&mut r, &o, &mut st, t0, &mut out);
        assert!(out.metrics.is_empty(), "first sample");
        std::fs::write(&f, line(0, 300, 0, 5) + &line(3, 70, 12, 0)).expect("w");
        let mut out = Out::new();
        collect(&mut r, &o, &mut st, t0 + Duration::from_secs(2), &mut out);
        assert_eq!(metric(&out, "softnet.processed", "cpu0"), Some(100.0));
        assert_eq!(metric(&out, "softnet.dropped", "cpu3"), Some(5.0));
        assert_eq!(metric(&out, "softnet.processed", "cpu-total"), Some(110.0));
        assert_eq!(
            metric(&out, "softnet.time_squeezed", "cpu-total"),
            Some(2.0)
        );
    }
}
