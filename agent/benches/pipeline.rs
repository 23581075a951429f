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
            .open(agent::pipeline::tap::Filter::default(), None, 1)
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
    let mut conn = rt.block_on(async {
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
    });
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

criterion_group!(benches, encoding, pipeline);
criterion_main!(benches);
