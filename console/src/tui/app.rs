//! The TUI's state and how events change it: `App::update(event) -> Option<Action>`.
//!
//! Nothing here draws or talks to the network: drawing reads `App` (see `ui`), and the loop
//! performs the returned [`Action`]s, whose answers come back as [`Event::Net`].

use std::collections::VecDeque;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use shared::api::{PluginInfo, Status};
use shared::ClientError;

use super::conn::Conn;
use super::event::{Event, Net, Verb};
use super::screens::{self, fleet, logs, plugins, points};
use super::ui;
use crate::fleet::inventory::Host;

pub use super::screens::fleet::FleetView;
pub use super::screens::logs::{LogsView, Prompt, LOG_BATCH, LOG_LINES_KEPT, LOG_TAIL_BYTES};
pub use super::screens::plugins::{Confirm, PluginsView};
pub use super::screens::points::PointsView;
pub use super::screens::Tab;

/// Throughput samples kept for the sparkline (one per refresh, about 2 minutes).
pub const THROUGHPUT_SAMPLES: usize = 60;
/// Lines (or list rows) one wheel notch scrolls, as in most terminal programs.
pub const WHEEL_LINES: usize = 3;

/// Data from one endpoint, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed<T> {
    /// Not asked yet.
    Waiting,
    /// The last answer.
    Ready(T),
    /// The agent has no such endpoint (404): says so plainly on the screen.
    NotOffered(String),
    /// The agent answered an error.
    Failed(String),
}

/// What the loop should do for the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask for status, namespaces and plugins.
    Refresh,
    /// Run a plugin now.
    Run {
        /// Namespace.
        ns: String,
        /// Project (for the answer).
        project: String,
        /// Repository address as listed.
        repo: String,
    },
    /// Update, enable or disable a plugin.
    Plugin {
        /// Which.
        verb: Verb,
        /// Namespace.
        ns: String,
        /// Project (for the answer).
        project: String,
        /// Repository address as listed.
        repo: String,
    },
    /// Read the followed file from an offset.
    ReadLog {
        /// The file.
        path: String,
        /// Byte offset.
        offset: u64,
    },
    /// Open a tap (`GET /tap`) for the Points screen; its lines come back until it ends.
    Tap {
        /// Points per second asked for.
        rate: u32,
    },
    /// Several at once.
    Batch(Vec<Action>),
    /// Fleet: ask every host of the inventory (one round; answers arrive as they come).
    Probe,
    /// Fleet: talk to this host (index in the inventory) from now on.
    Open {
        /// The host.
        host: usize,
    },
    /// Fleet: ask this host for its plugins (for the picker).
    HostPlugins {
        /// The host.
        host: usize,
    },
    /// Fleet: do `action` on these hosts (indexes in the inventory).
    Fleet {
        /// What.
        action: crate::fleet::action::Action,
        /// Where.
        hosts: Vec<usize>,
    },
}

/// A line at the bottom of the screen about the last thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// The text.
    pub text: String,
    /// Shown in red.
    pub error: bool,
}

