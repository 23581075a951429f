//! Spool budgets (figures in docs/benchmarks.md, section "Spool"), each against a baseline
//! measured in the same run:
//!
//! - `append`: pushing 64 KiB batches into the durable spool vs writing the same bytes to a
//!   file through a `BufWriter` (no fsync in either). Budget: at least 100 MB/s.
//! - `pipeline`: the agent's in-process path (submit metrics, normalise, batch, encode, spool,
//!   deliver to an output that takes everything, ack), durable spool (with its fsync task
//!   running) vs the in-memory queue. Budget: under 10 % slower.
//! - `encode_push_take_ack`: the same without producers, pipeline channel and delivery loop: the
//!   spool's share at its largest.
//! - `backlog`: one million points waiting (mostly on disk, beyond the memory cache), taken and
//!   acked, with and without a restart (reopen and scan) first, vs the live `pipeline` rate.
//!   Budget: at least as fast as live.
//! - `recovery_scan`: opening a spool of about 140 MB of segments of 1000-point batches (read
//!   every record, check both checksums, queue it) vs reading the same files into memory.
//!   Budget: at least 500 MB/s.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::config::Format;
use agent::output::spool::Spool;
use agent::output::{run_delivery, BoxFuture, DeliveryError, EncodedBatch, Output, OutputStats};
use agent::pipeline::batch::{encode, run_batcher, BatchConfig};
use agent::pipeline::{Pipeline, Point, Rename};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use shared::{Metric, Value};
use tokio_util::sync::CancellationToken;

const BATCH_BYTES: usize = 64 * 1024;
const APPEND_BATCHES: usize = 256; // 16 MiB per iteration
const POINTS_PER_BATCH: usize = 1000;
const BOUND: u64 = 1 << 30;

fn payload_batch(i: usize) -> EncodedBatch {
    let line = format!("cpu.usage,host=web-{i},cpu=cpu3 value=12.5 1764000000\n");
    let mut payload = Vec::with_capacity(BATCH_BYTES);
    while payload.len() + line.len() <= BATCH_BYTES {
        payload.extend_from_slice(line.as_bytes());
    }
    EncodedBatch {
        ns: "bench.ns".into(),
        points: (payload.len() / line.len()) as u32,
        payload,
    }
}

