//! Points: the agent's points live (`GET /tap`), one row per series (namespace, measurement,
//! tag set) with its last value, points per second, when it was last seen and what produced it;
//! `/` filters, Enter shows the series' latest lines as sent, Space pauses without losing the
//! selected row.
//!
//! The tap opens the first time the screen is shown and stays open (the table keeps filling on
//! other screens). It asks for at most [`TAP_RATE`] points per second, sampled evenly by the
//! agent, so a busy agent cannot make the console the bottleneck.

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use shared::api::{TapLine, TapPoint, TapValue};

use super::{first_shown, list_key, table_row_at, table_rows, wheel_step};
use crate::tui::app::{Action, App};
use crate::tui::ui::{BAD, LABEL};

/// Points per second the screen's tap asks for.
pub const TAP_RATE: u32 = 2000;
/// Series kept; points of further series are counted, not shown.
pub const MAX_SERIES: usize = 5000;
/// Raw lines kept per series for the Enter view.
pub const RAW_KEPT: usize = 20;
/// Seconds the points-per-second figure is averaged over.
const RATE_WINDOW: usize = 10;
/// Seconds before a tap that failed is opened again.
const RETRY_SECS: i64 = 5;

/// A series: namespace, measurement, and its tags other than `host` as `k=v,k=v`.
pub type SeriesKey = (String, String, String);

/// What the screen knows of one series.
#[derive(Debug, Clone)]
pub struct Series {
    /// The last value.
    pub value: TapValue,
    /// Its timestamp (unix seconds, as sent).
    pub timestamp: i64,
    /// What produced the last point.
    pub producer: String,
    /// When the console last received a point (unix seconds).
    pub seen: i64,
    /// The latest lines as sent, the newest last.
    pub raw: VecDeque<String>,
    /// Points received in each of the last [`RATE_WINDOW`] seconds (a ring by unix second).
    counts: [u32; RATE_WINDOW],
    /// The unix second `counts` was last written at.
    counted_at: i64,
}

impl Series {
    /// Points per second over the window ending at `now`.
    pub fn rate(&self, now: i64) -> f64 {
        let w = RATE_WINDOW as i64;
        // Seconds after the last point have no bucket written yet: they count as zero.
        let sum: u32 = (now - w + 1..=now.min(self.counted_at))
            .map(|sec| self.counts[sec.rem_euclid(w) as usize])
            .sum();
        f64::from(sum) / RATE_WINDOW as f64
    }

    fn count(&mut self, now: i64) {
        // Clear the buckets of the seconds skipped since the last point.
        let gap = (now - self.counted_at).clamp(0, RATE_WINDOW as i64);
        for k in 1..=gap {
            self.counts[((self.counted_at + k).rem_euclid(RATE_WINDOW as i64)) as usize] = 0;
        }
        self.counted_at = self.counted_at.max(now);
        self.counts[(now.rem_euclid(RATE_WINDOW as i64)) as usize] += 1;
    }
}

/// Where the screen's tap stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TapState {
    /// Not opened yet (the screen was never shown).
    #[default]
    Idle,
    /// Asked for, or streaming.
    Open,
    /// It ended or was refused; opened again at `retry_at`.
    Failed {
        /// Why, for the screen.
        reason: String,
        /// Unix seconds.
        retry_at: i64,
    },
}

/// The Points screen's state.
#[derive(Debug, Clone, Default)]
pub struct PointsView {
    /// Every series seen, by key.
    pub series: BTreeMap<SeriesKey, Series>,
    /// The tap.
    pub tap: TapState,
    /// The selected series (kept by key, so new series appearing above do not move it).
    pub selected: Option<SeriesKey>,
    /// The Enter view: the selected series' latest lines.
    pub raw: bool,
    /// The filter (case-insensitive text in namespace, measurement, tags or producer).
    pub filter: String,
    /// The filter being typed.
    pub input: Option<String>,
    /// Paused: the rows shown, frozen as they were (the table fills on behind them).
    pub frozen: Option<Vec<(SeriesKey, Series)>>,
    /// Points the agent's tap dropped because the console read too slowly.
    pub dropped: u64,
    /// Points of series beyond [`MAX_SERIES`], not shown.
    pub overflow: u64,
}

