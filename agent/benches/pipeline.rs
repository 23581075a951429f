//! Budgets of the point path, each measured against a baseline in the same run:
//!
//! - `encoding`: line-protocol encoding of typical points (3 tags) vs a memcpy of the same
//!   bytes. Budget: at least 3 million points per second on one core.
//! - `pipeline`: `Pipeline::submit_metrics` -> batcher -> spool -> nsq output -> the NSQ peer
//!   over loopback, with the default batch size, vs writing the same MPUB bytes to the peer on a
//!   raw TCP connection (same one-answer-per-batch rhythm, no pipeline). Budget: at least
//!   500,000 points per second. `..._one_tap_open`: the same with a `/tap` open that matches
//!   every point and is read as fast as it comes; budget (issue 15): at most 10 % slower.
//!
//! - `post_to_nsq`: the whole agent (`agent::run`, durable `/post` answers, the durable spool,
//!   the `nsq` output) in this process, 4 HTTP/1.1 keep-alive connections posting 1,000-point
//!   bodies (line protocol or JSON) to `/post`, until the NSQ peer answered `OK` for every point,
//!   vs writing the MPUBs the agent sends for those bodies to the same peer on a raw TCP
//!   connection: one at a time, each waiting for its `OK`, and all at once (answers read as they
//!   come). Budgets (issue 16): 1 M points/s and 70 % of the raw baseline for line protocol,
//!   500 k points/s for JSON, and two cores 1.7x one (run the bench binary under
//!   `taskset -c 0` and `taskset -c 0,1`).
//!
//! Run: `cargo bench -p agent --bench pipeline`; figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::config::Format;
use agent::output::nsq::{self, NsqOutput, NsqSettings};
use agent::output::spool::Spool;
use agent::output::{run_delivery, OutputStats};
use agent::pipeline::batch::{self, BatchConfig};
use agent::pipeline::{lineproto, Pipeline, Point, Rename};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shared::{Metric, Value};
use support::nsq_peer::{NsqPeer, PeerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;
const TS: i64 = 1_764_000_000;

/// A typical point: a dotted measurement, three tags (one of them `host`), a float.
fn typical_point(i: usize) -> Point {
    Point {
        measurement: "cpu.usage.user".to_owned(),
        tags: vec![
            ("cpu".to_owned(), format!("cpu{}", i % 16)),
            ("host".to_owned(), "web-01.example.com".to_owned()),
            ("region".to_owned(), "eu-west-1".to_owned()),
        ],
        value: Value::Float(12.5 + (i % 100) as f64 * 0.25),
        timestamp: TS + (i % 60) as i64,
    }
}

fn typical_metric(i: usize) -> Metric {
    Metric::new("cpu.usage.user", 12.5 + (i % 100) as f64 * 0.25)
        .tag("cpu", format!("cpu{}", i % 16))
        .tag("region", "eu-west-1")
        .at(TS + (i % 60) as i64)
}

fn encoding(c: &mut Criterion) {
    let points: Vec<Point> = (0..BATCH).map(typical_point).collect();
    let encoded = lineproto::encode_batch(&points, usize::MAX)
        .into_iter()
        .flat_map(|m| m.payload)
        .collect::<Vec<u8>>();
    let mut g = c.benchmark_group("encoding");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("lineproto_1000_points", |b| {
        b.iter(|| lineproto::encode_batch(black_box(&points), 1 << 20))
    });
    let mut out = Vec::with_capacity(encoded.len());
    g.bench_function("baseline_memcpy_same_bytes", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&encoded));
            black_box(&out);
        })
    });
    g.finish();
}

