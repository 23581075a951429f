//! The top lines: who we talk to, the connection state, the tabs, and the disconnected banner.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::{BAD, GOOD};
use crate::fmt::{age, duration};
use crate::tui::app::{App, Tab};
use crate::tui::conn::Conn;

/// Around each tab title, and between two tabs.
const PAD: &str = " ";
const DIVIDER: &str = "│";

/// A tab's title as the tab bar shows it: its key, then its name.
fn label(tab: Tab) -> String {
    format!("{} {}", tab.index() + 1, tab.title())
}

/// The tab whose title (with its padding) is drawn at column `x`: the `Tabs` widget lays
/// them out left to right as pad, title, pad, divider.
pub(super) fn tab_at(area: Rect, x: u16) -> Option<Tab> {
    let pad = PAD.width() as u16;
    let mut left = area.x;
    for tab in Tab::ALL {
        let right = left + pad + label(tab).width() as u16 + pad;
        if (left..right.min(area.right())).contains(&x) {
            return Some(tab);
        }
        left = right + DIVIDER.width() as u16;
    }
    None
}

pub(super) fn draw(frame: &mut Frame, app: &App, head: Rect, tabs: Rect, banner: Rect) {
    let mut left = vec![Span::styled(
        " agentctl ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if let Some(s) = &app.status {
        left.push(Span::raw(format!(
            "{} · agent {} · up {}",
            s.hostname,
            s.version,
            duration(s.uptime_secs)
        )));
    }
    let right = match &app.conn {
        Conn::Connecting => Span::styled(
            format!("connecting to {} ", app.addr),
            Style::new().fg(Color::Yellow),
        ),
        Conn::Connected { .. } => Span::styled(format!("● connected {} ", app.addr), GOOD),
        Conn::Disconnected { .. } => Span::styled(
            format!("✖ disconnected {} ", app.addr),
            BAD.add_modifier(Modifier::BOLD),
        ),
    };
    frame.render_widget(Paragraph::new(Line::from(left)), head);
    frame.render_widget(Paragraph::new(Line::from(right)).right_aligned(), head);

    frame.render_widget(
        Tabs::new(Tab::ALL.map(label))
            .select(app.tab.index())
            .highlight_style(Style::new().fg(Color::Black).bg(Color::Cyan))
            .padding(PAD, PAD)
            .divider(DIVIDER),
        tabs,
    );

    if let (false, Some(why)) = (app.conn.is_down(), &app.token_refused) {
        frame.render_widget(
            Paragraph::new(format!(" {why}")).style(Style::new().fg(Color::White).bg(Color::Red)),
            banner,
        );
    }
    if let Conn::Disconnected {
        reason,
        attempt,
        retry_at,
        last_ok,
    } = &app.conn
    {
        let seen = last_ok
            .map(|t| format!(" · data from {}", age(app.now, t)))
            .unwrap_or_default();
        let text = format!(
            " {reason} · retry {attempt} in {}s{seen}",
            (retry_at - app.now).max(0)
        );
        frame.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::White).bg(Color::Red)),
            banner,
        );
    }
}
