//! Fleet: every host of the inventory as a live table (when agentctl starts with `--hosts`).
//!
//! The rows come from `fleet::probe` (a round asks every host, at most 64 at once, each within
//! its timeout; rows update as answers arrive, so a host that does not answer is a row that says
//! so, never a frozen screen). Rows are sorted by state, worst first, then name; `/` filters them
//! (a `fleet` filter expression such as `state!=ok,name=db-*`, or plain text matched in name,
//! address, state, version and namespaces). Enter opens the host in the single-agent screens,
//! Esc there comes back. Actions (`fleet::action`) go to the selected host, or after `a` and a
//! confirmation that says how many, to every host shown.

use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row as TableRow, Table, Wrap};
use ratatui::Frame;
use shared::api::PluginInfo;
use unicode_width::UnicodeWidthStr;

use super::{first_shown, list_key, table_row_at, table_rows, wheel_step};
use crate::fleet::action::{Action as HostAction, Outcome};
use crate::fleet::filter::Filter;
use crate::fleet::inventory::Host;
use crate::fleet::probe::{Row, State};
use crate::fmt::{duration, without_os_error};
use crate::tui::app::{Action, App};
use crate::tui::ui::{centered, BAD, GOOD, LABEL};

/// Seconds between the end of one probe round and the start of the next.
pub const FLEET_REFRESH_SECS: i64 = 5;
/// Lines of the selected host's detail under the table (borders included).
const DETAIL_HEIGHT: u16 = 4;
/// Sort rank of a host not asked yet (after every state of `State::rank`).
const UNKNOWN_RANK: u8 = 4;

/// A plugin action, picked on the Fleet screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginVerb {
    /// `/plugins/update`.
    Update,
    /// `/plugins/run`.
    Run,
    /// `/plugins/enable`.
    Enable,
    /// `/plugins/disable`.
    Disable,
}

impl PluginVerb {
    /// The word shown to people.
    pub fn word(self) -> &'static str {
        match self {
            PluginVerb::Update => "update",
            PluginVerb::Run => "run",
            PluginVerb::Enable => "enable",
            PluginVerb::Disable => "disable",
        }
    }

    /// The action for the plugin `ns`/`repo`.
    pub fn action(self, ns: String, repo: String) -> HostAction {
        match self {
            PluginVerb::Update => HostAction::PluginUpdate { ns, repo },
            PluginVerb::Run => HostAction::PluginRun {
                ns,
                repo,
                timeout: None,
                param: None,
            },
            PluginVerb::Enable => HostAction::PluginEnable { ns, repo },
            PluginVerb::Disable => HostAction::PluginDisable { ns, repo },
        }
    }
}

/// What a line of text input on the Fleet screen is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetPrompt {
    /// The filter (applied as it is typed; Esc puts the previous one back).
    Filter {
        /// The filter before the prompt opened.
        before: String,
    },
    /// `NS REPO` of the plugin to act on.
    Plugin(PluginVerb),
}

/// Choosing the plugin to act on, from the selected host's `/plugins/list`.
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    /// What will be done with it.
    pub verb: PluginVerb,
    /// The host whose list is shown (index in the inventory).
    pub host: usize,
    /// The list once it came (`Err`: why not); `None` while asked.
    pub plugins: Option<Result<Vec<PluginInfo>, String>>,
    /// The highlighted entry; one past the plugins is "type it".
    pub selected: usize,
}

/// An action waiting for `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfirm {
    /// What to do.
    pub action: HostAction,
    /// On which hosts (indexes in the inventory).
    pub hosts: Vec<usize>,
    /// The sentence asked, e.g. `plugins update web/nginx on 12 hosts (every host shown)?`.
    pub question: String,
}

/// An action going on over some hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    /// What is done, for the message line.
    pub what: String,
    /// Hosts asked.
    pub total: usize,
    /// Answers so far by result: ok, failed, error.
    pub ok: usize,
    /// The agent said it did not work.
    pub failed: usize,
    /// No usable answer.
    pub error: usize,
}

