//! Plugins: the live table, the detail pane with the last run's output, the actions (run,
//! update, enable, disable) and the confirmation prompt for the disruptive ones.

use std::collections::{BTreeMap, BTreeSet};

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use shared::api::{ActionResponse, PluginInfo, RunResponse, RunResult};
use shared::ClientError;

use super::{first_shown, list_key, table_row_at, table_rows, wheel_step};
use crate::commands::plugins::{interval, state};
use crate::fmt::{age, run_summary};
use crate::tui::app::{Action, App, Feed};
use crate::tui::event::Verb;
use crate::tui::ui::{BAD, GOOD, LABEL};

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

impl App {
    /// The plugins listed, empty when none are known.
    pub fn plugin_list(&self) -> &[PluginInfo] {
        match &self.plugins {
            Feed::Ready(p) => p,
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
}

pub(super) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let n = app.plugin_list().len();
    let v = &mut app.plugins_view;
    if v.detail_open {
        match key.code {
            KeyCode::Esc | KeyCode::Enter => v.detail_open = false,
            KeyCode::Down | KeyCode::Char('j') => {
                v.detail_scroll = v.detail_scroll.saturating_add(1)
            }
            KeyCode::Up | KeyCode::Char('k') => v.detail_scroll = v.detail_scroll.saturating_sub(1),
            KeyCode::PageDown => v.detail_scroll = v.detail_scroll.saturating_add(10),
            KeyCode::PageUp => v.detail_scroll = v.detail_scroll.saturating_sub(10),
            _ => return key_action(app, key),
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
        | KeyCode::Char('G') => v.selected = list_key(key.code, v.selected, n.saturating_sub(1)),
        KeyCode::Enter if n > 0 => {
            v.detail_open = true;
            v.detail_scroll = 0;
        }
        _ => return key_action(app, key),
    }
    None
}

/// r, u, e, d on the selected plugin; update and disable ask first.
fn key_action(app: &mut App, key: KeyEvent) -> Option<Action> {
    let p = app.selected_plugin()?;
    let (ns, project, repo) = (p.ns.clone(), p.project.clone(), p.repo.clone());
    if p.kind == shared::api::PLUGIN_BUILTIN {
        if matches!(key.code, KeyCode::Char('r' | 'u' | 'e' | 'd')) {
            app.flash(
                format!("{ns}/{project} is built in: it runs on its schedule only"),
                true,
            );
        }
        return None;
    }
    if app
        .plugins_view
        .busy
        .contains(&(ns.clone(), project.clone()))
    {
        if matches!(key.code, KeyCode::Char('r' | 'u' | 'e' | 'd')) {
            app.flash(
                format!("{ns}/{project}: a request is already going on"),
                true,
            );
        }
        return None;
    }
    match key.code {
        KeyCode::Char('r') => {
            app.plugins_view.busy.insert((ns.clone(), project.clone()));
            app.flash(format!("{ns}/{project}: running..."), false);
            Some(Action::Run { ns, project, repo })
        }
        KeyCode::Char('e') => Some(act(app, Verb::Enable, ns, project, repo)),
        KeyCode::Char('u') | KeyCode::Char('d') => {
            let verb = if key.code == KeyCode::Char('u') {
                Verb::Update
            } else {
                Verb::Disable
            };
            app.confirm = Some(Confirm {
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

/// A key while `c` waits for confirmation: y (or Enter) sends it, anything else cancels.
pub(crate) fn on_confirm_key(app: &mut App, c: Confirm, key: KeyEvent) -> Option<Action> {
    match key.code {
        KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
            Some(act(app, c.verb, c.ns, c.project, c.repo))
        }
        _ => {
            app.flash(
                format!("{} of {}/{} cancelled", c.verb.word(), c.ns, c.project),
                false,
            );
            None
        }
    }
}

fn act(app: &mut App, verb: Verb, ns: String, project: String, repo: String) -> Action {
    app.plugins_view.busy.insert((ns.clone(), project.clone()));
    app.flash(format!("{ns}/{project}: {}...", verb.word()), false);
    Action::Plugin {
        verb,
        ns,
        project,
        repo,
    }
}

/// `/plugins/run` answered.
pub(crate) fn on_ran(
    app: &mut App,
    ns: String,
    project: String,
    result: Result<RunResponse, ClientError>,
) {
    let key = (ns, project);
    app.plugins_view.busy.remove(&key);
    match result {
        Ok(r) => {
            let ok = r.result.as_ref().is_some_and(|x| x.ok);
            let what = match &r.result {
                Some(x) => run_summary(x),
                None => r.message.clone(),
            };
            app.flash(
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
            app.plugins_view.runs.insert(key, r);
        }
        Err(e) => app.flash_err(&format!("{}/{}: run", key.0, key.1), &e),
    }
}

/// `/plugins/update|enable|disable` answered.
pub(crate) fn on_acted(
    app: &mut App,
    verb: Verb,
    ns: String,
    project: String,
    result: Result<ActionResponse, ClientError>,
) {
    app.plugins_view.busy.remove(&(ns.clone(), project.clone()));
    match result {
        Ok(r) => app.flash(format!("{ns}/{project}: {}", r.message), false),
        Err(e) => app.flash_err(&format!("{ns}/{project}: {}", verb.word()), &e),
    }
}

pub(super) fn on_wheel(app: &mut App, up: bool) {
    let last = app.plugin_list().len().saturating_sub(1);
    let v = &mut app.plugins_view;
    if v.detail_open {
        v.detail_scroll = wheel_step(usize::from(v.detail_scroll), usize::from(u16::MAX), up)
            .try_into()
            .unwrap_or(u16::MAX);
    } else {
        v.selected = wheel_step(v.selected, last, up);
    }
}

/// The plugin drawn on row `y` of the screen's `body` (none while the detail fills it).
pub(super) fn row_at(app: &App, body: Rect, y: u16) -> Option<usize> {
    if app.plugins_view.detail_open || !matches!(app.plugins, Feed::Ready(_)) {
        return None;
    }
    let n = app.plugin_list().len();
    table_row_at(table_area(body), app.plugins_view.selected, n, y)
}

pub(super) fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    if app.plugins_view.detail_open {
        &[
            ("j/k", "scroll"),
            ("r", "run"),
            ("u", "update"),
            ("e/d", "enable/disable"),
            ("Esc", "back"),
            ("?", "help"),
        ]
    } else {
        &[
            ("j/k", "select"),
            ("Enter", "detail"),
            ("r", "run"),
            ("u", "update"),
            ("e/d", "enable/disable"),
            ("?", "help"),
        ]
    }
}

/// Lines of the detail pane under the table.
const DETAIL_HEIGHT: u16 = 9;

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let list = match &app.plugins {
        Feed::Ready(list) => list,
        Feed::Waiting => {
            message(frame, area, "Waiting for the agent's plugin list...".into());
            return;
        }
        Feed::NotOffered(m) => {
            message(
                frame,
                area,
                format!(
                    "This agent does not offer the plugins API yet ({m}).\n\n\
                     Plugin management needs an agent with /plugins/list, /plugins/run, \
                     /plugins/update, /plugins/enable and /plugins/disable."
                ),
            );
            return;
        }
        Feed::Failed(m) => {
            message(frame, area, format!("The plugin list failed: {m}"));
            return;
        }
    };
    if list.is_empty() {
        message(
            frame,
            area,
            "No plugins: the registry lists none for this host.".into(),
        );
        return;
    }
    let selected = app.plugins_view.selected.min(list.len() - 1);
    if app.plugins_view.detail_open {
        detail(
            frame,
            app,
            &list[selected],
            area,
            app.plugins_view.detail_scroll,
        );
        return;
    }
    let [table_area, detail_area] = split(area);
    table(frame, app, list, selected, table_area);
    detail(frame, app, &list[selected], detail_area, 0);
}

fn split(area: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Min(4), Constraint::Length(DETAIL_HEIGHT)]).areas(area)
}

/// Where the table is drawn when the detail pane is under it.
fn table_area(body: Rect) -> Rect {
    split(body)[0]
}

fn message(frame: &mut Frame, area: Rect, text: String) {
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Plugins ")),
        area,
    );
}

/// Only the visible window of rows is built, so a long list costs what a screenful costs.
fn table(frame: &mut Frame, app: &App, list: &[PluginInfo], selected: usize, area: Rect) {
    let visible = table_rows(area);
    let first = first_shown(selected, visible);
    let rows = list
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(i, p)| {
            let busy = app
                .plugins_view
                .busy
                .contains(&(p.ns.clone(), p.project.clone()));
            let st = if busy {
                "working..."
            } else if p.problem.is_some() {
                "problem"
            } else if p.running {
                "running"
            } else if p.enabled {
                "enabled"
            } else {
                "disabled"
            };
            let last = app.last_run(p);
            let last_text = last
                .map(|r| format!("{} {}", run_summary(r), age(app.now, r.at)))
                .unwrap_or_else(|| "never".into());
            let last_style = match last {
                Some(r) if !r.ok => BAD,
                Some(_) => GOOD,
                None => Style::new(),
            };
            let mut row = Row::new(vec![
                Line::from(p.ns.as_str()),
                Line::from(p.project.as_str()),
                Line::from(interval(p.interval)),
                Line::from(st),
                Line::styled(last_text, last_style),
            ]);
            if i == selected {
                row = row.style(Style::new().add_modifier(Modifier::REVERSED));
            }
            row
        });
    let t = Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Fill(3),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Fill(3),
        ],
    )
    .header(
        Row::new(["NAMESPACE", "PROJECT", "EVERY", "STATE", "LAST RUN"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" Plugins ").title_bottom(format!(
        " {}/{} ",
        selected + 1,
        list.len()
    )));
    frame.render_widget(t, area);
}

