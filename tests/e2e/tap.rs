//! `GET /tap` and `agentctl tap` against a real agent: what a tap shows is what the output gets,
//! filters and the rate cap hold, a slow reader is told what it lost while the pipeline goes
//! on, taps are capped and guarded by the token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{agentctl, quiet_namespaces, wait_until, Agent, AgentBuilder};

const NS: &str = "e2e.tap";

fn agent(max_taps: usize) -> Agent {
    AgentBuilder::new()
        .agent_keys(&format!("alive_secs = 3600\nmax_taps = {max_taps}"))
        .config("[output]\nflush_ms = 50")
        .registry(&quiet_namespaces(&[NS, "e2e.other"]))
        .start()
}

/// The value of an unlabelled sample of `/metrics`.
fn metric(agent: &Agent, name: &str) -> u64 {
    let token = agent.token().expect("token");
    let text = reqwest::blocking::Client::new()
        .get(format!("http://{}/metrics", agent.addr))
        .bearer_auth(token)
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// `agentctl tap ARGS`, its stdout lines arriving on a channel.
struct CtlTap {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl CtlTap {
    fn open(agent: &Agent, args: &[&str]) -> CtlTap {
        let before = metric(agent, "agent_taps_open");
        let mut child = agentctl(&agent.addr)
            .arg("tap")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agentctl tap");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        assert!(
            wait_until(Duration::from_secs(10), || metric(agent, "agent_taps_open")
                > before),
            "the tap did not open"
        );
        CtlTap { child, lines }
    }

    /// Lines that arrived until none came for `quiet`.
    fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(quiet) {
            got.push(l);
        }
        got
    }
}

impl Drop for CtlTap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post_lines(agent: &Agent, ns: &str, body: String) {
    let (st, v) = agent.post(&format!("/post?ns={ns}"), "text/plain", body.into_bytes());
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_tap_shows_exactly_the_points_the_output_receives() {
    let agent = agent(4);
    let tap = CtlTap::open(&agent, &["--json"]);
    for round in 0..5 {
        let body: String = (0..200)
            .map(|i| {
                format!(
                    "e2e.tap.m{},k=v{} value={i}i {}\n",
                    i % 7,
                    round,
                    1_700_000_000 + i
                )
            })
            .collect();
        post_lines(&agent, NS, body.clone());
        post_lines(&agent, "e2e.other", body);
    }
    let want = 2 * 5 * 200;
    let out = |ns| {
        agent
            .output_file(ns)
            .lines()
            // The heartbeat of the start went out before the tap opened.
            .filter(|l| l.starts_with("e2e.tap.m"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(20), || out(NS).len()
            + out("e2e.other").len()
            >= want),
        "the output did not get every point"
    );
    let mut tapped: Vec<(String, String)> = tap
        .drain(Duration::from_secs(2))
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            assert_eq!(v["producer"], "POST /post", "{l}");
            assert!(v["value"].is_i64(), "integers stay integers: {l}");
            (
                v["ns"].as_str().expect("ns").to_owned(),
                v["line"].as_str().expect("line").to_owned(),
            )
        })
        .collect();
    let mut written: Vec<(String, String)> = [NS, "e2e.other"]
        .into_iter()
        .flat_map(|ns| out(ns).into_iter().map(move |l| (ns.to_owned(), l)))
        .collect();
    tapped.sort();
    written.sort();
    assert_eq!(tapped.len(), want);
    assert_eq!(
        tapped, written,
        "the tap saw what the output got, line for line"
    );
}

