//! The screens. Each file is one screen whole: its state, how keys, clicks and the wheel change
//! it, and how it is drawn. `App` routes an event to the screen shown through the functions
//! here, which match on [`Tab`]; the frame around the screens (header, tabs, message line, key
//! hints, help) is `ui`.

pub mod fleet;
pub mod logs;
pub mod namespaces;
pub mod overview;
pub mod plugins;
pub mod points;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::Frame;

use super::app::{Action, App};

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
    /// The points the agent sends, live.
    Points,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Tab; 5] = [
        Tab::Overview,
        Tab::Namespaces,
        Tab::Plugins,
        Tab::Logs,
        Tab::Points,
    ];

    /// The tab's title, without its number.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Namespaces => "Namespaces",
            Tab::Plugins => "Plugins",
            Tab::Logs => "Logs",
            Tab::Points => "Points",
        }
    }

    /// Its place in [`Tab::ALL`].
    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// A key the frame did not take (quit, help, tabs, refresh), for the screen shown.
pub(crate) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    match app.tab {
        Tab::Overview => None,
        Tab::Namespaces => namespaces::on_key(app, key),
        Tab::Plugins => plugins::on_key(app, key),
        Tab::Logs => logs::on_key(app, key),
        Tab::Points => points::on_key(app, key),
    }
}

/// Whether Esc means something on the screen shown (closing a detail, clearing a search), so
/// it does not go back to the Fleet screen.
pub(crate) fn takes_esc(app: &App) -> bool {
    match app.tab {
        Tab::Plugins => app.plugins_view.detail_open,
        Tab::Logs => app.logs.input.is_some() || app.logs.query.is_some(),
        Tab::Points => points::takes_esc(app),
        Tab::Overview | Tab::Namespaces => false,
    }
}

/// Whether the screen shown is taking typed text, so keys the frame would take (q, 1-5, ?)
/// are text instead.
pub(crate) fn typing(app: &App) -> bool {
    match app.tab {
        Tab::Logs => app.logs.input.is_some(),
        Tab::Points => points::typing(app),
        _ => false,
    }
}

/// One wheel notch (`up` or down) on the screen shown.
pub(crate) fn on_wheel(app: &mut App, up: bool) {
    match app.tab {
        Tab::Overview => {}
        Tab::Namespaces => namespaces::on_wheel(app, up),
        Tab::Plugins => plugins::on_wheel(app, up),
        Tab::Logs => logs::on_wheel(app, up),
        Tab::Points => points::on_wheel(app, up),
    }
}

/// A click on row `i` of the screen's list.
pub(crate) fn on_row_click(app: &mut App, i: usize) {
    match app.tab {
        Tab::Namespaces => app.ns_selected = i,
        Tab::Plugins => app.plugins_view.selected = i,
        Tab::Points => points::on_row_click(app, i),
        Tab::Overview | Tab::Logs => {}
    }
}

/// The list row drawn at screen row `y` of the screen's `body`, if the screen has a list there.
pub(crate) fn row_at(app: &App, body: Rect, y: u16) -> Option<usize> {
    match app.tab {
        Tab::Namespaces => namespaces::row_at(app, body, y),
        Tab::Plugins => plugins::row_at(app, body, y),
        Tab::Points => points::row_at(app, body, y),
        Tab::Overview | Tab::Logs => None,
    }
}

/// Draws the screen shown into the body of the frame.
pub(crate) fn draw(frame: &mut Frame, app: &App, body: Rect) {
    match app.tab {
        Tab::Overview => overview::draw(frame, app, body),
        Tab::Namespaces => namespaces::draw(frame, app, body),
        Tab::Plugins => plugins::draw(frame, app, body),
        Tab::Logs => logs::draw(frame, app, body),
        Tab::Points => points::draw(frame, app, body),
    }
}

/// The keys the footer shows for the screen (when no prompt or overlay has them).
pub(crate) fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    if app.fleet_shown {
        return fleet::hints(app);
    }
    match app.tab {
        Tab::Overview | Tab::Namespaces if app.fleet.is_some() => &[
            ("1-5/Tab", "screens"),
            ("Esc", "fleet"),
            ("R", "refresh"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Tab::Plugins => plugins::hints(app),
        Tab::Logs => logs::hints(app),
        Tab::Points => points::hints(app),
        Tab::Overview | Tab::Namespaces => &[
            ("1-5/Tab", "screens"),
            ("R", "refresh"),
            ("?", "help"),
            ("q", "quit"),
        ],
    }
}

/// One wheel notch from `v` on a list whose last row is `max`.
pub(crate) fn wheel_step(v: usize, max: usize, up: bool) -> usize {
    if up {
        v.saturating_sub(super::app::WHEEL_LINES)
    } else {
        (v + super::app::WHEEL_LINES).min(max)
    }
}

/// j/k, PgUp/PgDn, g/G (and Home/End) on a list of `last + 1` rows.
pub(crate) fn list_key(code: KeyCode, selected: usize, last: usize) -> usize {
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

/// Rows of data a bordered table with a header line shows in `area`.
pub(crate) fn table_rows(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(3).max(1))
}

/// The first row shown of a list that keeps `selected` in view in `visible` rows.
pub(crate) fn first_shown(selected: usize, visible: usize) -> usize {
    selected.saturating_sub(visible.saturating_sub(1))
}

/// The list index drawn on screen row `y` of a bordered table with a header line in `area`.
pub(crate) fn table_row_at(area: Rect, selected: usize, len: usize, y: u16) -> Option<usize> {
    let top = area.y + 2;
    if y < top || y >= area.bottom().saturating_sub(1) {
        return None;
    }
    let i =
        first_shown(selected.min(len.saturating_sub(1)), table_rows(area)) + usize::from(y - top);
    (i < len).then_some(i)
}
