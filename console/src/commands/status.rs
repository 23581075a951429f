//! `agentctl status`, `ns` and `update`.

use shared::Client;

use super::{exit, print_fields, print_json, CommandError};
use crate::fmt::{age, bytes, count, duration, opt};

/// `agentctl status`.
pub async fn status(client: &Client, json: bool) -> Result<i32, CommandError> {
    let s = client.status().await?;
    if json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    let now = crate::fmt::unix_now();
    let r = &s.registry;
    let o = &s.output;
    print_fields(&[
        (
            "agent",
            format!("{} {} ({})", s.hostname, s.version, s.build),
        ),
        ("uptime", duration(s.uptime_secs)),
        (
            "registry",
            format!(
                "{} {}; {}, {}{}",
                r.source,
                r.location,
                count(r.namespaces as u64, "namespace"),
                count(r.items as u64, "item"),
                if r.from_cache { " (from cache)" } else { "" }
            ),
        ),
        (
            "last success",
            r.last_success
                .map(|t| age(now, t))
                .unwrap_or_else(|| "never".into()),
        ),
        (
            "registry error",
            format!("{} ({} failures)", opt(&r.last_error), r.failures),
        ),
        (
            "skipped",
            format!(
                "{} now, {} since start",
                count(r.problems.len() as u64, "problem"),
                r.skipped_total
            ),
        ),
        (
            "output",
            format!(
                "{} {} {}",
                o.kind,
                opt(&o.endpoint),
                if o.connected {
                    "connected"
                } else {
                    "NOT connected"
                }
            ),
        ),
        (
            "spool",
            format!(
                "{} batches, {}{}",
                o.spool_batches,
                bytes(o.spool_bytes),
                if o.spool_durable {
                    ""
                } else {
                    " (memory only)"
                }
            ),
        ),
        (
            "delivered",
            format!(
                "{} points in {} batches ({} failed attempts)",
                o.delivered_points, o.delivered_batches, o.errors
            ),
        ),
        (
            "dropped",
            format!(
                "{} points in {} batches",
                o.dropped_points, o.dropped_batches
            ),
        ),
        ("output error", opt(&o.last_error)),
        (
            "pipeline",
            format!(
                "{} accepted, {} rejected, {} queued",
                s.pipeline.accepted, s.pipeline.rejected, s.pipeline.queued
            ),
        ),
        (
            "jobs",
            format!(
                "{} (system {}, ports {}, procs {}, plugins {}, builtins {}); {} skipped ticks",
                s.jobs.total,
                s.jobs.system,
                s.jobs.ports,
                s.jobs.procs,
                s.jobs.plugins,
                s.jobs.builtins,
                s.jobs.skipped_ticks
            ),
        ),
        (
            "plugins",
            format!(
                "{} ({} disabled, {} running)",
                s.plugins.total, s.plugins.disabled, s.plugins.running
            ),
        ),
    ]);
    for p in &r.problems {
        println!("  skipped: {p}");
    }
    Ok(exit::OK)
}

/// `agentctl ns`.
pub async fn namespaces(client: &Client, json: bool) -> Result<i32, CommandError> {
    let ns = client.namespaces().await?;
    if json {
        print_json(&ns)?;
    } else if ns.namespaces.is_empty() {
        eprintln!(
            "this host is in no namespace (check the registry; `agentctl update` refreshes it)"
        );
    } else {
        for n in &ns.namespaces {
            println!("{n}");
        }
    }
    Ok(exit::OK)
}

/// `agentctl update`: exit 1 when the registry's answer was not applied.
pub async fn update(client: &Client, json: bool) -> Result<i32, CommandError> {
    let u = client.update().await?;
    if json {
        print_json(&u)?;
    } else {
        println!(
            "{}: {}; jobs started {}, stopped {}, unchanged {}",
            if u.ok { "refreshed" } else { "refresh FAILED" },
            count(u.namespaces.len() as u64, "namespace"),
            u.started,
            u.stopped,
            u.unchanged
        );
        for p in &u.problems {
            println!("  problem: {p}");
        }
    }
    Ok(if u.ok { exit::OK } else { exit::FAILED })
}
