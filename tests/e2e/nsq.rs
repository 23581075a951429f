//! The `nsq` output of the real agent against the NSQ protocol peer, and the peer's own
//! spec behaviour (so the agent is checked against nsqd's rules, not against itself).
//!
//! Points come from the agent's built-in heartbeat (`agent.alive` and its counters, 8 points per
//! namespace at start and every 10 s).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::nsq_peer::{NsqPeer, NsqTls, PeerOptions, SilentListener};
use support::{wait_until, Agent, AgentBuilder};

const POINTS_PER_TICK: u64 = 8;

fn nsq_agent(nsqd: &[String], extra: &str, registry: &str) -> Agent {
    let list = nsqd
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let flush = if extra.contains("flush_ms") {
        ""
    } else {
        "flush_ms = 100\n"
    };
    AgentBuilder::new()
        .agent_keys("hostname = \"e2e-nsq\"")
        .config(&format!(
            "[output]\nkind = \"nsq\"\nnsqd = [{list}]\n{flush}{extra}"
        ))
        .registry(registry)
        .start()
}

/// Namespaces whose only data is the heartbeat, so tests can count points per tick.
fn namespaces(names: &[&str]) -> String {
    support::quiet_namespaces(names)
}

/// Splits at `sep` not preceded by a backslash and not inside a double-quoted string.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut escaped, mut quoted) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// Checks one line of InfluxDB line protocol as this agent writes it, returning the timestamp.
fn check_line(line: &str, host: &str) -> Result<i64, String> {
    let parts = split_unescaped(line, ' ');
    let [series, field, ts] = parts.as_slice() else {
        return Err(format!("not three space-separated parts: {line:?}"));
    };
    let ts: i64 = ts.parse().map_err(|_| format!("bad timestamp: {line:?}"))?;
    if !(1_000_000_000..10_000_000_000).contains(&ts) {
        return Err(format!("timestamp not in seconds: {line:?}"));
    }
    let value = field
        .strip_prefix("value=")
        .ok_or_else(|| format!("field is not value=: {line:?}"))?;
    let typed = value.parse::<f64>().is_ok()
        || value
            .strip_suffix('i')
            .is_some_and(|i| i.parse::<i64>().is_ok())
        || value == "true"
        || value == "false"
        || (value.len() >= 2 && value.starts_with('"') && value.ends_with('"'));
    if !typed {
        return Err(format!("bad field value: {line:?}"));
    }
    let series = split_unescaped(series, ',');
    if series[0].is_empty() {
        return Err(format!("empty measurement: {line:?}"));
    }
    let tags: Vec<Vec<String>> = series[1..]
        .iter()
        .map(|t| split_unescaped(t, '='))
        .collect();
    if tags
        .iter()
        .any(|kv| kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty())
    {
        return Err(format!("bad tag set: {line:?}"));
    }
    if !tags.iter().any(|kv| kv[0] == "host" && kv[1] == host) {
        return Err(format!("no host={host} tag: {line:?}"));
    }
    Ok(ts)
}

fn status_str(agent: &Agent, key: &str) -> String {
    agent.status()["output"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn status_u64(agent: &Agent, section: &str, key: &str) -> u64 {
    agent.status()[section][key].as_u64().unwrap_or(0)
}

#[test]
fn points_arrive_on_the_namespace_topic_as_line_protocol_with_host_and_seconds() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.a", "e2e.b"]));
    let arrived = wait_until(Duration::from_secs(20), || {
        peer.line_count("e2e.a") >= POINTS_PER_TICK && peer.line_count("e2e.b") >= POINTS_PER_TICK
    });
    assert!(arrived, "no points on both topics:\n{}", agent.stderr());
    assert_eq!(peer.topics(), ["e2e.a", "e2e.b"], "one topic per namespace");
    for topic in ["e2e.a", "e2e.b"] {
        let lines = peer.lines(topic);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("agent.alive,host=e2e-nsq value=1.0 ")),
            "{lines:?}"
        );
        for l in &lines {
            check_line(l, "e2e-nsq").unwrap_or_else(|e| panic!("{e}"));
        }
        for m in peer.messages(topic) {
            assert!(m.ends_with(b"\n"), "a message is whole lines");
        }
    }
    let identify = &peer.received().identifies[0];
    assert_eq!(identify["feature_negotiation"], true);
    assert_eq!(identify["hostname"], "e2e-nsq");
    assert_eq!(identify["client_id"], "e2e-nsq");
    assert_eq!(identify["heartbeat_interval"], 30000);
    assert!(
        identify["user_agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("agent/")),
        "{identify}"
    );
    assert!(wait_until(Duration::from_secs(5), || status_u64(
        &agent,
        "output",
        "delivered_points"
    ) >= 2
        * POINTS_PER_TICK));
    assert_eq!(status_str(&agent, "endpoint"), peer.addr());
}