fn points(n: usize, seed: usize) -> Vec<Point> {
    (0..n)
        .map(|i| Point {
            measurement: format!("PLUGIN.bench.metric{}", i % 50),
            tags: vec![
                ("host".into(), "web-01.example".into()),
                ("pool".into(), format!("p{}", (i + seed) % 7)),
            ],
            value: Value::Float((i * 7 + seed) as f64 / 3.0),
            timestamp: 1_764_000_000 + (i % 60) as i64,
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let batches: Vec<EncodedBatch> = (0..APPEND_BATCHES).map(payload_batch).collect();
    let bytes: usize = batches.iter().map(|b| b.payload.len()).sum();
    let mut g = c.benchmark_group("spool/append");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("buffered_file_write (baseline)", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tmp"),
            |dir| {
                let f = std::fs::File::create(dir.path().join("plain")).expect("create");
                let mut w = std::io::BufWriter::new(f);
                for batch in &batches {
                    w.write_all(&batch.payload).expect("write");
                }
                w.flush().expect("flush");
                dir
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("durable_spool_push", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tmp");
                let spool = Spool::open(&dir.path().join("spool"), BOUND).expect("spool");
                (dir, spool, batches.clone())
            },
            |(dir, spool, batches)| {
                for batch in batches {
                    spool.push(batch);
                }
                (dir, spool)
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

/// Encode, push, take, ack `batches` batches of 1000 points: the in-process pipeline with a
/// healthy output.
async fn live(spool: &Spool, batches: usize) {
    for i in 0..batches {
        let pts = points(POINTS_PER_BATCH, i);
        for b in encode(Format::Line, "bench.ns", &pts, 1 << 20) {
            spool.push(b);
        }
        while !spool.is_empty() {
            let r = spool.next().await;
            std::hint::black_box(&r.batch.payload);
            spool.ack(r.id);
        }
    }
}

fn encode_and_spool(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let batches = 100; // 100k points per iteration
    let mut g = c.benchmark_group("spool/encode_push_take_ack");
    g.throughput(Throughput::Elements((batches * POINTS_PER_BATCH) as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("in_memory_queue (baseline)", |b| {
        let spool = Spool::in_memory(BOUND);
        b.iter(|| rt.block_on(live(&spool, batches)));
    });
    g.bench_function("durable_spool", |b| {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(&dir.path().join("spool"), BOUND).expect("spool");
        let stop = CancellationToken::new();
        let syncer = rt.spawn(spool.clone().run_sync(stop.clone()));
        b.iter(|| rt.block_on(live(&spool, batches)));
        stop.cancel();
        let _ = rt.block_on(syncer);
    });
    g.finish();
}

/// An output that takes everything at once (a healthy, infinitely fast peer).
struct NullOutput;

impl Output for NullOutput {
    fn endpoint(&self) -> String {
        "null".into()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        std::hint::black_box(&batch.payload);
        Box::pin(async { Ok(()) })
    }
}

/// The agent's in-process path, as `agent::run` wires it: producers submit metrics (100 per
/// call), the pipeline normalises them, the batcher cuts and encodes 1000-point batches into the
/// spool, the delivery loop hands them to the output and acks them.
async fn through_pipeline(spool: &Spool, points_total: usize) {
    let (pipeline, rx) = Pipeline::new("bench-host", 4096);
    let stop = CancellationToken::new();
    let batcher = tokio::spawn(run_batcher(
        rx,
        BatchConfig {
            batch_size: POINTS_PER_BATCH,
            flush_every: Duration::from_millis(100),
            format: Format::Line,
            max_message_bytes: 1 << 20,
        },
        spool.clone(),
        Arc::clone(pipeline.stats()),
        stop.clone(),
    ));
    let stats = Arc::new(OutputStats::default());
    let drain = CancellationToken::new();
    let delivery = tokio::spawn(run_delivery(
        spool.clone(),
        Box::new(NullOutput),
        Arc::clone(&stats),
        drain.clone(),
        Duration::from_secs(60),
    ));
    for call in 0..points_total / 100 {
        let metrics = (0..100)
            .map(|i| {
                Metric::new(format!("conn.metric{i}"), (call * 100 + i) as f64)
                    .tag("pool", format!("p{}", call % 7))
                    .at(1_764_000_000 + (call % 60) as i64)
            })
            .collect();
        pipeline
            .submit_metrics("bench.ns", "bench", metrics, Rename::Plugin("bench"))
            .await
            .expect("pipeline open");
    }
    stop.cancel();
    batcher.await.expect("batcher");
    drain.cancel();
    delivery.await.expect("delivery");
    assert_eq!(
        stats.delivered_points.load(Ordering::Relaxed),
        points_total as u64
    );
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let total = 200_000;
    let mut g = c.benchmark_group("spool/pipeline");
    g.throughput(Throughput::Elements(total as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("in_memory_queue (baseline)", |b| {
        let spool = Spool::in_memory(BOUND);
        b.iter(|| rt.block_on(through_pipeline(&spool, total)));
    });
    g.bench_function("durable_spool", |b| {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(&dir.path().join("spool"), BOUND).expect("spool");
        let stop = CancellationToken::new();
        let syncer = rt.spawn(spool.clone().run_sync(stop.clone()));
        b.iter(|| rt.block_on(through_pipeline(&spool, total)));
        stop.cancel();
        let _ = rt.block_on(syncer);
    });
    g.finish();
}

fn fill_backlog(spool: &Spool, points_total: usize) {
    for i in 0..points_total / POINTS_PER_BATCH {
        let pts = points(POINTS_PER_BATCH, i);
        for b in encode(Format::Line, "bench.ns", &pts, 1 << 20) {
            spool.push(b);
        }
    }
}

async fn drain(spool: &Spool) -> u64 {
    let mut n = 0;
    while !spool.is_empty() {
        let r = spool.next().await;
        n += u64::from(r.batch.points);
        spool.ack(r.id);
    }
    n
}

fn backlog(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let total = 1_000_000;
    let mut g = c.benchmark_group("spool/backlog_1m_points");
    g.throughput(Throughput::Elements(total as u64));
    // Each iteration is seconds long: one iteration per sample, not criterion's 1..=n ramp.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("live (baseline)", |b| {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(&dir.path().join("spool"), BOUND).expect("spool");
        b.iter(|| rt.block_on(live(&spool, total / POINTS_PER_BATCH)));
    });
    g.bench_function("drain", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tmp");
                let spool = Spool::open(&dir.path().join("spool"), BOUND).expect("spool");
                fill_backlog(&spool, total);
                let t = Instant::now();
                let n = rt.block_on(drain(&spool));
                spent += t.elapsed();
                assert_eq!(n, total as u64);
            }
            spent
        });
    });
    g.bench_function("restart_and_drain", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tmp");
                let path = dir.path().join("spool");
                {
                    let spool = Spool::open(&path, BOUND).expect("spool");
                    fill_backlog(&spool, total);
                }
                let t = Instant::now();
                let spool = Spool::open(&path, BOUND).expect("reopen");
                let n = rt.block_on(drain(&spool));
                spent += t.elapsed();
                assert_eq!(n, total as u64);
            }
            spent
        });
    });
    g.finish();
}

fn recovery_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("spool");
    {
        let spool = Spool::open(&path, BOUND).expect("spool");
        fill_backlog(&spool, 2_000_000);
        spool.sync();
    }
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut g = c.benchmark_group("spool/recovery_scan");
    g.throughput(Throughput::Bytes(bytes));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("read_files (baseline)", |b| {
        b.iter(|| {
            let n: usize = files
                .iter()
                .map(|p| std::fs::read(p).expect("read").len())
                .sum();
            assert_eq!(n as u64, bytes);
        });
    });
    g.bench_function("open_and_scan", |b| {
        b.iter(|| {
            let spool = Spool::open(&path, BOUND).expect("reopen");
            assert_eq!(spool.stats().batches, 2000);
            assert_eq!(spool.stats().damaged_ranges, 0);
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    append,
    encode_and_spool,
    pipeline,
    backlog,
    recovery_scan
);
criterion_main!(benches);
