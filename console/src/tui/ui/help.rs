//! The help overlay (`?`).

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::{centered, LABEL};

/// The single-agent screens' keys.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("1-5, Tab", "Overview, Namespaces, Plugins, Logs, Points"),
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
    ("Points", ""),
    ("/, Enter, Space", "filter; a series' latest lines; pause"),
    ("", ""),
    ("click, wheel", "switch tab or select a row; scroll 3 lines"),
];

/// The Fleet screen's keys.
pub(super) const FLEET_KEYS: &[(&str, &str)] = &[
    ("j/k, PgUp/PgDn, g/G", "select a host"),
    ("Enter", "open it (Esc there comes back)"),
    ("/", "filter: state!=ok,name=db-* or text"),
    ("Esc", "clear the filter"),
    ("a", "act on the selected host / all shown"),
    ("u", "update: refresh from the registry"),
    ("p r e d", "plugin update / run / enable / disable"),
    ("y / n", "confirm / cancel (asked for all shown,"),
    ("", "and for a plugin update or disable)"),
    ("R", "ask every host now"),
    ("q, Ctrl-C", "quit"),
];

/// The single-agent screens' keys when opened from the Fleet screen.
pub(super) const FLEET_AGENT_KEYS: &[(&str, &str)] = &[
    ("Esc", "back to the Fleet screen"),
    ("1-5, Tab", "Overview, Namespaces, Plugins, Logs, Points"),
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
];

pub(super) fn draw(frame: &mut Frame, keys: &[(&str, &str)]) {
    let area = centered(frame.area(), 68, keys.len() as u16 + 2);
    let lines: Vec<Line> = keys
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
