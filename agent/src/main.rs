//! `agent`: the host-monitoring daemon's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use agent::config::Config;
use agent::daemon;

/// Host-monitoring agent: collects metrics for the namespaces a registry names and ships them to
/// NSQ (or InfluxDB, files, stdout) as InfluxDB line protocol.
#[derive(Parser)]
#[command(name = "agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the agent (in the background unless --foreground).
    Start {
        /// The configuration file.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Stay attached and log to stderr too (for systemd and containers).
        #[arg(long)]
        foreground: bool,
        /// Internal: the background process started by `agent start`.
        #[arg(long, hide = true)]
        daemon_child: bool,
    },
    /// Stop the running agent gracefully (pending points are delivered or spooled first).
    Stop {
        /// The configuration of the agent to stop; default: the last one this user started.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Seconds to wait for it to finish draining.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Make the running agent re-read its config file (SIGHUP) and wait until it applied or
    /// refused it; exits 0 when applied, 2 when refused (the agent keeps its configuration), 1
    /// when no agent answered.
    Reload {
        /// The configuration of the agent to reload; default: the last one this user started.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Seconds to wait for the agent to report the outcome.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Check a configuration file and report every problem.
    Check {
        /// The configuration file.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Run each job of the plan once and print the points the agent would send; sends nothing.
    ///
    /// The points are printed as line protocol under a `# ns NAME` line per namespace. Nothing
    /// is sent and no state changes
    /// (no spool, registry cache or plugin state; git plugins are cloned into a temporary
    /// directory). Exits 1 when a job failed, listing which and why on stderr.
    Test {
        /// The configuration file.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Only the jobs of this namespace (system families: only what is sent to it).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
        /// Only these jobs: a system family (`CPU`), a port check's name or port, a process
        /// check's name, or KIND NAME (`plugin nginx-stats`, `builtin http_check`, `port 8080`;
        /// kinds: system, port, proc, plugin, builtin). Give it once per job wanted.
        #[arg(long, num_args = 1..=2, value_names = ["WHAT", "NAME"])]
        only: Vec<String>,
        /// The `--only` values grouped by occurrence (filled in from the matches: derive
        /// flattens them).
        #[arg(skip)]
        only_each: Vec<Vec<String>>,
    },
    /// Script plugins: the author's tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCmd,
    },
    /// Print the version.
    Version,
    /// Internal: write the man pages and shell completions into DIR (packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write `man/` and `completions/`.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Run a plugin once exactly as the agent runs it and print its points, or why it failed.
    ///
    /// As the agent runs it: its user when root, the clean environment, the working directory, the timeout and output caps, the JSON parsing and the
    /// renaming) and print its points as line protocol, or the precise failure: exit status,
    /// stderr tail, the JSON error with a snippet and its position. Sends nothing. Exits 1 when
    /// the run failed or the agent would drop some of its metrics.
    Test {
        /// A folder holding `plugin.sh` (run where it is), or a git address (cloned into a
        /// temporary directory, as the agent clones it).
        #[arg(value_name = "DIR|REPO")]
        target: String,
        /// The argument string, as the registry's `parameters` (split on whitespace, no quoting).
        #[arg(
            long,
            value_name = "ARGS",
            default_value = "",
            allow_hyphen_values = true
        )]
        param: String,
        /// Seconds the run may take (a periodic run gets its interval minus a tenth, at most
        /// 5 s less).
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        timeout: f64,
        /// The agent's configuration, for its plugin user and containment; default: the
        /// built-in defaults.
        #[arg(short = 'f', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The namespace the run is for (`AGENT_NS`).
        #[arg(long, value_name = "NS", default_value = "test")]
        ns: String,
        /// The branch of a REPO to clone; default: its default branch.
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
    },
}