/// The Fleet screen's state.
#[derive(Debug, Clone)]
pub struct FleetView {
    /// The inventory, in file order.
    pub hosts: Arc<[Host]>,
    /// The last answer of each host (by inventory index); `None` until it first answers.
    pub rows: Vec<Option<Row>>,
    /// The last action's outcome on each host, shown in its row.
    pub outcomes: Vec<Option<Outcome>>,
    /// The hosts shown, sorted (indexes into `hosts`).
    pub shown: Vec<usize>,
    /// The selected host (index into `hosts`): once the user picked it, it stays selected as
    /// rows move; before, the selection stays on the top row.
    pub selected: Option<usize>,
    /// The user moved the selection.
    pub picked: bool,
    /// The filter's text.
    pub filter: String,
    /// Why the filter's text is not a valid expression (then nothing is filtered out).
    pub filter_error: Option<String>,
    /// Actions go to every host shown rather than the selected one.
    pub all_shown: bool,
    /// Text being typed and what for.
    pub input: Option<(FleetPrompt, String)>,
    /// The plugin picker, when open.
    pub picker: Option<Picker>,
    /// An action waiting for confirmation.
    pub confirm: Option<FleetConfirm>,
    /// A round of probes is going on.
    pub probing: bool,
    /// Answers in the current round.
    pub answered: usize,
    /// When the last round ended (unix seconds).
    pub round_done: Option<i64>,
    /// The action going on, if one is.
    pub acting: Option<Acting>,
    compiled: Filter,
}

impl FleetView {
    /// The Fleet screen over `hosts`, nothing asked yet.
    pub fn new(hosts: Vec<Host>) -> FleetView {
        let n = hosts.len();
        let mut v = FleetView {
            hosts: hosts.into(),
            rows: vec![None; n],
            outcomes: vec![None; n],
            shown: Vec::new(),
            selected: None,
            picked: false,
            filter: String::new(),
            filter_error: None,
            all_shown: false,
            input: None,
            picker: None,
            confirm: None,
            probing: false,
            answered: 0,
            round_done: None,
            acting: None,
            compiled: Filter::default(),
        };
        v.resort();
        v
    }

    /// Sets the filter from its text: an expression when it has an operator, else plain text.
    pub fn set_filter(&mut self, text: &str) {
        self.filter = text.to_owned();
        (self.compiled, self.filter_error) = if is_expression(text) {
            match Filter::parse(text) {
                Ok(f) => (f, None),
                Err(e) => (Filter::default(), Some(e)),
            }
        } else {
            (Filter::default(), None)
        };
        self.resort();
    }

    /// Whether host `i` passes the filter.
    pub fn passes(&self, i: usize) -> bool {
        let host = &self.hosts[i];
        let row = self.rows[i].as_ref();
        let text = self.filter.trim();
        if text.is_empty() || self.filter_error.is_some() {
            return true;
        }
        if !is_expression(text) {
            let t = text.to_lowercase();
            let has = |s: &str| s.to_lowercase().contains(&t);
            return has(&host.name)
                || has(&host.addr)
                || row.is_some_and(|r| {
                    has(r.state.name())
                        || r.version().is_some_and(has)
                        || r.namespaces.iter().any(|n| has(n))
                });
        }
        match row {
            Some(r) => self.compiled.matches(r),
            // Not asked yet: only name and address terms can be decided.
            None => !self.compiled.needs_probe() && self.compiled.matches_host(host),
        }
    }

    /// Recomputes the hosts shown and their order: state (worst first), then name.
    pub fn resort(&mut self) {
        let mut shown: Vec<usize> = (0..self.hosts.len()).filter(|&i| self.passes(i)).collect();
        shown.sort_by_key(|&i| self.key(i));
        self.shown = shown;
        self.keep_selection();
    }

    /// Moves host `i` alone to its place after its answer changed: a search and a shift
    /// rather than a sort, since a round brings one answer per host.
    fn replace(&mut self, i: usize) {
        if let Some(p) = self.shown.iter().position(|&j| j == i) {
            self.shown.remove(p);
        }
        if self.passes(i) {
            let key = self.key(i);
            let at = self.shown.partition_point(|&j| self.key(j) < key);
            self.shown.insert(at, i);
        }
        self.keep_selection();
    }

    /// Before the user moved it, the selection is the top row; after, it stays on its host
    /// while that host is shown.
    fn keep_selection(&mut self) {
        if !self.picked || self.selected.is_none_or(|s| !self.shown.contains(&s)) {
            self.selected = self.shown.first().copied();
        }
    }