#[test]
fn an_nsqd_answering_identify_with_a_plain_ok_is_used() {
    let peer = NsqPeer::start_with(PeerOptions {
        negotiate: false,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.ok"]));
    assert!(
        wait_until(Duration::from_secs(20), || peer.line_count("e2e.ok") > 0),
        "{}",
        agent.stderr()
    );
    assert_eq!(peer.received().identifies[0]["feature_negotiation"], true);
    assert_eq!(peer.received().connections, 1);
}

#[test]
fn custom_topic_template_and_json_format() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(
        &[peer.addr()],
        "topic = \"metrics.{ns}\"\nformat = \"json\"",
        &namespaces(&["e2e.json"]),
    );
    // Collectors publish too; wait for the message that carries the heartbeat.
    let find_alive = || {
        peer.messages("metrics.e2e.json").iter().find_map(|m| {
            let msg: serde_json::Value = serde_json::from_slice(m).expect("a JSON message");
            let alive = msg["points"]
                .as_array()
                .expect("points")
                .iter()
                .find(|p| p["measurement"] == "agent.alive")
                .cloned()?;
            Some((msg, alive))
        })
    };
    let arrived = wait_until(Duration::from_secs(20), || find_alive().is_some());
    assert!(
        arrived,
        "no agent.alive on metrics.e2e.json:\n{}",
        agent.stderr()
    );
    assert_eq!(peer.topics(), ["metrics.e2e.json"]);
    let (msg, alive) = find_alive().expect("found above");
    assert_eq!(msg["database"], "e2e.json");
    assert_eq!(msg["precision"], "s");
    assert_eq!(msg["retentionPolicy"], "");
    assert_eq!(alive["tags"]["host"], "e2e-nsq");
    assert_eq!(alive["fields"]["value"], 1.0);
    let ts = alive["timestamp"].as_i64().unwrap_or(0);
    assert!((1_000_000_000..10_000_000_000).contains(&ts), "{alive}");
}

#[test]
fn fails_over_to_the_second_nsqd_and_returns_to_the_first() {
    let mut first = NsqPeer::stopped_on(support::free_port(), PeerOptions::default());
    let second = NsqPeer::start();
    // The probe of the first waits for one heartbeat from it before moving back.
    let agent = nsq_agent(
        &[first.addr(), second.addr()],
        "nsq_primary_retry_secs = 1\nnsq_heartbeat_ms = 1000",
        &namespaces(&["e2e.fo"]),
    );
    assert!(
        wait_until(Duration::from_secs(20), || second.line_count("e2e.fo") > 0),
        "the second nsqd got nothing while the first was down:\n{}",
        agent.stderr()
    );
    assert_eq!(status_str(&agent, "endpoint"), second.addr());
    assert_eq!(first.received().connections, 0);

    // The first comes back: the next batch (the heartbeat, every 10 s) goes to it again.
    first.restart();
    assert!(
        wait_until(Duration::from_secs(25), || first.line_count("e2e.fo") > 0),
        "the agent did not return to the first nsqd:\n{}",
        agent.stderr()
    );
    assert_eq!(status_str(&agent, "endpoint"), first.addr());

    // The first goes down while connected: the next batch goes to the second.
    let before = second.line_count("e2e.fo");
    first.stop();
    assert!(
        wait_until(Duration::from_secs(25), || second.line_count("e2e.fo")
            > before),
        "no failover after the first nsqd went down:\n{}",
        agent.stderr()
    );
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
}

#[test]
fn error_frames_are_counted_and_visible_and_delivery_resumes() {
    let peer = NsqPeer::start();
    // Four failures: with the delivery loop's backoff (0.1, 0.2, 0.4, 0.8 s) that is long
    // enough to watch `/me/status` report it.
    peer.fail_next("E_MPUB_FAILED", 4);
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.err"]));
    let mut seen = String::new();
    let reported = wait_until(Duration::from_secs(20), || {
        seen = status_str(&agent, "last_error");
        seen.contains("E_MPUB_FAILED")
    });
    assert!(
        reported,
        "last_error never showed the error frame:\n{}",
        agent.stderr()
    );
    assert!(
        seen.contains("e2e.err"),
        "the error names the topic: {seen}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || peer.line_count("e2e.err")
            >= POINTS_PER_TICK),
        "delivery did not resume:\n{}",
        agent.stderr()
    );
    let status = agent.status();
    assert!(
        status["output"]["errors"].as_u64().unwrap_or(0) >= 4,
        "{status}"
    );
    assert_eq!(
        status["output"]["dropped_batches"], 0,
        "retried, not dropped"
    );
    let r = peer.received();
    assert_eq!(r.errors_sent.len(), 4);
    assert!(r.connections >= 5, "reconnected after every error frame");
    assert!(
        agent.stderr().contains("error frame"),
        "error frames are logged:\n{}",
        agent.stderr()
    );
}

#[test]
fn permanent_error_frames_drop_that_batch_only_and_count_it() {
    let peer = NsqPeer::start();
    peer.fail_next("E_BAD_MESSAGE", 1);
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.p1", "e2e.p2"]));
    assert!(
        wait_until(Duration::from_secs(20), || {
            status_u64(&agent, "output", "dropped_batches") == 1 && peer.total_lines() > 0
        }),
        "{}\n{}",
        agent.status(),
        agent.stderr()
    );
    // One namespace's first batch was refused; the other's was delivered.
    assert_eq!(peer.topics().len(), 1);
    assert_eq!(
        status_u64(&agent, "output", "dropped_points"),
        POINTS_PER_TICK
    );
}

