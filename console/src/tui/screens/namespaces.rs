//! Namespaces: this host's namespaces with how many plugins each has and how they fare. Its
//! state is the selected row, `App::ns_selected`.

use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::{first_shown, list_key, table_row_at, table_rows, wheel_step};
use crate::tui::app::{Action, App, Feed};

pub(super) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let last = app.namespace_list().len().saturating_sub(1);
    app.ns_selected = list_key(key.code, app.ns_selected, last);
    None
}

pub(super) fn on_wheel(app: &mut App, up: bool) {
    let last = app.namespace_list().len().saturating_sub(1);
    app.ns_selected = wheel_step(app.ns_selected, last, up);
}

/// The namespace drawn on row `y` of the screen's `body`.
pub(super) fn row_at(app: &App, body: Rect, y: u16) -> Option<usize> {
    if !matches!(app.namespaces, Feed::Ready(_)) {
        return None;
    }
    table_row_at(body, app.ns_selected, app.namespace_list().len(), y)
}

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::bordered().title(" Namespaces ");
    let names = match &app.namespaces {
        Feed::Ready(n) => n,
        Feed::Waiting => {
            frame.render_widget(
                Paragraph::new("Waiting for the agent...").block(block),
                area,
            );
            return;
        }
        Feed::NotOffered(m) | Feed::Failed(m) => {
            // Wrapped: a 401 says which token was sent and where the right one is.
            frame.render_widget(
                Paragraph::new(m.as_str())
                    .wrap(Wrap { trim: false })
                    .block(block),
                area,
            );
            return;
        }
    };
    if names.is_empty() {
        frame.render_widget(
            Paragraph::new("This host is in no namespace: check the registry, then R.")
                .block(block),
            area,
        );
        return;
    }
    let plugins = app.plugin_list();
    let known = matches!(app.plugins, Feed::Ready(_));
    let selected = app.ns_selected.min(names.len() - 1);
    let first = first_shown(selected, table_rows(area));
    // Only the visible window is built, as on the Plugins screen.
    let rows = names
        .iter()
        .enumerate()
        .skip(first)
        .take(table_rows(area))
        .map(|(i, ns)| {
            let mine: Vec<_> = plugins.iter().filter(|p| &p.ns == ns).collect();
            let count = |f: &dyn Fn(&&shared::api::PluginInfo) -> bool| {
                if known {
                    mine.iter().filter(|p| f(p)).count().to_string()
                } else {
                    "-".to_owned()
                }
            };
            let row = Row::new(vec![
                ns.clone(),
                count(&|_| true),
                count(&|p| !p.enabled),
                count(&|p| p.last_run.as_ref().is_some_and(|r| !r.ok)),
            ]);
            if i == selected {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        });
    let table = Table::new(
        rows,
        [
            Constraint::Min(30),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(["NAMESPACE", "PLUGINS", "DISABLED", "FAILING"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(block.title_bottom(format!(
        " {} ",
        crate::fmt::count(names.len() as u64, "namespace")
    )));
    frame.render_widget(table, area);
}