/// Points per measured run of the pipeline.
const RUN_POINTS: usize = 100_000;

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let peer = NsqPeer::start_with(PeerOptions {
        record_bodies: false,
        ..PeerOptions::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let (pipe, stats) = rt.block_on(async {
        let spool = Spool::open(dir.path(), 1 << 30).expect("spool");
        let (pipe, rx) = Pipeline::new("web-01.example.com", 4096);
        let stats = Arc::new(OutputStats::default());
        tokio::spawn(batch::run_batcher(
            rx,
            BatchConfig {
                batch_size: BATCH,
                flush_every: Duration::from_millis(1000),
                format: Format::Line,
                max_message_bytes: 1 << 20,
            },
            spool.clone(),
            Arc::clone(pipe.stats()),
            CancellationToken::new(),
        ));
        let output = NsqOutput::new(NsqSettings {
            addrs: vec![peer.addr()],
            topic: "{ns}".into(),
            format: Format::Line,
            max_message_bytes: 1 << 20,
            heartbeat: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            primary_retry: Duration::from_secs(60),
            hostname: "bench".into(),
            ..NsqSettings::default()
        });
        tokio::spawn(run_delivery(
            spool,
            Box::new(output),
            Arc::clone(&stats),
            CancellationToken::new(),
            Duration::from_secs(1),
        ));
        (pipe, stats)
    });

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(RUN_POINTS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("submit_to_nsq_peer_100k_points", |b| {
        submit_run(b, &rt, &pipe, &stats)
    });

    // The same run with one tap open that matches everything, read as fast as the /tap stream
    // reads it (encoded to its JSON lines): the tap budget (issue 15) is at most 10 % lost.
    let tap_done = CancellationToken::new();
    {
        let mut tap = pipe
            .tap()
            // As `GET /tap` opens it with the defaults: sampled down to agent.tap_max_rate.
            .open(
                agent::pipeline::tap::Filter::default(),
                Some(agent::config::AgentConfig::default().tap_max_rate),
                1,
            )
            .expect("tap");
        let done = tap_done.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    () = done.cancelled() => return,
                    b = tap.recv() => match b {
                        Some(b) => { black_box(agent::api::tap::encode(&b)); }
                        None => return,
                    },
                }
            }
        });
    }
    g.bench_function("submit_to_nsq_peer_100k_points_one_tap_open", |b| {
        submit_run(b, &rt, &pipe, &stats)
    });
    tap_done.cancel();
    let tapped_dropped = pipe.tap().dropped_total();
    eprintln!("tap: {tapped_dropped} points dropped by the tap reader over the tap run");

    // Baseline: the same MPUB bytes, one batch and one answer at a time, on a raw connection.
    let points: Vec<Point> = (0..RUN_POINTS).map(typical_point).collect();
    let commands: Vec<Vec<u8>> = points
        .chunks(BATCH)
        .map(|c| {
            let payload = lineproto::encode_batch(c, usize::MAX)
                .into_iter()
                .flat_map(|m| m.payload)
                .collect::<Vec<u8>>();
            let mut cmd = Vec::new();
            nsq::encode_mpub("bench.raw", &[&payload], &mut cmd);
            cmd
        })
        .collect();
    let mut conn = rt.block_on(raw_connection(&peer));
    g.bench_function("baseline_raw_tcp_same_bytes", |b| {
        b.iter(|| {
            rt.block_on(async {
                for cmd in &commands {
                    conn.write_all(cmd).await.expect("write");
                    read_ok(&mut conn).await;
                }
            })
        })
    });
    g.finish();
}

/// One measured run: [`RUN_POINTS`] metrics submitted in batches, until the peer answered the
/// last of them.
fn submit_run(
    b: &mut criterion::Bencher,
    rt: &tokio::runtime::Runtime,
    pipe: &Pipeline,
    stats: &OutputStats,
) {
    b.iter_batched(
        || {
            (0..RUN_POINTS / BATCH)
                .map(|k| (0..BATCH).map(|i| typical_metric(k * BATCH + i)).collect())
                .collect::<Vec<Vec<Metric>>>()
        },
        |chunks| {
            rt.block_on(async {
                let target = stats.delivered_points.load(Ordering::Relaxed) + RUN_POINTS as u64;
                for chunk in chunks {
                    pipe.submit_metrics("bench.ns", "bench", chunk, Rename::Keep)
                        .await
                        .expect("open pipeline");
                }
                wait_for(|| stats.delivered_points.load(Ordering::Relaxed) >= target).await;
            })
        },
        BatchSize::PerIteration,
    )
}

