//! `agentctl fleet status|update|plugins ...`: the fleet library ([`crate::fleet`]) on the
//! command line. Tables and summaries go to stdout, progress and warnings to stderr.

use std::time::Duration;

use crate::cli::{
    ConnectBy, FleetCommand, FleetPluginArgs, FleetPluginsCommand, FleetRunArgs, InventoryArgs,
    RolloutArgs,
};
use crate::fleet::action::{self, Action, Batch, Rollout};
use crate::fleet::filter::Filter;
use crate::fleet::inventory::{self, Host};
use crate::fleet::probe::{self, Options, Prober, Row, State};
use crate::fleet::registry::{self, Connect};
use crate::fmt::duration;

use std::io::Write;

use super::{exit, format_table};

/// Runs a fleet command; `token` is the `--token` (or `--token-file`) for hosts without their own.
pub async fn run(command: FleetCommand, token: Option<String>, json: bool) -> i32 {
    raise_open_file_limit();
    let result = match command {
        FleetCommand::Status(args) => {
            status(
                &args.inventory,
                args.ns.as_deref(),
                args.timeout,
                token,
                json,
            )
            .await
        }
        FleetCommand::Update(args) => {
            fan_out(
                &args.inventory,
                args.ns.as_deref(),
                &args.rollout,
                Action::Update,
                token,
                json,
            )
            .await
        }
        FleetCommand::Plugins(cmd) => {
            let (args, action) = plugin_action(cmd);
            fan_out(
                &args.inventory,
                Some(&args.plugin.ns),
                &args.rollout,
                action,
                token,
                json,
            )
            .await
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("agentctl fleet: {message}");
            exit::USAGE
        }
    }
}

fn plugin_action(cmd: FleetPluginsCommand) -> (FleetPluginArgs, Action) {
    let plugin = |a: &FleetPluginArgs| (a.plugin.ns.clone(), a.plugin.repo.clone());
    match cmd {
        FleetPluginsCommand::Update(a) => {
            let (ns, repo) = plugin(&a);
            (a, Action::PluginUpdate { ns, repo })
        }
        FleetPluginsCommand::Enable(a) => {
            let (ns, repo) = plugin(&a);
            (a, Action::PluginEnable { ns, repo })
        }
        FleetPluginsCommand::Disable(a) => {
            let (ns, repo) = plugin(&a);
            (a, Action::PluginDisable { ns, repo })
        }
        FleetPluginsCommand::Run(FleetRunArgs {
            inventory,
            plugin,
            rollout,
            timeout,
            param,
        }) => {
            let action = Action::PluginRun {
                ns: plugin.ns.clone(),
                repo: plugin.repo.clone(),
                timeout,
                param,
            };
            (
                FleetPluginArgs {
                    inventory,
                    plugin,
                    rollout,
                },
                action,
            )
        }
    }
}

/// The hosts the inventory options name, each with its token (its own, else `token`).
async fn load_inventory(
    args: &InventoryArgs,
    ns: Option<&str>,
    token: Option<String>,
) -> Result<Vec<Host>, String> {
    let mut hosts = match (&args.hosts, &args.registry) {
        (Some(_), Some(_)) => {
            return Err("give either --hosts (or AGENTCTL_HOSTS) or --registry, not both".into())
        }
        (None, None) => {
            return Err(
                "which hosts? name them with --hosts FILE (or AGENTCTL_HOSTS; `-` reads stdin) \
                 or --registry URL --ns NS"
                    .into(),
            )
        }
        (Some(file), None) => {
            let (file, port) = (file.clone(), args.port);
            tokio::task::spawn_blocking(move || inventory::load(&file, port))
                .await
                .map_err(|e| format!("reading the host file failed: {e}"))?
                .map_err(|e| e.to_string())?
        }
        (None, Some(url)) => {
            let Some(ns) = args.registry_ns.as_deref().or(ns) else {
                return Err("--registry needs the namespace: --ns NS (or --registry-ns NS)".into());
            };
            let connect = match args.connect {
                ConnectBy::Hostname => Connect::Hostname,
                ConnectBy::Ip => Connect::Ip,
            };
            let machines = registry::machines(url, ns, args.port, connect)
                .await
                .map_err(|e| e.to_string())?;
            for skipped in &machines.skipped {
                eprintln!("agentctl fleet: registry: skipped {skipped}");
            }
            if machines.hosts.is_empty() {
                return Err(format!(
                    "the registry lists no usable machine in namespace {ns:?}"
                ));
            }
            machines.hosts
        }
    };
    inventory::apply_default_token(&mut hosts, token.as_deref());
    Ok(hosts)
}

