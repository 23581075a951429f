//! Logs: pick a file, follow it through `/log/offset`, pause, scroll and search.

use std::collections::VecDeque;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use shared::api::LogChunk;
use shared::ClientError;
use unicode_width::UnicodeWidthChar;

use crate::tui::app::{Action, App, WHEEL_LINES};
use crate::tui::ui::{self, BAD, LABEL};

/// Log lines kept in memory while following.
pub const LOG_LINES_KEPT: usize = 10_000;
/// Lines asked for per `/log/offset` call.
pub const LOG_BATCH: u64 = 500;
/// When a file is opened, start this many bytes before its end rather than at its start.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// What a line of text input is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// The file to follow.
    Path,
    /// A search in the followed lines.
    Search,
}

/// The Logs screen's own state.
#[derive(Debug, Clone, Default)]
pub struct LogsView {
    /// Text being typed and what for.
    pub input: Option<(Prompt, String)>,
    /// The file followed.
    pub path: Option<String>,
    /// The lines read so far (the newest last).
    pub lines: VecDeque<String>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Whether a read is in flight.
    pub reading: bool,
    /// Whether the file was read at least once (the first read may jump near the end).
    pub opened: bool,
    /// Drop the first line of the next answer (it starts mid-line after a jump).
    pub skip_partial: bool,
    /// Following is paused (reads stop; the view stays put).
    pub paused: bool,
    /// Lines scrolled up from the newest; 0 follows the end.
    pub scroll: usize,
    /// The search term, matched case-insensitively.
    pub query: Option<String>,
    /// Long lines are cut at the right edge instead of wrapped (`w` toggles; wrapping is the
    /// default because the end of a long line is often the error).
    pub cut: bool,
    /// Why reading stopped, if it did.
    pub error: Option<String>,
}

impl App {
    /// The agent's log file for today, as a suggestion for the Logs screen.
    pub fn suggested_log(&self) -> String {
        let dir = self
            .status
            .as_ref()
            .and_then(|s| s.log_dir.clone())
            .unwrap_or_else(|| "/var/log".to_owned());
        let date = time::OffsetDateTime::from_unix_timestamp(self.now)
            .map(|t| t.date())
            .unwrap_or(time::Date::MIN);
        format!(
            "{}/agent.{:04}-{:02}-{:02}.log",
            dir.trim_end_matches('/'),
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    }

    /// Indexes of the followed lines that match the search.
    pub fn log_matches(&self) -> Vec<usize> {
        let Some(q) = self.logs.query.as_deref().map(str::to_lowercase) else {
            return Vec::new();
        };
        self.logs
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.to_lowercase().contains(&q))
            .map(|(i, _)| i)
            .collect()
    }

    /// How far the log view scrolls up: until the first line is at the top of the view.
    pub fn log_scroll_max(&self) -> usize {
        let (width, height) = ui::log_text_size(self);
        log_scroll_max(&self.logs.lines, width, height, !self.logs.cut)
    }
}

pub(super) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    if app.logs.input.is_some() {
        return on_input_key(app, key);
    }
    let max = app.log_scroll_max();
    let l = &mut app.logs;
    match key.code {
        KeyCode::Char('o') | KeyCode::Enter => {
            let start = l.path.clone().unwrap_or_else(|| app.suggested_log());
            app.logs.input = Some((Prompt::Path, start));
        }
        KeyCode::Char('/') => l.input = Some((Prompt::Search, String::new())),
        KeyCode::Char(' ') | KeyCode::Char('p') if l.path.is_some() => {
            l.paused = !l.paused;
            return read(app);
        }
        KeyCode::Char('w') => l.cut = !l.cut,
        KeyCode::Up | KeyCode::Char('k') => l.scroll = (l.scroll + 1).min(max),
        KeyCode::Down | KeyCode::Char('j') => l.scroll = l.scroll.saturating_sub(1),
        KeyCode::PageUp => l.scroll = (l.scroll + 10).min(max),
        KeyCode::PageDown => l.scroll = l.scroll.saturating_sub(10),
        KeyCode::Home | KeyCode::Char('g') => l.scroll = max,
        KeyCode::End | KeyCode::Char('G') => l.scroll = 0,
        KeyCode::Char('n') => jump_match(app, true),
        KeyCode::Char('N') => jump_match(app, false),
        KeyCode::Esc => l.query = None,
        _ => {}
    }
    None
}

