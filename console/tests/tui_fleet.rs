//! The Fleet screen from fixed probe answers (no network): sorting, the filter, the selection,
//! drill-down and back, actions on the selected host and on every host shown, and what it
//! draws at 80x24 (compared with insta snapshots in `tests/snapshots/`).

mod common;

use std::time::Duration;

use agentctl::fleet::action::{Action as HostAction, Outcome};
use agentctl::fleet::inventory::Host;
use agentctl::fleet::probe::{Reason, Row, State};
use agentctl::tui::app::{Action, App, Tab};
use agentctl::tui::event::{Event, Net};
use common::{key, keys, render_at};
use ratatui::crossterm::event::KeyCode;
use shared::api::{OutputStatus, PluginInfo, Status};

const NOW: i64 = 1_764_000_000;

fn host(name: &str, port: u16) -> Host {
    Host::new(name, &format!("127.0.0.1:{port}"), 1232).expect("a valid address")
}

fn status(version: &str, spool: u64) -> Status {
    Status {
        version: version.into(),
        hostname: "x".into(),
        uptime_secs: 3600,
        output: OutputStatus {
            spool_batches: spool,
            ..OutputStatus::default()
        },
        ..Status::default()
    }
}

fn row(h: &Host, state: State, version: Option<&str>) -> Row {
    Row {
        host: h.clone(),
        status: version.map(|v| status(v, u64::from(!state.is_ok()))),
        state,
        failing_plugins: Some(Vec::new()),
        namespaces: vec![match &h.name[..2] {
            "we" => "web.shop".into(),
            "db" => "db.main".into(),
            _ => "cache".into(),
        }],
        elapsed: Duration::from_millis(12),
    }
}

/// Six hosts in file order; `db-02` has not answered yet.
fn hosts() -> Vec<Host> {
    vec![
        host("web-02", 2002),
        host("web-01", 2001),
        host("db-01", 3001),
        host("db-02", 3002),
        host("cache-01", 4001),
        host("web-03", 2003),
    ]
}

fn answer(app: &mut App, i: usize, state: State, version: Option<&str>) {
    let h = app.fleet.as_ref().expect("a fleet").hosts[i].clone();
    app.update(Event::Net(Box::new(Net::Probed {
        host: i,
        row: Box::new(row(&h, state, version)),
    })));
}

fn fleet_app() -> App {
    let mut app = App::for_fleet(hosts(), NOW);
    app.update(Event::Resize {
        width: 80,
        height: 24,
    });
    assert_eq!(app.update(Event::Tick { now: NOW }), Some(Action::Probe));
    answer(&mut app, 0, State::Ok, Some("0.2.0"));
    answer(&mut app, 1, State::Ok, Some("0.1.0"));
    answer(
        &mut app,
        2,
        State::Unreachable {
            error: "connection refused".into(),
        },
        None,
    );
    answer(
        &mut app,
        4,
        State::Degraded {
            reasons: vec![Reason::SpoolNotEmpty { batches: 1 }],
        },
        Some("0.2.0"),
    );
    answer(
        &mut app,
        5,
        State::Unauthorized {
            error: "401: this agent requires a token".into(),
        },
        None,
    );
    app
}

fn shown_names(app: &App) -> Vec<String> {
    let f = app.fleet.as_ref().expect("a fleet");
    f.shown.iter().map(|&i| f.hosts[i].name.clone()).collect()
}

fn selected_name(app: &App) -> String {
    let f = app.fleet.as_ref().expect("a fleet");
    f.hosts[f.selected.expect("a selection")].name.clone()
}

#[test]
fn rows_are_sorted_by_state_worst_first_then_name_and_unasked_hosts_last() {
    let app = fleet_app();
    assert_eq!(
        shown_names(&app),
        ["db-01", "web-03", "cache-01", "web-01", "web-02", "db-02"]
    );
}

#[test]
fn a_host_that_changes_state_moves_and_stays_selected() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('G'));
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(selected_name(&app), "web-02");
    answer(
        &mut app,
        0,
        State::Unreachable {
            error: "no answer within 3000 ms".into(),
        },
        None,
    );
    assert_eq!(shown_names(&app)[..2], ["db-01", "web-02"]);
    assert_eq!(
        selected_name(&app),
        "web-02",
        "the selection follows the host"
    );
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(selected_name(&app), "web-03");
}

