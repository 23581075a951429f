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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::Terminal;
use shared::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::fleet::inventory::Host;
use crate::fleet::probe::Prober;
use app::{Action, App};
use event::{Event, Net, Verb};

/// How often the clock ticks; the screen redraws on ticks and events only, so an idle console
/// costs one small redraw a second.
pub const TICK: Duration = Duration::from_secs(1);

/// The Points screen's tap hands its lines over at least this often...
pub const TAP_BATCH: Duration = Duration::from_millis(250);
/// ... or every this many lines.
pub const TAP_BATCH_LINES: usize = 500;

/// How long one host may take for an action started on the Fleet screen (a plugin update
/// clones or fetches a repository).
pub const FLEET_ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The fleet the Fleet screen shows: the inventory and the prober that asks it.
pub struct Fleet {
    /// The hosts, in inventory order.
    pub hosts: Vec<Host>,
    /// Asks them (one connection pool, at most `in_flight` at once, each within its timeout).
    pub prober: Prober,
}

/// Runs the TUI on the real terminal until the user quits; `mouse` captures the mouse (clicks
/// and wheel) at the cost of the terminal's own text selection (shift-drag still selects).
/// With a `fleet`, it opens on the Fleet screen and `client` is unused until a host is opened.
pub async fn run(client: Client, mouse: bool, fleet: Option<Fleet>) -> anyhow::Result<()> {
    let mut term = term::Term::enter(mouse)?;
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(256);
    event::spawn_input(tx.clone(), cancel.clone())?;
    let now = crate::fmt::unix_now();
    let (mut app, prober) = match fleet {
        Some(f) => (App::for_fleet(f.hosts, now), Some(f.prober)),
        None => (App::new(client.addr(), now), None),
    };
    // Later sizes come with resize events; clicks are placed against this one until then.
    let size = term.terminal().size()?;
    app.update(Event::Resize {
        width: size.width,
        height: size.height,
    });
    let result = run_loop(
        term.terminal(),
        &mut app,
        rx,
        tx,
        client,
        prober,
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    drop(term);
    Ok(result?)
}

/// The loop, generic over the backend so it can run on a test backend too. `prober` asks the
/// hosts of `app.fleet`, when there is one.
pub async fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    client: Client,
    prober: Option<Prober>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (agent_tx, mut agent_rx) = mpsc::channel(64);
    let mut net = Performer {
        client,
        prober,
        hosts: app
            .fleet
            .as_ref()
            .map(|f| Arc::clone(&f.hosts))
            .unwrap_or_else(|| Arc::from(Vec::new())),
        epoch: 0,
        agent_tx,
        agent_cancel: cancel.child_token(),
        tx,
        cancel: cancel.clone(),
        started: Instant::now(),
    };
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let event = tokio::select! {
            Some(event) = rx.recv() => event,
            Some((epoch, answer)) = agent_rx.recv() => {
                // An answer of the host shown before the one opened now.
                if epoch != net.epoch {
                    continue;
                }
                Event::Net(Box::new(answer))
            }
            _ = ticks.tick() => Event::Tick { now: crate::fmt::unix_now() },
            _ = cancel.cancelled() => return Ok(()),
        };
        if let Some(action) = app.update(event) {
            net.perform(action);
        }
        if app.quit {
            return Ok(());
        }
        terminal.draw(|frame| ui::draw(frame, app))?;
    }
}

/// Starts the network work actions ask for; each task reports back over a channel.
struct Performer {
    /// The agent the single-agent screens show.
    client: Client,
    /// Asks the fleet's hosts.
    prober: Option<Prober>,
    /// The inventory (empty without a fleet).
    hosts: Arc<[Host]>,
    /// Counts the hosts opened: answers tagged with an older one are dropped.
    epoch: u64,
    /// Answers of the agent shown, tagged with the epoch they were asked in.
    agent_tx: mpsc::Sender<(u64, Net)>,
    /// Stops the work for the agent shown when another host is opened.
    agent_cancel: CancellationToken,
    /// Everything else.
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    started: Instant,
}