pub(super) fn on_wheel(app: &mut App, up: bool) {
    // Logs scroll counts lines up from the newest, so "up" adds.
    let max = app.log_scroll_max();
    let s = app.logs.scroll;
    app.logs.scroll = if up {
        (s + WHEEL_LINES).min(max)
    } else {
        s.saturating_sub(WHEEL_LINES)
    };
}

pub(super) fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    match &app.logs.input {
        Some((Prompt::Path, _)) => &[("Enter", "follow file"), ("Esc", "cancel")],
        Some((Prompt::Search, _)) => &[("Enter", "search"), ("Esc", "cancel")],
        None if app.logs.cut => &[
            ("o", "open"),
            ("Space", "pause"),
            ("j/k", "scroll"),
            ("/", "search"),
            ("n/N", "next"),
            ("w", "wrap"),
            ("?", "help"),
        ],
        None => &[
            ("o", "open"),
            ("Space", "pause"),
            ("j/k", "scroll"),
            ("/", "search"),
            ("n/N", "next"),
            ("w", "cut"),
            ("?", "help"),
        ],
    }
}

/// Scrolls so the next match above (`older`) or below the bottom line is the bottom line.
fn jump_match(app: &mut App, older: bool) {
    let matches = app.log_matches();
    let n = app.logs.lines.len();
    if n == 0 {
        return;
    }
    let bottom = n - 1 - app.logs.scroll.min(n - 1);
    let target = if older {
        matches.iter().rev().find(|&&i| i < bottom)
    } else {
        matches.iter().find(|&&i| i > bottom)
    };
    match target {
        Some(&i) => app.logs.scroll = (n - 1 - i).min(app.log_scroll_max()),
        None => app.flash("no more matches".into(), false),
    }
}

fn on_input_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let (prompt, text) = app.logs.input.as_mut()?;
    let prompt = *prompt;
    match key.code {
        KeyCode::Char(c) => text.push(c),
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Esc => app.logs.input = None,
        KeyCode::Enter => {
            let text = text.trim().to_owned();
            app.logs.input = None;
            return match prompt {
                Prompt::Path if !text.is_empty() => open(app, text),
                Prompt::Path => None,
                Prompt::Search => {
                    app.logs.query = (!text.is_empty()).then_some(text);
                    // Show the newest match at the bottom of the view.
                    let n = app.logs.lines.len();
                    match app.log_matches().last() {
                        Some(&i) => app.logs.scroll = (n - 1 - i).min(app.log_scroll_max()),
                        None if app.logs.query.is_some() => {
                            app.flash("no line matches".into(), false)
                        }
                        None => {}
                    }
                    None
                }
            };
        }
        _ => {}
    }
    None
}

fn open(app: &mut App, path: String) -> Option<Action> {
    app.logs = LogsView {
        path: Some(path),
        cut: app.logs.cut,
        ..LogsView::default()
    };
    read(app)
}

/// The next read of the followed file, unless paused, stopped or already reading.
pub(crate) fn read(app: &mut App) -> Option<Action> {
    let l = &mut app.logs;
    let path = l.path.clone()?;
    if l.reading || l.paused || l.error.is_some() {
        return None;
    }
    l.reading = true;
    Some(Action::ReadLog {
        path,
        offset: l.next_offset,
    })
}

/// `/log/offset` answered for `path` read from `offset`.
pub(crate) fn on_answer(
    app: &mut App,
    path: String,
    offset: u64,
    result: Result<LogChunk, ClientError>,
) -> Option<Action> {
    if app.logs.path.as_deref() != Some(path.as_str()) {
        return None;
    }
    app.logs.reading = false;
    match result {
        Ok(chunk) => on_chunk(app, offset, chunk),
        // Asked again at the next tick: the agent is away, or its reads are busy.
        Err(e) if e.is_unreachable() || e.is_busy() => None,
        Err(e) => {
            app.logs.error = Some(crate::commands::describe(&e, &app.addr));
            None
        }
    }
}

