//! The TUI rendered into ratatui's `TestBackend` at 80x24 from fixed data (no network), after
//! key presses; compared with the committed insta snapshots in `tests/snapshots/`.

mod common;

use agentctl::tui::app::{Action, App, Feed, Tab};
use agentctl::tui::conn::Conn;
use agentctl::tui::event::{Event, Net, Verb};
use agentctl::tui::ui;
use common::{key, keys, render_at};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use shared::api::{
    JobCounts, LogChunk, OutputStatus, PipelineStatus, PluginCounts, PluginInfo, RegistryStatus,
    RunResult, Status,
};

/// 2025-11-24 16:00:00 UTC: every age on screen is relative to this.
const NOW: i64 = 1_764_000_000;

fn status() -> Status {
    Status {
        version: "0.1.0".into(),
        build: "abc1234 release".into(),
        hostname: "web-01".into(),
        uptime_secs: 3 * 3600 + 12 * 60,
        started_at: NOW - 3 * 3600 - 12 * 60,
        registry: RegistryStatus {
            source: "file".into(),
            location: "/etc/agent/registry.toml".into(),
            last_success: Some(NOW - 42),
            namespaces: 2,
            items: 7,
            ..RegistryStatus::default()
        },
        pipeline: PipelineStatus {
            accepted: 123_456,
            rejected: 3,
            queued: 12,
        },
        output: OutputStatus {
            kind: "nsq".into(),
            connected: true,
            endpoint: Some("127.0.0.1:4150".into()),
            spool_batches: 4,
            spool_bytes: 8 * 1024 * 1024,
            spool_durable: true,
            delivered_batches: 812,
            delivered_points: 123_400,
            ..OutputStatus::default()
        },
        jobs: JobCounts {
            total: 9,
            system: 7,
            ports: 1,
            procs: 1,
            plugins: 2,
            builtins: 1,
            skipped_ticks: 0,
            ..JobCounts::default()
        },
        plugins: PluginCounts {
            total: 3,
            disabled: 1,
            running: 0,
            ..PluginCounts::default()
        },
        log_dir: Some("/var/lib/agent/log".into()),
    }
}

fn plugin(ns: &str, project: &str, interval: u64) -> PluginInfo {
    PluginInfo {
        ns: ns.into(),
        project: project.into(),
        repo: format!("https://git.example.com/ops/{project}.git"),
        interval,
        enabled: true,
        commit: Some("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432".into()),
        ..PluginInfo::default()
    }
}

fn plugins() -> Vec<PluginInfo> {
    let mut ok = plugin("web.shop", "nginx-stats", 30);
    ok.parameters = "-v".into();
    ok.last_run = Some(RunResult {
        at: NOW - 20,
        kind: "regular".into(),
        duration_ms: 120,
        ok: true,
        reason: "ok".into(),
        exit_code: Some(0),
        stdout: "[{\"name\":\"conn.active\",\"value\":12}]".into(),
        ..RunResult::default()
    });
    let mut failing = plugin("web.shop", "disk-check", 0);
    failing.last_run = Some(RunResult {
        at: NOW - 300,
        kind: "call".into(),
        duration_ms: 2300,
        ok: false,
        reason: "exit".into(),
        exit_code: Some(3),
        stdout: "checking /data\nchecking /var".into(),
        stderr: "df: /data: No such file or directory".into(),
        error: Some("plugin.sh exited with status 3".into()),
        ..RunResult::default()
    });
    let mut disabled = plugin("db.main", "pg-bloat", 300);
    disabled.enabled = false;
    disabled.disabled_until = Some(NOW + 6 * 3600);
    vec![disabled, failing, ok]
}

/// A console that has talked to a healthy agent for a while.
fn app() -> App {
    let mut app = App::new("127.0.0.1:1232", NOW);
    app.conn = Conn::Connected { last_ok: NOW };
    app.refresh_sent = Some(NOW);
    app.status = Some(status());
    app.status_at = Some(NOW);
    app.namespaces = Feed::Ready(vec!["db.main".into(), "web.shop".into()]);
    app.plugins = Feed::Ready(plugins());
    app.throughput = [40, 42, 38, 60, 120, 80, 41, 40, 39, 45, 200, 44]
        .into_iter()
        .collect();
    app
}

fn render(app: &App) -> String {
    render_at(app, 80, 24)
}

