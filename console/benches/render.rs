//! Render budget: a screen draws in under 5 ms with 1,000 plugins listed.
//!
//! Each case draws a full frame into ratatui's `TestBackend` (layout, widgets, diff against the
//! previous frame), against the baseline of drawing an empty frame in the same run.
//! Run: `cargo bench -p agentctl --bench render`.

use agentctl::tui::app::{self, App, Feed, Tab};
use agentctl::tui::conn::Conn;
use agentctl::tui::ui;
use criterion::{criterion_group, criterion_main, Criterion};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use shared::api::{PluginInfo, RunResult, Status};

const NOW: i64 = 1_764_000_000;

fn app_with_plugins(n: usize) -> App {
    let mut app = App::new("127.0.0.1:1232", NOW);
    app.conn = Conn::Connected { last_ok: NOW };
    app.status = Some(Status {
        hostname: "bench-host".into(),
        version: "0.1.0".into(),
        ..Status::default()
    });
    let plugins = (0..n)
        .map(|i| PluginInfo {
            ns: format!("svc{}.prod", i % 40),
            project: format!("plugin-{i:04}"),
            repo: format!("https://git.example.com/ops/plugin-{i:04}.git"),
            interval: 30,
            enabled: i % 7 != 0,
            commit: Some("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432".into()),
            last_run: Some(RunResult {
                at: NOW - (i as i64 % 300),
                kind: "regular".into(),
                duration_ms: 100 + i as u64,
                ok: i % 5 != 0,
                reason: if i % 5 == 0 { "exit" } else { "ok" }.into(),
                exit_code: Some(if i % 5 == 0 { 1 } else { 0 }),
                stdout: "[{\"name\":\"x\",\"value\":1}]\n".repeat(20),
                stderr: "warning: something\n".repeat(5),
                ..RunResult::default()
            }),
            ..PluginInfo::default()
        })
        .collect();
    app.plugins = Feed::Ready(plugins);
    app.namespaces = Feed::Ready((0..40).map(|i| format!("svc{i}.prod")).collect());
    app.throughput = (0..60).map(|i| (i * 37 % 100) as u64).collect();
    app
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    let mut small = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    group.bench_function("baseline_empty_frame_80x24", |b| {
        b.iter(|| small.draw(|_| {}).map(|_| ()).expect("draw"))
    });
    let mut app = app_with_plugins(1000);
    app.tab = Tab::Plugins;
    app.plugins_view.selected = 500;
    for (name, w, h) in [
        ("plugins_1000_80x24", 80, 24),
        ("plugins_1000_200x60", 200, 60),
    ] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        group.bench_function(name, |b| {
            b.iter(|| {
                terminal
                    .draw(|f| ui::draw(f, &app))
                    .map(|_| ())
                    .expect("draw")
            })
        });
    }
    for (name, tab) in [
        ("overview_80x24", Tab::Overview),
        ("namespaces_1000_plugins_80x24", Tab::Namespaces),
    ] {
        app.tab = tab;
        group.bench_function(name, |b| {
            b.iter(|| small.draw(|f| ui::draw(f, &app)).map(|_| ()).expect("draw"))
        });
    }
    // Logs: a full buffer of 10,000 lines, every third one long enough to wrap 3 times; only
    // the lines in view are wrapped, so this follows the terminal's size too.
    let mut logs = app_with_plugins(0);
    logs.tab = Tab::Logs;
    logs.logs.path = Some("/var/lib/agent/log/agent.2025-11-24.log".into());
    logs.logs.lines = (0..app::LOG_LINES_KEPT)
        .map(|i| {
            if i % 3 == 0 {
                format!(
                    "2025-11-24T16:00:00Z ERROR agent: {} line {i}",
                    "failed; ".repeat(25)
                )
            } else {
                format!("2025-11-24T16:00:00Z  INFO agent: tick {i}")
            }
        })
        .collect();
    for (name, w, h, scroll, query) in [
        ("logs_10000_wrapped_following_80x24", 80, 24, 0, None),
        ("logs_10000_wrapped_middle_200x60", 200, 60, 5_000, None),
        // The hit count in the status line matches every kept line, each frame.
        (
            "logs_10000_wrapped_searched_80x24",
            80,
            24,
            0,
            Some("error"),
        ),
    ] {
        logs.logs.scroll = scroll;
        logs.logs.query = query.map(str::to_owned);
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        group.bench_function(name, |b| {
            b.iter(|| {
                terminal
                    .draw(|f| ui::draw(f, &logs))
                    .map(|_| ())
                    .expect("draw")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
