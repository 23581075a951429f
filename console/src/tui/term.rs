//! The real terminal: raw mode, the alternate screen and (unless `--no-mouse`) mouse capture,
//! all given back by a `Drop` guard and, on a panic, by a panic hook (ratatui's, installed by
//! `ratatui::try_init`, wrapped in ours for the mouse), so the shell is never left broken.

use std::io::Write;

use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::DefaultTerminal;

/// Owns the terminal while the TUI runs; dropping it gives the terminal back as it was.
pub struct Term {
    terminal: DefaultTerminal,
    mouse: bool,
}

impl Term {
    /// Switches to raw mode and the alternate screen, and captures the mouse when `mouse`.
    pub fn enter(mouse: bool) -> std::io::Result<Self> {
        let terminal = ratatui::try_init()?;
        // Built before capture starts, so a failure below is restored by its Drop too.
        let term = Term { terminal, mouse };
        if mouse {
            let restore = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                release_mouse();
                restore(info);
            }));
            execute!(std::io::stdout(), EnableMouseCapture)?;
        }
        Ok(term)
    }

    /// The terminal to draw on.
    pub fn terminal(&mut self) -> &mut DefaultTerminal {
        &mut self.terminal
    }
}

/// Stops mouse reporting; a terminal left reporting would type escape codes into the shell
/// at every click.
fn release_mouse() {
    let mut out = std::io::stdout();
    let _ = execute!(out, DisableMouseCapture);
    let _ = out.flush();
}

impl Drop for Term {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The panic hook gave the terminal back before printing the message; leaving the
            // alternate screen a second time would move the cursor back over that message.
            return;
        }
        if self.mouse {
            release_mouse();
        }
        ratatui::restore();
    }
}