fn on_chunk(app: &mut App, offset: u64, chunk: LogChunk) -> Option<Action> {
    let l = &mut app.logs;
    if !l.opened {
        l.opened = true;
        if chunk.size > offset + LOG_TAIL_BYTES {
            // A long file: show its end rather than its first lines.
            l.next_offset = chunk.size - LOG_TAIL_BYTES;
            l.skip_partial = true;
            return read(app);
        }
    }
    if chunk.size < offset {
        l.lines.push_back(format!(
            "--- {} was truncated or rotated; reading from its start ---",
            chunk.path
        ));
        l.next_offset = 0;
        return read(app);
    }
    let full = chunk.lines.len() as u64 >= LOG_BATCH;
    let skip = usize::from(std::mem::take(&mut l.skip_partial) && !chunk.lines.is_empty());
    for line in chunk.lines.into_iter().skip(skip) {
        l.lines.push_back(line);
        if l.scroll > 0 {
            // Keep a scrolled view on the same lines while new ones arrive.
            l.scroll += 1;
        }
    }
    while l.lines.len() > LOG_LINES_KEPT {
        l.lines.pop_front();
    }
    l.scroll = l.scroll.min(l.lines.len());
    l.next_offset = chunk.next_offset;
    if full {
        read(app)
    } else {
        None
    }
}

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let l = &app.logs;
    let [bar, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    // `text_area` must stay the inside of this split, for scrolling and the mouse.
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
    let inner = text_area(area);
    let (width, height) = (usize::from(inner.width), usize::from(inner.height));
    let n = l.lines.len();
    let view = view(&l.lines, l.scroll, width, height, !l.cut);
    let q = l.query.as_deref().map(str::to_lowercase);
    let hit = Style::new().fg(Color::Black).bg(Color::Yellow);
    // Every row of a matching line is highlighted; each line is matched once, not per row.
    let mut matched: Option<(usize, bool)> = None;
    let lines: Vec<Line> = view
        .rows
        .iter()
        .map(|&(i, row)| {
            let is_hit = match (matched, &q) {
                (Some((j, m)), _) if j == i => m,
                (_, Some(q)) => {
                    let m = l.lines[i].to_lowercase().contains(q.as_str());
                    matched = Some((i, m));
                    m
                }
                (_, None) => false,
            };
            if is_hit {
                Line::styled(row, hit)
            } else {
                Line::from(row)
            }
        })
        .collect();
    let title = if n == 0 {
        String::new()
    } else {
        format!(
            " lines {}-{} of {} · {} ",
            view.first + 1,
            view.end,
            n,
            if l.cut { "cut (w wraps)" } else { "wrapped" }
        )
    };
    frame.render_widget(Paragraph::new(lines).block(block.title_bottom(title)), text);
}

/// Where the followed lines are drawn, inside the border, for the screen's body `area`.
pub(crate) fn text_area(area: Rect) -> Rect {
    let [_, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    Block::bordered().inner(text)
}

/// The rows of text one log line takes: pieces of at most `width` columns when wrapping
/// (broken at any character: a log line is data, and every character of it stays visible),
/// else the whole line, which the paragraph cuts at the edge.
pub(crate) struct Rows<'a> {
    rest: Option<&'a str>,
    width: usize,
    wrap: bool,
}

pub(crate) fn rows(line: &str, width: usize, wrap: bool) -> Rows<'_> {
    Rows {
        rest: Some(line),
        width: width.max(1),
        wrap,
    }
}

impl<'a> Iterator for Rows<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest.take()?;
        if !self.wrap {
            return Some(rest);
        }
        let mut used = 0;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            let w = c.width().unwrap_or(0);
            // i > 0: a character wider than the view still takes a row of its own.
            if used + w > self.width && i > 0 {
                cut = i;
                break;
            }
            used += w;
        }
        let (row, tail) = rest.split_at(cut);
        self.rest = (!tail.is_empty()).then_some(tail);
        Some(row)
    }
}

