//! The HTTP API of the real agent binary: pushing metrics, the token, body limits, log following,
//! and clients that are slow or idle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{free_port, wait_until, AgentBuilder};

const ONE_NS: &str = "[[namespace]]\nname = \"e2e.api\"\n";

#[test]
fn posted_json_and_line_protocol_reach_the_file_output_with_the_host_tag() {
    let agent = AgentBuilder::new()
        .agent_keys("hostname = \"api-host\"")
        .config("[output]\nflush_ms = 100")
        .registry(ONE_NS)
        .start();
    let json = br#"[{"name":"conn.active","value":12.5,"tags":{"pool":"a"},"timestamp":1764000000},
                    {"name":"bad\u0007","value":1}]"#;
    let (st, v) = agent.post("/post?ns=e2e.api", "application/json", json.to_vec());
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let lp = b"queue.depth,queue=mail value=7i 1764000001\nqueue.depth,queue=web value=oops\n";
    let (st, v) = agent.post("/post", "text/plain", lp.to_vec());
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ns"], "e2e.api", "the only namespace is implied");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(
        v["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("line 2:")),
        "{v}"
    );
    let want = [
        "conn.active,host=api-host,pool=a value=12.5 1764000000",
        "queue.depth,host=api-host,queue=mail value=7i 1764000001",
    ];
    let arrived = wait_until(Duration::from_secs(10), || {
        let out = agent.output_file("e2e.api");
        want.iter().all(|w| out.lines().any(|l| l == *w))
    });
    assert!(
        arrived,
        "output:\n{}\n{}",
        agent.output_file("e2e.api"),
        agent.stderr()
    );
    let (st, v) = agent.post("/post?ns=other", "application/json", b"[]".to_vec());
    assert_eq!(st, 404);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("e2e.api")),
        "{v}"
    );
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    support::proc_status_kib(pid, "VmHWM")
}

/// What clients posting `body` in a loop until `until` were answered: (status, Retry-After,
/// error message) of each answer.
fn post_in_a_loop(
    addr: &str,
    token: &str,
    clients: usize,
    (content_type, body): (&str, &[u8]),
    until: Instant,
) -> Vec<(u16, Option<String>, String)> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let client = reqwest::blocking::Client::new();
                    let mut answers = Vec::new();
                    while Instant::now() < until {
                        let r = client
                            .post(format!("http://{addr}/post"))
                            .bearer_auth(token)
                            .header("content-type", content_type)
                            .body(body.to_vec())
                            .timeout(Duration::from_secs(60))
                            .send();
                        let Ok(r) = r else { break }; // the agent stopped
                        let status = r.status().as_u16();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let v: serde_json::Value = r.json().unwrap_or_default();
                        let error = v["error"].as_str().unwrap_or_default().to_owned();
                        answers.push((status, retry, error));
                    }
                    answers
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("client"))
            .collect()
    })
}

