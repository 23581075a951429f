//! `agent plugin test DIR|REPO`: the plugin author's loop. Runs one plugin exactly as the agent
//! runs it ([`PluginManager::run_in`]: its user when root, the clean environment, the working
//! directory, the timeout and output caps), judges its output as the agent does
//! ([`plugins::judge`]: the JSON list of metrics) and renames and normalises the metrics as the
//! pipeline does, then prints the points, or the precise failure.
//!
//! A folder holding `plugin.sh` is run where it is (so what the author just edited runs, committed
//! or not); anything else is a git address, cloned as the agent clones it into a temporary
//! directory that is removed afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::config::Config;
use crate::pipeline::normalize::now_secs;
use crate::pipeline::{lineproto, normalize_all, Pipeline, Rename};
use crate::plugins::checkout::{Access, Checkout};
use crate::plugins::{self, git, runner, PluginManager};

/// Lines of a failed run's stderr shown.
pub const STDERR_LINES: usize = 20;

/// What to test.
#[derive(Debug, Clone)]
pub struct PluginTest {
    /// A folder holding `plugin.sh`, or a git address.
    pub target: String,
    /// The argument string (the registry's `parameters`), split on whitespace as the agent does.
    pub params: String,
    /// The run's wall-time limit.
    pub timeout: Duration,
    /// `AGENT_NS`, and the namespace folder of a clone.
    pub ns: String,
    /// The branch of a repository to clone; default: its default branch.
    pub branch: Option<String>,
}

/// A plugin run that succeeded.
#[derive(Debug, Default)]
pub struct PluginTested {
    /// Its points in line protocol.
    pub output: String,
    /// Metrics the agent would drop (normalisation refused them).
    pub rejected: usize,
    /// Why, for the first few ([`crate::pipeline::MAX_REPORTED_ERRORS`]).
    pub errors: Vec<String>,
}

fn note(msg: &str) {
    eprintln!("agent plugin test: {msg}");
}

/// Runs the plugin once; `Err` is a run that failed (exit status, timeout, output cap, malformed
/// JSON, not startable), with everything the author needs to fix it.
pub async fn run(config: Config, t: &PluginTest) -> anyhow::Result<PluginTested> {
    let host = crate::hostname(&config);
    let scratch = tempfile::Builder::new()
        .prefix("agent-plugin-test-")
        .tempdir()
        .context("cannot make a temporary directory for the run")?;
    let mut run_config = config;
    run_config.agent.data_dir = scratch.path().join("data");
    run_config.agent.plugins_dir = Some(scratch.path().join("plugins"));
    // Nothing is sent: the metrics are normalised below, not submitted.
    let (pipeline, _unread) = Pipeline::new(&host, 1);
    let manager = PluginManager::new(&run_config, pipeline);
    let identity = manager
        .identity()
        .map_err(|e| anyhow!("plugins cannot run: {e}"))?
        .cloned();
    let user = identity.as_ref().map_or_else(
        || "this user (the agent runs plugins as its own user when it is not root)".to_owned(),
        |id| format!("{} (agent.plugins_user)", id.name),
    );

    let (dir, project) = match folder(&t.target)? {
        Some(found) => found,
        None => {
            if identity.is_some() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711))
                    .context("cannot open the temporary directory to the plugin user")?;
            }
            let access = Access {
                plugin_user: identity.as_ref().map(|id| (id.uid, id.gid)),
            };
            clone(t, &run_config.plugins_dir(), access).await?
        }
    };
    note(&format!(
        "running `bash plugin.sh{}{}` in {} as {user}, timeout {:.1} s, output cap {} bytes per stream; contained by {}",
        if t.params.trim().is_empty() { "" } else { " " },
        runner::split_args(&t.params).join(" "),
        dir.display(),
        t.timeout.as_secs_f64(),
        runner::OUTPUT_CAP,
        manager.counts().containment
    ));
    let at = now_secs();
    let shown = dir.clone();
    let outcome = manager
        .run_in(dir, &t.ns, &project, &t.params, t.timeout)
        .await;
    let (result, metrics) = plugins::judge(&outcome, at, "call", true);
    if !result.ok {
        let mut msg = format!(
            "plugin {project} failed ({}): {}",
            result.reason,
            result.error.as_deref().unwrap_or("no error message")
        );
        if let Some(code) = result.exit_code {
            msg.push_str(&format!("\n  exit status: {code}"));
        }
        push_stderr(&mut msg, &result.stderr);
        // bash's "Permission denied": as root the run is the plugin user's, not the author's.
        if let (Some(id), Some(126)) = (&identity, result.exit_code) {
            msg.push_str(&format!(
                "\n  the plugin runs as {} (agent.plugins_user), who must be able to read {} and search every folder above it (the agent's own checkouts are readable by that user's group)",
                id.name,
                shown.display()
            ));
        }
        drop(scratch);
        bail!(msg);
    }
    let (points, ingested) = normalize_all(metrics, Rename::Plugin(&project), &host, now_secs());
    let mut out = Vec::new();
    for p in &points {
        lineproto::encode_point(p, &mut out);
    }
    note(&format!(
        "plugin {project} ran in {} ms (exit 0): {} as the agent sends them (renamed PLUGIN.{project}.<name>, host tag {host}); the agent also sends plugin.{project} value=0 for the run",
        result.duration_ms,
        shared::count(points.len() as u64, "point"),
    ));
    let tail = plugins::stderr_tail(&result.stderr, STDERR_LINES, plugins::STDERR_TAIL_BYTES * 8);
    if !tail.is_empty() {
        note(&format!(
            "its stderr (kept with the run, not sent):\n  {}",
            tail.replace('\n', "\n  ")
        ));
    }
    drop(scratch);
    Ok(PluginTested {
        output: String::from_utf8_lossy(&out).into_owned(),
        rejected: ingested.rejected,
        errors: ingested.errors,
    })
}