#[test]
fn overview_shows_status_output_registry_and_throughput() {
    let app = app();
    insta::assert_snapshot!(render(&app));
}

#[test]
fn skipped_registry_entries_show_on_the_overview() {
    let mut app = app();
    let before = render(&app);
    assert!(before.contains("│skipped  none"), "{before}");
    if let Some(s) = app.status.as_mut() {
        s.registry.problems = vec![
            "namespace \"bad ns\": ' ' is not allowed".into(),
            "namespace \"web.shop\": item 4 skipped: unknown measurement_type \"SNMP\"".into(),
        ];
        s.registry.skipped_total = 5;
    }
    let screen = render(&app);
    assert!(
        screen.contains("│skipped  2 problems (agentctl status)"),
        "{screen}"
    );
}

#[test]
fn a_failing_registry_shows_its_reason_wrapped_in_the_registry_box() {
    let mut app = app();
    if let Some(s) = app.status.as_mut() {
        s.registry.last_error = Some(
            "registry file /etc/agent/registry.toml: namespace[1].ports[0].port: invalid type: string \"22\", expected u16 (line 4, column 39)".into(),
        );
        s.registry.last_error_at = Some(NOW - 5);
        s.registry.failures = 4;
    }
    let screen = render(&app);
    assert!(
        screen.contains("│health   failing, 5s ago (4 failures):"),
        "{screen}"
    );
    // The file is on the source row already; the box gives its rows to the reason.
    assert!(
        screen.contains("│namespace[1].ports[0].port: invalid ty│"),
        "{screen}"
    );
    assert!(
        screen.contains("│pe: string \"22\", expected u16 (line 4,│"),
        "{screen}"
    );
    assert!(
        screen.contains("│ column 39)  "),
        "the whole reason: {screen}"
    );
}

#[test]
fn a_long_endpoint_is_cut_from_the_left_and_every_row_stays_in_its_box() {
    let mut app = app();
    if let Some(s) = app.status.as_mut() {
        s.output.endpoint =
            Some("/home/operator/checkouts/monitoring/agent/examples/data/out".into());
        s.registry.location =
            "/home/operator/checkouts/monitoring/agent/examples/registry.toml".into();
    }
    let screen = render(&app);
    assert!(
        screen.contains("dropped"),
        "the last Output row is still shown:\n{screen}"
    );
    assert!(
        screen.contains("failures"),
        "the last Registry row is still shown:\n{screen}"
    );
    assert!(
        screen.contains("…"),
        "long paths are cut, marked with …:\n{screen}"
    );
    assert!(
        screen.contains("data/out"),
        "the end of the path is kept:\n{screen}"
    );
}

#[test]
fn namespaces_screen_counts_plugins_per_namespace() {
    let mut app = app();
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(app.tab, Tab::Namespaces);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn plugins_screen_lists_plugins_with_the_selected_ones_detail() {
    let mut app = app();
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.plugins_view.selected, 1);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn enter_opens_the_last_runs_output() {
    let mut app = app();
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Enter);
    assert!(app.plugins_view.detail_open);
    let screen = render(&app);
    assert!(screen.contains("df: /data: No such file or directory"));
    insta::assert_snapshot!(screen);
}

#[test]
fn disable_asks_first_and_y_sends_it() {
    let mut app = app();
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::End);
    assert_eq!(key(&mut app, KeyCode::Char('d')), None, "nothing sent yet");
    insta::assert_snapshot!(render(&app));
    let action = key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        action,
        Some(Action::Plugin {
            verb: Verb::Disable,
            ns: "web.shop".into(),
            project: "nginx-stats".into(),
            repo: "https://git.example.com/ops/nginx-stats.git".into(),
        })
    );
    assert!(app.confirm.is_none());
}

#[test]
fn a_cancelled_update_sends_nothing() {
    let mut app = app();
    key(&mut app, KeyCode::Char('3'));
    assert_eq!(key(&mut app, KeyCode::Char('u')), None);
    assert!(app.confirm.is_some());
    assert_eq!(key(&mut app, KeyCode::Esc), None);
    assert!(app.confirm.is_none());
    assert!(render(&app).contains("update of db.main/pg-bloat cancelled"));
}