#[test]
fn clients_posting_16_mb_bodies_keep_memory_bounded_and_a_stop_prompt() {
    const BOUND_KIB: u64 = 256 * 1024;
    // A short wait for room, so the clients that find the bounds taken are answered 503 rather
    // than served once the others finish (which a fast machine does within the default 2 s).
    let mut agent = AgentBuilder::new()
        .agent_keys("post_wait_ms = 100")
        .env_remove("MALLOC_ARENA_MAX")
        .registry(ONE_NS)
        .start();
    let pid = agent.pid().expect("running");
    let token = agent.token().expect("generated token");
    // About 16 MB of line protocol (under the 16 MiB max_body_bytes): some 200,000 points.
    let mut body = Vec::with_capacity(16_000_000);
    let mut i = 0u64;
    while body.len() < 15_900_000 {
        body.extend_from_slice(
            format!(
                "abuse.m{},code={},path=/api/v{} value={i}i 1764000000\n",
                i % 50,
                200 + i % 3,
                i % 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    // And about 16 MB of JSON: some 130,000 metrics.
    let mut json = b"[".to_vec();
    let mut i = 0u64;
    while json.len() < 15_900_000 {
        json.extend_from_slice(
            format!(
                "{{\"name\":\"abuse.m{}\",\"value\":{i},\"timestamp\":1764000000,\"tags\":{{\"code\":\"{}\",\"path\":\"/api/v{}\"}}}},",
                i % 50,
                200 + i % 3,
                i % 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    json.extend_from_slice(b"{\"name\":\"abuse.last\",\"value\":1}]");
    let lp = ("text/plain", body.as_slice());
    let mut answers = Vec::new();
    for (clients, kind) in [(2, lp), (4, lp), (4, ("application/json", json.as_slice()))] {
        let got = post_in_a_loop(
            &agent.addr,
            &token,
            clients,
            kind,
            Instant::now() + Duration::from_secs(15),
        );
        let peak = peak_rss_kib(pid);
        let ok = got.iter().filter(|a| a.0 == 200).count();
        eprintln!(
            "{clients} clients posting 16 MB {} bodies for 15 s: {ok} answered 200, {} answered 503; peak RSS so far {peak} KiB",
            kind.0,
            got.len() - ok
        );
        assert!(
            peak < BOUND_KIB,
            "{clients} clients posting 16 MB {} bodies: peak RSS {peak} KiB, bound {BOUND_KIB} KiB",
            kind.0
        );
        answers.extend(got);
    }
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(ok > 0, "some bodies were taken: {answers:?}");
    assert!(!busy.is_empty(), "a full agent answers 503: {answers:?}");
    assert!(
        answers.iter().all(|a| a.0 == 200 || a.0 == 503),
        "only 200 or 503: {answers:?}"
    );
    assert!(
        busy.iter()
            .all(|a| a.1.as_deref().is_some_and(|r| r.parse::<u64>().is_ok())
                && a.2.contains("retry")),
        "every 503 says when to retry: {busy:?}"
    );
    // A stop under that load finishes within drain_secs (10) plus a few seconds.
    let stopped = std::thread::scope(|s| {
        let addr = agent.addr.clone();
        let body = &body;
        let load = s.spawn(move || {
            post_in_a_loop(
                &addr,
                &token,
                4,
                ("text/plain", body),
                Instant::now() + Duration::from_secs(60),
            )
        });
        std::thread::sleep(Duration::from_secs(5));
        let t = Instant::now();
        let clean = agent.stop();
        let took = t.elapsed();
        let _ = load.join();
        (clean, took)
    });
    eprintln!(
        "agent stop under the load of 4 clients took {:?}",
        stopped.1
    );
    assert!(stopped.0, "clean stop:\n{}", agent.stderr());
    assert!(
        stopped.1 < Duration::from_secs(15),
        "stop under load took {:?}",
        stopped.1
    );
}

#[test]
fn token_is_required_everywhere_but_status_and_big_bodies_get_413() {
    let agent = AgentBuilder::new()
        .agent_keys("token = \"e2e-secret-0123456789\"\nmax_body_bytes = 2048")
        .registry(ONE_NS)
        .start();
    let (st, _) = agent.get("/me/status");
    assert_eq!(st, 200);
    let (st, v) = agent.get("/me/ns");
    assert_eq!(st, 401);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("Bearer")),
        "{v}"
    );
    let client = reqwest::blocking::Client::new();
    let url = |p: &str| format!("http://{}{p}", agent.addr);
    let r = client
        .get(url("/me/ns"))
        .bearer_auth("e2e-secret-0123456789")
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .post(url("/post"))
        .bearer_auth("e2e-secret-0123456789")
        .header("content-type", "text/plain")
        .body(vec![b'#'; 4096])
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 413);
    let v: serde_json::Value = r.json().expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("2048 bytes")),
        "{v}"
    );
}

#[test]
fn non_loopback_listen_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("agent.toml");
    let port = free_port();
    std::fs::write(&config, format!("[agent]\nlisten = \"0.0.0.0:{port}\"\n")).expect("config");
    let out = support::agent_cmd()
        .args(["start", "--foreground", "-f"])
        .arg(&config)
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("agent.token") && msg.contains("not a loopback"),
        "{msg}"
    );
    // Nothing listens there.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn log_offset_follows_a_growing_file_and_refuses_files_outside_the_roots() {
    let logs = tempfile::tempdir().expect("tmp");
    let root = std::fs::canonicalize(logs.path()).expect("canon");
    let agent = AgentBuilder::new()
        .agent_keys(&format!("log_roots = [\"{}\"]", root.display()))
        .registry(ONE_NS)
        .start();
    let file = root.join("app.log");
    std::fs::write(&file, "first\nsecond\nhalf").expect("write");
    let q = |offset: u64| format!("/log/offset?fpath={}&offset={offset}", file.display());
    let (st, v) = agent.get(&q(0));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["lines"], serde_json::json!(["first", "second"]));
    let next = v["next_offset"].as_u64().expect("next_offset");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    f.write_all(b" written\nthird\n").expect("append");
    let (_, v) = agent.get(&q(next));
    assert_eq!(v["lines"], serde_json::json!(["half written", "third"]));
    // Truncation: the old offset is past the end; the answer says so and restarts at 0.
    std::fs::write(&file, "new\n").expect("truncate");
    let (_, v) = agent.get(&q(v["next_offset"].as_u64().expect("next")));
    assert_eq!(
        (v["truncated"].as_bool(), v["next_offset"].as_u64()),
        (Some(true), Some(0)),
        "{v}"
    );
    // The agent's own log dir is readable too; /etc/passwd is not.
    let (st, v) = agent.get("/log/offset?fpath=/etc/passwd");
    assert_eq!(st, 403, "{v}");
    let (st, v) = agent.get(&format!(
        "/log/offset?fpath={}/../../etc/passwd",
        root.display()
    ));
    assert_eq!(st, 403, "{v}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    support::proc_status_kib(pid, "VmRSS")
}

#[test]
fn idle_connections_and_a_one_byte_a_second_body_do_not_stall_the_api() {
    let agent = AgentBuilder::new().registry(ONE_NS).start();
    let pid = agent.pid().expect("running");
    let before = rss_kib(pid);
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&agent.addr).expect("connect"))
        .collect();
    let mut slow = TcpStream::connect(&agent.addr).expect("connect");
    slow.write_all(
        b"POST /post HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[",
    )
    .expect("head");
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let r = client
            .get(format!("http://{}/me/status", agent.addr))
            .timeout(Duration::from_secs(5))
            .send()
            .expect("status answers while 1000 connections idle");
        assert_eq!(r.status().as_u16(), 200);
        worst = worst.max(t.elapsed());
        let _ = slow.write_all(b" ");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Generous: the machine is shared; a stalled server would time out at 5 s above.
    assert!(
        worst < Duration::from_secs(2),
        "slowest /me/status: {worst:?}"
    );
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "1000 idle connections cost {grown} KiB");
    // Idle connections are closed by the header deadline (10 s), not kept forever.
    let closed = idle.iter_mut().take(20).all(|c| {
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    });
    assert!(closed, "idle connections were not closed");
}