#[test]
fn filters_and_the_rate_cap_hold_and_text_output_names_the_source() {
    let agent = agent(4);
    let filtered = CtlTap::open(
        &agent,
        &["--ns", NS, "--match", "web.*.active", "--tag", "port=80"],
    );
    let capped = CtlTap::open(&agent, &["--ns", NS, "--rate", "20", "--json"]);
    let started = Instant::now();
    let mut posted = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let body: String = (0..100)
            .map(|i| {
                let port = if i % 2 == 0 { 80 } else { 81 };
                let m = if i % 3 == 0 {
                    "web.nginx.active"
                } else {
                    "db.pg.active"
                };
                format!("{m},port={port} value={i}\n")
            })
            .collect();
        post_lines(&agent, NS, body.clone());
        post_lines(&agent, "e2e.other", body);
        posted += 100;
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = started.elapsed().as_secs() + 2;
    let lines = filtered.drain(Duration::from_secs(2));
    let points: Vec<&String> = lines.iter().filter(|l| !l.starts_with('#')).collect();
    // i % 6 == 0 are web (i % 3 == 0) on port 80 (i even): 17 of every 100.
    assert_eq!(points.len(), posted / 100 * 17, "{lines:?}");
    assert!(points
        .iter()
        .all(|l| l.starts_with("web.nginx.active,") && l.contains(",port=80 ")));
    assert_eq!(
        lines.first().map(String::as_str),
        Some(format!("# ns {NS} · POST /post").as_str()),
        "the text output says where the lines come from"
    );
    let got = capped.drain(Duration::from_secs(2)).len() as u64;
    assert!(
        got > 0 && got <= 20 * secs,
        "rate 20/s over about {secs} s: {got} points of {posted}"
    );
}

/// A client that sends `GET /tap` and then reads nothing, with a small receive buffer.
fn stalled_tap(agent: &Agent) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = agent.addr.parse().expect("addr");
    sock.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    let token = agent.token().expect("token");
    write!(
        s,
        "GET /tap?ns={NS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("request");
    s
}

#[test]
fn a_slow_reader_loses_points_the_pipeline_does_not_and_is_told_how_many() {
    let agent = agent(4);
    let mut slow = stalled_tap(&agent);
    assert!(wait_until(Duration::from_secs(10), || metric(
        &agent,
        "agent_taps_open"
    ) == 1));
    let n = 30_000;
    let body: String = (0..n)
        .map(|i| format!("e2e.slow value={i} {}\n", 1_700_000_000 + i))
        .collect();
    for _ in 0..3 {
        post_lines(&agent, NS, body.clone());
    }
    let delivered = || agent.output_file(NS).matches("e2e.slow,").count();
    assert!(
        wait_until(Duration::from_secs(60), || delivered() == 3 * n),
        "every accepted point reaches the output while the tap stalls: {} of {}",
        delivered(),
        3 * n
    );
    let dropped = metric(&agent, "agent_tap_dropped_points_total");
    assert!(dropped > 0, "a stalled reader must lose points");
    // Now read: the stream says how many it lost.
    slow.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline && !String::from_utf8_lossy(&text).contains("{\"dropped\":") {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => text.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&text);
    let reported: u64 = text
        .split("{\"dropped\":")
        .skip(1)
        .filter_map(|t| t.split('}').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        reported > 0 && reported <= dropped,
        "reported {reported}, counted {dropped}"
    );
}

#[test]
fn taps_are_capped_and_need_the_token() {
    let agent = agent(2);
    let (st, v) = agent.get_with("/tap", None);
    assert_eq!(st, 401, "{v}");
    let a = CtlTap::open(&agent, &[]);
    let _b = CtlTap::open(&agent, &[]);
    let third = agentctl(&agent.addr)
        .args(["tap", "-n", "1"])
        .output()
        .expect("agentctl");
    let err = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(4), "{err}");
    assert!(
        err.contains("503") && err.contains("agent.max_taps = 2"),
        "{err}"
    );
    drop(a);
    assert!(wait_until(Duration::from_secs(10), || metric(
        &agent,
        "agent_taps_open"
    ) == 1));
    let _c = CtlTap::open(&agent, &[]);
    let (st, v) = agent.get("/tap?ns=nope");
    assert_eq!(st, 404, "{v}");
    let (st, v) = agent.get("/tap?rate=0");
    assert_eq!(st, 400, "{v}");
}