#[test]
fn run_shows_working_then_the_result() {
    let mut app = app();
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Down);
    let action = key(&mut app, KeyCode::Char('r'));
    assert!(matches!(action, Some(Action::Run { ref project, .. }) if project == "disk-check"));
    assert!(render(&app).contains("working..."));
    // A second press while the first is going sends nothing.
    assert_eq!(key(&mut app, KeyCode::Char('r')), None);
    app.update(Event::Net(Box::new(Net::Ran {
        ns: "web.shop".into(),
        project: "disk-check".into(),
        result: Ok(shared::api::RunResponse {
            ns: "web.shop".into(),
            project: "disk-check".into(),
            ran: true,
            message: "ran".into(),
            result: Some(RunResult {
                at: NOW - 1,
                kind: "call".into(),
                duration_ms: 80,
                ok: true,
                reason: "ok".into(),
                exit_code: Some(0),
                stdout: "all disks fine".into(),
                ..RunResult::default()
            }),
        }),
    })));
    let screen = render(&app);
    assert!(screen.contains("web.shop/disk-check: ran, ok: ok 80ms"));
    assert!(screen.contains("all disks fine"));
    insta::assert_snapshot!(screen);
}

#[test]
fn help_overlay_opens_on_question_mark_and_any_key_closes_it() {
    let mut app = app();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&app));
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.help);
}

#[test]
fn unreachable_agent_shows_a_banner_over_greyed_last_data() {
    let mut app = app();
    app.update(Event::Tick { now: NOW + 2 });
    app.update(Event::Net(Box::new(Net::Refreshed {
        at_ms: 4000,
        status: Err(shared::ClientError::Unreachable {
            addr: "127.0.0.1:1232".into(),
            reason: "Connection refused (os error 111)".into(),
        }),
        namespaces: None,
        plugins: None,
    })));
    assert!(matches!(app.conn, Conn::Disconnected { attempt: 1, .. }));
    let screen = render(&app);
    assert!(screen.contains("disconnected"));
    assert!(screen.contains("web-01"), "last known data stays on screen");
    insta::assert_snapshot!(screen);
}

#[test]
fn a_refused_token_shows_a_banner_saying_what_was_sent_and_where_the_token_is() {
    let mut app = app();
    let refused = || {
        shared::ClientError::Unauthorized {
        addr: "127.0.0.1:1232".into(),
        message: "this agent requires a token: send `Authorization: Bearer <token>`; the token is in /var/lib/agent/auth_token on the agent's host".into(),
        sent: "no token (looked at: /var/lib/agent/auth_token: permission denied)".into(),
    }
    };
    app.update(Event::Net(Box::new(Net::Refreshed {
        at_ms: 4000,
        status: Ok(status()),
        namespaces: Some(Err(refused())),
        plugins: Some(Err(refused())),
    })));
    assert!(!app.conn.is_down(), "health needs no token: connected");
    let screen = render(&app);
    assert!(
        screen.contains("the agent refused the token: agentctl sent no token"),
        "{screen}"
    );
    key(&mut app, KeyCode::Char('2'));
    let screen = render(&app);
    assert!(screen.contains("auth_token"), "{screen}");
    // A later refresh with the right token clears it.
    app.update(Event::Net(Box::new(Net::Refreshed {
        at_ms: 6000,
        status: Ok(status()),
        namespaces: Some(Ok(vec!["web.shop".into()])),
        plugins: Some(Ok(shared::api::PluginList::default())),
    })));
    assert_eq!(app.token_refused, None);
    assert!(!render(&app).contains("refused the token"));
}

#[test]
fn the_reconnect_waits_longer_after_each_failure() {
    let mut app = app();
    let mut now = NOW;
    let mut waits = Vec::new();
    for _ in 0..7 {
        // Tick until a refresh is asked for, then fail it.
        let sent = now;
        loop {
            now += 1;
            if app.update(Event::Tick { now }) == Some(Action::Refresh) {
                break;
            }
        }
        waits.push(now - sent);
        app.update(Event::Net(Box::new(Net::Refreshed {
            at_ms: 0,
            status: Err(shared::ClientError::Unreachable {
                addr: "x".into(),
                reason: "refused".into(),
            }),
            namespaces: None,
            plugins: None,
        })));
    }
    // The first is the normal refresh period; then 1, 2, 4, 8, 16, 30 seconds.
    assert_eq!(waits, vec![2, 1, 2, 4, 8, 16, 30]);
}

#[test]
fn plugins_screen_says_plainly_when_the_agent_lacks_the_endpoint() {
    let mut app = app();
    app.plugins = Feed::NotOffered(
        "the agent answered 404: no endpoint /plugins/list; see the API reference in docs/api.md"
            .into(),
    );
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!(render(&app));
}

