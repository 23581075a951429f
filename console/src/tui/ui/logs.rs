//! Logs: pick a file, follow it through `/log/offset`, pause, scroll and search.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use super::{BAD, LABEL};
use crate::tui::app::{App, Prompt};

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
pub(super) fn text_area(area: Rect) -> Rect {
    let [_, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    Block::bordered().inner(text)
}

/// The rows of text one log line takes: pieces of at most `width` columns when wrapping
/// (broken at any character: a log line is data, and every character of it stays visible),
/// else the whole line, which the paragraph cuts at the edge.
pub(super) struct Rows<'a> {
    rest: Option<&'a str>,
    width: usize,
    wrap: bool,
}

pub(super) fn rows(line: &str, width: usize, wrap: bool) -> Rows<'_> {
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
