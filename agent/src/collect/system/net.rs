//! Network interface rates from `/proc/net/dev`, per second, in and out.

use std::time::Instant;

use super::{name_matches, rate, ByName, Out, Reader, SystemOptions};

/// Counters of one interface, in `/proc/net/dev` order of meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sample {
    pub in_bytes: u64,
    pub in_packets: u64,
    pub in_errors: u64,
    pub in_drops: u64,
    pub out_bytes: u64,
    pub out_packets: u64,
    pub out_errors: u64,
    pub out_drops: u64,
}

#[derive(Default)]
pub(super) struct State {
    ifaces: ByName<Sample>,
}

/// Whether the options leave this interface out.
pub(super) fn skipped(o: &SystemOptions, iface: &str) -> bool {
    name_matches(&o.skip_interfaces, iface)
}

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut State,
    now: Instant,
    out: &mut Out,
) {
    let Some(text) = r.read(&o.proc_root.join("net/dev")) else {
        return;
    };
    let current = parse(text).filter(|(name, _)| !skipped(o, name));
    st.ifaces.advance(now, current, |prev, cur, secs, name| {
        emit(prev, cur, secs, name, out);
    });
}

/// Interface name and counters per line (the two header lines have no `:` and fall out).
pub(super) fn parse(text: &str) -> impl Iterator<Item = (&str, Sample)> {
    text.lines().filter_map(|line| {
        let (name, rest) = line.split_once(':')?;
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .take(16)
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 16 {
            return None;
        }
        Some((
            name.trim(),
            Sample {
                in_bytes: v[0],
                in_packets: v[1],
                in_errors: v[2],
                in_drops: v[3],
                out_bytes: v[8],
                out_packets: v[9],
                out_errors: v[10],
                out_drops: v[11],
            },
        ))
    })
}

/// Per-second rates between two samples `secs` apart; a counter that went backwards (32-bit
/// driver counters wrap) emits nothing for this sample.
pub(super) fn emit(prev: &Sample, cur: &Sample, secs: f64, iface: &str, out: &mut Out) {
    let tags = [("iface", iface)];
    let pairs = [
        ("net.in_bytes", prev.in_bytes, cur.in_bytes),
        ("net.in_packets", prev.in_packets, cur.in_packets),
        ("net.in_errors", prev.in_errors, cur.in_errors),
        ("net.in_drops", prev.in_drops, cur.in_drops),
        ("net.out_bytes", prev.out_bytes, cur.out_bytes),
        ("net.out_packets", prev.out_packets, cur.out_packets),
        ("net.out_errors", prev.out_errors, cur.out_errors),
        ("net.out_drops", prev.out_drops, cur.out_drops),
    ];
    for (name, a, b) in pairs {
        out.push_opt(name, rate(a, b, secs), &tags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
        lo:    6125      49    0    0    0     0          0         0     6125      49    0    0    0     0       0          0\n  \
        eth0: 1000    10    1    2    0     0          0         0   500    5    0    3    0     0       0          0\n  \
        veth12ab: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";

    #[test]
    fn parses_interfaces_and_skips_header() {
        let all: Vec<_> = parse(DEV).collect();
        assert_eq!(all.len(), 3);
        let eth0 = all[1].1;
        assert_eq!(all[1].0, "eth0");
        assert_eq!((eth0.in_bytes, eth0.in_errors, eth0.in_drops), (1000, 1, 2));
        assert_eq!(
            (eth0.out_bytes, eth0.out_packets, eth0.out_drops),
            (500, 5, 3)
        );
        let o = SystemOptions::default();
        assert!(skipped(&o, "lo") && skipped(&o, "veth12ab") && skipped(&o, "docker0"));
        assert!(!skipped(&o, "eth0"));
    }

    #[test]
    fn wrapped_counter_emits_nothing_others_still_do() {
        let prev = Sample {
            in_bytes: u64::from(u32::MAX) - 100,
            out_bytes: 1000,
            ..Sample::default()
        };
        let cur = Sample {
            in_bytes: 50,
            out_bytes: 3000,
            ..Sample::default()
        };
        let mut out = Out::new();
        emit(&prev, &cur, 2.0, "eth0", &mut out);
        assert!(out.metrics.iter().all(|m| m.name != "net.in_bytes"));
        let ob = out
            .metrics
            .iter()
            .find(|m| m.name == "net.out_bytes")
            .expect("out_bytes");
        assert_eq!(ob.value, shared::Value::Float(1000.0));
        assert_eq!(ob.tags.get("iface").map(String::as_str), Some("eth0"));
    }
}
