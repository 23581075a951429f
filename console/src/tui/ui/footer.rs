//! The bottom lines: the last message and the keys that work here.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::BAD;
use crate::tui::app::App;
use crate::tui::screens;

pub(super) fn draw(frame: &mut Frame, app: &App, flash: Rect, hints: Rect) {
    if let Some(f) = &app.flash {
        let style = if f.error { BAD } else { Style::new() };
        frame.render_widget(Paragraph::new(format!(" {}", f.text)).style(style), flash);
    }
    let keys: &[(&str, &str)] = if app.help {
        &[("any key", "close help")]
    } else if app.confirm.is_some() {
        &[("y", "confirm"), ("n/Esc", "cancel")]
    } else {
        screens::hints(app)
    };
    let key_style = Style::new().fg(Color::Black).bg(Color::Gray);
    let mut spans = Vec::with_capacity(keys.len() * 3);
    for (k, what) in keys {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {k} "), key_style));
        spans.push(Span::raw(format!(" {what}")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), hints);
}