    /// The sort key of host `i`: state (worst first), name, place in the inventory.
    fn key(&self, i: usize) -> (u8, &str, usize) {
        (self.rank(i), self.hosts[i].name.as_str(), i)
    }

    fn rank(&self, i: usize) -> u8 {
        self.rows[i]
            .as_ref()
            .map_or(UNKNOWN_RANK, |r| r.state.rank())
    }

    /// The selected host's place in `shown`.
    pub fn position(&self) -> usize {
        self.selected
            .and_then(|s| self.shown.iter().position(|&i| i == s))
            .unwrap_or(0)
    }

    /// Selects the host at `pos` in `shown`.
    pub fn select_at(&mut self, pos: usize) {
        if let Some(&i) = self.shown.get(pos) {
            self.selected = Some(i);
            self.picked = true;
        }
    }

    /// Hosts per state, in `STATE_NAMES` order, then those not asked yet.
    pub fn counts(&self) -> [usize; 5] {
        let mut c = [0; 5];
        for r in &self.rows {
            c[usize::from(r.as_ref().map_or(UNKNOWN_RANK, |r| r.state.rank()))] += 1;
        }
        c
    }

    /// A probe's answer for host `i`.
    pub fn answered(&mut self, i: usize, row: Row) {
        if let Some(slot) = self.rows.get_mut(i) {
            *slot = Some(row);
            self.answered += 1;
            self.replace(i);
        }
    }

    /// The hosts an action goes to: the selected one, or every host shown.
    pub fn targets(&self) -> Vec<usize> {
        if self.all_shown {
            self.shown.clone()
        } else {
            self.selected.into_iter().collect()
        }
    }

    /// An action's outcome on host `i`.
    pub fn outcome(&mut self, i: usize, o: Outcome) {
        if let Some(a) = &mut self.acting {
            match o.result {
                "ok" => a.ok += 1,
                "failed" => a.failed += 1,
                _ => a.error += 1,
            }
        }
        if let Some(slot) = self.outcomes.get_mut(i) {
            *slot = Some(o);
        }
    }
}

/// Whether the filter's text is a `fleet` filter expression rather than plain text.
fn is_expression(text: &str) -> bool {
    text.contains(['=', '<', '>'])
}

/// The fleet, which exists whenever this screen is routed to.
fn view(app: &mut App) -> Option<&mut FleetView> {
    app.fleet.as_mut()
}

/// Whether a prompt, the picker or a confirmation has the keys.
pub(crate) fn typing(app: &App) -> bool {
    app.fleet
        .as_ref()
        .is_some_and(|f| f.input.is_some() || f.picker.is_some() || f.confirm.is_some())
}

/// A probe round is due at `now`.
pub(crate) fn on_tick(app: &mut App) -> Option<Action> {
    let now = app.now;
    let f = view(app)?;
    let due = f.round_done.is_none_or(|t| now - t >= FLEET_REFRESH_SECS);
    (!f.probing && due).then(|| start_round(f))
}

/// `R`: ask every host now (unless a round is going on).
pub(crate) fn probe_now(app: &mut App) -> Option<Action> {
    let f = view(app)?;
    (!f.probing).then(|| start_round(f))
}

fn start_round(f: &mut FleetView) -> Action {
    f.probing = true;
    f.answered = 0;
    Action::Probe
}

/// The round ended (every host answered or timed out).
pub(crate) fn on_round_done(app: &mut App) {
    let now = app.now;
    if let Some(f) = view(app) {
        f.probing = false;
        f.round_done = Some(now);
    }
}

/// `/plugins/list` of the picker's host answered.
pub(crate) fn on_host_plugins(app: &mut App, host: usize, result: Result<Vec<PluginInfo>, String>) {
    if let Some(p) = view(app).and_then(|f| f.picker.as_mut()) {
        if p.host == host && p.plugins.is_none() {
            p.plugins = Some(result);
        }
    }
}

/// An action finished on host `i`; the last one says how it went, in one line.
pub(crate) fn on_outcome(app: &mut App, i: usize, o: Outcome) {
    let Some(f) = view(app) else { return };
    f.outcome(i, o);
    let Some(a) = f.acting.clone() else { return };
    if a.ok + a.failed + a.error < a.total {
        return;
    }
    f.acting = None;
    // Ask again soon: the rows should show what the action changed.
    f.round_done = None;
    // The counts first: a long plugin address must not push them off a narrow screen.
    let text = format!(
        "{} ok, {} failed, {} no answer{} · {}",
        a.ok,
        a.failed,
        a.error,
        if a.ok == a.total {
            ""
        } else {
            " (each row says why)"
        },
        a.what
    );
    app.flash(text, a.ok < a.total);
}