impl PointsView {
    /// The rows shown: the frozen ones when paused, else the live ones; filtered.
    pub fn rows(&self) -> Vec<(&SeriesKey, &Series)> {
        let f = self.filter.to_lowercase();
        let keep = |k: &SeriesKey, s: &Series| {
            f.is_empty()
                || [&k.0, &k.1, &k.2, &s.producer]
                    .iter()
                    .any(|t| t.to_lowercase().contains(&f))
        };
        match &self.frozen {
            Some(rows) => rows
                .iter()
                .filter(|(k, s)| keep(k, s))
                .map(|(k, s)| (k, s))
                .collect(),
            None => self.series.iter().filter(|(k, s)| keep(k, s)).collect(),
        }
    }

    /// The index of the selected row in [`PointsView::rows`] (the first when none is).
    pub fn selected_index(&self, rows: &[(&SeriesKey, &Series)]) -> usize {
        self.selected
            .as_ref()
            .and_then(|sel| rows.iter().position(|(k, _)| *k == sel))
            .unwrap_or(0)
    }

    /// Adds what the tap sent at unix second `now`.
    pub fn ingest(&mut self, lines: Vec<TapLine>, now: i64) {
        for line in lines {
            match line {
                TapLine::Dropped { dropped } => self.dropped += dropped,
                TapLine::Point(p) => self.add(p, now),
            }
        }
    }

    fn add(&mut self, p: TapPoint, now: i64) {
        let tags: Vec<String> = p
            .tags
            .iter()
            .filter(|(k, _)| *k != "host")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let key = (p.ns, p.measurement, tags.join(","));
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            self.overflow += 1;
            return;
        }
        let s = self.series.entry(key).or_insert_with(|| Series {
            value: p.value.clone(),
            timestamp: p.timestamp,
            producer: String::new(),
            seen: now,
            raw: VecDeque::new(),
            counts: [0; RATE_WINDOW],
            counted_at: now,
        });
        s.value = p.value;
        s.timestamp = p.timestamp;
        s.producer = p.producer;
        s.seen = now;
        s.count(now);
        if s.raw.len() == RAW_KEPT {
            s.raw.pop_front();
        }
        s.raw.push_back(p.line);
    }
}

/// On each tick: opens the tap when the screen is shown and it is not open (or retries it).
pub(crate) fn on_tick(app: &mut App) -> Option<Action> {
    if app.tab != super::Tab::Points {
        return None;
    }
    let due = match &app.points.tap {
        TapState::Idle => true,
        TapState::Open => false,
        TapState::Failed { retry_at, .. } => app.now >= *retry_at,
    };
    due.then(|| {
        app.points.tap = TapState::Open;
        Action::Tap { rate: TAP_RATE }
    })
}

/// The tap sent lines.
pub(crate) fn on_tapped(app: &mut App, lines: Vec<TapLine>) {
    let now = app.now;
    app.points.ingest(lines, now);
}

/// The tap ended (the agent stopped, the connection broke, or it was refused).
pub(crate) fn on_tap_ended(app: &mut App, reason: String) {
    app.points.tap = TapState::Failed {
        reason,
        retry_at: app.now + RETRY_SECS,
    };
}

pub(super) fn typing(app: &App) -> bool {
    app.points.input.is_some()
}

pub(super) fn takes_esc(app: &App) -> bool {
    app.points.raw || app.points.input.is_some() || !app.points.filter.is_empty()
}

pub(super) fn on_key(app: &mut App, key: KeyEvent) -> Option<Action> {
    let v = &mut app.points;
    if let Some(text) = &mut v.input {
        match key.code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => v.input = None,
            KeyCode::Enter => {
                v.filter = v.input.take().unwrap_or_default().trim().to_owned();
            }
            _ => {}
        }
        // The filter applies as it is typed.
        if let Some(text) = &v.input {
            v.filter = text.trim().to_owned();
        }
        return None;
    }
    match key.code {
        KeyCode::Char('/') => v.input = Some(v.filter.clone()),
        KeyCode::Enter => v.raw = !v.raw,
        KeyCode::Esc if v.raw => v.raw = false,
        KeyCode::Esc => v.filter.clear(),
        KeyCode::Char(' ') | KeyCode::Char('p') => {
            v.frozen = match v.frozen.take() {
                Some(_) => None,
                None => Some(
                    v.series
                        .iter()
                        .map(|(k, s)| (k.clone(), s.clone()))
                        .collect(),
                ),
            };
        }
        code => select(v, |i, last| list_key(code, i, last)),
    }
    None
}

