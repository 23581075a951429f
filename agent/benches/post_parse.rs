//! The `/post` hot path without the network: parsing a 1,000-metric body and normalising it, for
//! JSON and line protocol. The load figures over HTTP are in bench/post_load.sh.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use agent::pipeline::normalize::{normalize, Rename};
use agent::pipeline::{json, lineproto};

fn json_body() -> Vec<u8> {
    let items: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"name":"app.requests.{}","value":{},"timestamp":1764000000,"tags":{{"endpoint":"/api/v{}","code":"{}"}}}}"#,
                i % 50,
                i as f64 * 1.5,
                i % 7,
                200 + i % 3
            )
        })
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

fn lp_body() -> Vec<u8> {
    (0..1000)
        .map(|i| {
            format!(
                "app.requests.{},code={},endpoint=/api/v{} value={} 1764000000\n",
                i % 50,
                200 + i % 3,
                i % 7,
                i as f64 * 1.5
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("post_1000_metrics");
    g.throughput(Throughput::Elements(1000));
    let body = json_body();
    g.bench_function("json_parse", |b| {
        b.iter(|| json::parse_metrics(&body).map(|p| p.items.len()))
    });
    g.bench_function("json_parse_normalize", |b| {
        b.iter(|| {
            json::parse_metrics(&body).map(|p| {
                p.items
                    .into_iter()
                    .filter_map(|m| normalize(m, Rename::Keep, "bench-host", 1_764_000_000).ok())
                    .count()
            })
        })
    });
    let body = lp_body();
    g.bench_function("lineproto_parse", |b| {
        b.iter(|| lineproto::parse::parse_body(&body).items.len())
    });
    g.bench_function("lineproto_parse_normalize", |b| {
        b.iter(|| {
            lineproto::parse::parse_body(&body)
                .items
                .into_iter()
                .filter_map(|m| normalize(m, Rename::Keep, "bench-host", 1_764_000_000).ok())
                .count()
        })
    });
    g.bench_function("lineproto_parse_points", |b| {
        b.iter(|| {
            lineproto::parse::parse_points(&body, "bench-host", 1_764_000_000)
                .items
                .len()
        })
    });
    // What `/post` does with line protocol for a line-protocol output: lines already in the
    // encoder's form are checked and copied with the host tag (`pipeline/lineproto/pass.rs`).
    // Baseline: copying the body once.
    g.bench_function("lineproto_encode_pass_through", |b| {
        b.iter(|| {
            lineproto::parse::encode_points_from(&body, 1, "bench-host", 1_764_000_000)
                .lines
                .points
        })
    });
    g.bench_function("baseline_memcpy_body", |b| {
        b.iter(|| std::hint::black_box(body.clone()).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