fn chunk(path: &str, offset: u64, lines: &[&str], size: u64) -> Net {
    let len: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    Net::Log {
        path: path.into(),
        offset,
        result: Ok(LogChunk {
            path: path.into(),
            offset,
            lines: lines.iter().map(|l| l.to_string()).collect(),
            next_offset: offset + len,
            size,
            truncated: false,
        }),
    }
}

#[test]
fn logs_open_suggests_the_agents_log_and_follows_it() {
    let mut app = app();
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('o'));
    insta::assert_snapshot!("logs_prompt", render(&app));
    let action = key(&mut app, KeyCode::Enter);
    let path = "/var/lib/agent/log/agent.2025-11-24.log";
    assert_eq!(
        action,
        Some(Action::ReadLog {
            path: path.into(),
            offset: 0
        })
    );
    let lines: Vec<String> = (1..=30)
        .map(|i| format!("2025-11-24T16:00:{i:02}Z  INFO agent: tick {i}"))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    app.update(Event::Net(Box::new(chunk(path, 0, &refs[..20], 4000))));
    let next = app.logs.next_offset;
    // The next tick reads on from where the last answer ended.
    assert_eq!(
        app.update(Event::Tick { now: NOW + 1 }),
        Some(Action::ReadLog {
            path: path.into(),
            offset: next
        })
    );
    app.update(Event::Net(Box::new(chunk(path, next, &refs[20..], 4000))));
    assert_eq!(app.logs.lines.len(), 30);
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "tick 1");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char(' '));
    assert!(app.logs.paused);
    let action = app.update(Event::Tick { now: NOW + 2 });
    assert_eq!(
        action,
        Some(Action::Refresh),
        "paused: a refresh but no read"
    );
    insta::assert_snapshot!("logs_following_searched_paused", render(&app));
}

#[test]
fn a_truncated_log_is_read_again_from_its_start() {
    let mut app = app();
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('o'));
    let path = app.suggested_log();
    key(&mut app, KeyCode::Enter);
    app.update(Event::Net(Box::new(chunk(&path, 0, &["a", "b"], 4))));
    app.update(Event::Tick { now: NOW + 1 });
    let action = app.update(Event::Net(Box::new(chunk(&path, 4, &[], 1))));
    assert_eq!(action, Some(Action::ReadLog { path, offset: 0 }));
    assert!(app
        .logs
        .lines
        .back()
        .is_some_and(|l| l.contains("truncated")));
}

#[test]
fn a_fresh_console_waits_for_the_agent() {
    let app = App::new("127.0.0.1:1232", NOW);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn the_screen_redraws_cleanly_at_other_sizes() {
    let mut app = app();
    key(&mut app, KeyCode::Char('3'));
    for (w, h) in [(40, 12), (120, 40), (20, 6)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        terminal
            .draw(|frame| ui::draw(frame, &app))
            .expect("draw at another size");
        let text = terminal.backend().to_string();
        assert!(text.contains("1 Overview"), "tabs at {w}x{h}:\n{text}");
    }
}

/// The Logs screen at 80x24 following `lines` of a file (all read in one answer).
fn following(lines: &[String]) -> App {
    let mut app = app();
    sized(&mut app);
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('o'));
    let path = app.suggested_log();
    key(&mut app, KeyCode::Enter);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let size = lines.iter().map(|l| l.len() as u64 + 1).sum();
    app.update(Event::Net(Box::new(chunk(&path, 0, &refs, size))));
    assert_eq!(app.logs.lines.len(), lines.len());
    app
}

/// Log lines `tick N`, with the line numbered `long` being 200 characters ending in an error.
fn log_lines(n: usize, long: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            if i == long {
                format!(
                    "2025-11-24T16:00:{i:02}Z ERROR agent: output nsq: {} connection refused",
                    "publish to 127.0.0.1:4150 failed after retries; ".repeat(3)
                )
            } else {
                format!("2025-11-24T16:00:{i:02}Z  INFO agent: tick {i}")
            }
        })
        .collect()
}

fn render_buffer(app: &App) -> ratatui::buffer::Buffer {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    terminal
        .draw(|frame| ui::draw(frame, app))
        .expect("draw into the test backend");
    terminal.backend().buffer().clone()
}

