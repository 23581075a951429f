//! Drawing: reads `App`, never changes it. One file per screen, plus header, footer and help.

mod footer;
mod header;
mod help;
mod logs;
mod namespaces;
mod overview;
mod plugins;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::Frame;

use super::app::{App, Tab};

/// Style of labels in key/value lists.
pub(crate) const LABEL: Style = Style::new().fg(Color::Cyan);
/// Style of things that are wrong.
pub(crate) const BAD: Style = Style::new().fg(Color::Red);
/// Style of things that are fine.
pub(crate) const GOOD: Style = Style::new().fg(Color::Green);

/// Draws the whole screen for `app`.
pub fn draw(frame: &mut Frame, app: &App) {
    let down = app.conn.is_down();
    let [head, tabs, banner, body, flash, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(down)),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    header::draw(frame, app, head, tabs, banner);
    match app.tab {
        Tab::Overview => overview::draw(frame, app, body),
        Tab::Namespaces => namespaces::draw(frame, app, body),
        Tab::Plugins => plugins::draw(frame, app, body),
        Tab::Logs => logs::draw(frame, app, body),
    }
    if down {
        // Stale data stays readable but visibly old.
        frame
            .buffer_mut()
            .set_style(body, Style::new().fg(Color::DarkGray));
    }
    footer::draw(frame, app, flash, hints);
    if let Some(c) = &app.confirm {
        plugins::draw_confirm(frame, c);
    }
    if app.help {
        help::draw(frame);
    }
}

/// A rectangle of at most `w` x `h` centred in `area`.
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}