/// The longest `agent plugin test --timeout`, the bound of `/plugins/run`'s.
const PLUGIN_TEST_MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    // Before anything is created: nothing of the agent's is ever writable by group or others,
    // nor readable by others, whatever umask it was started with.
    agent::files::set_umask();
    // Before any thread: bounded memory depends on it (docs/security.md, "Bounded memory").
    agent::limit_malloc_arenas();
    let cli = parse_cli();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {}", agent::error_chain::anyhow_chain(&e));
            if e.is::<agent::reload::Refused>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The command line, with each `agent test --only` kept apart (`--only cpu --only plugin x`).
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Cmd::Test { only_each, .. } = &mut cli.command {
        *only_each = matches
            .subcommand_matches("test")
            .and_then(|m| m.get_occurrences::<String>("only"))
            .map(|each| each.map(|o| o.cloned().collect()).collect())
            .unwrap_or_default();
    }
    cli
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::GenerateDocs { dir } => {
            use clap::CommandFactory;
            for file in shared::docs::generate(Cli::command(), &dir)? {
                println!("{}", dir.join(file).display());
            }
            Ok(())
        }
        Cmd::Version => {
            println!("agent {} ({})", env!("CARGO_PKG_VERSION"), agent::BUILD);
            Ok(())
        }
        Cmd::Check { config } => {
            let c = Config::load(&config)?;
            println!("{}: ok (output {})", config.display(), c.output.kind);
            match agent::registry::check_file(&c) {
                None => {
                    println!(
                        "registry http {}: not asked (only a running agent asks it; GET /update)",
                        c.registry.url
                    );
                    Ok(())
                }
                Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
                Some(Ok(checked)) if checked.problems.is_empty() => {
                    println!(
                        "registry file {}: ok ({}, {}); a refresh would run:",
                        c.registry.path.display(),
                        shared::count(checked.plan.namespaces.len() as u64, "namespace"),
                        shared::count(checked.plan.item_count() as u64, "item")
                    );
                    print!("{}", describe_plan(&checked.plan));
                    Ok(())
                }
                Some(Ok(checked)) => Err(anyhow::anyhow!(
                    "registry file {}: {}; a refresh would skip them and run the rest ({}, {}):\n  - {}",
                    c.registry.path.display(),
                    shared::count(checked.problems.len() as u64, "problem"),
                    shared::count(checked.plan.namespaces.len() as u64, "namespace"),
                    shared::count(checked.plan.item_count() as u64, "item"),
                    checked.problems.join("\n  - ")
                )),
            }
        }
        Cmd::Test {
            config,
            ns,
            only_each,
            ..
        } => {
            let c = Config::load(&config)?;
            let sel = agent::dryrun::Selection {
                ns,
                only: only_each,
            };
            let tested = run_once(agent::dryrun::run(c, &sel))?;
            print!("{}", tested.output);
            if tested.failures.is_empty() {
                return Ok(());
            }
            let list: Vec<String> = tested
                .failures
                .iter()
                .map(|(job, why)| format!("{job}: {why}"))
                .collect();
            anyhow::bail!(
                "{} of {} failed:\n  - {}",
                tested.failures.len(),
                shared::count(tested.jobs as u64, "job"),
                list.join("\n  - ")
            )
        }
        Cmd::Plugin {
            command:
                PluginCmd::Test {
                    target,
                    param,
                    timeout,
                    config,
                    ns,
                    branch,
                },
        } => {
            let timeout = Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero() && *t <= PLUGIN_TEST_MAX_TIMEOUT)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--timeout {timeout}: give seconds above 0, at most {} (as /plugins/run)",
                        PLUGIN_TEST_MAX_TIMEOUT.as_secs()
                    )
                })?;
            let c = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let test = agent::dryrun::plugin::PluginTest {
                target,
                params: param,
                timeout,
                ns,
                branch,
            };
            let tested = run_once(agent::dryrun::plugin::run(c, &test))?;
            print!("{}", tested.output);
            if tested.rejected == 0 {
                return Ok(());
            }
            anyhow::bail!(
                "the agent would drop {} of this run:\n  - {}",
                shared::count(tested.rejected as u64, "metric"),
                tested.errors.join("\n  - ")
            )
        }
        Cmd::Reload { config, timeout } => {
            let pid_file = match config {
                Some(path) => agent::reload::pid_file_of(&path)?,
                None => daemon::find_running_pid_file()?,
            };
            let (pid, message) = agent::reload::request(&pid_file, Duration::from_secs(timeout))?;
            println!("agent (pid {pid}) reloaded: {message}");
            Ok(())
        }
        Cmd::Stop { config, timeout } => {
            let named = config.is_some();
            let pid_file = match config {
                Some(path) => Config::load(&path)?.pid_file(),
                None => daemon::find_running_pid_file()?,
            };
            let pid = daemon::stop(&pid_file, Duration::from_secs(timeout)).map_err(|e| {
                if named {
                    e
                } else {
                    anyhow::anyhow!(
                        "{e:#} (the last agent this user started); to stop another one, name its config: agent stop -f <config>"
                    )
                }
            })?;
            println!("agent (pid {pid}) stopped");
            Ok(())
        }
        Cmd::Start {
            config,
            foreground,
            daemon_child,
        } => {
            let path = config.canonicalize().unwrap_or(config);
            let c = Config::load(&path)?;
            let pid_file = c.pid_file();
            if !foreground && !daemon_child {
                if c.output.kind == agent::config::OutputKind::Stdout {
                    anyhow::bail!(
                        "{}: output.kind = \"stdout\" writes points to the agent's standard output, which an agent in the background does not have (it would write them nowhere); start it with --foreground, or use output.kind = \"file\"",
                        path.display()
                    );
                }
                daemon::ensure_not_running(&pid_file, Some(&path))?;
                let pid = daemon::spawn_detached(&path, &pid_file, &c.agent.data_dir)?;
                println!(
                    "agent started (pid {pid}); API on http://{}, log in {}",
                    c.agent.listen,
                    c.log_dir().display()
                );
                return Ok(());
            }
            run_daemon(c, foreground)
        }
    }
}

