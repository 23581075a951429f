//! Plugins: the live table, the detail pane with the last run's output, and the confirmation
//! prompt for disruptive actions.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use shared::api::PluginInfo;

use super::{centered, first_shown, table_rows, BAD, GOOD, LABEL};
use crate::commands::plugins::{interval, state};
use crate::fmt::{age, run_summary};
use crate::tui::app::{App, Confirm, Feed};
use crate::tui::event::Verb;

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
pub(super) fn table_area(body: Rect) -> Rect {
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
    let mut lines = vec![kv("repo", p.repo.clone())];
    lines.push(kv(
        "state",
        format!(
            "{} · commit {} · params {}",
            state(p, app.now),
            p.commit
                .as_deref()
                .map(|c| c.chars().take(8).collect::<String>())
                .unwrap_or_else(|| "- (not cloned)".into()),
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
pub(super) fn draw_confirm(frame: &mut Frame, c: &Confirm) {
    let what = match c.verb {
        Verb::Update => "fetch its repository and move it to the latest commit",
        Verb::Disable => "stop scheduling it until enabled (or the agent's re-enable delay)",
        Verb::Enable => "schedule it again",
    };
    let area = centered(frame.area(), 60, 7);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "{} {}/{}?",
                capitalised(c.verb.word()),
                c.ns,
                c.project
            )),
            Line::from(format!("This will {what}.")),
            Line::from(""),
            Line::from(vec![
                Span::styled(" y ", Style::new().fg(Color::Black).bg(Color::Yellow)),
                Span::raw(" yes   "),
                Span::styled(" n ", Style::new().fg(Color::Black).bg(Color::Gray)),
                Span::raw(" no"),
            ]),
        ])
        .wrap(Wrap { trim: true })
        .block(
            Block::bordered()
                .title(" Confirm ")
                .border_style(Style::new().fg(Color::Yellow)),
        ),
        area,
    );
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