impl Performer {
    fn perform(&mut self, action: Action) {
        let c = self.client.clone();
        let started = self.started;
        match action {
            Action::Batch(actions) => {
                for a in actions {
                    self.perform(a);
                }
            }
            Action::Refresh => self.agent(async move {
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
            Action::Run { ns, project, repo } => self.agent(async move {
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
            } => self.agent(async move {
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
            Action::ReadLog { path, offset } => self.agent(async move {
                let result = c.log_offset(&path, offset, app::LOG_BATCH).await;
                Net::Log {
                    path,
                    offset,
                    result,
                }
            }),
            Action::Tap { rate } => self.tap(rate),
            Action::Open { host } => {
                let (Some(p), Some(h)) = (&self.prober, self.hosts.get(host)) else {
                    return;
                };
                self.client = p.client(h);
                self.epoch += 1;
                self.agent_cancel.cancel();
                self.agent_cancel = self.cancel.child_token();
            }
            Action::Probe => {
                let Some(p) = &self.prober else { return };
                let mut answers = p.spawn(Arc::clone(&self.hosts));
                let (tx, cancel) = (self.tx.clone(), self.cancel.clone());
                tokio::spawn(async move {
                    loop {
                        let (host, row) = tokio::select! {
                            _ = cancel.cancelled() => return,
                            a = answers.recv() => match a {
                                Some(a) => a,
                                None => break,
                            },
                        };
                        let row = Box::new(row);
                        if tx.send(net(Net::Probed { host, row })).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(net(Net::ProbeDone)).await;
                });
            }
            Action::HostPlugins { host } => {
                let (Some(p), Some(h)) = (&self.prober, self.hosts.get(host)) else {
                    return;
                };
                let (c, timeout) = (p.client(h), p.options().timeout);
                self.other(async move {
                    let result = match tokio::time::timeout(timeout, c.plugins()).await {
                        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                        Ok(Err(e)) => Err(crate::fleet::action::error_text(&e)),
                        Ok(Ok(list)) => Ok(list.plugins),
                    };
                    Net::HostPlugins { host, result }
                });
            }
            Action::Fleet { action, hosts } => {
                let Some(p) = &self.prober else { return };
                // As `agentctl fleet` does: at most `in_flight` hosts at once.
                let limit = Arc::new(Semaphore::new(p.options().in_flight.max(1)));
                let action = Arc::new(action);
                for host in hosts {
                    let Some(h) = self.hosts.get(host).cloned() else {
                        continue;
                    };
                    let (p, action, limit) = (p.clone(), Arc::clone(&action), Arc::clone(&limit));
                    self.other(async move {
                        let _permit = limit.acquire_owned().await;
                        let outcome =
                            crate::fleet::action::run_on(&p, &h, &action, FLEET_ACTION_TIMEOUT)
                                .await;
                        Net::Outcome { host, outcome }
                    });
                }
            }
        }
    }

    /// Work for the agent shown: its answer is dropped if another host is opened meanwhile.
    fn agent(&self, work: impl Future<Output = Net> + Send + 'static) {
        let (tx, cancel, epoch) = (self.agent_tx.clone(), self.agent_cancel.clone(), self.epoch);
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                answer = work => {
                    let _ = tx.send((epoch, answer)).await;
                }
            }
        });
    }

    /// The Points screen's tap: lines are sent on in batches (at most every [`TAP_BATCH`] or
    /// [`TAP_BATCH_LINES`] lines), so a busy agent costs one redraw per batch, not per point.
    fn tap(&self, rate: u32) {
        let (c, tx, cancel, epoch) = (
            self.client.clone(),
            self.agent_tx.clone(),
            self.agent_cancel.clone(),
            self.epoch,
        );
        tokio::spawn(async move {
            let work = async {
                let mut stream = match c.tap(&[("rate", rate.to_string())]).await {
                    Ok(s) => s,
                    Err(e) => return crate::commands::describe(&e, c.addr()),
                };
                let mut lines = Vec::new();
                let mut flush = tokio::time::interval(TAP_BATCH);
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Ok(Some(line)) => {
                                lines.push(line);
                                if lines.len() < TAP_BATCH_LINES {
                                    continue;
                                }
                            }
                            Ok(None) => return "the agent ended it (stopping?)".to_owned(),
                            Err(e) => return crate::commands::describe(&e, c.addr()),
                        },
                        _ = flush.tick() => if lines.is_empty() { continue },
                    }
                    let batch = Net::Tapped {
                        lines: std::mem::take(&mut lines),
                    };
                    if tx.send((epoch, batch)).await.is_err() {
                        return String::new();
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                reason = work => {
                    let _ = tx.send((epoch, Net::TapEnded { reason })).await;
                }
            }
        });
    }

    /// Fleet work: its answer always counts.
    fn other(&self, work: impl Future<Output = Net> + Send + 'static) {
        let (tx, cancel) = (self.tx.clone(), self.cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                answer = work => {
                    let _ = tx.send(net(answer)).await;
                }
            }
        });
    }
}

fn net(answer: Net) -> Event {
    Event::Net(Box::new(answer))
}