fn seconds(secs: f64, flag: &str) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{flag} {secs}: give seconds, more than 0 and at most 86400"
        ))
    }
}

fn prober(args: &InventoryArgs, timeout: Duration) -> Result<Prober, String> {
    if args.in_flight == 0 || args.in_flight > 4096 {
        return Err(format!(
            "--in-flight {}: give 1 to 4096 hosts at a time",
            args.in_flight
        ));
    }
    Ok(Prober::new(Options {
        in_flight: args.in_flight,
        timeout,
    }))
}

/// The exit code for the selected rows: the worst state wins.
pub fn status_code(rows: &[Row]) -> i32 {
    match rows.iter().map(|r| r.state.rank()).min() {
        Some(0) => exit::FLEET_UNREACHABLE,
        Some(1) => exit::FLEET_UNAUTHORIZED,
        Some(2) => exit::FLEET_DEGRADED,
        _ => exit::OK,
    }
}

async fn status(
    args: &InventoryArgs,
    ns: Option<&str>,
    timeout: f64,
    token: Option<String>,
    json: bool,
) -> Result<i32, String> {
    let filter = Filter::parse(args.filter.as_deref().unwrap_or(""))?;
    let prober = prober(args, seconds(timeout, "--timeout")?)?;
    let hosts = load_inventory(args, ns, token).await?;
    let mut rows: Vec<Row> = prober
        .probe_all(&hosts)
        .await
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();
    rows.sort_by(|a, b| (a.state.rank(), &a.host.name).cmp(&(b.state.rank(), &b.host.name)));
    if json {
        for row in &rows {
            match serde_json::to_string(row) {
                Ok(line) => out(&line),
                Err(e) => eprintln!(
                    "agentctl fleet: {}: cannot encode as JSON: {e}",
                    row.host.name
                ),
            }
        }
    } else {
        let table: Vec<Vec<String>> = rows.iter().map(status_cells).collect();
        out(&format_table(
            &[
                "NAME", "STATE", "VERSION", "UPTIME", "REGISTRY", "OUTPUT", "SPOOL", "DROPPED",
                "PLUGINS", "DETAIL",
            ],
            &table,
        )
        .join("\n"));
    }
    let line = summary_line(&rows, hosts.len());
    if json {
        eprintln!("{line}");
    } else {
        out(&line);
    }
    Ok(status_code(&rows))
}

/// `50 hosts: 45 ok, 3 degraded, 2 unreachable, 0 unauthorized`, and how many the filter left out.
pub fn summary_line(rows: &[Row], total: usize) -> String {
    let counts = probe::summary(rows);
    let parts: Vec<String> = counts
        .iter()
        .rev()
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    let mut line = format!("{} hosts: {}", rows.len(), parts.join(", "));
    if rows.len() != total {
        line.push_str(&format!(
            " ({} of {total} left out by --filter)",
            total - rows.len()
        ));
    }
    line
}