fn push_stderr(msg: &mut String, stderr: &str) {
    let tail = plugins::stderr_tail(stderr, STDERR_LINES, plugins::STDERR_TAIL_BYTES * 8);
    if tail.is_empty() {
        msg.push_str("\n  stderr: (empty)");
    } else {
        msg.push_str(&format!(
            "\n  stderr (last lines):\n    {}",
            tail.replace('\n', "\n    ")
        ));
    }
}

/// A folder holding `plugin.sh`, with its project name (the folder's name, which must be one the
/// agent accepts for a repository); `None` when `target` is not such a folder.
fn folder(target: &str) -> anyhow::Result<Option<(PathBuf, String)>> {
    let path = Path::new(target);
    if !path.join("plugin.sh").is_file() {
        return Ok(None);
    }
    let dir = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {target}"))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let project = crate::registry::project_name(&name).map_err(|e| {
        anyhow!(
            "{}: the folder's name is the project name, and {e}",
            dir.display()
        )
    })?;
    Ok(Some((dir, project)))
}

/// Clones `t.target` as the agent clones a plugin into a checkout under `plugins_dir`.
async fn clone(
    t: &PluginTest,
    plugins_dir: &Path,
    access: Access,
) -> anyhow::Result<(PathBuf, String)> {
    let local = !t.target.contains(':');
    if local && !Path::new(&t.target).exists() {
        bail!(
            "{}: no such folder; give a folder holding plugin.sh, or a git address",
            t.target
        );
    }
    let hint = if Path::new(&t.target).is_dir() {
        format!(
            "{} has no plugin.sh, so it was taken for a git repository: ",
            t.target
        )
    } else {
        String::new()
    };
    let project = crate::registry::project_name(&t.target).map_err(|e| anyhow!("{hint}{e}"))?;
    let checkout =
        Checkout::new(plugins_dir, &t.ns, &project, access).map_err(|e| anyhow!("{hint}{e}"))?;
    let (addr, branch, dest) = (t.target.clone(), t.branch.clone(), checkout.clone());
    let commit =
        tokio::task::spawn_blocking(move || git::clone_into(&addr, branch.as_deref(), &dest))
            .await
            .context("clone task failed")?
            .map_err(|e| anyhow!("{hint}{e}"))?;
    note(&format!(
        "cloned {} at {} into a temporary checkout (removed afterwards)",
        git::redact_address(&t.target),
        commit.get(..10).unwrap_or(&commit)
    ));
    Ok((checkout.dir().to_path_buf(), project))
}