fn select(v: &mut PointsView, step: impl FnOnce(usize, usize) -> usize) {
    let rows = v.rows();
    if rows.is_empty() {
        return;
    }
    let i = step(v.selected_index(&rows), rows.len() - 1);
    let key = rows.get(i).map(|(k, _)| (*k).clone());
    v.selected = key;
}

pub(super) fn on_wheel(app: &mut App, up: bool) {
    select(&mut app.points, |i, last| wheel_step(i, last, up));
}

pub(super) fn on_row_click(app: &mut App, i: usize) {
    select(&mut app.points, |_, last| i.min(last));
}

/// The row drawn at `y`, if any.
pub(super) fn row_at(app: &App, body: Rect, y: u16) -> Option<usize> {
    let rows = app.points.rows();
    let area = table_area(app, body);
    table_row_at(area, app.points.selected_index(&rows), rows.len(), y)
}

fn table_area(app: &App, body: Rect) -> Rect {
    let [top, _] = split(app, body);
    top
}

fn split(app: &App, body: Rect) -> [Rect; 2] {
    let raw = if app.points.raw {
        Constraint::Length((RAW_KEPT as u16 + 2).min(body.height / 2))
    } else {
        Constraint::Length(0)
    };
    Layout::vertical([Constraint::Min(5), raw]).areas(body)
}