/// Reads one response frame and checks it is `OK`.
async fn read_ok(s: &mut tokio::net::TcpStream) {
    let mut frame = [0u8; 10];
    s.read_exact(&mut frame).await.expect("answer");
    assert_eq!(&frame[8..], b"OK", "peer answered {frame:?}");
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not deliver in 60 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Bodies per measured run of `post_to_nsq`, and the connections posting them.
const E2E_BODIES: usize = 100;
const E2E_CONNS: usize = 4;
const E2E_NS: &str = "bench.e2e";
const E2E_TOKEN: &str = "bench-token-0123456789";

/// The body `bench/post_load.sh` posts: 1,000 lines, two tags, a float, a timestamp in seconds.
fn e2e_line_body() -> Vec<u8> {
    let mut body = String::new();
    for i in 0..BATCH {
        body.push_str(&format!(
            "app.requests.{},code={},endpoint=/api/v{} value={} 1764000000\n",
            i % 50,
            200 + i % 3,
            i % 7,
            i as f64 * 1.5
        ));
    }
    body.into_bytes()
}

/// The same 1,000 metrics as a JSON list.
fn e2e_json_body() -> Vec<u8> {
    let metrics: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            serde_json::json!({
                "name": format!("app.requests.{}", i % 50),
                "value": i as f64 * 1.5,
                "timestamp": 1_764_000_000,
                "tags": {"endpoint": format!("/api/v{}", i % 7), "code": (200 + i % 3).to_string()},
            })
        })
        .collect();
    serde_json::to_vec(&metrics).expect("json")
}

/// A whole HTTP/1.1 request posting `body` to the agent at `addr`.
fn post_request(addr: std::net::SocketAddr, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /post?ns={E2E_NS} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {E2E_TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) and checks it is a 200.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "agent answered {head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return;
            }
        }
        let n = s.read(&mut chunk).await.expect("read answer");
        assert!(n > 0, "the agent closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Posts `E2E_BODIES` requests over `conns` (spread evenly), each answered before the next on
/// its connection; hands the connections back.
async fn post_all(
    conns: Vec<tokio::net::TcpStream>,
    request: &Arc<Vec<u8>>,
) -> Vec<tokio::net::TcpStream> {
    let per = E2E_BODIES / conns.len();
    let mut tasks = Vec::new();
    for mut s in conns {
        let request = Arc::clone(request);
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            for _ in 0..per {
                s.write_all(&request).await.expect("post");
                read_response(&mut s, &mut buf).await;
            }
            s
        }));
    }
    let mut back = Vec::new();
    for t in tasks {
        back.push(t.await.expect("poster"));
    }
    back
}