/// What a plan runs, one line per item under its namespace, as `agent check` prints it.
fn describe_plan(plan: &agent::registry::Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (name, ns) in &plan.namespaces {
        let _ = writeln!(out, "  {name}");
        let intervals: Vec<String> = ns
            .intervals
            .iter()
            .map(|(family, secs)| format!("{family} every {secs} s"))
            .collect();
        let _ = writeln!(
            out,
            "    system: every family at its default interval{}",
            if intervals.is_empty() {
                String::new()
            } else {
                format!(", but {}", intervals.join(", "))
            }
        );
        for p in &ns.ports {
            let host = p.host.as_deref().unwrap_or("127.0.0.1");
            let _ = writeln!(
                out,
                "    port {}: {host}:{} every {} s (connect timeout {} s)",
                p.name, p.port, p.interval, p.connect_timeout
            );
        }
        for p in &ns.procs {
            let _ = writeln!(
                out,
                "    process {}: matching {:?} every {} s",
                p.name, p.bin_path, p.interval
            );
        }
        for p in &ns.plugins {
            let when = match p.interval {
                0 => "on demand only".to_owned(),
                secs => format!("every {secs} s"),
            };
            let branch = p
                .branch
                .as_deref()
                .map(|b| format!(", branch {b}"))
                .unwrap_or_default();
            let params = if p.parameters.is_empty() {
                String::new()
            } else {
                format!(", parameters {:?}", p.parameters)
            };
            let _ = writeln!(
                out,
                "    plugin {}: {when}{branch}{params}",
                agent::plugins::git::redact_address(&p.git)
            );
        }
        for b in &ns.builtins {
            let _ = writeln!(out, "    built-in {}: every {} s", b.name, b.interval);
        }
    }
    out
}

/// Runs a command that runs jobs once (`agent test`, `agent plugin test`) until it is done or
/// interrupted (Ctrl-C, SIGTERM): then it is dropped, which kills the plugin runs going on and
/// removes the temporary directory, as the end of a run does.
fn run_once<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agent-test")
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            done = work => done,
            _ = term.recv() => anyhow::bail!("stopped by SIGTERM; nothing was sent"),
            _ = int.recv() => anyhow::bail!("interrupted; nothing was sent"),
        }
    })
}

fn run_daemon(config: Config, foreground: bool) -> anyhow::Result<()> {
    let pid_file = daemon::acquire(&config.pid_file(), config.source.as_deref())?;
    let _log = agent::logging::init(&config.log_dir(), &config.log.level, foreground)?;
    if let Some(warning) = &pid_file.pointer_warning {
        tracing::warn!("{warning}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agent")
        // An idle agent makes two trips to the blocking pool per 10 s round (the system
        // families in one call, the spool's sync round; scheduler::runner): a thread kept a
        // little longer than the round serves the next one, instead of a thread created and
        // ended every round (clone, stack, exit: 10-25 % of the idle agent's CPU in same-window
        // runs; docs/benchmarks.md, "Idle agent"). More threads than the rounds keep busy end
        // after 12 s unused; a busy pool keeps its threads.
        .thread_keep_alive(std::time::Duration::from_secs(12))
        .build()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        let result = agent::run(config, shutdown, |_| {}).await;
        if let Err(e) = &result {
            tracing::error!(error = %agent::error_chain::anyhow_chain(e), "Agent failed.");
        }
        result
    })
}

/// SIGTERM or Ctrl-C starts a graceful shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop the agent with SIGKILL.");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("Signal received; draining (send it again to exit at once).");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("Second signal; exiting without draining.");
    std::process::exit(130);
}

/// The one C math function the agent calls (tokio's scheduler weighs task poll times with
/// `f64::powf`), taken from the pure-Rust `libm` crate. Defining it here keeps glibc's libm out
/// of the process: mapping libm.so costs about 0.5 MiB of resident memory, 7 % of the idle
/// agent's budget, for this one function (docs/benchmarks.md, "Idle agent").
#[allow(unsafe_code)] // `no_mangle`: the linker must resolve the C symbol `pow` to this function.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