fn row_text(buf: &ratatui::buffer::Buffer, y: u16) -> String {
    (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()
}

#[test]
fn a_long_log_line_wraps_and_keeps_its_search_highlight() {
    let mut app = following(&log_lines(12, 10));
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "refused");
    key(&mut app, KeyCode::Enter);
    let screen = render(&app);
    assert!(
        screen.contains("connection refused"),
        "the end of the long line is on screen:\n{screen}"
    );
    insta::assert_snapshot!(screen);
    // Every row the long line wraps onto is highlighted, and no other row is.
    let buf = render_buffer(&app);
    let highlighted: Vec<u16> = (4..22)
        .filter(|&y| buf[(1, y)].bg == ratatui::style::Color::Yellow)
        .collect();
    let wrapped: Vec<u16> = (4..22)
        .filter(|&y| {
            let t = row_text(&buf, y);
            t.contains("ERROR") || t.contains("publish") || t.contains("refused")
        })
        .collect();
    assert!(wrapped.len() >= 3, "the long line takes several rows");
    assert_eq!(highlighted, wrapped);
}

#[test]
fn w_cuts_long_lines_at_the_edge_and_w_again_wraps_them() {
    let mut app = following(&log_lines(12, 10));
    key(&mut app, KeyCode::Char('w'));
    assert!(app.logs.cut);
    let screen = render(&app);
    assert!(!screen.contains("connection refused"), "{screen}");
    insta::assert_snapshot!(screen);
    key(&mut app, KeyCode::Char('w'));
    assert!(render(&app).contains("connection refused"));
}

