//! Overview: agent, registry and output health, jobs, and the delivered-points sparkline.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};
use ratatui::Frame;

use crate::fmt::{age, bytes, count, duration, opt, tail};
use crate::tui::app::App;
use crate::tui::ui::{BAD, GOOD, LABEL};

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let Some(s) = &app.status else {
        let text = if app.conn.is_down() {
            "The agent has not answered yet; see the banner above."
        } else {
            "Waiting for the agent's first answer..."
        };
        frame.render_widget(Paragraph::new(text).block(Block::bordered()), area);
        return;
    };
    let [top, spark] = Layout::vertical([Constraint::Min(8), Constraint::Length(5)]).areas(area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    let [agent, jobs] = Layout::vertical([Constraint::Length(6), Constraint::Min(3)]).areas(left);
    let [registry, output] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);

    let r = &s.registry;
    let o = &s.output;
    let now = app.now;
    block(
        frame,
        agent,
        "Agent",
        vec![
            kv("host", s.hostname.clone()),
            kv("version", format!("{} ({})", s.version, s.build)),
            kv("uptime", duration(s.uptime_secs)),
            kv(
                "pipeline",
                format!(
                    "{} in, {} bad, {} queued",
                    s.pipeline.accepted, s.pipeline.rejected, s.pipeline.queued
                ),
            ),
        ],
    );
    block(
        frame,
        jobs,
        "Jobs",
        vec![
            kv(
                "running",
                format!(
                    "{} jobs, {} skipped ticks",
                    s.jobs.total, s.jobs.skipped_ticks
                ),
            ),
            kv(
                "system",
                format!(
                    "{}  ports {}  procs {}",
                    s.jobs.system, s.jobs.ports, s.jobs.procs
                ),
            ),
            kv(
                "scripts",
                format!("{}  built-ins {}", s.jobs.plugins, s.jobs.builtins),
            ),
            kv(
                "plugins",
                format!(
                    "{} ({} disabled, {} running)",
                    s.plugins.total, s.plugins.disabled, s.plugins.running
                ),
            ),
        ],
    );
    let reg_health = match (&r.last_error, r.last_success) {
        (Some(_), _) => Span::styled(
            format!(
                "failing{} ({}):",
                r.last_error_at
                    .map(|t| format!(", {}", age(now, t)))
                    .unwrap_or_default(),
                count(r.failures, "failure")
            ),
            BAD,
        ),
        (None, Some(t)) => Span::styled(format!("ok, {}", age(now, t)), GOOD),
        (None, None) => Span::raw("not refreshed yet"),
    };
    let mut lines = vec![
        kv(
            "source",
            format!(
                "{} {}",
                r.source,
                tail(&r.location, room(registry, &r.source))
            ),
        ),
        Line::from(vec![
            Span::styled(format!("{:<9}", "health"), LABEL),
            reg_health,
        ]),
        kv(
            "plan",
            format!(
                "{} ns, {}{}",
                r.namespaces,
                count(r.items as u64, "item"),
                if r.from_cache { " (from cache)" } else { "" }
            ),
        ),
    ];
    if !r.problems.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<9}", "skipped"), LABEL),
            Span::styled(
                format!(
                    "{} (agentctl status)",
                    count(r.problems.len() as u64, "problem")
                ),
                BAD,
            ),
        ]));
    }
    // While failing, the count is on the health row and the rows left go to the reason.
    if r.last_error.is_none() {
        lines.insert(3, kv("failures", r.failures.to_string()));
        if r.problems.is_empty() {
            lines.push(kv("skipped", "none".to_owned()));
        }
    }
    // The reason fills the rows left in the box, wrapped: it is what the operator needs. The
    // file or URL it starts with is already on the `source` row.
    if let Some(e) = &r.last_error {
        let width = usize::from(registry.width.saturating_sub(2));
        let left = usize::from(registry.height.saturating_sub(2)).saturating_sub(lines.len());
        lines.extend(
            super::logs::rows(reason_after(e, &r.location), width, true)
                .take(left)
                .map(|row| Line::styled(row.to_owned(), BAD)),
        );
    }
    block(frame, registry, "Registry", lines);
    let out_health = if o.connected {
        Span::styled("connected", GOOD)
    } else {
        Span::styled(format!("NOT connected: {}", opt(&o.last_error)), BAD)
    };
    block(
        frame,
        output,
        "Output",
        vec![
            kv(
                "kind",
                format!(
                    "{} {}",
                    o.kind,
                    tail(&opt(&o.endpoint), room(output, &o.kind))
                ),
            ),
            Line::from(vec![
                Span::styled(format!("{:<9}", "health"), LABEL),
                out_health,
            ]),
            kv(
                "spool",
                format!(
                    "{} batches, {}{}",
                    o.spool_batches,
                    bytes(o.spool_bytes),
                    if o.spool_durable { "" } else { " (memory!)" }
                ),
            ),
            kv(
                "sent",
                format!("{} points, {} failed tries", o.delivered_points, o.errors),
            ),
            kv("dropped", format!("{} points", o.dropped_points)),
        ],
    );

    let data: Vec<u64> = app.throughput.iter().copied().collect();
    let title = match app.throughput.back() {
        Some(rate) => format!(
            " Delivered points/s: {rate} now, {} max ",
            data.iter().max().unwrap_or(&0)
        ),
        None => " Delivered points/s (after two refreshes) ".to_owned(),
    };
    // Newest samples on the right: keep only what fits.
    let width = spark.width.saturating_sub(2) as usize;
    let shown = &data[data.len().saturating_sub(width)..];
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(shown)
            .style(Style::new().fg(Color::Green)),
        spark,
    );
}

/// Characters left for a value after the borders, the label column and `prefix` and a space.
/// What `error` says after naming `location` (`registry file /etc/r.toml: bad key` gives
/// `bad key`; `registry http://reg:8080/api/v1/agent/ns: HTTP 500` gives `HTTP 500`), or the
/// whole error when it does not name it.
fn reason_after<'a>(error: &'a str, location: &str) -> &'a str {
    if location.is_empty() {
        return error;
    }
    error
        .find(location)
        .map(|i| &error[i + location.len()..])
        .and_then(|rest| rest.split_once(": "))
        .map_or(error, |(_, reason)| reason)
}

fn room(area: Rect, prefix: &str) -> usize {
    usize::from(area.width).saturating_sub(2 + 9 + prefix.chars().count() + 1)
}

fn kv(key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:<9}"), LABEL),
        Span::raw(value),
    ])
}

fn block(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line>) {
    frame.render_widget(
        // No wrapping: a long value must not push the rows below it out of the box.
        Paragraph::new(lines).block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::reason_after;

    #[test]
    fn the_reason_is_what_follows_the_location() {
        assert_eq!(
            reason_after(
                "registry file /etc/agent/registry.toml: namespace[0].ports[0].port: invalid type",
                "/etc/agent/registry.toml"
            ),
            "namespace[0].ports[0].port: invalid type"
        );
        assert_eq!(
            reason_after(
                "registry http://reg:8080/api/v1/agent/ns: answered HTTP 500: down",
                "http://reg:8080"
            ),
            "answered HTTP 500: down"
        );
        assert_eq!(
            reason_after("something else", "/etc/r.toml"),
            "something else"
        );
        assert_eq!(reason_after("registry file x: y", ""), "registry file x: y");
    }
}
