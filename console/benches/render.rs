//! Render budget: a screen draws in under 5 ms with 1,000 plugins listed, and the Fleet screen
//! with 1,000 hosts.
//!
//! Each case draws a full frame into ratatui's `TestBackend` (layout, widgets, diff against the
//! previous frame), against the baseline of drawing an empty frame in the same run.
//! Run: `cargo bench -p agentctl --bench render`.

use agentctl::fleet::inventory::Host;
use agentctl::fleet::probe::{Reason, Row, State};
use agentctl::tui::app::{self, App, Feed, Tab};
use agentctl::tui::conn::Conn;
use agentctl::tui::event::{Event, Net};
use agentctl::tui::ui;
use criterion::{criterion_group, criterion_main, Criterion};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use shared::api::{OutputStatus, PluginInfo, RunResult, Status};
use std::time::Duration;

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

/// The Fleet screen over 1,000 hosts that all answered: a mix of states, every row with a
/// version, uptime and spool, a filter that keeps every host (so the table is full).
fn fleet_app(n: usize) -> App {
    let hosts: Vec<Host> = (0..n)
        .map(|i| {
            Host::new(
                &format!("host-{i:04}.dc{}.example.com", i % 3),
                &format!("10.0.{}.{}:1232", i / 250, i % 250),
                1232,
            )
            .expect("a valid address")
        })
        .collect();
    let mut app = App::for_fleet(hosts.clone(), NOW);
    for (i, host) in hosts.into_iter().enumerate() {
        let state = match i % 10 {
            0 => State::Unreachable {
                error: "no answer within 3000 ms".into(),
            },
            1 => State::Degraded {
                reasons: vec![
                    Reason::SpoolNotEmpty { batches: 12 },
                    Reason::PluginsFailing {
                        plugins: vec!["web.shop/nginx".into()],
                    },
                ],
            },
            2 => State::Unauthorized {
                error: "401: this agent requires a token".into(),
            },
            _ => State::Ok,
        };
        let status = (i % 10 != 0 && i % 10 != 2).then(|| Status {
            version: "0.2.0".into(),
            uptime_secs: 3600 + i as u64,
            output: OutputStatus {
                spool_batches: (i % 10 == 1) as u64 * 12,
                ..OutputStatus::default()
            },
            ..Status::default()
        });
        let row = Row {
            host,
            state,
            status,
            failing_plugins: Some(Vec::new()),
            namespaces: vec![format!("svc{}.prod", i % 40)],
            elapsed: Duration::from_millis(20),
        };
        app.update(Event::Net(Box::new(Net::Probed {
            host: i,
            row: Box::new(row),
        })));
    }
    if let Some(f) = app.fleet.as_mut() {
        f.set_filter("host");
        f.select_at(n / 2);
    }
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
    let fleet = fleet_app(1000);
    for (name, w, h) in [("fleet_1000_80x24", 80, 24), ("fleet_1000_200x60", 200, 60)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        group.bench_function(name, |b| {
            b.iter(|| {
                terminal
                    .draw(|f| ui::draw(f, &fleet))
                    .map(|_| ())
                    .expect("draw")
            })
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