pub(crate) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let f = view(app)?;
    if let Some(c) = f.confirm.take() {
        return match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => start(app, c),
            _ => {
                app.flash("cancelled".into(), false);
                None
            }
        };
    }
    if f.input.is_some() {
        return on_input_key(app, key);
    }
    if f.picker.is_some() {
        return on_picker_key(app, key);
    }
    let last = f.shown.len().saturating_sub(1);
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
            let pos = list_key(key.code, f.position(), last);
            f.select_at(pos);
        }
        KeyCode::Enter => return open_selected(app),
        KeyCode::Char('/') => {
            let before = f.filter.clone();
            f.input = Some((FleetPrompt::Filter { before }, f.filter.clone()));
        }
        KeyCode::Esc if !f.filter.is_empty() => f.set_filter(""),
        KeyCode::Char('a') => f.all_shown = !f.all_shown,
        KeyCode::Char('u') => return ask(app, HostAction::Update),
        KeyCode::Char('p') => return pick(app, PluginVerb::Update),
        KeyCode::Char('r') => return pick(app, PluginVerb::Run),
        KeyCode::Char('e') => return pick(app, PluginVerb::Enable),
        KeyCode::Char('d') => return pick(app, PluginVerb::Disable),
        _ => {}
    }
    None
}

fn open_selected(app: &mut App) -> Option<Action> {
    let i = view(app)?.selected?;
    Some(app.open_host(i))
}

/// Opens the plugin picker on the selected host's list.
fn pick(app: &mut App, verb: PluginVerb) -> Option<Action> {
    let f = view(app)?;
    let Some(host) = f.selected else {
        app.flash("no host selected".into(), true);
        return None;
    };
    f.picker = Some(Picker {
        verb,
        host,
        plugins: None,
        selected: 0,
    });
    Some(Action::HostPlugins { host })
}

fn on_picker_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let f = view(app)?;
    let p = f.picker.as_mut()?;
    let listed = match &p.plugins {
        Some(Ok(list)) => list.len(),
        _ => 0,
    };
    match key.code {
        KeyCode::Esc => f.picker = None,
        KeyCode::Enter => {
            let p = f.picker.take()?;
            let chosen = match &p.plugins {
                Some(Ok(list)) => list.get(p.selected),
                _ => None,
            };
            return match chosen {
                Some(plugin) => {
                    let action = p.verb.action(plugin.ns.clone(), plugin.repo.clone());
                    ask(app, action)
                }
                None => {
                    f.input = Some((FleetPrompt::Plugin(p.verb), String::new()));
                    None
                }
            };
        }
        code => p.selected = list_key(code, p.selected, listed),
    }
    None
}

fn on_input_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let f = view(app)?;
    let (prompt, text) = f.input.as_mut()?;
    match key.code {
        KeyCode::Char(c) => text.push(c),
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Esc => {
            if let Some((FleetPrompt::Filter { before }, _)) = f.input.take() {
                f.set_filter(&before);
            }
            return None;
        }
        KeyCode::Enter => {
            let (prompt, text) = f.input.take()?;
            return match prompt {
                FleetPrompt::Filter { .. } => None,
                FleetPrompt::Plugin(verb) => {
                    let mut words = text.split_whitespace();
                    match (words.next(), words.next(), words.next()) {
                        (Some(ns), Some(repo), None) => {
                            ask(app, verb.action(ns.to_owned(), repo.to_owned()))
                        }
                        _ => {
                            app.flash(
                                "write the plugin's namespace and repository: NS REPO".into(),
                                true,
                            );
                            None
                        }
                    }
                }
            };
        }
        _ => return None,
    }
    if matches!(prompt, FleetPrompt::Filter { .. }) {
        let text = text.clone();
        f.set_filter(&text);
    }
    None
}