fn post_to_nsq(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let peer = NsqPeer::start_with(PeerOptions {
        record_bodies: false,
        ..PeerOptions::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(
        &config_path,
        format!(
            "[agent]\nlisten = \"127.0.0.1:0\"\nhostname = \"bench-host\"\ndata_dir = \"data\"\n\
             token = \"{E2E_TOKEN}\"\n[output]\nkind = \"nsq\"\nnsqd = [\"{}\"]\n",
            peer.addr()
        ),
    )
    .expect("config");
    std::fs::write(
        dir.path().join("registry.toml"),
        format!("[[namespace]]\nname = \"{E2E_NS}\"\n"),
    )
    .expect("registry");
    let config = agent::config::Config::load(&config_path).expect("config loads");
    assert_eq!(
        config.agent.post_ack,
        agent::config::PostAck::Durable,
        "measured with durable answers"
    );
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    rt.spawn(agent::run(config, shutdown.clone(), move |addr| {
        let _ = ready_tx.send(addr);
    }));
    let addr = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the agent listens");
    let line = Arc::new(post_request(addr, "text/plain", &e2e_line_body()));
    let json = Arc::new(post_request(addr, "application/json", &e2e_json_body()));
    let mut conns = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..E2E_CONNS {
            let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            v.push(s);
        }
        v
    });
    let run_points = (E2E_BODIES * BATCH) as u64;

    let mut g = c.benchmark_group("post_to_nsq");
    g.throughput(Throughput::Elements(run_points));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, request) in [
        ("lineproto_100k_points", &line),
        ("json_100k_points", &json),
    ] {
        // Where a run's time goes: until the last post was answered (its points are in the
        // spool), and until the peer answered the last MPUB; printed after the measurement.
        let (mut answered, mut delivered, mut runs) = (Duration::ZERO, Duration::ZERO, 0u32);
        let publishes_before = peer.received().publishes.values().sum::<u64>();
        g.bench_function(name, |b| {
            b.iter(|| {
                let start = Instant::now();
                let target = peer.total_lines() + run_points;
                conns = rt.block_on(post_all(std::mem::take(&mut conns), request));
                answered += start.elapsed();
                // Woken by the peer as it counts the last MPUB, not by a timer: tokio's 1 ms
                // tick would add up to a millisecond to every run.
                assert!(
                    peer.wait_for_lines(target, Duration::from_secs(60)),
                    "the pipeline did not deliver in 60 s"
                );
                delivered += start.elapsed();
                runs += 1;
            })
        });
        if runs > 0 {
            eprintln!(
                "post_to_nsq/{name}: the last post answered after {:.2} ms, the last MPUB after {:.2} ms (mean of {runs} runs)",
                answered.as_secs_f64() * 1e3 / f64::from(runs),
                delivered.as_secs_f64() * 1e3 / f64::from(runs),
            );
            let publishes = peer.received().publishes.values().sum::<u64>() - publishes_before;
            eprintln!(
                "post_to_nsq/{name}: {:.1} MPUBs per run of {E2E_BODIES} batches",
                publishes as f64 / f64::from(runs),
            );
        }
    }

    // Baselines: the MPUBs the agent sends for these bodies (the lines with the host tag, one
    // message per batch of 1,000), written to the same peer on a raw connection.
    let parsed =
        agent::pipeline::lineproto::parse::parse_points_from(&e2e_line_body(), 1, "bench-host", TS);
    assert_eq!(parsed.items.len(), BATCH, "{:?}", parsed.errors);
    let payload: Vec<u8> = lineproto::encode_batch(&parsed.items, usize::MAX)
        .into_iter()
        .flat_map(|m| m.payload)
        .collect();
    let mut cmd = Vec::new();
    nsq::encode_mpub("bench.raw", &[&payload], &mut cmd);
    let commands = vec![cmd; E2E_BODIES];
    let mut conn = rt.block_on(raw_connection(&peer));
    g.bench_function("baseline_raw_tcp_one_at_a_time", |b| {
        b.iter(|| {
            rt.block_on(async {
                for cmd in &commands {
                    conn.write_all(cmd).await.expect("write");
                    read_ok(&mut conn).await;
                }
            })
        })
    });
    let all: Vec<u8> = commands.concat();
    g.bench_function("baseline_raw_tcp_all_in_flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut r, mut w) = conn.split();
                let answers = async {
                    for _ in 0..E2E_BODIES {
                        let mut frame = [0u8; 10];
                        r.read_exact(&mut frame).await.expect("answer");
                        assert_eq!(&frame[8..], b"OK", "peer answered {frame:?}");
                    }
                };
                let (written, ()) = tokio::join!(w.write_all(&all), answers);
                written.expect("write");
            })
        })
    });
    g.finish();
    shutdown.cancel();
}

/// A connection to the peer that said `  V2` and IDENTIFY, heartbeats off.
async fn raw_connection(peer: &NsqPeer) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(peer.addr())
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut hello = nsq::MAGIC.to_vec();
    nsq::encode_identify(
        br#"{"client_id":"raw","heartbeat_interval":-1}"#,
        &mut hello,
    );
    s.write_all(&hello).await.expect("identify");
    read_ok(&mut s).await;
    s
}

criterion_group!(benches, encoding, pipeline, post_to_nsq);
criterion_main!(benches);
