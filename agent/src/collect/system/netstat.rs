//! TCP and UDP protocol counters as per-second rates: `/proc/net/snmp` (the `Tcp:` and `Udp:` MIB
//! lines, IPv4 UDP and all TCP), `/proc/net/netstat` (`TcpExt:`, listen queue overflows and
//! timeouts) and `/proc/net/snmp6` (IPv6 UDP).

use std::time::Instant;

use super::{Out, Rates, Reader, SystemOptions};

/// Which file a counter is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Src {
    Snmp,
    Netstat,
    Snmp6,
}

/// (metric, file, section, field): counters reported as per-second rates.
const RATES: [(&str, Src, &str, &str); 25] = [
    ("netstat.tcp_active_opens", Src::Snmp, "Tcp", "ActiveOpens"),
    (
        "netstat.tcp_passive_opens",
        Src::Snmp,
        "Tcp",
        "PassiveOpens",
    ),
    (
        "netstat.tcp_attempt_fails",
        Src::Snmp,
        "Tcp",
        "AttemptFails",
    ),
    ("netstat.tcp_estab_resets", Src::Snmp, "Tcp", "EstabResets"),
    ("netstat.tcp_in_segs", Src::Snmp, "Tcp", "InSegs"),
    ("netstat.tcp_out_segs", Src::Snmp, "Tcp", "OutSegs"),
    ("netstat.tcp_retrans_segs", Src::Snmp, "Tcp", "RetransSegs"),
    ("netstat.tcp_in_errors", Src::Snmp, "Tcp", "InErrs"),
    ("netstat.tcp_out_resets", Src::Snmp, "Tcp", "OutRsts"),
    (
        "netstat.tcp_listen_overflows",
        Src::Netstat,
        "TcpExt",
        "ListenOverflows",
    ),
    (
        "netstat.tcp_listen_drops",
        Src::Netstat,
        "TcpExt",
        "ListenDrops",
    ),
    (
        "netstat.tcp_timeouts",
        Src::Netstat,
        "TcpExt",
        "TCPTimeouts",
    ),
    (
        "netstat.tcp_syn_retrans",
        Src::Netstat,
        "TcpExt",
        "TCPSynRetrans",
    ),
    ("netstat.udp_in_datagrams", Src::Snmp, "Udp", "InDatagrams"),
    (
        "netstat.udp_out_datagrams",
        Src::Snmp,
        "Udp",
        "OutDatagrams",
    ),
    ("netstat.udp_in_errors", Src::Snmp, "Udp", "InErrors"),
    ("netstat.udp_no_ports", Src::Snmp, "Udp", "NoPorts"),
    (
        "netstat.udp_rcvbuf_errors",
        Src::Snmp,
        "Udp",
        "RcvbufErrors",
    ),
    (
        "netstat.udp_sndbuf_errors",
        Src::Snmp,
        "Udp",
        "SndbufErrors",
    ),
    (
        "netstat.udp6_in_datagrams",
        Src::Snmp6,
        "Udp6",
        "InDatagrams",
    ),
    (
        "netstat.udp6_out_datagrams",
        Src::Snmp6,
        "Udp6",
        "OutDatagrams",
    ),
    ("netstat.udp6_in_errors", Src::Snmp6, "Udp6", "InErrors"),
    ("netstat.udp6_no_ports", Src::Snmp6, "Udp6", "NoPorts"),
    (
        "netstat.udp6_rcvbuf_errors",
        Src::Snmp6,
        "Udp6",
        "RcvbufErrors",
    ),
    (
        "netstat.udp6_sndbuf_errors",
        Src::Snmp6,
        "Udp6",
        "SndbufErrors",
    ),
];

/// The one gauge: TCP connections now in ESTABLISHED or CLOSE_WAIT (RFC 1213 `tcpCurrEstab`).
const CURR_ESTAB: usize = RATES.len();

pub(super) fn collect(
    r: &mut Reader,
    o: &SystemOptions,
    st: &mut Rates,
    now: Instant,
    out: &mut Out,
) {
    let mut vals = vec![None; RATES.len() + 1];
    if let Some(text) = r.read(&o.proc_root.join("net/snmp")) {
        parse_pairs(text, Src::Snmp, &mut vals);
    }
    if let Some(text) = r.read(&o.proc_root.join("net/netstat")) {
        parse_pairs(text, Src::Netstat, &mut vals);
    }
    // No IPv6 in the kernel: no file, and nothing to say about it.
    if let Some(text) = r.read_optional(&o.proc_root.join("net/snmp6")) {
        parse_flat(text, &mut vals);
    }
    emit(st, now, vals, out);
}

pub(super) fn emit(st: &mut Rates, now: Instant, vals: Vec<Option<u64>>, out: &mut Out) {
    out.push_opt(
        "netstat.tcp_curr_estab",
        vals[CURR_ESTAB].map(|v| v as f64),
        &[],
    );
    st.advance(now, vals, |i, v| {
        if let Some((name, ..)) = RATES.get(i) {
            out.push(name, v, &[]);
        }
    });
}