/// Asks before an action on every host shown, and before an update or disable on one host;
/// starts the others at once.
fn ask(app: &mut App, action: HostAction) -> Option<Action> {
    let f = view(app)?;
    if f.acting.is_some() {
        app.flash(
            "an action is still going on; wait for its answers".into(),
            true,
        );
        return None;
    }
    let hosts = f.targets();
    if hosts.is_empty() {
        app.flash("no host shown".into(), true);
        return None;
    }
    let what = describe(&action);
    let on = if f.all_shown {
        format!(
            "on {} (every host shown{})",
            crate::fmt::count(hosts.len() as u64, "host"),
            if f.filter.is_empty() {
                String::new()
            } else {
                format!(", filter {}", f.filter)
            }
        )
    } else {
        format!("on {}", f.hosts[hosts[0]].name)
    };
    let c = FleetConfirm {
        question: format!("{what} {on}?"),
        action,
        hosts,
    };
    let harmless = matches!(
        c.action,
        HostAction::Update | HostAction::PluginRun { .. } | HostAction::PluginEnable { .. }
    );
    if f.all_shown || !harmless {
        f.confirm = Some(c);
        None
    } else {
        start(app, c)
    }
}

/// `update`, `plugins update web/nginx`: what an action does, for people.
fn describe(action: &HostAction) -> String {
    match action {
        HostAction::Update => "update (refresh from the registry)".into(),
        HostAction::PluginUpdate { ns, repo }
        | HostAction::PluginRun { ns, repo, .. }
        | HostAction::PluginEnable { ns, repo }
        | HostAction::PluginDisable { ns, repo } => format!("{} {ns} {repo}", action.name()),
    }
}

fn start(app: &mut App, c: FleetConfirm) -> Option<Action> {
    let f = view(app)?;
    let what = format!(
        "{} on {}",
        describe(&c.action),
        crate::fmt::count(c.hosts.len() as u64, "host")
    );
    f.acting = Some(Acting {
        what: what.clone(),
        total: c.hosts.len(),
        ok: 0,
        failed: 0,
        error: 0,
    });
    for i in &c.hosts {
        f.outcomes[*i] = None;
    }
    app.flash(format!("{what}..."), false);
    Some(Action::Fleet {
        action: c.action,
        hosts: c.hosts,
    })
}

pub(crate) fn on_wheel(app: &mut App, up: bool) {
    if let Some(f) = view(app) {
        let last = f.shown.len().saturating_sub(1);
        let pos = wheel_step(f.position(), last, up);
        f.select_at(pos);
    }
}

/// Where the table and the detail are in the screen's body.
fn split(body: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Min(4), Constraint::Length(DETAIL_HEIGHT)]).areas(body)
}

/// The position in `shown` of the host drawn on row `y` of the body.
pub(crate) fn row_at(f: &FleetView, body: Rect, y: u16) -> Option<usize> {
    table_row_at(split(body)[0], f.position(), f.shown.len(), y)
}

pub(crate) fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    let Some(f) = &app.fleet else { return &[] };
    if f.confirm.is_some() {
        &[("y", "confirm"), ("n/Esc", "cancel")]
    } else if f.picker.is_some() {
        &[("j/k", "select"), ("Enter", "choose"), ("Esc", "cancel")]
    } else if let Some((prompt, _)) = &f.input {
        match prompt {
            FleetPrompt::Filter { .. } => &[("Enter", "keep filter"), ("Esc", "cancel")],
            FleetPrompt::Plugin(_) => &[("Enter", "act"), ("Esc", "cancel")],
        }
    } else {
        &[
            ("Enter", "open"),
            ("/", "filter"),
            ("a", "all shown"),
            ("u", "update"),
            ("p/r/e/d", "plugin"),
            ("?", "help"),
        ]
    }
}

