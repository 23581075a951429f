//! The TUI's state and how events change it: `App::update(event) -> Option<Action>`.
//!
//! Nothing here draws or talks to the network: drawing reads `App` (see `ui`), and the loop
//! performs the returned [`Action`]s, whose answers come back as [`Event::Net`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use shared::api::{LogChunk, PluginInfo, RunResponse, RunResult, Status};
use shared::ClientError;

use super::conn::Conn;
use super::event::{Event, Net, Verb};
use super::ui;

/// Throughput samples kept for the sparkline (one per refresh, about 2 minutes).
pub const THROUGHPUT_SAMPLES: usize = 60;
/// Log lines kept in memory while following.
pub const LOG_LINES_KEPT: usize = 10_000;
/// Lines asked for per `/log/offset` call.
pub const LOG_BATCH: u64 = 500;
/// When a file is opened, start this many bytes before its end rather than at its start.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// Lines (or list rows) one wheel notch scrolls, as in most terminal programs.
pub const WHEEL_LINES: usize = 3;

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Status, output and registry health, throughput.
    Overview,
    /// This host's namespaces.
    Namespaces,
    /// The plugin table and its detail pane.
    Plugins,
    /// Following a file.
    Logs,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Tab; 4] = [Tab::Overview, Tab::Namespaces, Tab::Plugins, Tab::Logs];

    /// The tab's title, without its number.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Namespaces => "Namespaces",
            Tab::Plugins => "Plugins",
            Tab::Logs => "Logs",
        }
    }

    /// Its place in [`Tab::ALL`].
    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

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
    /// Several at once.
    Batch(Vec<Action>),
}

/// A disruptive action waiting for `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// Update or disable.
    pub verb: Verb,
    /// The plugin.
    pub ns: String,
    /// The plugin.
    pub project: String,
    /// The plugin.
    pub repo: String,
}

/// The Plugins screen's own state.
#[derive(Debug, Clone, Default)]
pub struct PluginsView {
    /// Index of the selected row.
    pub selected: usize,
    /// The detail pane fills the screen (Enter) and scrolls.
    pub detail_open: bool,
    /// Scroll of the opened detail pane, in lines.
    pub detail_scroll: u16,
    /// Plugins with a request in flight from this console, by (ns, project).
    pub busy: BTreeSet<(String, String)>,
    /// The last on-demand run answers from this console, by (ns, project).
    pub runs: BTreeMap<(String, String), RunResponse>,
}

/// What a line of text input is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// The file to follow.
    Path,
    /// A search in the followed lines.
    Search,
}

