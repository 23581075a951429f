//! The real terminal: raw mode and the alternate screen, restored by a `Drop` guard and, on a
//! panic, by ratatui's panic hook (installed by `ratatui::try_init`), so the shell is never left
//! broken.

use ratatui::DefaultTerminal;

/// Owns the terminal while the TUI runs; dropping it gives the terminal back as it was.
pub struct Term {
    terminal: DefaultTerminal,
}

impl Term {
    /// Switches to raw mode and the alternate screen.
    pub fn enter() -> std::io::Result<Self> {
        let terminal = ratatui::try_init()?;
        Ok(Term { terminal })
    }

    /// The terminal to draw on.
    pub fn terminal(&mut self) -> &mut DefaultTerminal {
        &mut self.terminal
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