/// The two header lines: the summary, then the filter, the target and the round.
pub(crate) fn draw_header(frame: &mut Frame, f: &FleetView, now: i64, head: Rect, sub: Rect) {
    let [bad, unauth, degraded, ok, asking] = f.counts();
    let parts = |long: bool| {
        let mut p = vec![format!("{ok} ok")];
        for (n, word, short) in [
            (degraded, "degraded", "degr"),
            (bad, "unreachable", "unreach"),
            (unauth, "unauthorized", "unauth"),
            (asking, "asking", "new"),
        ] {
            if n > 0 {
                p.push(format!("{n} {}", if long { word } else { short }));
            }
        }
        p.join(", ")
    };
    let lead = format!(
        " fleet · {}: ",
        crate::fmt::count(f.hosts.len() as u64, "host")
    );
    let mut summary = parts(true);
    if lead.width() + summary.width() > usize::from(head.width) {
        summary = parts(false);
    }
    let state_style = if bad + unauth > 0 {
        BAD
    } else if degraded > 0 {
        Style::new().fg(Color::Yellow)
    } else {
        GOOD
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(lead, Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(summary, state_style),
        ])),
        head,
    );
    let mut left = vec![Span::styled(" filter ", LABEL)];
    match (&f.input, f.filter.is_empty()) {
        (Some((FleetPrompt::Filter { .. }, t)), _) => {
            left.push(Span::raw(format!("/{t}")));
            left.push(Span::styled(
                "█",
                Style::new().add_modifier(Modifier::SLOW_BLINK),
            ));
        }
        (_, true) => left.push(Span::raw("none (/)")),
        (_, false) => left.push(Span::raw(f.filter.clone())),
    }
    if let Some(e) = &f.filter_error {
        left.push(Span::styled(format!(" ({e})"), BAD));
    }
    left.push(Span::raw(format!(
        " · {} of {} shown · target ",
        f.shown.len(),
        f.hosts.len()
    )));
    left.push(Span::styled(
        if f.all_shown {
            format!("all {} shown", f.shown.len())
        } else {
            "selected".to_owned()
        },
        if f.all_shown {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::new()
        },
    ));
    frame.render_widget(Paragraph::new(Line::from(left)), sub);
    let round = if f.probing {
        format!("asking {}/{} ", f.answered, f.hosts.len())
    } else {
        match f.round_done {
            Some(t) => format!("asked {} ago ", duration((now - t).max(0) as u64)),
            None => String::new(),
        }
    };
    frame.render_widget(Paragraph::new(round).right_aligned(), sub);
}

/// The table of hosts and the selected host's detail.
pub(crate) fn draw(frame: &mut Frame, f: &FleetView, body: Rect) {
    let [table_area, detail_area] = split(body);
    let pos = f.position();
    let visible = table_rows(table_area);
    let first = first_shown(pos, visible);
    // Only the visible window of rows is built, so 1,000 hosts cost what a screenful costs.
    let rows = f
        .shown
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(p, &i)| {
            let host = &f.hosts[i];
            let row = f.rows[i].as_ref();
            let (state, style) = match row.map(|r| &r.state) {
                None => ("…".to_owned(), Style::new().fg(Color::DarkGray)),
                Some(s) => (s.name().to_owned(), state_style(s)),
            };
            let st = row.and_then(|r| r.status.as_ref());
            let cell = |v: Option<String>| Line::from(v.unwrap_or_else(|| "-".into()));
            let (note, note_style) = note(f, i);
            let mut r = TableRow::new(vec![
                Line::from(host.name.as_str()),
                Line::styled(state, style),
                cell(row.and_then(|r| r.version().map(str::to_owned))),
                cell(st.map(|s| duration(s.uptime_secs))),
                cell(st.map(|s| s.output.spool_batches.to_string())),
                cell(st.map(|s| s.output.dropped_points.to_string())),
                Line::styled(note, note_style),
            ]);
            if p == pos {
                r = r.style(Style::new().add_modifier(Modifier::REVERSED));
            }
            r
        });
    let t = Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Fill(3),
        ],
    )
    .header(
        TableRow::new(["HOST", "STATE", "VERSION", "UP", "SPOOL", "DROP", "PROBLEM"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" Fleet ").title_bottom(format!(
        " {}/{} ",
        if f.shown.is_empty() { 0 } else { pos + 1 },
        f.shown.len()
    )));
    frame.render_widget(t, table_area);
    detail(frame, f, detail_area);
}

fn state_style(s: &State) -> Style {
    match s {
        State::Ok => GOOD,
        State::Degraded { .. } => Style::new().fg(Color::Yellow),
        State::Unreachable { .. } | State::Unauthorized { .. } => BAD,
    }
}

