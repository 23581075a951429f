//! The top lines: who we talk to, the connection state, the tabs, and the disconnected banner.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use super::{BAD, GOOD};
use crate::fmt::{age, duration};
use crate::tui::app::{App, Tab};
use crate::tui::conn::Conn;

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

    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::new().fg(Color::Black).bg(Color::Cyan))
            .padding(" ", " "),
        tabs,
    );

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