#[test]
fn a_stalled_nsqd_times_out_and_the_next_one_takes_over() {
    let stalled = NsqPeer::start();
    stalled.stall(true);
    let good = NsqPeer::start();
    let agent = nsq_agent(
        &[stalled.addr(), good.addr()],
        "nsq_timeout_ms = 500",
        &namespaces(&["e2e.stall"]),
    );
    assert!(
        wait_until(Duration::from_secs(20), || good.line_count("e2e.stall") > 0),
        "delivery hung on the stalled nsqd:\n{}",
        agent.stderr()
    );
    assert!(stalled.received().connections >= 1);
    assert_eq!(stalled.total_lines(), 0);
}

#[test]
fn an_nsqd_that_stalls_mid_connection_times_the_publish_out_and_delivery_resumes() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(
        &[peer.addr()],
        "nsq_timeout_ms = 500",
        &namespaces(&["e2e.midstall"]),
    );
    assert!(wait_until(Duration::from_secs(20), || peer
        .line_count("e2e.midstall")
        > 0));
    let before = peer.line_count("e2e.midstall");
    peer.stall(true);
    // The next heartbeat batch (within 10 s) gets no answer to its MPUB.
    let timed_out = wait_until(Duration::from_secs(20), || {
        status_str(&agent, "last_error").contains("no answer within")
    });
    assert!(timed_out, "{}\n{}", agent.status(), agent.stderr());
    assert_eq!(peer.line_count("e2e.midstall"), before);
    peer.stall(false);
    assert!(
        wait_until(Duration::from_secs(20), || peer.line_count("e2e.midstall")
            > before),
        "delivery did not resume:\n{}",
        agent.stderr()
    );
}

#[test]
fn an_idle_connection_answers_heartbeats_and_survives() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(
        &[peer.addr()],
        "nsq_heartbeat_ms = 1000",
        &namespaces(&["e2e.hb"]),
    );
    assert!(wait_until(Duration::from_secs(20), || peer
        .line_count("e2e.hb")
        > 0));
    // Idle until the next heartbeat batch (10 s): several heartbeat intervals.
    assert!(
        wait_until(Duration::from_secs(8), || peer.received().nops >= 4),
        "heartbeats not answered: {:?}\n{}",
        peer.received(),
        agent.stderr()
    );
    let r = peer.received();
    assert_eq!(r.identifies[0]["heartbeat_interval"], 1000);
    assert!(r.heartbeats_sent >= 4);
    assert_eq!(r.missed_heartbeat_closes, 0);
    assert_eq!(r.connections, 1, "the idle connection was kept");
    assert_eq!(peer.open_connections(), 1);
}

#[test]
fn a_dropped_connection_is_made_again_for_the_next_batch() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.drop"]));
    assert!(wait_until(Duration::from_secs(20), || peer
        .line_count("e2e.drop")
        > 0));
    let before = peer.line_count("e2e.drop");
    peer.drop_connections();
    assert!(wait_until(Duration::from_secs(2), || peer
        .open_connections()
        == 0));
    // The next heartbeat batch (within 10 s) reconnects and is delivered.
    assert!(
        wait_until(Duration::from_secs(20), || peer.line_count("e2e.drop")
            > before),
        "{}",
        agent.stderr()
    );
    assert_eq!(peer.received().connections, 2);
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
}

#[test]
fn a_heartbeat_while_waiting_for_ok_is_answered() {
    let peer = NsqPeer::start();
    peer.heartbeat_before_answer(true);
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.hbok"]));
    assert!(
        wait_until(Duration::from_secs(20), || peer.line_count("e2e.hbok") > 0),
        "{}",
        agent.stderr()
    );
    assert!(wait_until(Duration::from_secs(5), || peer.received().nops >= 1));
    assert_eq!(peer.received().connections, 1);
    assert!(wait_until(Duration::from_secs(5), || {
        status_u64(&agent, "output", "delivered_points") >= POINTS_PER_TICK
    }));
    assert_eq!(status_u64(&agent, "output", "errors"), 0);
}

#[test]
fn agent_stop_delivers_every_accepted_point() {
    let peer = NsqPeer::start();
    // Batches wait in the batcher for a minute: only the shutdown drain can send them.
    let mut agent = nsq_agent(
        &[peer.addr()],
        "flush_ms = 60000",
        &namespaces(&["e2e.s1", "e2e.s2", "e2e.s3"]),
    );
    assert!(wait_until(Duration::from_secs(20), || {
        status_u64(&agent, "pipeline", "accepted") >= 3 * POINTS_PER_TICK
    }));
    let accepted = status_u64(&agent, "pipeline", "accepted");
    assert_eq!(peer.total_lines(), 0, "nothing is flushed before flush_ms");
    let stop = support::agent_cmd()
        .args(["stop", "-f"])
        .arg(&agent.config_path)
        .output()
        .expect("run agent stop");
    assert!(
        stop.status.success(),
        "agent stop: {}\n{}",
        String::from_utf8_lossy(&stop.stderr),
        agent.stderr()
    );
    assert!(agent.stop(), "clean exit:\n{}", agent.stderr());
    assert!(
        peer.total_lines() >= accepted,
        "accepted {accepted}, nsqd got {}:\n{}",
        peer.total_lines(),
        agent.stderr()
    );
    for ns in ["e2e.s1", "e2e.s2", "e2e.s3"] {
        assert!(peer.line_count(ns) >= POINTS_PER_TICK, "{ns}");
    }
    assert!(
        !agent.stderr().contains("stays in the spool"),
        "{}",
        agent.stderr()
    );
}

