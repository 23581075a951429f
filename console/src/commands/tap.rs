//! `agentctl tap`: the agent's points, live (`GET /tap`), as the line protocol it sends.

use std::io::Write;

use shared::api::{TapLine, TapPoint};
use shared::Client;

use super::{exit, CommandError};
use crate::cli::TapArgs;

/// Prints the stream until Ctrl-C (exit 0), `--count` points (exit 0), or the agent ends it
/// (it is stopping: exit 3, as when it is unreachable).
pub async fn run(client: &Client, args: TapArgs, json: bool) -> Result<i32, CommandError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(ns) = &args.ns {
        query.push(("ns", ns.clone()));
    }
    if let Some(m) = &args.pattern {
        query.push(("match", m.clone()));
    }
    for t in &args.tags {
        if !t.contains('=') {
            return Err(CommandError::Input(format!("--tag {t:?}: give KEY=VALUE")));
        }
        query.push(("tag", t.clone()));
    }
    if let Some(r) = args.rate {
        query.push(("rate", r.to_string()));
    }
    tokio::select! {
        r = follow(client, &query, args.count, json) => r,
        _ = tokio::signal::ctrl_c() => Ok(exit::OK),
    }
}

async fn follow(
    client: &Client,
    query: &[(&str, String)],
    count: Option<u64>,
    json: bool,
) -> Result<i32, CommandError> {
    let mut stream = client.tap(query).await?;
    let mut out = Printer::default();
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(exit::OK);
    }
    while let Some(line) = stream.next().await? {
        let written = match &line {
            TapLine::Dropped { dropped } => {
                if !json {
                    eprintln!(
                        "agentctl: the tap dropped {dropped} points: they came faster than they were read; \
                         narrow it with --ns, --match, --tag or --rate"
                    );
                    continue;
                }
                out.json(&line)
            }
            TapLine::Point(p) => {
                seen += 1;
                if json {
                    out.json(&line)
                } else {
                    out.point(p)
                }
            }
        };
        if written.is_err() {
            // The reader went away (`agentctl tap | head`): that is how it says it is done.
            return Ok(exit::OK);
        }
        if count.is_some_and(|c| seen >= c) {
            return Ok(exit::OK);
        }
    }
    eprintln!(
        "agentctl: the agent at {} ended the tap (it is stopping)",
        client.addr()
    );
    Ok(exit::UNREACHABLE)
}

/// Writes the lines, with a `# ns NS · PRODUCER` comment whenever the source changes, so the
/// output stays valid line protocol (comments are allowed) and says where each line is from.
#[derive(Default)]
struct Printer {
    last: Option<(String, String)>,
}

impl Printer {
    fn point(&mut self, p: &TapPoint) -> std::io::Result<()> {
        let mut w = std::io::stdout().lock();
        let same = self
            .last
            .as_ref()
            .is_some_and(|(ns, from)| *ns == p.ns && *from == p.producer);
        if !same {
            writeln!(w, "# ns {} · {}", p.ns, p.producer)?;
            self.last = Some((p.ns.clone(), p.producer.clone()));
        }
        writeln!(w, "{}", p.line)
    }

    fn json(&mut self, line: &TapLine) -> std::io::Result<()> {
        let text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        writeln!(std::io::stdout().lock(), "{text}")
    }
}