/// How far the view scrolls up (in lines from the newest): until the first line is at the
/// top. Only the lines that fit in one view are measured, never the whole buffer.
pub fn log_scroll_max(lines: &VecDeque<String>, width: usize, height: usize, wrap: bool) -> usize {
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        used += rows(line, width, wrap).count();
        if used >= height {
            return lines.len() - 1 - i;
        }
    }
    0
}

/// The rows on screen and the lines they come from.
struct View<'a> {
    /// Index of the first line shown (maybe only its last rows).
    first: usize,
    /// One past the last line shown.
    end: usize,
    /// (line index, text) for each row, top to bottom.
    rows: Vec<(usize, &'a str)>,
}

/// The window for `scroll` lines up from the newest: the bottom line is shown whole on the
/// bottom row, and rows are filled upwards from it (so following the end always shows the
/// last line, however much the lines above wrap). Scrolled all the way up, the first line is
/// shown whole on the top row instead. Only the lines in the window are wrapped.
fn view(
    lines: &VecDeque<String>,
    scroll: usize,
    width: usize,
    height: usize,
    wrap: bool,
) -> View<'_> {
    let n = lines.len();
    let mut out = Vec::with_capacity(height);
    if n == 0 || height == 0 {
        return View {
            first: 0,
            end: 0,
            rows: out,
        };
    }
    if scroll > 0 && scroll >= log_scroll_max(lines, width, height, wrap) {
        let mut end = 0;
        for (i, line) in lines.iter().enumerate() {
            if out.len() >= height {
                break;
            }
            out.extend(
                rows(line, width, wrap)
                    .take(height - out.len())
                    .map(|r| (i, r)),
            );
            end = i + 1;
        }
        return View {
            first: 0,
            end,
            rows: out,
        };
    }
    let end = n - scroll.min(n - 1);
    let mut first = end;
    for i in (0..end).rev() {
        if out.len() >= height {
            break;
        }
        let line_rows: Vec<&str> = rows(&lines[i], width, wrap).collect();
        let take = line_rows.len().min(height - out.len());
        out.extend(
            line_rows[line_rows.len() - take..]
                .iter()
                .rev()
                .map(|&r| (i, r)),
        );
        first = i;
    }
    out.reverse();
    View {
        first,
        end,
        rows: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(line: &str, width: usize) -> Vec<&str> {
        rows(line, width, true).collect()
    }

    #[test]
    fn wrapping_keeps_every_character_and_respects_wide_ones() {
        assert_eq!(wrapped("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(wrapped("", 3), [""], "an empty line still takes a row");
        // A double-width character that would straddle the edge moves to the next row.
        assert_eq!(wrapped("ab日本", 3), ["ab", "日", "本"]);
        // Wider than the view: a row of its own rather than a loop that never advances.
        assert_eq!(wrapped("日x", 1), ["日", "x"]);
        assert_eq!(rows("abcdefg", 3, false).collect::<Vec<_>>(), ["abcdefg"]);
    }

    #[test]
    fn scrolling_stops_when_the_first_line_reaches_the_top() {
        let lines: VecDeque<String> = ["aaaaaa", "b", "c", "d"].map(String::from).into();
        // Wrapped at 3 columns the first line takes 2 rows: with 3 rows, "b" is the lowest
        // bottom line that still fills the view.
        assert_eq!(log_scroll_max(&lines, 3, 3, true), 2);
        assert_eq!(log_scroll_max(&lines, 3, 3, false), 1);
        assert_eq!(log_scroll_max(&lines, 3, 10, true), 0, "everything fits");
        let v = view(&lines, 0, 3, 3, true);
        assert_eq!((v.first, v.end), (1, 4));
        let v = view(&lines, 2, 3, 3, true);
        let rows: Vec<&str> = v.rows.iter().map(|r| r.1).collect();
        assert_eq!(
            rows,
            ["aaa", "aaa", "b"],
            "the top view starts with the first line whole"
        );
    }
}