/// Everything the screens show.
#[derive(Debug, Clone)]
pub struct App {
    /// The agent's address.
    pub addr: String,
    /// The tab shown.
    pub tab: Tab,
    /// The terminal's size, from the last resize: mouse clicks are hit-tested against the same
    /// layout `ui::draw` uses at this size.
    pub area: Rect,
    /// The selected row of the Namespaces screen.
    pub ns_selected: usize,
    /// Unix seconds, from the last tick (so drawing never reads the clock).
    pub now: i64,
    /// The connection.
    pub conn: Conn,
    /// When the last refresh was sent (unix seconds).
    pub refresh_sent: Option<i64>,
    /// Whether a refresh is in flight.
    pub refreshing: bool,
    /// The last status.
    pub status: Option<Status>,
    /// When `status` arrived (unix seconds).
    pub status_at: Option<i64>,
    /// The namespaces.
    pub namespaces: Feed<Vec<String>>,
    /// The plugins.
    pub plugins: Feed<Vec<PluginInfo>>,
    /// Delivered points per second, one sample per refresh, the newest last.
    pub throughput: VecDeque<u64>,
    /// The previous (milliseconds, delivered points) sample the rate is computed from.
    pub last_delivered: Option<(u64, u64)>,
    /// The Plugins screen.
    pub plugins_view: PluginsView,
    /// The Logs screen.
    pub logs: LogsView,
    /// The Points screen.
    pub points: PointsView,
    /// The help overlay is open.
    pub help: bool,
    /// A disruptive action waiting for confirmation.
    pub confirm: Option<Confirm>,
    /// The last message.
    pub flash: Option<Flash>,
    /// The user asked to quit.
    pub quit: bool,
    /// Set while the agent refuses the token agentctl sends (or that it sends none): the
    /// banner's text, since the health it shows needs no token but everything else does.
    pub token_refused: Option<String>,
    /// The Fleet screen, when agentctl started with an inventory.
    pub fleet: Option<FleetView>,
    /// The Fleet screen is shown (else the single-agent screens, for the host opened).
    pub fleet_shown: bool,
}

impl App {
    /// A fresh console for the agent at `addr`, at unix time `now`.
    pub fn new(addr: &str, now: i64) -> Self {
        App {
            addr: addr.to_owned(),
            tab: Tab::Overview,
            area: Rect::default(),
            ns_selected: 0,
            now,
            conn: Conn::Connecting,
            refresh_sent: None,
            refreshing: false,
            status: None,
            status_at: None,
            namespaces: Feed::Waiting,
            plugins: Feed::Waiting,
            throughput: VecDeque::new(),
            last_delivered: None,
            plugins_view: PluginsView::default(),
            logs: LogsView::default(),
            points: PointsView::default(),
            help: false,
            confirm: None,
            flash: None,
            quit: false,
            token_refused: None,
            fleet: None,
            fleet_shown: false,
        }
    }

    /// A console that starts on the Fleet screen over `hosts`.
    pub fn for_fleet(hosts: Vec<Host>, now: i64) -> Self {
        App {
            fleet: Some(FleetView::new(hosts)),
            fleet_shown: true,
            ..App::new("", now)
        }
    }

    /// Leaves the Fleet screen for host `i` in the single-agent screens, with nothing of the
    /// host shown before.
    pub(crate) fn open_host(&mut self, i: usize) -> Action {
        let fleet = self.fleet.take();
        let addr = fleet
            .as_ref()
            .and_then(|f| f.hosts.get(i))
            .map(|h| h.addr.clone())
            .unwrap_or_default();
        *self = App {
            area: self.area,
            fleet,
            ..App::new(&addr, self.now)
        };
        Action::Batch(vec![Action::Open { host: i }, self.start_refresh()])
    }

    /// Back to the Fleet screen from a host's screens.
    fn back_to_fleet(&mut self) -> Option<Action> {
        self.fleet_shown = true;
        self.confirm = None;
        self.flash = None;
        screens::fleet::on_tick(self)
    }

    /// Applies one event; returns what the loop should do about it.
    pub fn update(&mut self, event: Event) -> Option<Action> {
        match event {
            Event::Key(key) => self.on_key(key),
            Event::Mouse(m) => self.on_mouse(m),
            Event::Resize { width, height } => {
                self.area = Rect::new(0, 0, width, height);
                None
            }
            Event::Tick { now } => {
                self.now = now;
                self.on_tick()
            }
            Event::Net(net) => self.on_net(*net),
        }
    }

    /// The namespaces listed, empty when none are known.
    pub fn namespace_list(&self) -> &[String] {
        match &self.namespaces {
            Feed::Ready(n) => n,
            _ => &[],
        }
    }

