//! The frame around the screens: header, tabs, banners, message line, key hints, help and the
//! confirmation overlay. Drawing reads `App`, never changes it; each screen draws its own body
//! (`screens`).

mod footer;
mod header;
mod help;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::app::{App, Tab};
use super::screens;

pub use super::screens::logs::log_scroll_max;

/// Style of labels in key/value lists.
pub(crate) const LABEL: Style = Style::new().fg(Color::Cyan);
/// Style of things that are wrong.
pub(crate) const BAD: Style = Style::new().fg(Color::Red);
/// Style of things that are fine.
pub(crate) const GOOD: Style = Style::new().fg(Color::Green);

/// Where the parts of the screen are: drawing and mouse hit-testing both place things by it.
struct Areas {
    head: Rect,
    tabs: Rect,
    banner: Rect,
    body: Rect,
    flash: Rect,
    hints: Rect,
}

fn areas(area: Rect, app: &App) -> Areas {
    let [head, tabs, banner, body, flash, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(
            !app.fleet_shown && (app.conn.is_down() || app.token_refused.is_some()),
        )),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    Areas {
        head,
        tabs,
        banner,
        body,
        flash,
        hints,
    }
}

/// What a click landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A tab's title.
    Tab(Tab),
    /// A row of the Namespaces, Plugins or Fleet list (its index in the list).
    Row(usize),
}

/// What is drawn at column `x`, row `y` of a screen of `app.area`, if it can be clicked.
pub fn target_at(app: &App, x: u16, y: u16) -> Option<Target> {
    let a = areas(app.area, app);
    if let (true, Some(f)) = (app.fleet_shown, &app.fleet) {
        if !a.body.contains((x, y).into()) {
            return None;
        }
        return screens::fleet::row_at(f, a.body, y).map(Target::Row);
    }
    if y == a.tabs.y && a.tabs.height > 0 {
        return header::tab_at(a.tabs, x).map(Target::Tab);
    }
    if !a.body.contains((x, y).into()) {
        return None;
    }
    screens::row_at(app, a.body, y).map(Target::Row)
}

/// Columns and rows of the Logs screen's text, at `app.area`.
pub fn log_text_size(app: &App) -> (usize, usize) {
    let t = screens::logs::text_area(areas(app.area, app).body);
    (usize::from(t.width), usize::from(t.height))
}

/// Draws the whole screen for `app`.
pub fn draw(frame: &mut Frame, app: &App) {
    let down = app.conn.is_down();
    let Areas {
        head,
        tabs,
        banner,
        body,
        flash,
        hints,
    } = areas(frame.area(), app);
    if let (true, Some(f)) = (app.fleet_shown, &app.fleet) {
        screens::fleet::draw_header(frame, f, app.now, head, tabs);
        screens::fleet::draw(frame, f, body);
        footer::draw(frame, app, flash, hints);
        screens::fleet::draw_overlays(frame, f);
        if app.help {
            help::draw(frame, help::FLEET_KEYS);
        }
        return;
    }
    header::draw(frame, app, head, tabs, banner);
    screens::draw(frame, app, body);
    if down {
        // Stale data stays readable but visibly old.
        frame
            .buffer_mut()
            .set_style(body, Style::new().fg(Color::DarkGray));
    }
    footer::draw(frame, app, flash, hints);
    if let Some(c) = &app.confirm {
        screens::plugins::draw_confirm(frame, c);
    }
    if app.help {
        help::draw(
            frame,
            if app.fleet.is_some() {
                help::FLEET_AGENT_KEYS
            } else {
                help::KEYS
            },
        );
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

/// A yes/no prompt of `w` x `h` centred on the frame: the question's lines, then the `y` / `n`
/// keys. Every confirm of the TUI looks and answers the same.
pub(crate) fn confirm_box(frame: &mut Frame, w: u16, h: u16, mut lines: Vec<Line<'static>>) {
    use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::styled(" y ", Style::new().fg(Color::Black).bg(Color::Yellow)),
        Span::raw(" yes   "),
        Span::styled(" n ", Style::new().fg(Color::Black).bg(Color::Gray)),
        Span::raw(" no"),
    ]));
    let area = centered(frame.area(), w, h);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            Block::bordered()
                .title(" Confirm ")
                .border_style(Style::new().fg(Color::Yellow)),
        ),
        area,
    );
}
