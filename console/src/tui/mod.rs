//! The terminal UI: one `select!` loop owns input, network answers and ticks; `App` holds the
//! agent's data and routes events to the screen shown (`screens`, one file per screen: its
//! state, keys and drawing), `ui::draw` only reads it, and network calls run in tasks that
//! report back.

pub mod app;
pub mod conn;
pub mod event;
pub mod screens;
pub mod term;
pub mod ui;

use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::Terminal;
use shared::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use app::{Action, App};
use event::{Event, Net, Verb};

/// How often the clock ticks; the screen redraws on ticks and events only, so an idle console
/// costs one small redraw a second.
pub const TICK: Duration = Duration::from_secs(1);

/// Runs the TUI on the real terminal until the user quits; `mouse` captures the mouse (clicks
/// and wheel) at the cost of the terminal's own text selection (shift-drag still selects).
pub async fn run(client: Client, mouse: bool) -> anyhow::Result<()> {
    let mut term = term::Term::enter(mouse)?;
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(256);
    event::spawn_input(tx.clone(), cancel.clone())?;
    let mut app = App::new(client.addr(), crate::fmt::unix_now());
    // Later sizes come with resize events; clicks are placed against this one until then.
    let size = term.terminal().size()?;
    app.update(Event::Resize {
        width: size.width,
        height: size.height,
    });
    let result = run_loop(term.terminal(), &mut app, rx, tx, client, cancel.clone()).await;
    cancel.cancel();
    drop(term);
    Ok(result?)
}

/// The loop, generic over the backend so it can run on a test backend too.
pub async fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    client: Client,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let event = tokio::select! {
            Some(event) = rx.recv() => event,
            _ = ticks.tick() => Event::Tick { now: crate::fmt::unix_now() },
            _ = cancel.cancelled() => return Ok(()),
        };
        if let Some(action) = app.update(event) {
            perform(action, &client, &tx, &cancel, started);
        }
        if app.quit {
            return Ok(());
        }
        terminal.draw(|frame| ui::draw(frame, app))?;
    }
}

/// Starts the network work an action asks for; each task reports back over `tx`.
fn perform(
    action: Action,
    client: &Client,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    started: Instant,
) {
    let c = client.clone();
    match action {
        Action::Batch(actions) => {
            for a in actions {
                perform(a, client, tx, cancel, started);
            }
        }
        Action::Refresh => spawn(tx, cancel, async move {
            let status = c.status().await;
            let at_ms = started.elapsed().as_millis() as u64;
            let (namespaces, plugins) = if status.is_ok() {
                let (ns, p) = tokio::join!(c.namespaces(), c.plugins());
                (Some(ns.map(|n| n.namespaces)), Some(p))
            } else {
                (None, None)
            };
            Net::Refreshed {
                at_ms,
                status,
                namespaces,
                plugins,
            }
        }),
        Action::Run { ns, project, repo } => spawn(tx, cancel, async move {
            let result = c.plugin_run(&ns, &repo, None, None).await;
            Net::Ran {
                ns,
                project,
                result,
            }
        }),
        Action::Plugin {
            verb,
            ns,
            project,
            repo,
        } => spawn(tx, cancel, async move {
            let result = match verb {
                Verb::Update => c.plugin_update(&ns, &repo).await,
                Verb::Enable => c.plugin_enable(&ns, &repo).await,
                Verb::Disable => c.plugin_disable(&ns, &repo).await,
            };
            Net::Acted {
                verb,
                ns,
                project,
                result,
            }
        }),
        Action::ReadLog { path, offset } => spawn(tx, cancel, async move {
            let result = c.log_offset(&path, offset, app::LOG_BATCH).await;
            Net::Log {
                path,
                offset,
                result,
            }
        }),
    }
}

fn spawn(
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Net> + Send + 'static,
) {
    let tx = tx.clone();
    let cancel = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            net = work => {
                let _ = tx.send(Event::Net(Box::new(net))).await;
            }
        }
    });
}