#[test]
fn following_the_end_shows_the_last_line_whole_when_lines_wrap() {
    // Every line wraps onto 3 rows: 17 rows of text show 5 whole lines and the end of another.
    let lines: Vec<String> = (1..=40)
        .map(|i| format!("line {i:02} {} end of line {i:02}", "x".repeat(150)))
        .collect();
    let mut app = following(&lines);
    let screen = render(&app);
    insta::assert_snapshot!(screen);
    let buf = render_buffer(&app);
    assert!(
        row_text(&buf, 20).contains("end of line 40"),
        "the newest line ends on the last text row:\n{screen}"
    );
    // One line up is one log line up, whatever it wraps to: no jump.
    key(&mut app, KeyCode::Char('k'));
    assert!(row_text(&render_buffer(&app), 20).contains("end of line 39"));
    // Three lines per wheel notch.
    app.update(mouse(MouseEventKind::ScrollUp, 40, 10));
    assert!(row_text(&render_buffer(&app), 20).contains("end of line 36"));
    // g: the first line at the top, whole; G follows the end again.
    key(&mut app, KeyCode::Char('g'));
    let buf = render_buffer(&app);
    assert!(
        row_text(&buf, 4).contains("│line 01 xxx"),
        "{}",
        render(&app)
    );
    let max = app.logs.scroll;
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.logs.scroll, max, "no scrolling past the first line");
    key(&mut app, KeyCode::Char('G'));
    assert!(row_text(&render_buffer(&app), 20).contains("end of line 40"));
}

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> Event {
    Event::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

fn click(app: &mut App, column: u16, row: u16) {
    app.update(mouse(MouseEventKind::Down(MouseButton::Left), column, row));
}

/// The console is 80x24, like the test terminal, so clicks land where `render` draws.
fn sized(app: &mut App) {
    app.update(Event::Resize {
        width: 80,
        height: 24,
    });
}

#[test]
fn a_click_on_a_tab_title_switches_to_it() {
    let mut app = app();
    sized(&mut app);
    let tabs = row_text(&render_buffer(&app), 1);
    // Screen columns, not byte offsets: the divider is a multi-byte character.
    let column = |byte: usize| tabs[..byte].chars().count() as u16;
    for tab in [Tab::Logs, Tab::Namespaces, Tab::Plugins, Tab::Overview] {
        let label = format!("{} {}", tab.index() + 1, tab.title());
        let start = column(tabs.find(&label).expect("the title is drawn"));
        // Both ends of the title, found on the rendered screen.
        for x in [start, start + label.len() as u16 - 1] {
            app.tab = Tab::Overview;
            click(&mut app, x, 1);
            assert_eq!(app.tab, tab, "click at column {x} of {tabs:?}");
        }
    }
    // The divider between two titles and the empty end of the bar belong to no tab.
    let divider = column(tabs.find('│').expect("a divider"));
    app.tab = Tab::Plugins;
    click(&mut app, divider, 1);
    click(&mut app, 79, 1);
    assert_eq!(app.tab, Tab::Plugins);
}

#[test]
fn a_click_on_a_row_selects_it() {
    let mut app = app();
    sized(&mut app);
    key(&mut app, KeyCode::Char('3'));
    let buf = render_buffer(&app);
    let y = (0..24)
        .find(|&y| row_text(&buf, y).contains("nginx-stats"))
        .expect("the row is drawn");
    click(&mut app, 30, y);
    assert_eq!(
        app.selected_plugin().map(|p| p.project.as_str()),
        Some("nginx-stats")
    );
    // A click on the header row or the border selects nothing.
    let header = (0..24)
        .find(|&y| row_text(&render_buffer(&app), y).contains("NAMESPACE"))
        .expect("the header is drawn");
    click(&mut app, 30, header);
    click(&mut app, 30, header - 1);
    assert_eq!(app.plugins_view.selected, 2);

    key(&mut app, KeyCode::Char('2'));
    let buf = render_buffer(&app);
    let y = (0..24)
        .find(|&y| row_text(&buf, y).contains("web.shop"))
        .expect("the row is drawn");
    click(&mut app, 5, y);
    assert_eq!(app.ns_selected, 1);
    // Below the last row: nothing there to select.
    click(&mut app, 5, y + 1);
    assert_eq!(app.ns_selected, 1);
}

#[test]
fn a_click_lands_on_the_same_rows_under_the_disconnected_banner() {
    let mut app = app();
    sized(&mut app);
    app.conn = Conn::Disconnected {
        reason: "cannot reach the agent: connection refused".into(),
        attempt: 1,
        retry_at: NOW + 2,
        last_ok: Some(NOW - 5),
    };
    key(&mut app, KeyCode::Char('3'));
    let buf = render_buffer(&app);
    let y = (0..24)
        .find(|&y| row_text(&buf, y).contains("disk-check"))
        .expect("the row is drawn");
    click(&mut app, 30, y);
    assert_eq!(
        app.selected_plugin().map(|p| p.project.as_str()),
        Some("disk-check")
    );
}

#[test]
fn the_wheel_scrolls_the_list_or_log_shown_three_lines_a_notch() {
    let mut app = app();
    sized(&mut app);
    let many: Vec<PluginInfo> = (0..20)
        .map(|i| plugin("web.shop", &format!("p{i:02}"), 30))
        .collect();
    app.plugins = Feed::Ready(many);
    key(&mut app, KeyCode::Char('3'));
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(app.plugins_view.selected, 3);
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    app.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    assert_eq!(app.plugins_view.selected, 3);
    for _ in 0..10 {
        app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    }
    assert_eq!(app.plugins_view.selected, 19, "stops at the last plugin");
    // A click on a row of the scrolled table selects the plugin drawn there.
    let buf = render_buffer(&app);
    let y = (0..24)
        .find(|&y| row_text(&buf, y).contains("p12"))
        .expect("the row is drawn");
    click(&mut app, 30, y);
    assert_eq!(app.plugins_view.selected, 12);
    // The opened detail scrolls instead of the selection.
    key(&mut app, KeyCode::Enter);
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(
        (app.plugins_view.selected, app.plugins_view.detail_scroll),
        (12, 3)
    );

    key(&mut app, KeyCode::Char('2'));
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(app.ns_selected, 1, "two namespaces: stops at the second");

    let mut app = following(&log_lines(100, 0));
    app.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    app.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    assert_eq!(app.logs.scroll, 6);
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(app.logs.scroll, 3);
    for _ in 0..50 {
        app.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    }
    assert_eq!(
        app.logs.scroll,
        100 - 17,
        "stops with the first line at the top"
    );
}

#[test]
fn a_click_closes_help_and_leaves_a_confirmation_alone() {
    let mut app = app();
    sized(&mut app);
    key(&mut app, KeyCode::Char('?'));
    app.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert!(app.help, "the wheel leaves help open");
    click(&mut app, 40, 10);
    assert!(!app.help);
    assert_eq!(app.tab, Tab::Overview);

    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('d'));
    // On the Logs tab title: neither switches nor answers the prompt.
    click(&mut app, 47, 1);
    assert!(app.confirm.is_some());
    assert_eq!(app.tab, Tab::Plugins);
}