fn status_cells(row: &Row) -> Vec<String> {
    let dash = || "-".to_owned();
    let detail = match &row.state {
        State::Ok => String::new(),
        State::Degraded { reasons } => reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        State::Unreachable { error } | State::Unauthorized { error } => error.clone(),
    };
    let detail = crate::fmt::tail(&detail.replace('\n', " "), 160);
    let Some(s) = &row.status else {
        return vec![
            row.host.name.clone(),
            row.state.name().to_owned(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            detail,
        ];
    };
    let registry = if s.registry.last_error.is_some() {
        "failing"
    } else if s.registry.from_cache {
        "cache"
    } else if s.registry.last_success.is_some() {
        "ok"
    } else {
        "never"
    };
    let output = if s.output.connected {
        format!("{} ok", s.output.kind)
    } else if s.output.last_error.is_some() {
        format!("{} failing", s.output.kind)
    } else {
        format!("{} idle", s.output.kind)
    };
    let plugins = match &row.failing_plugins {
        Some(f) if f.is_empty() => format!("{} ok", s.plugins.total),
        Some(f) => format!("{} failing", f.len()),
        None => "?".to_owned(),
    };
    vec![
        row.host.name.clone(),
        row.state.name().to_owned(),
        s.version.clone(),
        duration(s.uptime_secs),
        registry.to_owned(),
        output,
        s.output.spool_batches.to_string(),
        s.output.dropped_points.to_string(),
        plugins,
        detail,
    ]
}

async fn fan_out(
    args: &InventoryArgs,
    ns: Option<&str>,
    rollout: &RolloutArgs,
    action: Action,
    token: Option<String>,
    json: bool,
) -> Result<i32, String> {
    let filter = Filter::parse(args.filter.as_deref().unwrap_or(""))?;
    let batch = match rollout.batch.as_deref() {
        Some(b) => Batch::parse(b)?,
        None => Batch::All,
    };
    let plan = Rollout {
        batch,
        stop_on_failure: rollout.stop_on_failure,
        timeout: seconds(rollout.host_timeout, "--host-timeout")?,
    };
    let prober = prober(args, probe::DEFAULT_TIMEOUT)?;
    let all = load_inventory(args, ns, token).await?;
    let hosts: Vec<Host> = if filter.needs_probe() {
        // The filter tests what only the agents know: ask them first, act on the rows it keeps.
        prober
            .probe_all(&all)
            .await
            .into_iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.host)
            .collect()
    } else {
        all.iter()
            .filter(|h| filter.matches_host(h))
            .cloned()
            .collect()
    };
    if hosts.is_empty() {
        eprintln!(
            "agentctl fleet: no host selected ({} in the inventory, none left by --filter); nothing done",
            all.len()
        );
        return Ok(exit::OK);
    }
    let size = batch.size(hosts.len());
    eprintln!(
        "agentctl fleet: {} on {} hosts, {} per batch{}",
        action.name(),
        hosts.len(),
        size,
        if plan.stop_on_failure {
            ", stopping after a batch with a failure"
        } else {
            ""
        }
    );
    let report = action::rollout(&prober, &hosts, &action, plan, |n, of, done| {
        let ok = done.iter().filter(|o| o.is_ok()).count();
        eprintln!(
            "agentctl fleet: batch {n}/{of}: {} hosts, {ok} ok, {} not ok",
            done.len(),
            done.len() - ok
        );
    })
    .await;
    if json {
        for o in &report.outcomes {
            match serde_json::to_string(o) {
                Ok(line) => out(&line),
                Err(e) => eprintln!("agentctl fleet: {}: cannot encode as JSON: {e}", o.name),
            }
        }
    } else {
        for group in action::collapse(&report.outcomes) {
            let header = format!(
                "{} ({} {}, {})",
                action::fold_names(&group.names),
                group.names.len(),
                if group.names.len() == 1 {
                    "host"
                } else {
                    "hosts"
                },
                group.result
            );
            let rule = "-".repeat(header.chars().count().min(79));
            out(&format!("{rule}\n{header}\n{rule}\n{}", group.text));
        }
    }
    let count = |r: &str| report.outcomes.iter().filter(|o| o.result == r).count();
    let line = format!(
        "{} on {} hosts: {} ok, {} failed, {} error, {} skipped{}",
        action.name(),
        report.outcomes.len(),
        count("ok"),
        count("failed"),
        count("error"),
        count("skipped"),
        if report.halted {
            format!(
                " (stopped after batch {} of {}: --stop-on-failure)",
                report.batches_run, report.batches
            )
        } else {
            String::new()
        }
    );
    if json {
        eprintln!("{line}");
    } else {
        out(&line);
    }
    Ok(if report.halted {
        exit::FLEET_HALTED
    } else if report.outcomes.iter().all(|o| o.is_ok()) {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly instead of a panic.
fn out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Raises the soft open-file limit to the hard one: `--in-flight` hosts at once take three
/// sockets each, more than a 1024 soft limit allows at high settings. Failing to raise it is not
/// an error (the probes that cannot open a socket say so in their rows).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
