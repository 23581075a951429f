//! Sockets: TCP sockets by state for IPv4 and IPv6 through the kernel's sock_diag netlink
//! interface, and sockets in use per protocol from `/proc/net/sockstat{,6}`.
//!
//! Why this request: counting states means the kernel walks its whole TCP established hash
//! (262,144 buckets on a 2-core VM, far more on big hosts) whatever the filter, so the walk is the
//! cost, not the sockets. The modern request (`SOCK_DIAG_BY_FAMILY`) names one address family,
//! and IPv4 plus IPv6 takes two walks. The legacy `TCPDIAG_GETSOCK` request is served by the
//! kernel's compatibility path, which sets the family to `AF_UNSPEC` (`inet_diag_dump_compat`), so
//! **one walk returns both families**; each answer still carries its own family. `/proc/net/tcp`
//! and `tcp6` walk the same table twice and format text for every socket. Measured in
//! docs/benchmarks.md ("System families of issue 17").
//!
//! The states asked for are the thirteen this family counts, not every bit: since Linux 6.10 the
//! bit after them (`TCP_BOUND_INACTIVE`) makes the kernel walk its bind hash as well (65,536
//! buckets here, a quarter of the request's cost; docs/benchmarks.md). What no state filter can
//! skip is the established hash: any state but LISTEN means walking all of it.
//!
//! Counters of `/proc/net/sockstat` and `snmp` are no substitute for the walk: sockstat's `tw`
//! counts IPv4 and IPv6 together, and it also counts the orphaned FIN_WAIT2 sockets the kernel
//! keeps as time-wait sockets, which sock_diag reports as `fin_wait2`; `CurrEstab` sums
//! ESTABLISHED and CLOSE_WAIT of both versions.
//!
//! No attributes are asked for (`idiag_ext = 0`), so each socket costs the kernel one 72-byte
//! message; the reply is read into one reused 64 KiB buffer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::{Out, Reader, SystemOptions};

/// Kernel TCP states by number (`include/net/tcp_states.h`), as the metric's `state` tag.
/// 12 is `TCP_NEW_SYN_RECV` (a request socket), which `ss` also shows as `syn-recv`.
const STATES: [&str; 13] = [
    "unknown",
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "syn_recv",
];

/// Counts by IP version (0 = IPv4, 1 = IPv6) and state number.
pub(super) type Counts = [[u64; 13]; 2];