fn detail(frame: &mut Frame, app: &App, p: &PluginInfo, area: Rect, scroll: u16) {
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<9}"), LABEL), Span::raw(v)]);
    let builtin = p.kind == shared::api::PLUGIN_BUILTIN;
    let mut lines = vec![if builtin {
        kv("repo", "- (built into the agent)".into())
    } else {
        kv("repo", p.repo.clone())
    }];
    lines.push(kv(
        "state",
        format!(
            "{} · commit {} · params {}",
            state(p, app.now),
            match &p.commit {
                _ if builtin => "- (built-in)".to_owned(),
                Some(c) => c.chars().take(8).collect::<String>(),
                None => "- (not cloned)".into(),
            },
            if p.parameters.is_empty() {
                "-"
            } else {
                &p.parameters
            }
        ),
    ));
    if let Some(problem) = &p.problem {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<9}", "problem"), LABEL),
            Span::styled(problem.clone(), BAD),
        ]));
    }
    match app.last_run(p) {
        None => lines.push(kv("last run", "never".into())),
        Some(r) => {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<9}", "last run"), LABEL),
                Span::styled(
                    if r.ok {
                        run_summary(r)
                    } else {
                        format!("FAILED {}", run_summary(r))
                    },
                    if r.ok { GOOD } else { BAD },
                ),
                Span::raw(format!(", {} ({})", age(app.now, r.at), r.kind)),
            ]));
            if let Some(e) = &r.error {
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<9}", "error"), LABEL),
                    Span::styled(e.clone(), BAD),
                ]));
            }
            for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                let cut = if r.truncated { " (cut at the cap)" } else { "" };
                if text.is_empty() {
                    lines.push(kv(name, "(empty)".into()));
                    continue;
                }
                lines.push(Line::styled(
                    format!("{name}{cut}:"),
                    LABEL.add_modifier(Modifier::BOLD),
                ));
                lines.extend(text.lines().map(|l| Line::from(format!("  {l}"))));
            }
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(Block::bordered().title(format!(" {}/{} ", p.ns, p.project))),
        area,
    );
}

/// The prompt for update and disable.
pub(crate) fn draw_confirm(frame: &mut Frame, c: &Confirm) {
    let what = match c.verb {
        Verb::Update => "fetch its repository and move it to the latest commit",
        Verb::Disable => "stop scheduling it until enabled (or the agent's re-enable delay)",
        Verb::Enable => "schedule it again",
    };
    crate::tui::ui::confirm_box(
        frame,
        60,
        7,
        vec![
            Line::from(format!(
                "{} {}/{}?",
                capitalised(c.verb.word()),
                c.ns,
                c.project
            )),
            Line::from(format!("This will {what}.")),
        ],
    );
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
