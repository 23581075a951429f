//! `agentctl plugins list|run|update|enable|disable`.

use shared::api::{ActionResponse, PluginInfo, RunResult};
use shared::Client;

use super::{exit, print_json, print_table, CommandError};
use crate::cli::PluginsCommand;
use crate::fmt::{age, run_summary, unix_now};

/// Runs one `plugins` subcommand.
pub async fn run(client: &Client, cmd: PluginsCommand, json: bool) -> Result<i32, CommandError> {
    match cmd {
        PluginsCommand::List => list(client, json).await,
        PluginsCommand::Run(args) => {
            let p = &args.plugin;
            let resp = client
                .plugin_run(&p.ns, &p.repo, args.timeout, args.param.as_deref())
                .await?;
            if json {
                print_json(&resp)?;
            } else {
                println!("{}/{}: {}", resp.ns, resp.project, resp.message);
                if let Some(r) = &resp.result {
                    print_run(r);
                }
            }
            Ok(match (&resp.result, resp.ran) {
                (_, false) => exit::BUSY,
                (Some(r), true) if r.ok => exit::OK,
                _ => exit::FAILED,
            })
        }
        PluginsCommand::Update(p) => action(client.plugin_update(&p.ns, &p.repo).await?, json),
        PluginsCommand::Enable(p) => action(client.plugin_enable(&p.ns, &p.repo).await?, json),
        PluginsCommand::Disable(p) => action(client.plugin_disable(&p.ns, &p.repo).await?, json),
    }
}

async fn list(client: &Client, json: bool) -> Result<i32, CommandError> {
    let list = client.plugins().await?;
    if json {
        print_json(&list)?;
        return Ok(exit::OK);
    }
    if list.plugins.is_empty() {
        eprintln!("no plugins: the registry lists none for this host");
        return Ok(exit::OK);
    }
    let now = unix_now();
    let rows: Vec<Vec<String>> = list.plugins.iter().map(|p| row(p, now)).collect();
    print_table(
        &["NS", "PROJECT", "INTERVAL", "STATE", "LAST RUN", "COMMIT"],
        &rows,
    );
    Ok(exit::OK)
}

fn row(p: &PluginInfo, now: i64) -> Vec<String> {
    vec![
        p.ns.clone(),
        p.project.clone(),
        interval(p.interval),
        state(p, now),
        p.last_run
            .as_ref()
            .map(|r| format!("{} ({})", run_summary(r), age(now, r.at)))
            .unwrap_or_else(|| "never".into()),
        if p.kind == shared::api::PLUGIN_BUILTIN {
            "built-in".into()
        } else {
            p.commit
                .as_deref()
                .map(|c| c.chars().take(8).collect())
                .unwrap_or_else(|| "-".into())
        },
    ]
}

/// `30s`, or `on demand` for interval 0.
pub fn interval(secs: u64) -> String {
    if secs == 0 {
        "on demand".into()
    } else {
        crate::fmt::duration(secs)
    }
}

/// `running`, `enabled`, `disabled (until ...)`, or the plugin's problem.
pub fn state(p: &PluginInfo, now: i64) -> String {
    if p.problem.is_some() {
        "problem".into()
    } else if p.running {
        "running".into()
    } else if !p.enabled {
        match p.disabled_until {
            Some(t) => format!("disabled, back {}", age(now, t)),
            None => "disabled".into(),
        }
    } else {
        "enabled".into()
    }
}

fn action(resp: ActionResponse, json: bool) -> Result<i32, CommandError> {
    if json {
        print_json(&resp)?;
    } else {
        println!("{}/{}: {}", resp.ns, resp.project, resp.message);
    }
    Ok(exit::OK)
}

fn print_run(r: &RunResult) {
    println!(
        "result: {} ({})",
        if r.ok { "ok" } else { "FAILED" },
        run_summary(r)
    );
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
    for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if !text.is_empty() {
            println!("--- {name}{}", if r.truncated { " (cut)" } else { "" });
            println!("{}", text.trim_end());
        }
    }
}