    fn on_tick(&mut self) -> Option<Action> {
        if self.fleet_shown {
            return fleet::on_tick(self);
        }
        let mut actions = Vec::new();
        if !self.refreshing && self.conn.refresh_due(self.now, self.refresh_sent) {
            actions.push(self.start_refresh());
        }
        if let Some(a) = logs::read(self) {
            actions.push(a);
        }
        if let Some(a) = points::on_tick(self) {
            actions.push(a);
        }
        batch(actions)
    }

    fn start_refresh(&mut self) -> Action {
        self.refreshing = true;
        self.refresh_sent = Some(self.now);
        Action::Refresh
    }

    fn refresh_now(&mut self) -> Option<Action> {
        if self.refreshing {
            None
        } else {
            Some(self.start_refresh())
        }
    }

    fn on_net(&mut self, net: Net) -> Option<Action> {
        match net {
            Net::Refreshed {
                at_ms,
                status,
                namespaces,
                plugins,
            } => {
                self.on_refreshed(at_ms, status, namespaces, plugins);
                None
            }
            Net::Ran {
                ns,
                project,
                result,
            } => {
                plugins::on_ran(self, ns, project, result);
                // The list shows the new last run and state at once.
                self.refresh_now()
            }
            Net::Acted {
                verb,
                ns,
                project,
                result,
            } => {
                plugins::on_acted(self, verb, ns, project, result);
                self.refresh_now()
            }
            Net::Log {
                path,
                offset,
                result,
            } => logs::on_answer(self, path, offset, result),
            Net::Tapped { lines } => {
                points::on_tapped(self, lines);
                None
            }
            Net::TapEnded { reason } => {
                points::on_tap_ended(self, reason);
                None
            }
            Net::Probed { host, row } => {
                if let Some(f) = &mut self.fleet {
                    f.answered(host, *row);
                }
                None
            }
            Net::ProbeDone => {
                fleet::on_round_done(self);
                None
            }
            Net::HostPlugins { host, result } => {
                fleet::on_host_plugins(self, host, result);
                None
            }
            Net::Outcome { host, outcome } => {
                fleet::on_outcome(self, host, outcome);
                None
            }
        }
    }

    /// The agent's data every screen shows: status, namespaces, plugins.
    fn on_refreshed(
        &mut self,
        at_ms: u64,
        status: Result<Status, ClientError>,
        namespaces: Option<Result<Vec<String>, ClientError>>,
        plugins: Option<Result<shared::api::PluginList, ClientError>>,
    ) {
        self.refreshing = false;
        match status {
            Ok(s) => {
                self.conn.succeeded(self.now);
                self.sample_throughput(at_ms, s.output.delivered_points);
                self.status = Some(s);
                self.status_at = Some(self.now);
            }
            Err(e) => {
                self.conn.failed(short_reason(&e), self.now);
                self.last_delivered = None;
            }
        }
        if let Some(ns) = &namespaces {
            self.token_refused = match ns {
                Err(ClientError::Unauthorized { sent, .. }) => Some(format!(
                    "the agent refused the token: agentctl sent {sent}; pass --token-file or --token (see 2 Namespaces)"
                )),
                _ => None,
            };
        }
        if let Some(ns) = namespaces {
            self.namespaces = feed(ns, &self.addr);
            self.ns_selected = self
                .ns_selected
                .min(self.namespace_list().len().saturating_sub(1));
        }
        if let Some(p) = plugins {
            self.plugins = feed(p.map(|l| l.plugins), &self.addr);
            let n = self.plugin_list().len();
            self.plugins_view.selected = self.plugins_view.selected.min(n.saturating_sub(1));
        }
    }

    fn sample_throughput(&mut self, at_ms: u64, delivered: u64) {
        if let Some((ms, before)) = self.last_delivered {
            let dt = at_ms.saturating_sub(ms);
            if let Some(rate) = (delivered.saturating_sub(before) * 1000).checked_div(dt) {
                self.throughput.push_back(rate);
                while self.throughput.len() > THROUGHPUT_SAMPLES {
                    self.throughput.pop_front();
                }
            }
        }
        self.last_delivered = Some((at_ms, delivered));
    }