/// The Logs screen's own state.
#[derive(Debug, Clone, Default)]
pub struct LogsView {
    /// Text being typed and what for.
    pub input: Option<(Prompt, String)>,
    /// The file followed.
    pub path: Option<String>,
    /// The lines read so far (the newest last).
    pub lines: VecDeque<String>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Whether a read is in flight.
    pub reading: bool,
    /// Whether the file was read at least once (the first read may jump near the end).
    pub opened: bool,
    /// Drop the first line of the next answer (it starts mid-line after a jump).
    pub skip_partial: bool,
    /// Following is paused (reads stop; the view stays put).
    pub paused: bool,
    /// Lines scrolled up from the newest; 0 follows the end.
    pub scroll: usize,
    /// The search term, matched case-insensitively.
    pub query: Option<String>,
    /// Long lines are cut at the right edge instead of wrapped (`w` toggles; wrapping is the
    /// default because the end of a long line is often the error).
    pub cut: bool,
    /// Why reading stopped, if it did.
    pub error: Option<String>,
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
            help: false,
            confirm: None,
            flash: None,
            quit: false,
            token_refused: None,
        }
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

    /// The plugins listed, empty when none are known.
    pub fn plugin_list(&self) -> &[PluginInfo] {
        match &self.plugins {
            Feed::Ready(p) => p,
            _ => &[],
        }
    }

    /// The namespaces listed, empty when none are known.
    pub fn namespace_list(&self) -> &[String] {
        match &self.namespaces {
            Feed::Ready(n) => n,
            _ => &[],
        }
    }

    /// The selected plugin.
    pub fn selected_plugin(&self) -> Option<&PluginInfo> {
        self.plugin_list().get(self.plugins_view.selected)
    }

    /// The newest run of a plugin: its listed last run or this console's on-demand run.
    pub fn last_run<'a>(&'a self, p: &'a PluginInfo) -> Option<&'a RunResult> {
        let mine = self
            .plugins_view
            .runs
            .get(&(p.ns.clone(), p.project.clone()))
            .and_then(|r| r.result.as_ref());
        match (p.last_run.as_ref(), mine) {
            (Some(a), Some(b)) => Some(if b.at >= a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The agent's log file for today, as a suggestion for the Logs screen.
    pub fn suggested_log(&self) -> String {
        let dir = self
            .status
            .as_ref()
            .and_then(|s| s.log_dir.clone())
            .unwrap_or_else(|| "/var/log".to_owned());
        let date = time::OffsetDateTime::from_unix_timestamp(self.now)
            .map(|t| t.date())
            .unwrap_or(time::Date::MIN);
        format!(
            "{}/agent.{:04}-{:02}-{:02}.log",
            dir.trim_end_matches('/'),
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    }

    /// Indexes of the followed lines that match the search.
    pub fn log_matches(&self) -> Vec<usize> {
        let Some(q) = self.logs.query.as_deref().map(str::to_lowercase) else {
            return Vec::new();
        };
        self.logs
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.to_lowercase().contains(&q))
            .map(|(i, _)| i)
            .collect()
    }

    fn on_tick(&mut self) -> Option<Action> {
        let mut actions = Vec::new();
        if !self.refreshing && self.conn.refresh_due(self.now, self.refresh_sent) {
            actions.push(self.start_refresh());
        }
        if let Some(a) = self.log_read() {
            actions.push(a);
        }
        batch(actions)
    }

    fn start_refresh(&mut self) -> Action {
        self.refreshing = true;
        self.refresh_sent = Some(self.now);
        Action::Refresh
    }

    /// The next read of the followed file, unless paused, stopped or already reading.
    fn log_read(&mut self) -> Option<Action> {
        let l = &mut self.logs;
        let path = l.path.clone()?;
        if l.reading || l.paused || l.error.is_some() {
            return None;
        }
        l.reading = true;
        Some(Action::ReadLog {
            path,
            offset: l.next_offset,
        })
    }

    fn on_net(&mut self, net: Net) -> Option<Action> {
        match net {
            Net::Refreshed {
                at_ms,
                status,
                namespaces,
                plugins,
            } => {
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
                    self.plugins_view.selected =
                        self.plugins_view.selected.min(n.saturating_sub(1));
                }
                None
            }
            Net::Ran {
                ns,
                project,
                result,
            } => {
                let key = (ns, project);
                self.plugins_view.busy.remove(&key);
                match result {
                    Ok(r) => {
                        let ok = r.result.as_ref().is_some_and(|x| x.ok);
                        let what = match &r.result {
                            Some(x) => crate::fmt::run_summary(x),
                            None => r.message.clone(),
                        };
                        self.flash(
                            format!(
                                "{}/{}: {} {what}",
                                key.0,
                                key.1,
                                if !r.ran {
                                    "not run:"
                                } else if ok {
                                    "ran, ok:"
                                } else {
                                    "ran, FAILED:"
                                }
                            ),
                            !ok,
                        );
                        self.plugins_view.runs.insert(key, r);
                    }
                    Err(e) => self.flash_err(&format!("{}/{}: run", key.0, key.1), &e),
                }
                // The list shows the new last run and state at once.
                self.refresh_now()
            }
            Net::Acted {
                verb,
                ns,
                project,
                result,
            } => {
                self.plugins_view
                    .busy
                    .remove(&(ns.clone(), project.clone()));
                match result {
                    Ok(r) => self.flash(format!("{ns}/{project}: {}", r.message), false),
                    Err(e) => self.flash_err(&format!("{ns}/{project}: {}", verb.word()), &e),
                }
                self.refresh_now()
            }
            Net::Log {
                path,
                offset,
                result,
            } => {
                if self.logs.path.as_deref() != Some(path.as_str()) {
                    return None;
                }
                self.logs.reading = false;
                match result {
                    Ok(chunk) => self.on_log_chunk(offset, chunk),
                    // Asked again at the next tick: the agent is away, or its reads are busy.
                    Err(e) if e.is_unreachable() || e.is_busy() => None,
                    Err(e) => {
                        self.logs.error = Some(crate::commands::describe(&e, &self.addr));
                        None
                    }
                }
            }
        }
    }

    fn refresh_now(&mut self) -> Option<Action> {
        if self.refreshing {
            None
        } else {
            Some(self.start_refresh())
        }
    }

    fn on_log_chunk(&mut self, offset: u64, chunk: LogChunk) -> Option<Action> {
        let l = &mut self.logs;
        if !l.opened {
            l.opened = true;
            if chunk.size > offset + LOG_TAIL_BYTES {
                // A long file: show its end rather than its first lines.
                l.next_offset = chunk.size - LOG_TAIL_BYTES;
                l.skip_partial = true;
                return self.log_read();
            }
        }
        if chunk.size < offset {
            l.lines.push_back(format!(
                "--- {} was truncated or rotated; reading from its start ---",
                chunk.path
            ));
            l.next_offset = 0;
            return self.log_read();
        }
        let full = chunk.lines.len() as u64 >= LOG_BATCH;
        let skip = usize::from(std::mem::take(&mut l.skip_partial) && !chunk.lines.is_empty());
        for line in chunk.lines.into_iter().skip(skip) {
            l.lines.push_back(line);
            if l.scroll > 0 {
                // Keep a scrolled view on the same lines while new ones arrive.
                l.scroll += 1;
            }
        }
        while l.lines.len() > LOG_LINES_KEPT {
            l.lines.pop_front();
        }
        l.scroll = l.scroll.min(l.lines.len());
        l.next_offset = chunk.next_offset;
        if full {
            self.log_read()
        } else {
            None
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

    fn flash(&mut self, text: String, error: bool) {
        self.flash = Some(Flash { text, error });
    }

    fn flash_err(&mut self, what: &str, e: &ClientError) {
        let text = format!("{what}: {}", crate::commands::describe(e, &self.addr));
        self.flash(text, true);
    }

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
        if let Some(c) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    Some(self.plugin_action(c.verb, c.ns, c.project, c.repo))
                }
                _ => {
                    self.flash(
                        format!("{} of {}/{} cancelled", c.verb.word(), c.ns, c.project),
                        false,
                    );
                    None
                }
            };
        }
        if self.logs.input.is_some() && self.tab == Tab::Logs {
            return self.on_input_key(key);
        }
        match key.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return None;
            }
            KeyCode::Char('?') => {
                self.help = true;
                return None;
            }
            KeyCode::Char(c @ '1'..='4') => {
                self.tab = Tab::ALL[(c as u8 - b'1') as usize];
                return None;
            }
            KeyCode::Tab => {
                self.tab = Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()];
                return None;
            }
            KeyCode::BackTab => {
                self.tab = Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()];
                return None;
            }
            KeyCode::Char('R') => {
                // An impatient reconnect: try now rather than at the backoff's next slot.
                return self.refresh_now();
            }
            _ => {}
        }
        match self.tab {
            Tab::Plugins => self.on_plugins_key(key),
            Tab::Logs => self.on_logs_key(key),
            Tab::Namespaces => {
                let last = self.namespace_list().len().saturating_sub(1);
                self.ns_selected = list_key(key.code, self.ns_selected, last);
                None
            }
            Tab::Overview => None,
        }
    }

    /// A left click switches tab or selects a row; the wheel scrolls what is shown.
    fn on_mouse(&mut self, m: MouseEvent) -> Option<Action> {
        if self.help {
            // Like any key: a click closes the overlay, the wheel leaves it open.
            self.help = !matches!(m.kind, MouseEventKind::Down(_));
            return None;
        }
        if self.confirm.is_some() {
            // A stray click must neither confirm nor cancel: the prompt wants y or n.
            return None;
        }
        let notch = match m.kind {
            MouseEventKind::ScrollUp => Some(true),
            MouseEventKind::ScrollDown => Some(false),
            _ => None,
        };
        if let Some(up) = notch {
            self.wheel(up);
            return None;
        }
        match ui::target_at(self, m.column, m.row)? {
            ui::Target::Tab(tab) => self.tab = tab,
            ui::Target::Row(i) => match self.tab {
                Tab::Namespaces => self.ns_selected = i,
                Tab::Plugins => self.plugins_view.selected = i,
                Tab::Overview | Tab::Logs => {}
            },
        }
        None
    }

    /// One wheel notch on whatever list or log the screen shows.
    fn wheel(&mut self, up: bool) {
        let step = |v: usize, max: usize| {
            if up {
                v.saturating_sub(WHEEL_LINES)
            } else {
                (v + WHEEL_LINES).min(max)
            }
        };
        match self.tab {
            Tab::Overview => {}
            Tab::Namespaces => {
                let last = self.namespace_list().len().saturating_sub(1);
                self.ns_selected = step(self.ns_selected, last);
            }
            Tab::Plugins if self.plugins_view.detail_open => {
                let v = &mut self.plugins_view;
                v.detail_scroll = step(usize::from(v.detail_scroll), usize::from(u16::MAX))
                    .try_into()
                    .unwrap_or(u16::MAX);
            }
            Tab::Plugins => {
                let last = self.plugin_list().len().saturating_sub(1);
                self.plugins_view.selected = step(self.plugins_view.selected, last);
            }
            Tab::Logs => {
                // Logs scroll counts lines up from the newest, so "up" adds.
                let max = self.log_scroll_max();
                let s = self.logs.scroll;
                self.logs.scroll = if up {
                    (s + WHEEL_LINES).min(max)
                } else {
                    s.saturating_sub(WHEEL_LINES)
                };
            }
        }
    }

    /// How far the log view scrolls up: until the first line is at the top of the view.
    pub fn log_scroll_max(&self) -> usize {
        let (width, height) = ui::log_text_size(self);
        ui::log_scroll_max(&self.logs.lines, width, height, !self.logs.cut)
    }

    fn on_plugins_key(&mut self, key: KeyEvent) -> Option<Action> {
        let n = self.plugin_list().len();
        let v = &mut self.plugins_view;
        if v.detail_open {
            match key.code {
                KeyCode::Esc | KeyCode::Enter => v.detail_open = false,
                KeyCode::Down | KeyCode::Char('j') => {
                    v.detail_scroll = v.detail_scroll.saturating_add(1)
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    v.detail_scroll = v.detail_scroll.saturating_sub(1)
                }
                KeyCode::PageDown => v.detail_scroll = v.detail_scroll.saturating_add(10),
                KeyCode::PageUp => v.detail_scroll = v.detail_scroll.saturating_sub(10),
                _ => return self.plugin_key_action(key),
            }
            return None;
        }
        match key.code {
            KeyCode::Down
            | KeyCode::Char('j')
            | KeyCode::Up
            | KeyCode::Char('k')
            | KeyCode::PageDown
            | KeyCode::PageUp
            | KeyCode::Home
            | KeyCode::Char('g')
            | KeyCode::End
            | KeyCode::Char('G') => {
                v.selected = list_key(key.code, v.selected, n.saturating_sub(1))
            }
            KeyCode::Enter if n > 0 => {
                v.detail_open = true;
                v.detail_scroll = 0;
            }
            _ => return self.plugin_key_action(key),
        }
        None
    }

    /// r, u, e, d on the selected plugin; update and disable ask first.
    fn plugin_key_action(&mut self, key: KeyEvent) -> Option<Action> {
        let p = self.selected_plugin()?;
        let (ns, project, repo) = (p.ns.clone(), p.project.clone(), p.repo.clone());
        if self
            .plugins_view
            .busy
            .contains(&(ns.clone(), project.clone()))
        {
            if matches!(key.code, KeyCode::Char('r' | 'u' | 'e' | 'd')) {
                self.flash(
                    format!("{ns}/{project}: a request is already going on"),
                    true,
                );
            }
            return None;
        }
        match key.code {
            KeyCode::Char('r') => {
                self.plugins_view.busy.insert((ns.clone(), project.clone()));
                self.flash(format!("{ns}/{project}: running..."), false);
                Some(Action::Run { ns, project, repo })
            }
            KeyCode::Char('e') => Some(self.plugin_action(Verb::Enable, ns, project, repo)),
            KeyCode::Char('u') | KeyCode::Char('d') => {
                let verb = if key.code == KeyCode::Char('u') {
                    Verb::Update
                } else {
                    Verb::Disable
                };
                self.confirm = Some(Confirm {
                    verb,
                    ns,
                    project,
                    repo,
                });
                None
            }
            _ => None,
        }
    }

    fn plugin_action(&mut self, verb: Verb, ns: String, project: String, repo: String) -> Action {
        self.plugins_view.busy.insert((ns.clone(), project.clone()));
        self.flash(format!("{ns}/{project}: {}...", verb.word()), false);
        Action::Plugin {
            verb,
            ns,
            project,
            repo,
        }
    }

    fn on_logs_key(&mut self, key: KeyEvent) -> Option<Action> {
        let max = self.log_scroll_max();
        let l = &mut self.logs;
        match key.code {
            KeyCode::Char('o') | KeyCode::Enter if l.input.is_none() => {
                let start = l.path.clone().unwrap_or_else(|| self.suggested_log());
                self.logs.input = Some((Prompt::Path, start));
            }
            KeyCode::Char('/') => l.input = Some((Prompt::Search, String::new())),
            KeyCode::Char(' ') | KeyCode::Char('p') if l.path.is_some() => {
                l.paused = !l.paused;
                return self.log_read();
            }
            KeyCode::Char('w') => l.cut = !l.cut,
            KeyCode::Up | KeyCode::Char('k') => l.scroll = (l.scroll + 1).min(max),
            KeyCode::Down | KeyCode::Char('j') => l.scroll = l.scroll.saturating_sub(1),
            KeyCode::PageUp => l.scroll = (l.scroll + 10).min(max),
            KeyCode::PageDown => l.scroll = l.scroll.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => l.scroll = max,
            KeyCode::End | KeyCode::Char('G') => l.scroll = 0,
            KeyCode::Char('n') => self.jump_match(true),
            KeyCode::Char('N') => self.jump_match(false),
            KeyCode::Esc => l.query = None,
            _ => {}
        }
        None
    }

    /// Scrolls so the next match above (`older`) or below the bottom line is the bottom line.
    fn jump_match(&mut self, older: bool) {
        let matches = self.log_matches();
        let n = self.logs.lines.len();
        if n == 0 {
            return;
        }
        let bottom = n - 1 - self.logs.scroll.min(n - 1);
        let target = if older {
            matches.iter().rev().find(|&&i| i < bottom)
        } else {
            matches.iter().find(|&&i| i > bottom)
        };
        match target {
            Some(&i) => self.logs.scroll = (n - 1 - i).min(self.log_scroll_max()),
            None => self.flash("no more matches".into(), false),
        }
    }

    fn on_input_key(&mut self, key: KeyEvent) -> Option<Action> {
        let (prompt, text) = self.logs.input.as_mut()?;
        let prompt = *prompt;
        match key.code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => self.logs.input = None,
            KeyCode::Enter => {
                let text = text.trim().to_owned();
                self.logs.input = None;
                return match prompt {
                    Prompt::Path if !text.is_empty() => self.open_log(text),
                    Prompt::Path => None,
                    Prompt::Search => {
                        self.logs.query = (!text.is_empty()).then_some(text);
                        // Show the newest match at the bottom of the view.
                        let n = self.logs.lines.len();
                        match self.log_matches().last() {
                            Some(&i) => self.logs.scroll = (n - 1 - i).min(self.log_scroll_max()),
                            None if self.logs.query.is_some() => {
                                self.flash("no line matches".into(), false)
                            }
                            None => {}
                        }
                        None
                    }
                };
            }
            _ => {}
        }
        None
    }

    fn open_log(&mut self, path: String) -> Option<Action> {
        self.logs = LogsView {
            path: Some(path),
            cut: self.logs.cut,
            ..LogsView::default()
        };
        self.log_read()
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
            let reason = match reason.find(" (os error") {
                Some(i) => &reason[..i],
                None => reason,
            };
            format!("cannot reach the agent: {}", reason.to_lowercase())
        }
        ClientError::Api { status, message } => format!("status failed ({status}): {message}"),
        ClientError::Unauthorized { message, .. } => format!("status refused (401): {message}"),
        ClientError::Decode { reason, .. } => format!("unexpected status answer: {reason}"),
    }
}

/// j/k, PgUp/PgDn, g/G (and Home/End) on a list of `last + 1` rows.
fn list_key(code: KeyCode, selected: usize, last: usize) -> usize {
    match code {
        KeyCode::Down | KeyCode::Char('j') => (selected + 1).min(last),
        KeyCode::Up | KeyCode::Char('k') => selected.saturating_sub(1),
        KeyCode::PageDown => (selected + 10).min(last),
        KeyCode::PageUp => selected.saturating_sub(10),
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => last,
        _ => selected,
    }
}

fn batch(mut actions: Vec<Action>) -> Option<Action> {
    match actions.len() {
        0 => None,
        1 => actions.pop(),
        _ => Some(Action::Batch(actions)),
    }
}
