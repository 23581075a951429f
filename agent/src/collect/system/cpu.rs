//! CPU: shares of time per state, for all cores together (`cpu=cpu-total`) and per core, as the
//! change of `/proc/stat`'s tick counters between two samples.

use super::{numbers, percent, Out, Reader, SystemOptions};

/// Tick counters of one `cpu` line, in `/proc/stat` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Times {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
    guest: u64,
    guest_nice: u64,
}

impl Times {
    fn fields(&self) -> [u64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }

    /// All ticks; guest time is already counted in user and nice, so it is not added again.
    fn total(&self) -> u64 {
        self.fields().iter().sum()
    }
}

/// The previous sample: per line (`cpu`, `cpu0`, ...) its counters.
#[derive(Default)]
pub(super) struct State {
    lines: Vec<(String, Times)>,
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, st: &mut State, out: &mut Out) {
    let Some(text) = r.read(&o.proc_root.join("stat")) else {
        return;
    };
    for (seen, (name, cur)) in parse(text).enumerate() {
        // Lines come in the same order every time; look up by position first, by name after a
        // hot-plugged core changed the order.
        let slot = match st.lines.get(seen) {
            Some((n, _)) if n == name => Some(seen),
            _ => st.lines.iter().position(|(n, _)| n == name),
        };
        let tag = if name == "cpu" { "cpu-total" } else { name };
        match slot {
            Some(i) => {
                emit(&st.lines[i].1, &cur, tag, out);
                st.lines[i].1 = cur;
            }
            None => st.lines.push((name.to_owned(), cur)),
        }
    }
}

/// The `cpu*` lines of `/proc/stat`; lines that do not parse are left out.
pub(super) fn parse(text: &str) -> impl Iterator<Item = (&str, Times)> {
    text.lines()
        .take_while(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            let mut n = numbers(rest).map(|v| v.unwrap_or(0));
            let mut next = || n.next().unwrap_or(0);
            let t = Times {
                user: next(),
                nice: next(),
                system: next(),
                idle: next(),
                iowait: next(),
                irq: next(),
                softirq: next(),
                steal: next(),
                guest: next(),
                guest_nice: next(),
            };
            Some((name, t))
        })
}

/// Emits the shares of each state between two samples of one line. Nothing when any counter went
/// backwards (a reset, or the iowait quirk of some kernels) or no tick passed.
pub(super) fn emit(prev: &Times, cur: &Times, tag: &str, out: &mut Out) {
    let (p, c) = (prev.fields(), cur.fields());
    if p.iter().zip(&c).any(|(a, b)| b < a) || cur.guest < prev.guest {
        return;
    }
    let total = (cur.total() - prev.total()) as f64;
    if total <= 0.0 {
        return;
    }
    let share = |a: u64, b: u64| percent((b - a) as f64, total);
    let tags = [("cpu", tag)];
    let idle = share(prev.idle, cur.idle);
    let iowait = share(prev.iowait, cur.iowait);
    out.push("cpu.user", share(prev.user, cur.user), &tags);
    out.push("cpu.nice", share(prev.nice, cur.nice), &tags);
    out.push("cpu.system", share(prev.system, cur.system), &tags);
    out.push("cpu.idle", idle, &tags);
    out.push("cpu.iowait", iowait, &tags);
    out.push("cpu.irq", share(prev.irq, cur.irq), &tags);
    out.push("cpu.softirq", share(prev.softirq, cur.softirq), &tags);
    out.push("cpu.steal", share(prev.steal, cur.steal), &tags);
    out.push(
        "cpu.guest",
        percent(
            (cur.guest + cur.guest_nice).saturating_sub(prev.guest + prev.guest_nice) as f64,
            total,
        ),
        &tags,
    );
    out.push("cpu.usage", (100.0 - idle - iowait).max(0.0), &tags);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(out: &Out, name: &str, cpu: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|m| m.name == name && m.tags.get("cpu").map(String::as_str) == Some(cpu))
            .map(|m| match m.value {
                shared::Value::Float(v) => v,
                ref v => panic!("not a float: {v:?}"),
            })
    }

    #[test]
    fn parses_total_and_cores() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2\n";
        let lines: Vec<_> = parse(text).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].0, "cpu");
        assert_eq!(lines[2].0, "cpu1");
        assert_eq!(lines[0].1.total(), 1000);
    }

    #[test]
    fn shares_are_percent_of_elapsed_ticks() {
        let a = parse("cpu  100 0 50 800 50 0 0 0 0 0\n")
            .next()
            .expect("line")
            .1;
        let b = parse("cpu  130 0 60 850 60 0 0 0 0 0\n")
            .next()
            .expect("line")
            .1;
        let mut out = Out::new();
        emit(&a, &b, "cpu-total", &mut out);
        assert_eq!(value(&out, "cpu.user", "cpu-total"), Some(30.0));
        assert_eq!(value(&out, "cpu.system", "cpu-total"), Some(10.0));
        assert_eq!(value(&out, "cpu.idle", "cpu-total"), Some(50.0));
        assert_eq!(value(&out, "cpu.iowait", "cpu-total"), Some(10.0));
        assert_eq!(value(&out, "cpu.usage", "cpu-total"), Some(40.0));
    }

    #[test]
    fn every_column_lands_in_its_own_metric() {
        // Deltas 1..=10 ticks per column, in /proc/stat order; the total leaves guest out
        // (already in user and nice), so it is 1+2+...+8 = 36 ticks.
        let a = parse("cpu  0 0 0 0 0 0 0 0 0 0\n").next().expect("line").1;
        let b = parse("cpu  1 2 3 4 5 6 7 8 9 10\n").next().expect("line").1;
        let mut out = Out::new();
        emit(&a, &b, "cpu-total", &mut out);
        let pct = |ticks: f64| ticks / 36.0 * 100.0;
        for (name, ticks) in [
            ("cpu.user", 1.0),
            ("cpu.nice", 2.0),
            ("cpu.system", 3.0),
            ("cpu.idle", 4.0),
            ("cpu.iowait", 5.0),
            ("cpu.irq", 6.0),
            ("cpu.softirq", 7.0),
            ("cpu.steal", 8.0),
            ("cpu.guest", 19.0),
        ] {
            assert_eq!(value(&out, name, "cpu-total"), Some(pct(ticks)), "{name}");
        }
        assert_eq!(
            value(&out, "cpu.usage", "cpu-total"),
            Some(100.0 - pct(4.0) - pct(5.0))
        );
    }

    #[test]
    fn first_sample_and_backwards_counters_emit_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SystemOptions {
            proc_root: dir.path().to_owned(),
            ..SystemOptions::default()
        };
        let mut c = super::super::SystemCollector::new(opts);
        std::fs::write(dir.path().join("stat"), "cpu  100 0 50 800 50 0 0 0 0 0\n").expect("w");
        assert!(
            c.collect(super::super::Family::Cpu).is_empty(),
            "first sample"
        );
        std::fs::write(dir.path().join("stat"), "cpu  200 0 50 900 40 0 0 0 0 0\n").expect("w");
        assert!(
            c.collect(super::super::Family::Cpu).is_empty(),
            "iowait went back"
        );
        std::fs::write(dir.path().join("stat"), "cpu  300 0 50 1000 40 0 0 0 0 0\n").expect("w");
        let m = c.collect(super::super::Family::Cpu);
        let user = m.iter().find(|m| m.name == "cpu.user").expect("user");
        assert_eq!(user.value, shared::Value::Float(50.0));
    }
}