pub(super) fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let v = &app.points;
    let [top, bottom] = split(app, body);
    let rows = v.rows();
    let mut title = format!(
        " Points · {} series · sampled ≤{TAP_RATE}/s ",
        v.series.len()
    );
    if v.frozen.is_some() {
        title.push_str("· PAUSED ");
    }
    let mut notes = Vec::new();
    if let Some(text) = &v.input {
        notes.push(format!("filter: {text}▏"));
    } else if !v.filter.is_empty() {
        notes.push(format!("filter: {}", v.filter));
    }
    if v.dropped > 0 {
        notes.push(format!("{} dropped by the tap", v.dropped));
    }
    if v.overflow > 0 {
        notes.push(format!(
            "{} points of series beyond {MAX_SERIES} not shown",
            v.overflow
        ));
    }
    let mut block = Block::bordered().title(title);
    if !notes.is_empty() {
        block = block.title_bottom(format!(" {} ", notes.join(" · ")));
    }
    if rows.is_empty() {
        let text = match &v.tap {
            TapState::Failed { reason, .. } => {
                Line::styled(format!("The tap ended: {reason}. Retrying..."), BAD)
            }
            _ if !v.filter.is_empty() => Line::raw("No series matches the filter (Esc clears it)."),
            _ => Line::raw("Waiting for points... (the agent sends each family at its interval)"),
        };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: false }).block(block),
            top,
        );
        return;
    }
    let selected = v.selected_index(&rows);
    let first = first_shown(selected, table_rows(top));
    let now = app.now;
    let body_rows = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(table_rows(top))
        .map(|(i, ((ns, m, tags), s))| {
            let row = Row::new(vec![
                ns.clone(),
                m.clone(),
                tags.clone(),
                value_text(&s.value),
                format!("{:.1}", s.rate(now)),
                crate::fmt::age(now, s.seen),
                s.producer.clone(),
            ]);
            if i == selected {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        });
    // The namespace column is as wide as the names shown (they repeat; the measurement is
    // what the eye looks for), the rest share what is left.
    let ns_width = rows
        .iter()
        .map(|((ns, _, _), _)| ns.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 24) as u16;
    let table = Table::new(
        body_rows,
        [
            Constraint::Length(ns_width),
            Constraint::Fill(5),
            Constraint::Fill(2),
            Constraint::Length(9),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Fill(2),
        ],
    )
    .header(
        Row::new([
            "NS",
            "MEASUREMENT",
            "TAGS",
            "VALUE",
            "PTS/S",
            "SEEN",
            "PRODUCER",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(block);
    frame.render_widget(table, top);
    if v.raw {
        if let Some((_, s)) = rows.get(selected) {
            let lines: Vec<Line> = s.raw.iter().map(|l| Line::raw(l.clone())).collect();
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(Line::styled(
                        " Latest lines as sent (Enter/Esc closes) ",
                        LABEL,
                    ))),
                bottom,
            );
        }
    }
}

fn value_text(v: &TapValue) -> String {
    match v {
        TapValue::Int(i) => format!("{i}i"),
        TapValue::Float(f) => {
            let t = format!("{f:.3}");
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        TapValue::Bool(b) => b.to_string(),
        TapValue::Str(s) => format!("{s:?}"),
    }
}

/// The keys the footer shows.
pub(super) fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    if app.points.input.is_some() {
        return &[("Enter", "keep filter"), ("Esc", "cancel")];
    }
    &[
        ("1-5/Tab", "screens"),
        ("j/k", "select"),
        ("/", "filter"),
        ("Enter", "lines"),
        ("Space", "pause"),
        ("q", "quit"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(m: &str, v: f64) -> TapLine {
        TapLine::Point(TapPoint {
            ns: "ns".into(),
            measurement: m.into(),
            tags: [
                ("host".to_owned(), "h".to_owned()),
                ("k".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            value: TapValue::Float(v),
            timestamp: 1,
            producer: "POST /post".into(),
            line: format!("{m},host=h,k=1 value={v} 1"),
        })
    }

    #[test]
    fn series_keep_their_last_value_raw_lines_and_rate() {
        let mut v = PointsView::default();
        for t in 0..30 {
            v.ingest(vec![point("a", t as f64), point("a", t as f64)], 100 + t);
        }
        let s = &v.series[&("ns".into(), "a".into(), "k=1".into())];
        assert_eq!(s.value, TapValue::Float(29.0));
        assert_eq!(s.raw.len(), RAW_KEPT);
        assert_eq!(
            s.raw.back().map(String::as_str),
            Some("a,host=h,k=1 value=29 1")
        );
        assert!((s.rate(129) - 2.0).abs() < 1e-9, "{}", s.rate(129));
        assert!(
            (s.rate(134) - 1.0).abs() < 1e-9,
            "half the window is quiet: {}",
            s.rate(134)
        );
        assert_eq!(s.rate(140), 0.0);
    }

    #[test]
    fn pausing_freezes_the_rows_and_keeps_the_selection() {
        let mut v = PointsView::default();
        v.ingest(vec![point("b", 1.0), point("c", 1.0)], 1);
        v.selected = Some(("ns".into(), "c".into(), "k=1".into()));
        v.frozen = Some(
            v.series
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
        );
        v.ingest(vec![point("a", 1.0), point("c", 2.0)], 2);
        let rows = v.rows();
        assert_eq!(rows.len(), 2, "new series wait until resumed");
        assert_eq!(rows[v.selected_index(&rows)].1.value, TapValue::Float(1.0));
        v.frozen = None;
        let rows = v.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[v.selected_index(&rows)].0 .1,
            "c",
            "still on the same series"
        );
    }

    #[test]
    fn series_are_bounded_and_the_filter_matches_any_column() {
        let mut v = PointsView::default();
        let lines: Vec<TapLine> = (0..MAX_SERIES + 10)
            .map(|i| point(&format!("m{i}"), 1.0))
            .collect();
        v.ingest(lines, 1);
        assert_eq!(v.series.len(), MAX_SERIES);
        assert_eq!(v.overflow, 10);
        v.filter = "M12".into();
        assert!(v.rows().iter().all(|(k, _)| k.1.contains("m12")));
        v.filter = "post".into();
        assert_eq!(
            v.rows().len(),
            MAX_SERIES,
            "the producer column matches too"
        );
    }
}
