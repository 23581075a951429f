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
    /// Print the version.
    Version,
    /// Internal: write the man pages and shell completions into DIR (packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write `man/` and `completions/`.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before anything is created: nothing of the agent's is ever writable by group or others,
    // nor readable by others, whatever umask it was started with.
    agent::files::set_umask();
    // Before any thread: bounded memory depends on it (docs/security.md, "Bounded memory").
    agent::limit_malloc_arenas();
    let cli = Cli::parse();
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

fn run_daemon(config: Config, foreground: bool) -> anyhow::Result<()> {
    let pid_file = daemon::acquire(&config.pid_file(), config.source.as_deref())?;
    let _log = agent::logging::init(&config.log_dir(), &config.log.level, foreground)?;
    if let Some(warning) = &pid_file.pointer_warning {
        tracing::warn!("{warning}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agent")
        // The system families run in one burst every 10 s (scheduler::SYSTEM_STAGGER): one
        // blocking thread serves the burst and then ends, instead of the four that start-up
        // left taking turns and so never reaching tokio's default 10 s keep-alive (each with a
        // stack and wakeups of its own; docs/benchmarks.md, "Idle agent"). A busy pool never
        // waits this long, so it keeps its threads.
        .thread_keep_alive(std::time::Duration::from_secs(2))
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