const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct nlmsghdr`.
const HDR: usize = 16;
/// `struct inet_diag_req`: family, src_len, dst_len, ext, 48-byte sockid, states, dbs.
const REQ: usize = 60;
/// `idiag_states`: one bit per state of [`STATES`] (0 to 12), nothing after them.
const STATE_BITS: u32 = (1 << STATES.len()) - 1;
/// A dump's messages in one run at most; far past a million sockets, so a kernel that never says
/// DONE cannot keep the collector reading.
const MAX_MESSAGES: usize = 16 << 20;

/// The netlink socket (opened on first use, dropped after an error) and the reply buffer.
pub(super) struct State {
    sock: Option<OwnedFd>,
    buf: Vec<u8>,
    seq: u32,
    page_size: f64,
}

impl Default for State {
    fn default() -> Self {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        State {
            sock: None,
            buf: Vec::new(),
            seq: 0,
            page_size: page as f64,
        }
    }
}

pub(super) fn collect(r: &mut Reader, o: &SystemOptions, st: &mut State, out: &mut Out) {
    match dump(st) {
        Ok(counts) => {
            r.recovered(Path::new("netlink:sock_diag"));
            emit_states(&counts, out);
        }
        Err(e) => {
            st.sock = None;
            r.failed(Path::new("netlink:sock_diag"), &e);
        }
    }
    let page = st.page_size;
    if let Some(text) = r.read(&o.proc_root.join("net/sockstat")) {
        emit_sockstat(text, page, out);
    }
    if let Some(text) = r.read_optional(&o.proc_root.join("net/sockstat6")) {
        emit_sockstat(text, page, out);
    }
}

/// Every state of both IP versions, zeros included, so a dashboard's series never gaps.
pub(super) fn emit_states(counts: &Counts, out: &mut Out) {
    for (ip, per_state) in ["4", "6"].iter().zip(counts) {
        // States 3 and 12 are both shown as syn_recv; 0 is no state.
        let mut c = *per_state;
        c[3] += c[12];
        for (state, n) in STATES.iter().zip(c).take(12).skip(1) {
            out.push("socket.tcp", n as f64, &[("ip", ip), ("state", state)]);
        }
    }
}

/// One line per protocol, `TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 220`, and `sockets: used 14`.
/// `mem` counts pages (TCP, UDP); FRAG's `memory` counts bytes.
pub(super) fn emit_sockstat(text: &str, page_size: f64, out: &mut Out) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let proto = proto.trim().to_ascii_lowercase();
        let mut w = rest.split_ascii_whitespace();
        while let (Some(k), Some(v)) = (w.next(), w.next()) {
            let Ok(v) = v.parse::<f64>() else {
                continue;
            };
            let (name, v) = match (proto.as_str(), k) {
                ("sockets", "used") => {
                    out.push("socket.used", v, &[]);
                    continue;
                }
                (_, "inuse") => ("socket.inuse", v),
                (_, "orphan") => ("socket.orphan", v),
                (_, "tw") => ("socket.time_wait", v),
                (_, "alloc") => ("socket.alloc", v),
                (_, "mem") => ("socket.mem_bytes", v * page_size),
                (_, "memory") => ("socket.mem_bytes", v),
                _ => continue,
            };
            out.push(name, v, &[("proto", proto.as_str())]);
        }
    }
}

/// Asks for every TCP socket of both families in one walk and counts them by family and state.
fn dump(st: &mut State) -> Result<Counts, nix::Error> {
    if st.sock.is_none() {
        let s = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        // A reply that never comes must not hold the collector (and its blocking thread) forever.
        setsockopt(&s, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))?;
        st.sock = Some(s);
        st.buf = vec![0; 64 << 10];
    }
    let Some(sock) = st.sock.as_ref() else {
        return Err(nix::Error::EBADF);
    };
    st.seq = st.seq.wrapping_add(1);
    let req = request(st.seq);
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut counts = [[0u64; 13]; 2];
    let mut seen = 0usize;
    loop {
        let n = recv(sock.as_raw_fd(), &mut st.buf, MsgFlags::empty())?;
        match parse_reply(&st.buf[..n], st.seq, &mut counts)? {
            Reply::Done => return Ok(counts),
            Reply::More(m) => seen += m,
        }
        if seen > MAX_MESSAGES || n == 0 {
            return Err(nix::Error::EOVERFLOW);
        }
    }
}

/// The request: a netlink header and a `struct inet_diag_req` for the counted states, no
/// extensions.
pub(super) fn request(seq: u32) -> [u8; HDR + REQ] {
    let mut b = [0u8; HDR + REQ];
    b[0..4].copy_from_slice(&((HDR + REQ) as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // idiag_family: the compat path ignores it for a dump; AF_INET for kernels that look.
    b[HDR] = libc::AF_INET as u8;
    b[HDR + 52..HDR + 56].copy_from_slice(&STATE_BITS.to_ne_bytes());
    b
}

pub(super) enum Reply {
    Done,
    More(usize),
}

/// Counts the `inet_diag_msg`s of one datagram. Messages of another sequence number (a reply to a
/// request that timed out) are skipped; a truncated or malformed message ends the datagram.
pub(super) fn parse_reply(
    mut b: &[u8],
    seq: u32,
    counts: &mut Counts,
) -> Result<Reply, nix::Error> {
    let mut msgs = 0;
    while b.len() >= HDR {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let len = u32_at(0) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < HDR || len > b.len() {
            break;
        }
        if u32_at(8) == seq {
            match kind {
                NLMSG_DONE => return Ok(Reply::Done),
                NLMSG_ERROR => {
                    let code = if len >= HDR + 4 {
                        u32_at(HDR) as i32
                    } else {
                        0
                    };
                    return Err(nix::Error::from_raw(
                        code.checked_neg().unwrap_or(libc::EIO),
                    ));
                }
                _ if len >= HDR + 2 => {
                    let ip = match i32::from(b[HDR]) {
                        libc::AF_INET => Some(0),
                        libc::AF_INET6 => Some(1),
                        _ => None,
                    };
                    let state = usize::from(b[HDR + 1]);
                    if let (Some(ip), true) = (ip, state < 13) {
                        counts[ip][state] += 1;
                    }
                    msgs += 1;
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or_default();
    }
    Ok(Reply::More(msgs))
}

#[cfg(test)]
mod tests {
    use super::super::tests::get;
    use super::*;

    fn msg(seq: u32, kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = HDR + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    fn sock(family: i32, state: u8) -> Vec<u8> {
        let mut p = vec![0u8; 72];
        p[0] = family as u8;
        p[1] = state;
        msg(7, 20, &p)
    }

    #[test]
    fn counts_by_family_and_state_and_stops_at_done() {
        let mut d = Vec::new();
        d.extend(sock(libc::AF_INET, 1));
        d.extend(sock(libc::AF_INET, 10));
        d.extend(sock(libc::AF_INET6, 10));
        d.extend(sock(libc::AF_INET6, 12));
        d.extend(sock(libc::AF_INET6, 3));
        d.extend(msg(6, 20, &[2, 6])); // an old request's answer
        d.extend(sock(99, 1)); // not an IP family
        let mut c = [[0; 13]; 2];
        assert!(matches!(parse_reply(&d, 7, &mut c), Ok(Reply::More(6))));
        assert_eq!((c[0][1], c[0][10], c[1][10], c[1][6]), (1, 1, 1, 0));
        let mut out = Out::new();
        emit_states(&c, &mut out);
        assert_eq!(out.metrics.len(), 22, "11 states x 2 families");
        let v6_syn = out.metrics.iter().find(|m| {
            m.tags.get("ip").map(String::as_str) == Some("6")
                && m.tags.get("state").map(String::as_str) == Some("syn_recv")
        });
        assert_eq!(
            v6_syn.map(|m| m.value.clone()),
            Some(shared::Value::Float(2.0))
        );
        assert!(matches!(
            parse_reply(&msg(7, NLMSG_DONE, &[0; 4]), 7, &mut c),
            Ok(Reply::Done)
        ));
    }

    #[test]
    fn errors_and_garbage_never_panic() {
        let mut c = [[0; 13]; 2];
        let e = parse_reply(
            &msg(7, NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()),
            7,
            &mut c,
        );
        assert_eq!(e.err(), Some(nix::Error::EPERM));
        for junk in [
            &[0u8; 3][..],
            &[255; 40],
            &[16, 0, 0, 0, 20, 0],
            &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(matches!(parse_reply(junk, 7, &mut c), Ok(Reply::More(_))));
        }
        // A header claiming 16 bytes but no payload: counted as nothing.
        assert!(matches!(
            parse_reply(&msg(7, 20, &[]), 7, &mut c),
            Ok(Reply::More(0))
        ));
        assert_eq!(c, [[0; 13]; 2]);
    }

    #[test]
    fn request_layout_matches_inet_diag_req() {
        let r = request(42);
        assert_eq!(r.len(), 76);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 76);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 18);
        assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 42);
        let states = u32::from_ne_bytes([r[68], r[69], r[70], r[71]]);
        assert_eq!(states, 0x1fff, "states 0 to 12; not 13 (bound-inactive)");
    }

    #[test]
    fn sockstat_of_a_captured_and_a_busy_host() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/collect/system/fixtures");
        let mut out = Out::new();
        let text = std::fs::read_to_string(dir.join("vm-6.18/net/sockstat")).expect("f");
        emit_sockstat(&text, 4096.0, &mut out);
        assert!(get(&out, "socket.used").is_some());
        let mut out = Out::new();
        let text = std::fs::read_to_string(dir.join("web-5.15/net/sockstat")).expect("f");
        emit_sockstat(&text, 4096.0, &mut out);
        let with = |name: &str, proto: &str| {
            out.metrics
                .iter()
                .find(|m| m.name == name && m.tags.get("proto").map(String::as_str) == Some(proto))
                .map(|m| m.value.clone())
        };
        use shared::Value::Float;
        assert_eq!(get(&out, "socket.used"), Some(104_211.0));
        assert_eq!(with("socket.time_wait", "tcp"), Some(Float(61_022.0)));
        assert_eq!(
            with("socket.mem_bytes", "tcp"),
            Some(Float(20_112.0 * 4096.0))
        );
        assert_eq!(with("socket.mem_bytes", "frag"), Some(Float(1024.0)));
        assert_eq!(with("socket.inuse", "udplite"), Some(Float(0.0)));
        let mut out = Out::new();
        let text = std::fs::read_to_string(dir.join("web-5.15/net/sockstat6")).expect("f");
        emit_sockstat(&text, 4096.0, &mut out);
        assert_eq!(get(&out, "socket.inuse"), Some(3_102.0), "TCP6 first");
    }
}