#[test]
fn the_filter_takes_plain_text_or_a_fleet_expression_and_esc_clears_it() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "web");
    // Applied while typing.
    assert_eq!(shown_names(&app), ["web-03", "web-01", "web-02"]);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.fleet.as_ref().map(|f| f.filter.as_str()), Some("web"));

    key(&mut app, KeyCode::Char('/'));
    for _ in 0..3 {
        key(&mut app, KeyCode::Backspace);
    }
    keys(&mut app, "state!=ok");
    key(&mut app, KeyCode::Enter);
    // A host not asked yet has no state to compare.
    assert_eq!(shown_names(&app), ["db-01", "web-03", "cache-01"]);

    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, ",version<0.2.0");
    key(&mut app, KeyCode::Enter);
    assert!(shown_names(&app).is_empty(), "{:?}", shown_names(&app));

    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "x");
    // Esc in the prompt puts the filter back as it was.
    key(&mut app, KeyCode::Esc);
    assert_eq!(
        app.fleet.as_ref().map(|f| f.filter.as_str()),
        Some("state!=ok,version<0.2.0")
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(shown_names(&app).len(), 6, "Esc clears the filter");
}

#[test]
fn a_bad_expression_says_why_and_hides_nothing() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "colour=red");
    key(&mut app, KeyCode::Enter);
    let f = app.fleet.as_ref().expect("a fleet");
    assert!(f.filter_error.is_some());
    assert_eq!(f.shown.len(), 6);
    let screen = render_at(&app, 80, 24);
    assert!(screen.contains("filter colour=red ("), "{screen}");
}

#[test]
fn enter_opens_the_host_in_the_agent_screens_and_esc_comes_back() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(selected_name(&app), "web-03");
    let action = key(&mut app, KeyCode::Enter);
    assert_eq!(
        action,
        Some(Action::Batch(vec![
            Action::Open { host: 5 },
            Action::Refresh
        ]))
    );
    assert!(!app.fleet_shown);
    assert_eq!(app.addr, "127.0.0.1:2003");
    assert_eq!(app.tab, Tab::Overview);

    // Esc that closes something on the screen stays on the screen.
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "err");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Esc);
    assert!(!app.fleet_shown, "the first Esc clears the log search");
    key(&mut app, KeyCode::Esc);
    assert!(app.fleet_shown, "the next goes back to the fleet");
    assert_eq!(selected_name(&app), "web-03");

    // Opening another host starts from nothing of the first.
    key(&mut app, KeyCode::Char('g'));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.addr, "127.0.0.1:3001");
    assert!(app.status.is_none());
    assert!(app.logs.query.is_none());
}

#[test]
fn an_action_on_every_host_shown_asks_first_and_says_how_many() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "web");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(key(&mut app, KeyCode::Char('u')), None);
    let screen = render_at(&app, 80, 24);
    assert!(
        screen.contains("update (refresh from the registry) on 3 hosts"),
        "{screen}"
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        Some(Action::Fleet {
            action: HostAction::Update,
            hosts: vec![5, 1, 0],
        })
    );
    // Answers arrive one by one; the last one sums them up.
    for (i, result) in [(5, "error"), (1, "ok"), (0, "ok")] {
        app.update(Event::Net(Box::new(Net::Outcome {
            host: i,
            outcome: Outcome {
                name: String::new(),
                addr: String::new(),
                batch: 1,
                result,
                text: if result == "ok" {
                    "ok: 0 started".into()
                } else {
                    "unauthorized (401): this agent requires a token".into()
                },
                answer: None,
            },
        })));
    }
    let flash = app.flash.as_ref().expect("a message");
    assert_eq!(
        flash.text,
        "2 ok, 0 failed, 1 no answer (each row says why) · update (refresh from the registry) on 3 hosts"
    );
    assert!(flash.error);
    let screen = render_at(&app, 80, 24);
    assert!(
        screen.contains("│web-01         ok           0.1.0    1h00m   0     0     ok: 0 started"),
        "{screen}"
    );
    assert!(
        screen.contains("last action: error: unauthorized (401)"),
        "{screen}"
    );
}

