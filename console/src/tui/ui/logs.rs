//! Logs: pick a file, follow it through `/log/offset`, pause, scroll and search.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::{BAD, LABEL};
use crate::tui::app::{App, Prompt};

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let l = &app.logs;
    let [bar, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let bar_line = match &l.input {
        Some((Prompt::Path, t)) => Line::from(vec![
            Span::styled(" file: ", LABEL),
            Span::raw(t.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ]),
        Some((Prompt::Search, t)) => Line::from(vec![
            Span::styled(" search: /", LABEL),
            Span::raw(t.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ]),
        None => match &l.path {
            None => Line::from(vec![
                Span::raw(" No file. Press "),
                Span::styled("o", LABEL),
                Span::raw(format!(" to open one, e.g. {}", app.suggested_log())),
            ]),
            Some(p) => {
                let mut spans = vec![
                    Span::styled(
                        if l.paused { " PAUSED " } else { " following " },
                        if l.paused {
                            Style::new().fg(Color::Black).bg(Color::Yellow)
                        } else {
                            LABEL
                        },
                    ),
                    Span::raw(format!(" {p}")),
                ];
                if let Some(q) = &l.query {
                    spans.push(Span::raw(format!(
                        "  /{q}: {} hits",
                        app.log_matches().len()
                    )));
                }
                if l.scroll > 0 {
                    spans.push(Span::raw(format!("  ↑{}", l.scroll)));
                }
                Line::from(spans)
            }
        },
    };
    frame.render_widget(Paragraph::new(bar_line), bar);

    let block = Block::bordered();
    if let Some(e) = &l.error {
        frame.render_widget(
            Paragraph::new(Line::styled(e.clone(), BAD))
                .wrap(Wrap { trim: true })
                .block(block.title(" cannot read ")),
            text,
        );
        return;
    }
    let height = text.height.saturating_sub(2) as usize;
    let n = l.lines.len();
    let end = n - l.scroll.min(n);
    let start = end.saturating_sub(height);
    let q = l.query.as_deref().map(str::to_lowercase);
    let hit = Style::new().fg(Color::Black).bg(Color::Yellow);
    let lines: Vec<Line> = l
        .lines
        .range(start..end)
        .map(|line| match &q {
            Some(q) if line.to_lowercase().contains(q.as_str()) => Line::styled(line.as_str(), hit),
            _ => Line::from(line.as_str()),
        })
        .collect();
    let title = if n == 0 {
        String::new()
    } else {
        format!(" lines {}-{} of {} ", start + 1, end, n)
    };
    frame.render_widget(Paragraph::new(lines).block(block.title_bottom(title)), text);
}