    /// Shows `text` on the message line.
    pub(crate) fn flash(&mut self, text: String, error: bool) {
        self.flash = Some(Flash { text, error });
    }

    /// Shows what failed and why on the message line, in red.
    pub(crate) fn flash_err(&mut self, what: &str, e: &ClientError) {
        let text = format!("{what}: {}", crate::commands::describe(e, &self.addr));
        self.flash(text, true);
    }

    /// The frame's keys first (quit, help, an open confirmation, tabs, refresh), then the
    /// screen's.
    fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if self.help {
            self.help = false;
            return None;
        }
        if self.fleet_shown {
            if fleet::typing(self) {
                return fleet::on_key(self, key);
            }
            match key.code {
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Char('?') => self.help = true,
                KeyCode::Char('R') => return fleet::probe_now(self),
                _ => return fleet::on_key(self, key),
            }
            return None;
        }
        if let Some(c) = self.confirm.take() {
            return plugins::on_confirm_key(self, c, key);
        }
        if screens::typing(self) {
            return screens::on_key(self, key);
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(c @ '1'..='5') => self.tab = Tab::ALL[(c as u8 - b'1') as usize],
            KeyCode::Tab => self.tab = Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()],
            KeyCode::BackTab => {
                self.tab = Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
            }
            // An impatient reconnect: try now rather than at the backoff's next slot.
            KeyCode::Char('R') => return self.refresh_now(),
            KeyCode::Esc if self.fleet.is_some() && !screens::takes_esc(self) => {
                return self.back_to_fleet()
            }
            _ => return screens::on_key(self, key),
        }
        None
    }

    /// A left click switches tab or selects a row; the wheel scrolls what is shown.
    fn on_mouse(&mut self, m: MouseEvent) -> Option<Action> {
        if self.help {
            // Like any key: a click closes the overlay, the wheel leaves it open.
            self.help = !matches!(m.kind, MouseEventKind::Down(_));
            return None;
        }
        if self.fleet_shown {
            match m.kind {
                MouseEventKind::ScrollUp => fleet::on_wheel(self, true),
                MouseEventKind::ScrollDown => fleet::on_wheel(self, false),
                _ => {
                    if let (Some(ui::Target::Row(pos)), false) =
                        (ui::target_at(self, m.column, m.row), fleet::typing(self))
                    {
                        if let Some(f) = &mut self.fleet {
                            f.select_at(pos);
                        }
                    }
                }
            }
            return None;
        }
        if self.confirm.is_some() {
            // A stray click must neither confirm nor cancel: the prompt wants y or n.
            return None;
        }
        match m.kind {
            MouseEventKind::ScrollUp => screens::on_wheel(self, true),
            MouseEventKind::ScrollDown => screens::on_wheel(self, false),
            _ => match ui::target_at(self, m.column, m.row)? {
                ui::Target::Tab(tab) => self.tab = tab,
                ui::Target::Row(i) => screens::on_row_click(self, i),
            },
        }
        None
    }
}

fn feed<T>(result: Result<T, ClientError>, addr: &str) -> Feed<T> {
    match result {
        Ok(v) => Feed::Ready(v),
        Err(e) if e.is_not_offered() => Feed::NotOffered(e.to_string()),
        Err(e) => Feed::Failed(crate::commands::describe(&e, addr)),
    }
}

/// The banner has one line: the network error without the address (the header shows it) and
/// without the OS error number.
fn short_reason(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { reason, .. } => {
            let reason = crate::fmt::without_os_error(reason);
            format!("cannot reach the agent: {}", reason.to_lowercase())
        }
        ClientError::Api { status, message } => format!("status failed ({status}): {message}"),
        ClientError::Unauthorized { message, .. } => format!("status refused (401): {message}"),
        ClientError::Decode { reason, .. } => format!("unexpected status answer: {reason}"),
    }
}

fn batch(mut actions: Vec<Action>) -> Option<Action> {
    match actions.len() {
        0 => None,
        1 => actions.pop(),
        _ => Some(Action::Batch(actions)),
    }
}
