//! `GET /metrics` through the router (no socket), against `GET /me/status` in the same run: the
//! cost of one scrape, with no plugin runs counted and at the cap of 4096 plugin series.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;

use agent::config::Config;
use agent::output::spool::Spool;
use agent::pipeline::Pipeline;
use agent::plugins::runs::MAX_SERIES;
use agent::state::AgentState;

fn state(dir: &std::path::Path) -> AgentState {
    let mut config = Config::default();
    config.resolve_paths(dir);
    let (pipeline, rx) = Pipeline::new("bench-host", 64);
    std::mem::forget(rx); // the pipeline stays open; nothing is posted
    let spool = Spool::open(&dir.join("spool"), 1 << 20).expect("spool");
    AgentState::new(config, "bench-host".into(), pipeline, spool, Arc::default())
}

/// Answers `uri` and returns the body's length.
fn get(rt: &tokio::runtime::Runtime, app: &axum::Router, uri: &str) -> usize {
    rt.block_on(async {
        let req = Request::get(uri).body(Body::empty()).expect("request");
        let resp = app.clone().oneshot(req).await.expect("answer");
        assert!(resp.status().is_success(), "{uri}: {}", resp.status());
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let st = state(dir.path());
    let app = agent::api::router(st.clone());
    let mut g = c.benchmark_group("scrape");
    g.bench_function("baseline_me_status", |b| {
        b.iter(|| get(&rt, &app, "/me/status"))
    });
    g.bench_function("metrics_no_plugin_runs", |b| {
        b.iter(|| get(&rt, &app, "/metrics"))
    });
    for i in 0..MAX_SERIES {
        st.plugins().runs().record(
            &format!("ns{}", i % 64),
            &format!("plugin-{i}"),
            "regular",
            "ok",
        );
    }
    println!("/metrics at the cap: {} bytes", get(&rt, &app, "/metrics"));
    g.bench_function("metrics_4096_plugin_series", |b| {
        b.iter(|| get(&rt, &app, "/metrics"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
