//! What the TUI test files share: keys into an `App`, and its frame as text.

use agentctl::tui::app::{Action, App};
use agentctl::tui::event::Event;
use agentctl::tui::ui;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

/// One key press, and what the app asks for in answer.
pub fn key(app: &mut App, code: KeyCode) -> Option<Action> {
    app.update(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Types `text`, one character key at a time.
pub fn keys(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// The frame the app draws at `w` x `h`, as text.
pub fn render_at(app: &App, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    terminal
        .draw(|frame| ui::draw(frame, app))
        .expect("draw into the test backend");
    terminal.backend().to_string()
}
