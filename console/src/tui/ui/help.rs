//! The help overlay (`?`).

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::{centered, LABEL};

const KEYS: &[(&str, &str)] = &[
    ("1 2 3 4, Tab", "Overview, Namespaces, Plugins, Logs"),
    ("R", "refresh now (or reconnect at once)"),
    ("q, Ctrl-C", "quit"),
    ("", ""),
    ("Plugins", ""),
    ("j/k, PgUp/PgDn", "select a plugin"),
    ("Enter, Esc", "open / close the last run's output"),
    ("r", "run the plugin now"),
    ("u", "update to the latest commit (asks first)"),
    ("e / d", "enable / disable (disable asks first)"),
    ("", ""),
    ("Logs", ""),
    ("o", "open a file (suggests the agent's log)"),
    ("Space", "pause / resume following"),
    ("j/k, PgUp/PgDn, g/G", "scroll; G follows the end"),
    ("/, n, N", "search; older / newer match"),
    ("w", "wrap long lines (default) or cut them"),
    ("", ""),
    ("Mouse", ""),
    ("click", "a tab to switch, a row to select it"),
    ("wheel", "scroll 3 lines (shift-drag selects text)"),
];

pub(super) fn draw(frame: &mut Frame) {
    let area = centered(frame.area(), 68, KEYS.len() as u16 + 2);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            if what.is_empty() {
                Line::from(Span::styled(*k, Style::new().add_modifier(Modifier::BOLD)))
            } else {
                Line::from(vec![
                    Span::styled(format!("{k:>20}  "), LABEL),
                    Span::raw(*what),
                ])
            }
        })
        .collect();
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help: keys (any key closes) ")),
        area,
    );
}