/// The row's last column: the last action's outcome on it, else what is wrong.
fn note(f: &FleetView, i: usize) -> (String, Style) {
    if let Some(o) = &f.outcomes[i] {
        let style = if o.is_ok() { GOOD } else { BAD };
        return (outcome_line(o), style);
    }
    match f.rows[i].as_ref().map(|r| &r.state) {
        None => ("asking...".into(), Style::new().fg(Color::DarkGray)),
        Some(State::Ok) => (String::new(), Style::new()),
        Some(State::Degraded { reasons }) => (
            reasons
                .iter()
                .map(|r| r.label())
                .collect::<Vec<_>>()
                .join(", "),
            Style::new().fg(Color::Yellow),
        ),
        Some(State::Unreachable { error } | State::Unauthorized { error }) => {
            (without_os_error(error).to_owned(), BAD)
        }
    }
}

/// An outcome in one line: its result word (unless the text starts with it), then the text.
fn outcome_line(o: &Outcome) -> String {
    let text = o.text.replace('\n', " ");
    if text.starts_with(o.result) {
        text
    } else {
        format!("{}: {text}", o.result)
    }
}

fn detail(frame: &mut Frame, f: &FleetView, area: Rect) {
    let Some(i) = f.selected else {
        frame.render_widget(
            Paragraph::new(if f.hosts.is_empty() {
                "The inventory is empty."
            } else {
                "No host matches the filter (Esc clears it)."
            })
            .block(Block::bordered()),
            area,
        );
        return;
    };
    let host = &f.hosts[i];
    let row = f.rows[i].as_ref();
    let mut text = match row.map(|r| &r.state) {
        None => "asking...".to_owned(),
        Some(State::Ok) => "ok".to_owned(),
        Some(State::Degraded { reasons }) => reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        Some(State::Unreachable { error } | State::Unauthorized { error }) => {
            without_os_error(error).to_owned()
        }
    };
    if let Some(o) = &f.outcomes[i] {
        text = format!("{text} · last action: {}", outcome_line(o));
    }
    let asked = row
        .map(|r| format!(" · answered in {} ms", r.elapsed.as_millis()))
        .unwrap_or_default();
    let ns = row
        .filter(|r| !r.namespaces.is_empty())
        .map(|r| format!(" · ns {}", r.namespaces.join(", ")))
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(" {} {}{ns}{asked} ", host.name, host.addr))),
        area,
    );
}

/// The picker and the confirmation, over the table.
pub(crate) fn draw_overlays(frame: &mut Frame, f: &FleetView) {
    if let Some(p) = &f.picker {
        let host = &f.hosts[p.host].name;
        let mut lines = Vec::new();
        let (list, note): (&[PluginInfo], Option<String>) = match &p.plugins {
            None => (&[], Some(format!("asking {host} for its plugins..."))),
            Some(Err(e)) => (
                &[],
                Some(format!("{host}'s plugin list: {}", without_os_error(e))),
            ),
            Some(Ok(l)) if l.is_empty() => (&[], Some(format!("{host} has no plugins"))),
            Some(Ok(l)) => (l, None),
        };
        if let Some(n) = note {
            lines.push(Line::styled(n, Style::new().fg(Color::DarkGray)));
        }
        let area = centered(frame.area(), 64, 14);
        let rows = usize::from(area.height.saturating_sub(3));
        let first = first_shown(p.selected, rows);
        let entries = list
            .iter()
            .map(|pl| format!("{} {}  ({})", pl.ns, pl.project, pl.repo))
            .chain(std::iter::once(
                "other: type the namespace and repository".into(),
            ));
        for (k, e) in entries.enumerate().skip(first).take(rows) {
            lines.push(if k == p.selected {
                Line::styled(e, Style::new().add_modifier(Modifier::REVERSED))
            } else {
                Line::from(e)
            });
        }
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(format!(" plugin to {} (from {host}) ", p.verb.word()))
                    .border_style(Style::new().fg(Color::Cyan)),
            ),
            area,
        );
    }
    if let Some((FleetPrompt::Plugin(verb), t)) = &f.input {
        let area = centered(frame.area(), 64, 4);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(format!("plugin to {}: NS REPO", verb.word())),
                Line::from(vec![
                    Span::raw(t.clone()),
                    Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
                ]),
            ])
            .block(Block::bordered().title(" plugin ")),
            area,
        );
    }
    if let Some(c) = &f.confirm {
        crate::tui::ui::confirm_box(frame, 64, 6, vec![Line::from(c.question.clone())]);
    }
}