/// Fills the slots of `src`'s counters from the header/value line pairs of `/proc/net/snmp` or
/// `/proc/net/netstat` (`Tcp: ActiveOpens ...` then `Tcp: 15 ...`). A line whose section differs
/// from the header before it starts a new pair, so a torn file cannot shift names onto values.
fn parse_pairs(text: &str, src: Src, vals: &mut [Option<u64>]) {
    let mut header: Option<(&str, &str)> = None;
    for line in text.lines() {
        let Some((section, rest)) = line.split_once(':') else {
            header = None;
            continue;
        };
        match header {
            Some((h, names)) if h == section => {
                for (name, value) in names
                    .split_ascii_whitespace()
                    .zip(rest.split_ascii_whitespace())
                {
                    if let Some(i) = slot(src, section, name) {
                        vals[i] = value.parse().ok();
                    }
                }
                header = None;
            }
            _ => header = Some((section, rest)),
        }
    }
}

/// Fills the IPv6 slots from `/proc/net/snmp6`'s `Udp6InDatagrams   12` lines.
fn parse_flat(text: &str, vals: &mut [Option<u64>]) {
    for line in text.lines() {
        let mut w = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (w.next(), w.next()) else {
            continue;
        };
        let Some(rest) = key.strip_prefix("Udp6") else {
            continue;
        };
        if let Some(i) = slot(Src::Snmp6, "Udp6", rest) {
            vals[i] = value.parse().ok();
        }
    }
}

/// The slot of a counter in the values vector, if it is one the family reports.
fn slot(src: Src, section: &str, field: &str) -> Option<usize> {
    if src == Src::Snmp && section == "Tcp" && field == "CurrEstab" {
        return Some(CURR_ESTAB);
    }
    RATES
        .iter()
        .position(|(_, s, sec, f)| *s == src && *sec == section && *f == field)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::get;
    use super::*;

    fn fixture(dir: &str) -> Vec<Option<u64>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/collect/system/fixtures")
            .join(dir);
        let mut vals = vec![None; RATES.len() + 1];
        let read = |f: &str| std::fs::read_to_string(root.join(f));
        parse_pairs(&read("net/snmp").expect("snmp"), Src::Snmp, &mut vals);
        parse_pairs(
            &read("net/netstat").expect("netstat"),
            Src::Netstat,
            &mut vals,
        );
        if let Ok(t) = read("net/snmp6") {
            parse_flat(&t, &mut vals);
        }
        vals
    }

    fn value(vals: &[Option<u64>], name: &str) -> Option<u64> {
        vals[RATES
            .iter()
            .position(|(n, ..)| *n == name)
            .expect("known name")]
    }

    #[test]
    fn reads_every_counter_from_a_captured_machine() {
        let v = fixture("vm-6.18");
        assert_eq!(value(&v, "netstat.tcp_active_opens"), Some(22));
        assert_eq!(value(&v, "netstat.tcp_out_resets"), Some(6));
        assert_eq!(value(&v, "netstat.udp_out_datagrams"), Some(25));
        assert_eq!(value(&v, "netstat.tcp_listen_overflows"), Some(0));
        assert_eq!(value(&v, "netstat.tcp_timeouts"), Some(2));
        assert_eq!(value(&v, "netstat.udp6_in_datagrams"), Some(0));
        assert_eq!(v[CURR_ESTAB], Some(0));
        assert!(v.iter().all(Option::is_some), "every slot filled: {v:?}");
    }

    #[test]
    fn an_older_kernel_without_ipv6_leaves_those_out() {
        let v = fixture("old-4.19-noipv6");
        assert_eq!(value(&v, "netstat.tcp_retrans_segs"), Some(3172));
        assert_eq!(value(&v, "netstat.tcp_listen_drops"), Some(12));
        assert_eq!(value(&v, "netstat.udp_rcvbuf_errors"), Some(7));
        // 4.19's Udp line stops before IgnoredMulti/MemErrors; that shifts nothing.
        assert_eq!(value(&v, "netstat.udp_sndbuf_errors"), Some(0));
        assert_eq!(value(&v, "netstat.udp6_in_datagrams"), None);
    }

    #[test]
    fn torn_or_hostile_lines_do_not_shift_names_onto_values() {
        let mut v = vec![None; RATES.len() + 1];
        let text = "Tcp: ActiveOpens PassiveOpens\nUdp: InDatagrams\nUdp: 9\nTcp: x 4\nTcp: 1\n\
                    garbage\nTcp: ActiveOpens\n";
        parse_pairs(text, Src::Snmp, &mut v);
        assert_eq!(value(&v, "netstat.udp_in_datagrams"), Some(9));
        // `Tcp: x 4` follows a Udp pair, so it is a header, and `Tcp: 1` its values: no known name.
        assert_eq!(value(&v, "netstat.tcp_active_opens"), None);
        assert_eq!(value(&v, "netstat.tcp_passive_opens"), None);
    }

    #[test]
    fn rates_per_second_gauge_at_once() {
        let mut st = Rates::default();
        let t0 = Instant::now();
        let mut a = vec![None; RATES.len() + 1];
        a[0] = Some(100);
        a[CURR_ESTAB] = Some(5);
        let mut out = Out::new();
        emit(&mut st, t0, a, &mut out);
        assert_eq!(get(&out, "netstat.tcp_curr_estab"), Some(5.0));
        assert_eq!(get(&out, "netstat.tcp_active_opens"), None, "first sample");
        let mut b = vec![None; RATES.len() + 1];
        b[0] = Some(150);
        let mut out = Out::new();
        emit(&mut st, t0 + Duration::from_secs(10), b, &mut out);
        assert_eq!(get(&out, "netstat.tcp_active_opens"), Some(5.0));
        assert_eq!(get(&out, "netstat.tcp_curr_estab"), None);
    }
}