#[test]
fn a_plugin_is_picked_from_the_selected_hosts_list_or_typed() {
    let mut app = fleet_app();
    key(&mut app, KeyCode::Char('G'));
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(selected_name(&app), "web-02");
    assert_eq!(
        key(&mut app, KeyCode::Char('p')),
        Some(Action::HostPlugins { host: 0 })
    );
    let plugin = |ns: &str, project: &str| PluginInfo {
        ns: ns.into(),
        project: project.into(),
        repo: format!("https://git.example.com/{project}.git"),
        ..PluginInfo::default()
    };
    app.update(Event::Net(Box::new(Net::HostPlugins {
        host: 0,
        result: Ok(vec![
            plugin("web.shop", "nginx"),
            plugin("web.shop", "disk"),
        ]),
    })));
    assert!(render_at(&app, 80, 24).contains("plugin to update (from web-02)"));
    key(&mut app, KeyCode::Char('j'));
    // An update on one host asks too.
    assert_eq!(key(&mut app, KeyCode::Enter), None);
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        Some(Action::Fleet {
            action: HostAction::PluginUpdate {
                ns: "web.shop".into(),
                repo: "https://git.example.com/disk.git".into()
            },
            hosts: vec![0],
        })
    );
    app.update(Event::Net(Box::new(Net::Outcome {
        host: 0,
        outcome: Outcome {
            name: "web-02".into(),
            addr: String::new(),
            batch: 1,
            result: "ok",
            text: "updated".into(),
            answer: None,
        },
    })));

    // A run on one host goes at once; "other" asks for NS REPO.
    key(&mut app, KeyCode::Char('r'));
    app.update(Event::Net(Box::new(Net::HostPlugins {
        host: 0,
        result: Err("unreachable: connection refused".into()),
    })));
    assert!(render_at(&app, 80, 24).contains("web-02's plugin list: unreachable"));
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "db.main pg-bloat");
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Action::Fleet {
            action: HostAction::PluginRun {
                ns: "db.main".into(),
                repo: "pg-bloat".into(),
                timeout: None,
                param: None
            },
            hosts: vec![0],
        })
    );
}

#[test]
fn a_probe_round_starts_on_ticks_and_r_and_never_twice_at_once() {
    let mut app = fleet_app();
    assert_eq!(app.update(Event::Tick { now: NOW + 1 }), None, "in flight");
    assert_eq!(key(&mut app, KeyCode::Char('R')), None);
    app.update(Event::Net(Box::new(Net::ProbeDone)));
    assert_eq!(
        app.update(Event::Tick { now: NOW + 2 }),
        None,
        "not due yet"
    );
    assert_eq!(key(&mut app, KeyCode::Char('R')), Some(Action::Probe));
    app.update(Event::Net(Box::new(Net::ProbeDone)));
    assert_eq!(
        app.update(Event::Tick { now: NOW + 2 + 5 }),
        Some(Action::Probe)
    );
}

#[test]
fn the_fleet_screen_at_80x24() {
    let app = fleet_app();
    let screen = render_at(&app, 80, 24);
    let first = screen.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.contains("6 hosts: 2 ok, 1 degraded, 1 unreachable, 1 unauthorized, 1 asking"),
        "{first}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn the_summary_fits_80_columns_at_a_thousand_hosts() {
    let hosts: Vec<Host> = (0..1000u16)
        .map(|i| host(&format!("h{i:04}"), 10_000 + i))
        .collect();
    let mut app = App::for_fleet(hosts, NOW);
    for i in 0..1000usize {
        let state = match i % 4 {
            0 => State::Ok,
            1 => State::Degraded {
                reasons: vec![Reason::DroppedPoints { points: 3 }],
            },
            2 => State::Unreachable {
                error: "refused".into(),
            },
            _ => State::Unauthorized {
                error: "401".into(),
            },
        };
        if i < 990 {
            answer(&mut app, i, state, Some("0.2.0"));
        }
    }
    let screen = render_at(&app, 80, 24);
    let first = screen.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.contains("1000 hosts: 248 ok, 248 degr, 247 unreach, 247 unauth, 10 new"),
        "{first}"
    );
}

#[test]
fn moving_one_answer_into_place_gives_the_order_a_full_sort_gives() {
    let hosts: Vec<Host> = (0..60u16)
        .map(|i| host(&format!("h{:02}", (i * 37) % 60), 20_000 + i))
        .collect();
    let mut app = App::for_fleet(hosts, NOW);
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "state!=degraded");
    key(&mut app, KeyCode::Enter);
    // Three rounds in which hosts change state in a scattered order.
    for round in 0..3usize {
        for k in 0..60usize {
            let i = (k * 7 + round * 11) % 60;
            let state = match (i + round) % 3 {
                0 => State::Ok,
                1 => State::Degraded {
                    reasons: vec![Reason::SkippedTicks { ticks: 1 }],
                },
                _ => State::Unreachable {
                    error: "Connection refused (os error 111)".into(),
                },
            };
            answer(&mut app, i, state, Some("0.2.0"));
            let f = app.fleet.as_ref().expect("a fleet");
            let mut sorted = f.clone();
            sorted.resort();
            assert_eq!(f.shown, sorted.shown, "round {round}, after host {i}");
        }
    }
    let screen = render_at(&app, 80, 24);
    assert!(
        screen.contains("Connection refused  "),
        "no OS error number: {screen}"
    );
}