// The peer itself, on raw sockets: it must hold the agent to nsqd's rules.

fn raw_client(peer: &NsqPeer, identify: &str) -> TcpStream {
    let mut s = TcpStream::connect(peer.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hello = b"  V2IDENTIFY\n".to_vec();
    hello.extend_from_slice(&(identify.len() as u32).to_be_bytes());
    hello.extend_from_slice(identify.as_bytes());
    s.write_all(&hello).expect("identify");
    let (kind, data) = read_frame(&mut s).expect("identify answer");
    assert_eq!(kind, 0, "{}", String::from_utf8_lossy(&data));
    s
}

fn read_frame(s: &mut TcpStream) -> Option<(u32, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).ok()?;
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut data = vec![0u8; size - 4];
    s.read_exact(&mut data).ok()?;
    Some((kind, data))
}

fn mpub(topic: &str, messages: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("MPUB {topic}\n").into_bytes();
    let body: usize = 4 + messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Sends `bytes` on a fresh identified connection and returns the first non-heartbeat frame.
fn answer_to(peer: &NsqPeer, bytes: &[u8]) -> (u32, String) {
    let mut s = raw_client(peer, r#"{"feature_negotiation":false}"#);
    // The peer may close before reading everything (as nsqd does on a fatal error).
    let _ = s.write_all(bytes);
    loop {
        let (kind, data) = read_frame(&mut s).expect("an answer");
        if data != b"_heartbeat_" {
            return (kind, String::from_utf8_lossy(&data).into_owned());
        }
    }
}

#[test]
fn peer_enforces_nsqd_limits_and_topic_rules() {
    let peer = NsqPeer::start();
    let (kind, text) = answer_to(&peer, &mpub("ok.topic", &[b"a value=1 1764000000\n"]));
    assert_eq!((kind, text.as_str()), (0, "OK"));
    let big = vec![b'x'; 1024 * 1024 + 1];
    let (kind, text) = answer_to(&peer, &mpub("t", &[&big]));
    assert_eq!(kind, 1);
    assert!(
        text.starts_with("E_BAD_MESSAGE MPUB message too big 1048577 > 1048576"),
        "{text}"
    );
    // nsqd judges the body size before reading the body, so the header alone is refused.
    let part = vec![b'x'; 1024 * 1024];
    let six: Vec<&[u8]> = (0..6).map(|_| part.as_slice()).collect();
    let header = "MPUB t\n".len() + 4;
    let (kind, text) = answer_to(&peer, &mpub("t", &six)[..header]);
    assert_eq!(kind, 1);
    assert!(text.starts_with("E_BAD_BODY MPUB body too big"), "{text}");
    let (kind, text) = answer_to(&peer, &mpub("bad/topic", &[b"x"]));
    assert_eq!(kind, 1);
    assert!(text.starts_with("E_BAD_TOPIC"), "{text}");
    let (kind, text) = answer_to(&peer, &mpub(&"t".repeat(65), &[b"x"]));
    assert!(kind == 1 && text.starts_with("E_BAD_TOPIC"), "{text}");
    assert_eq!(peer.topics(), ["ok.topic"]);
    let mut s = TcpStream::connect(peer.addr()).expect("connect");
    s.write_all(b"  V1").expect("magic");
    let (kind, text) = read_frame(&mut s).expect("answer");
    assert_eq!(kind, 1, "{}", String::from_utf8_lossy(&text));
}

#[test]
fn peer_negotiates_features_and_closes_clients_that_miss_heartbeats() {
    let peer = NsqPeer::start();
    let mut s = raw_client(
        &peer,
        r#"{"client_id":"raw","heartbeat_interval":1000,"feature_negotiation":true}"#,
    );
    // Never answering heartbeats: the peer closes after two intervals, as nsqd does.
    let mut heartbeats = 0;
    while let Some((kind, data)) = read_frame(&mut s) {
        assert_eq!((kind, data.as_slice()), (0, &b"_heartbeat_"[..]));
        heartbeats += 1;
        assert!(heartbeats < 10, "the connection should have been closed");
    }
    assert!(heartbeats >= 1);
    assert!(wait_until(Duration::from_secs(2), || {
        peer.received().missed_heartbeat_closes == 1
    }));
    // An IDENTIFY asking for an interval nsqd does not allow is refused.
    let mut s = TcpStream::connect(peer.addr()).expect("connect");
    let body = br#"{"heartbeat_interval":500}"#;
    let mut hello = b"  V2IDENTIFY\n".to_vec();
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
    hello.extend_from_slice(body);
    s.write_all(&hello).expect("identify");
    let (kind, data) = read_frame(&mut s).expect("answer");
    assert_eq!(kind, 1);
    assert!(String::from_utf8_lossy(&data).starts_with("E_BAD_BODY"));
}

// nsqd's limits, failover probe, AUTH, TLS and compression.

const TS: u64 = 1_764_000_000;

/// Posts `n` points of measurement `m`, tagged `seq=0..n`, to `ns` in posts of 5,000.
fn post_points(agent: &Agent, ns: &str, m: &str, n: usize) {
    for start in (0..n).step_by(5000) {
        let body: String = (start..(start + 5000).min(n))
            .map(|i| format!("{m},seq={i} value={i}i {TS}\n"))
            .collect();
        let (status, answer) =
            agent.post(&format!("/post?ns={ns}"), "text/plain", body.into_bytes());
        assert_eq!(status, 200, "{answer}");
    }
}

/// The distinct `seq` tags of measurement `m` that arrived on `topic`.
fn seqs(peer: &NsqPeer, topic: &str, m: &str) -> BTreeSet<usize> {
    let prefix = format!("{m},");
    peer.lines(topic)
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let tags = l.split(' ').next()?;
            tags.split(',')
                .find_map(|t| t.strip_prefix("seq="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Waits until all `n` points of `m` arrived on `topic`; panics with what is known if not.
fn assert_all_arrive(peer: &NsqPeer, agent: &Agent, topic: &str, m: &str, n: usize) {
    let all = wait_until(Duration::from_secs(60), || seqs(peer, topic, m).len() == n);
    assert!(
        all,
        "{} of {n} points arrived\n{}\n{:?}\n{}",
        seqs(peer, topic, m).len(),
        agent.status(),
        peer.received().errors_sent,
        agent.stderr()
    );
}

#[test]
fn a_backlog_goes_out_several_batches_per_mpub_each_batch_one_message_none_twice() {
    let mut peer = NsqPeer::stopped_on(support::free_port(), PeerOptions::default());
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.run"]));
    // nsqd is down: 30 batches of 1,000 points wait in the spool.
    post_points(&agent, "e2e.run", "run", 30_000);
    assert!(wait_until(Duration::from_secs(20), || {
        status_u64(&agent, "output", "spool_batches") >= 30
    }));
    peer.restart();
    assert_all_arrive(&peer, &agent, "e2e.run", "run", 30_000);
    let got = peer.received();
    let messages = got.message_counts["e2e.run"];
    let publishes = got.publishes["e2e.run"];
    // One MPUB per batch was the rule before: a backlog of 30 waited 30 round trips.
    assert!(
        publishes * 4 <= messages,
        "{publishes} MPUBs carried {messages} messages"
    );
    let run_lines = peer
        .lines("e2e.run")
        .iter()
        .filter(|l| l.starts_with("run,"))
        .count();
    assert_eq!(run_lines, 30_000, "no point arrived twice");
    assert!(wait_until(Duration::from_secs(5), || {
        status_u64(&agent, "output", "delivered_batches") == messages
    }));
    assert_eq!(status_u64(&agent, "output", "spool_batches"), 0);
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
}

#[test]
fn a_size_refusal_teaches_nsqds_limit_and_the_batch_is_split_with_nothing_dropped() {
    // nsqd 1.x states no max_msg_size in IDENTIFY: the agent learns it from the refusal.
    let peer = NsqPeer::start_with(PeerOptions {
        max_msg_size: 20_000,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.big"]));
    post_points(&agent, "e2e.big", "big", 30_000);
    assert_all_arrive(&peer, &agent, "e2e.big", "big", 30_000);
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
    assert!(peer.messages("e2e.big").iter().all(|m| m.len() <= 20_000));
    let refusals = peer.received().errors_sent;
    assert!(
        refusals.first().is_some_and(
            |e| e.starts_with("E_BAD_MESSAGE MPUB message too big ") && e.ends_with(" > 20000")
        ),
        "{refusals:?}"
    );
    let stderr = agent.stderr();
    assert_eq!(
        stderr.matches("Learned nsqd's message size limit").count(),
        1,
        "the limit is logged once:\n{stderr}"
    );
    // Only a single line over the limit is refused for good, and counted; its batch's other
    // lines are delivered.
    let mut body = format!("huge value=\"{}\" {TS}\n", "x".repeat(25_000));
    for i in 0..10 {
        body.push_str(&format!("after,seq={i} value=1i {TS}\n"));
    }
    let (status, answer) = agent.post("/post?ns=e2e.big", "text/plain", body.into_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_all_arrive(&peer, &agent, "e2e.big", "after", 10);
    assert!(wait_until(Duration::from_secs(10), || status_u64(
        &agent,
        "output",
        "dropped_points"
    ) == 1));
    assert!(!peer.lines("e2e.big").iter().any(|l| l.starts_with("huge")));
}

#[test]
fn a_max_msg_size_stated_in_identify_is_kept_before_any_refusal() {
    let peer = NsqPeer::start_with(PeerOptions {
        max_msg_size: 20_000,
        state_max_msg_size: true,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.stated"]));
    post_points(&agent, "e2e.stated", "big", 30_000);
    assert_all_arrive(&peer, &agent, "e2e.stated", "big", 30_000);
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
    assert_eq!(peer.received().errors_sent, Vec::<String>::new());
    assert_eq!(peer.received().connections, 1, "no refusal, no reconnect");
    assert!(
        agent.stderr().contains("Learned nsqd's message size limit"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn probing_a_stalled_primary_never_pauses_delivery_to_the_fallback() {
    let primary = SilentListener::start();
    let fallback = NsqPeer::start();
    let agent = nsq_agent(
        &[primary.addr(), fallback.addr()],
        "flush_ms = 50\nnsq_primary_retry_secs = 1\nnsq_timeout_ms = 1500\nnsq_heartbeat_ms = 1000",
        &namespaces(&["e2e.steady"]),
    );
    assert!(
        wait_until(Duration::from_secs(20), || fallback
            .line_count("e2e.steady")
            > 0),
        "{}",
        agent.stderr()
    );
    // A steady load for several probe periods (each: 1 s wait + up to 1.5 s of silence).
    let addr = agent.addr.clone();
    let token = agent.token().unwrap_or_default();
    let sender = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        for i in 0..200 {
            let _ = client
                .post(format!("http://{addr}/post?ns=e2e.steady"))
                .bearer_auth(&token)
                .header("content-type", "text/plain")
                .body(format!("steady,seq={i} value=1i {TS}\n"))
                .timeout(Duration::from_secs(10))
                .send();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (mut last, mut last_change) = (fallback.line_count("e2e.steady"), Instant::now());
    let mut longest = Duration::ZERO;
    while !sender.is_finished() {
        let now = fallback.line_count("e2e.steady");
        if now != last {
            longest = longest.max(last_change.elapsed());
            (last, last_change) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sender.join().expect("sender");
    assert!(
        primary.accepted() >= 3,
        "the primary was probed {} times",
        primary.accepted()
    );
    assert!(
        longest < Duration::from_secs(1),
        "delivery paused for {longest:?} while the primary was probed:\n{}",
        agent.stderr()
    );
    assert_all_arrive(&fallback, &agent, "e2e.steady", "steady", 200);
    assert_eq!(status_str(&agent, "endpoint"), fallback.addr());
}

const SECRET: &str = "s3cret-for-the-e2e-peer";

fn auth_peer() -> NsqPeer {
    NsqPeer::start_with(PeerOptions {
        auth_secret: Some(SECRET.to_owned()),
        ..PeerOptions::default()
    })
}

/// Waits for `/me/status`'s `output.last_error` to contain every part of `want`.
fn wait_for_error(agent: &Agent, want: &[&str]) -> String {
    let mut seen = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        seen = status_str(agent, "last_error");
        want.iter().all(|w| seen.contains(w))
    });
    assert!(
        ok,
        "last_error {seen:?} lacks {want:?}:\n{}",
        agent.stderr()
    );
    seen
}

#[test]
fn auth_required_is_answered_with_the_configured_secret() {
    let peer = auth_peer();
    let agent = nsq_agent(
        &[peer.addr()],
        &format!("nsq_auth_secret = {SECRET:?}"),
        &namespaces(&["e2e.auth"]),
    );
    post_points(&agent, "e2e.auth", "authed", 100);
    assert_all_arrive(&peer, &agent, "e2e.auth", "authed", 100);
    assert_eq!(peer.received().auths, [SECRET]);
    let stderr = agent.stderr();
    assert!(
        stderr.contains("Authenticated to nsqd") && stderr.contains("e2e-agent"),
        "{stderr}"
    );
    // The harness writes the config readable by everyone: the secret in it is flagged.
    assert!(
        stderr.contains("output.nsq_auth_secret and can be read by users other than its owner"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_auth_secret_is_a_clear_error_and_nothing_is_published() {
    let peer = auth_peer();
    let agent = nsq_agent(
        &[peer.addr()],
        "nsq_auth_secret = \"not-the-secret\"",
        &namespaces(&["e2e.authbad"]),
    );
    wait_for_error(
        &agent,
        &["refused AUTH", "E_AUTH_FAILED", "nsq_auth_secret"],
    );
    assert_eq!(peer.total_lines(), 0);
    assert!(peer
        .received()
        .errors_sent
        .iter()
        .all(|e| e == "E_AUTH_FAILED AUTH failed"));
}

#[test]
fn a_missing_auth_secret_is_a_clear_error_and_nothing_is_sent() {
    let peer = auth_peer();
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.authnone"]));
    wait_for_error(
        &agent,
        &["requires AUTH", "output.nsq_auth_secret is not set"],
    );
    let r = peer.received();
    assert!(r.auths.is_empty(), "{:?}", r.auths);
    assert_eq!(peer.total_lines(), 0);
}

fn tls_keys(tls: &NsqTls, extra: &str) -> String {
    format!(
        "nsq_tls = true\nnsq_tls_ca = {:?}\n{extra}",
        tls.ca_pem().display().to_string()
    )
}

#[test]
fn tls_is_negotiated_and_verified_against_the_configured_ca() {
    let tls = NsqTls::new();
    let peer = NsqPeer::start_with(PeerOptions {
        tls: Some(tls.server.clone()),
        tls_required: true,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(
        &[peer.addr()],
        &tls_keys(&tls, ""),
        &namespaces(&["e2e.tls"]),
    );
    post_points(&agent, "e2e.tls", "sealed", 5_000);
    assert_all_arrive(&peer, &agent, "e2e.tls", "sealed", 5_000);
    let r = peer.received();
    assert_eq!(r.identifies[0]["tls_v1"], true);
    assert_eq!(r.upgrades, ["tls"]);
}

#[test]
fn tls_offers_the_configured_client_certificate() {
    let tls = NsqTls::new();
    let peer = NsqPeer::start_with(PeerOptions {
        tls: Some(tls.server_verifying_clients.clone()),
        tls_required: true,
        ..PeerOptions::default()
    });
    let keys = format!(
        "nsq_tls_cert = {:?}\nnsq_tls_key = {:?}",
        tls.client_cert().display().to_string(),
        tls.client_key().display().to_string()
    );
    let agent = nsq_agent(
        &[peer.addr()],
        &tls_keys(&tls, &keys),
        &namespaces(&["e2e.mtls"]),
    );
    post_points(&agent, "e2e.mtls", "mutual", 100);
    assert_all_arrive(&peer, &agent, "e2e.mtls", "mutual", 100);
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let tls = NsqTls::new();
    let other = NsqTls::new();
    let peer = NsqPeer::start_with(PeerOptions {
        tls: Some(tls.server.clone()),
        tls_required: true,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(
        &[peer.addr()],
        &tls_keys(&other, ""),
        &namespaces(&["e2e.tlsbad"]),
    );
    wait_for_error(&agent, &["TLS handshake failed", "certificate"]);
    assert_eq!(peer.total_lines(), 0);
}

#[test]
fn an_nsqd_without_tls_is_refused_rather_than_used_in_clear() {
    let tls = NsqTls::new();
    let peer = NsqPeer::start();
    let agent = nsq_agent(
        &[peer.addr()],
        &tls_keys(&tls, ""),
        &namespaces(&["e2e.notls"]),
    );
    wait_for_error(
        &agent,
        &["did not agree to TLS", "refusing to publish in clear"],
    );
    assert_eq!(peer.total_lines(), 0);
}

/// An agent with `keys` against `peer` delivers 5,000 posted points and the heartbeat's.
fn delivers_every_point(peer: &NsqPeer, keys: &str, ns: &str) -> Agent {
    let agent = nsq_agent(&[peer.addr()], keys, &namespaces(&[ns]));
    post_points(&agent, ns, "packed", 5_000);
    assert_all_arrive(peer, &agent, ns, "packed", 5_000);
    assert!(wait_until(Duration::from_secs(20), || peer
        .lines(ns)
        .iter()
        .any(|l| l.starts_with("agent.alive,"))));
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
    agent
}

#[test]
fn snappy_compression_delivers_every_point() {
    let peer = NsqPeer::start();
    let _agent = delivers_every_point(&peer, "nsq_compression = \"snappy\"", "e2e.snappy");
    let r = peer.received();
    assert_eq!(r.identifies[0]["snappy"], true);
    assert_eq!(r.upgrades, ["snappy"]);
}

#[test]
fn deflate_compression_delivers_every_point_at_the_asked_level() {
    let peer = NsqPeer::start();
    let _agent = delivers_every_point(
        &peer,
        "nsq_compression = \"deflate\"\nnsq_deflate_level = 3",
        "e2e.deflate",
    );
    let r = peer.received();
    assert_eq!(r.identifies[0]["deflate"], true);
    assert_eq!(r.identifies[0]["deflate_level"], 3);
    assert_eq!(r.upgrades, ["deflate"]);
}

#[test]
fn compression_over_tls_delivers_every_point() {
    let tls = NsqTls::new();
    for (compression, ns) in [("snappy", "e2e.tls.snappy"), ("deflate", "e2e.tls.deflate")] {
        let peer = NsqPeer::start_with(PeerOptions {
            tls: Some(tls.server.clone()),
            tls_required: true,
            ..PeerOptions::default()
        });
        let keys = tls_keys(&tls, &format!("nsq_compression = {compression:?}"));
        let _agent = delivers_every_point(&peer, &keys, ns);
        assert_eq!(peer.received().upgrades, ["tls", compression]);
    }
}

#[test]
fn peer_answers_auth_and_compression_as_nsqd_does() {
    let peer = auth_peer();
    // AUTH before publishing is required, and a wrong secret is refused.
    let mut s = raw_client(&peer, r#"{"feature_negotiation":true}"#);
    s.write_all(&mpub("t", &[b"x"])).expect("mpub");
    let (kind, data) = read_frame(&mut s).expect("answer");
    assert_eq!(
        (kind, String::from_utf8_lossy(&data).as_ref()),
        (1, "E_AUTH_FIRST AUTH required before MPUB")
    );
    let mut s = raw_client(&peer, r#"{"feature_negotiation":true}"#);
    let mut auth = b"AUTH\n".to_vec();
    auth.extend_from_slice(&(SECRET.len() as u32).to_be_bytes());
    auth.extend_from_slice(SECRET.as_bytes());
    s.write_all(&auth).expect("auth");
    let (kind, data) = read_frame(&mut s).expect("answer");
    assert_eq!(kind, 0);
    let who: serde_json::Value = serde_json::from_slice(&data).expect("JSON");
    assert_eq!(who["permission_count"], 1);
    assert!(who["identity"].is_string() && who["identity_url"].is_string());
    s.write_all(&mpub("t", &[b"x"])).expect("mpub");
    assert_eq!(read_frame(&mut s).expect("OK"), (0, b"OK".to_vec()));
    let mut s = raw_client(&peer, r#"{"feature_negotiation":true}"#);
    let mut bad = b"AUTH\n\x00\x00\x00\x05".to_vec();
    bad.extend_from_slice(b"wrong");
    s.write_all(&bad).expect("auth");
    assert_eq!(
        read_frame(&mut s).expect("answer"),
        (1, b"E_AUTH_FAILED AUTH failed".to_vec())
    );
    // Asking for both compressions is refused, as nsqd does.
    let plain = NsqPeer::start();
    let mut s = TcpStream::connect(plain.addr()).expect("connect");
    let body = br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#;
    let mut hello = b"  V2IDENTIFY\n".to_vec();
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
    hello.extend_from_slice(body);
    s.write_all(&hello).expect("identify");
    let (kind, data) = read_frame(&mut s).expect("answer");
    assert_eq!(kind, 1);
    assert_eq!(
        String::from_utf8_lossy(&data),
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
    );
    // nsqd 1.x's IDENTIFY answer does not state max_msg_size.
    let answer_keys = {
        let mut s = TcpStream::connect(plain.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let body = br#"{"feature_negotiation":true}"#;
        let mut hello = b"  V2IDENTIFY\n".to_vec();
        hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
        hello.extend_from_slice(body);
        s.write_all(&hello).expect("identify");
        let (_, data) = read_frame(&mut s).expect("answer");
        let v: serde_json::Value = serde_json::from_slice(&data).expect("JSON");
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        !answer_keys.iter().any(|k| k == "max_msg_size"),
        "{answer_keys:?}"
    );
    assert!(
        answer_keys.iter().any(|k| k == "auth_required"),
        "{answer_keys:?}"
    );
}

#[test]
fn json_messages_over_a_learned_limit_are_halved_with_nothing_dropped() {
    let peer = NsqPeer::start_with(PeerOptions {
        max_msg_size: 20_000,
        ..PeerOptions::default()
    });
    let agent = nsq_agent(
        &[peer.addr()],
        "format = \"json\"",
        &namespaces(&["e2e.bigjson"]),
    );
    post_points(&agent, "e2e.bigjson", "bigjson", 5_000);
    let arrived = || {
        peer.messages("e2e.bigjson")
            .iter()
            .flat_map(|m| {
                let msg: serde_json::Value = serde_json::from_slice(m).expect("a JSON message");
                assert_eq!(msg["database"], "e2e.bigjson");
                msg["points"].as_array().cloned().unwrap_or_default()
            })
            .filter(|p| p["measurement"] == "bigjson")
            .filter_map(|p| p["tags"]["seq"].as_str().map(str::to_owned))
            .collect::<BTreeSet<_>>()
    };
    let all = wait_until(Duration::from_secs(60), || arrived().len() == 5_000);
    assert!(all, "{} of 5000\n{}", arrived().len(), agent.stderr());
    assert!(peer
        .messages("e2e.bigjson")
        .iter()
        .all(|m| m.len() <= 20_000));
    assert_eq!(status_u64(&agent, "output", "dropped_points"), 0);
}

#[test]
fn posted_line_protocol_reaches_nsqd_with_the_host_tag_whichever_path_each_line_takes() {
    let peer = NsqPeer::start();
    let agent = nsq_agent(&[peer.addr()], "", &namespaces(&["e2e.lp"]));
    // Lines the agent copies (already in its form) between lines it parses and encodes again
    // (escapes, a string, several fields, unsorted tags, a boolean spelled `T`), and bad ones.
    let body = "web.req,code=200,path=/a value=1.5 1764000000\n\
                web.req,zone=eu value=7i 1764000001\n\
                web.up,host=given value=T 1764000002\n\
                web\\ esc,k=a\\,b value=2 1764000003\n\
                web.str value=\"ok\" 1764000004\n\
                web.multi,a=1 value=3,extra=4i 1764000005\n\
                web.sorted,z=1,a=2 value=5 1764000006\n\
                web.bad value=abc 1764000007\n\
                web.time,time=1 value=1 1764000008\n";
    let (st, v) = agent.post("/post?ns=e2e.lp", "text/plain", body.as_bytes().to_vec());
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(8), Some(2)),
        "{v}"
    );
    let want = [
        "web.req,code=200,host=e2e-nsq,path=/a value=1.5 1764000000",
        "web.req,host=e2e-nsq,zone=eu value=7i 1764000001",
        "web.up,host=given value=true 1764000002",
        "web\\ esc,host=e2e-nsq,k=a\\,b value=2.0 1764000003",
        "web.str,host=e2e-nsq value=\"ok\" 1764000004",
        "web.multi,a=1,host=e2e-nsq value=3.0 1764000005",
        "web.multi.extra,a=1,host=e2e-nsq value=4i 1764000005",
        "web.sorted,a=2,host=e2e-nsq,z=1 value=5.0 1764000006",
    ];
    let posted = || -> Vec<String> {
        peer.lines("e2e.lp")
            .into_iter()
            .filter(|l| l.starts_with("web"))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || posted().len() >= want.len()),
        "{:?}\n{}",
        posted(),
        agent.stderr()
    );
    assert_eq!(posted(), want, "in order, each line once");
    for l in posted() {
        let host = if l.contains("host=given") {
            "given"
        } else {
            "e2e-nsq"
        };
        check_line(&l, host).unwrap_or_else(|e| panic!("{e}"));
    }
}
