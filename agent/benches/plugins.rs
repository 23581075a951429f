//! The plugin manager's own cost per run, and its memory over many runs.
//!
//! `cargo bench -p agent --bench plugins` (figures go to docs/benchmarks.md, section Plugins).
//!
//! The scheduler is not part of this measurement (it lives elsewhere): this measures what one
//! periodic run costs the agent process itself (`getrusage(RUSAGE_SELF)`, user + system, all
//! threads), children excluded (`RUSAGE_CHILDREN` is reported beside it), and extrapolates to
//! 500 plugins at a 60 s interval. The baseline, measured in the same run, is the cheapest way
//! to run the same script from tokio: `Command::new("bash").arg("plugin.sh").output()`.
//! Memory: resident set size after 1,000 and after 10,000 runs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent::config::Config;
use agent::pipeline::Pipeline;
use agent::plugins::{PluginManager, Scheduled};
use agent::registry::{NamespacePlan, Plan, PluginItem};
use nix::sys::resource::{getrusage, UsageWho};

const NS: &str = "bench.plugins";
const SCRIPT: &str = "echo '[{\"name\":\"x\",\"value\":1}]'\n";
const WARMUP: usize = 200;
const CPU_RUNS: usize = 2_000;
const MEM_RUNS: usize = 10_000;
const LANES: usize = 4;

fn cpu(who: UsageWho) -> Duration {
    let u = getrusage(who).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    us(u.user_time()) + us(u.system_time())
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git")
        .success();
    assert!(ok, "git {args:?}");
}

fn repo(root: &Path, name: &str) -> String {
    let work = root.join(format!("{name}-work"));
    let bare = root.join(format!("{name}.git"));
    std::fs::create_dir_all(&work).expect("work");
    std::fs::create_dir_all(&bare).expect("bare");
    git(&bare, &["init", "-q", "--bare"]);
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("plugin.sh"), SCRIPT).expect("script");
    git(&work, &["add", "plugin.sh"]);
    git(&work, &["commit", "-q", "-m", "p"]);
    git(
        &work,
        &["push", "-q", bare.to_str().expect("utf8"), "HEAD:main"],
    );
    format!("file://{}", bare.display())
}

struct Lap {
    self_cpu: Duration,
    child_cpu: Duration,
    wall: Duration,
}

async fn lap<F, Fut>(runs: usize, mut f: F) -> Lap
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (s0, c0, t0) = (
        cpu(UsageWho::RUSAGE_SELF),
        cpu(UsageWho::RUSAGE_CHILDREN),
        Instant::now(),
    );
    for i in 0..runs {
        f(i).await;
    }
    Lap {
        self_cpu: cpu(UsageWho::RUSAGE_SELF) - s0,
        child_cpu: cpu(UsageWho::RUSAGE_CHILDREN) - c0,
        wall: t0.elapsed(),
    }
}

fn per_run_us(d: Duration, runs: usize) -> f64 {
    d.as_secs_f64() * 1e6 / runs as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = Config::default();
    cfg.agent.data_dir = dir.path().join("data");
    cfg.agent.plugins_dir = Some(dir.path().join("data/plugins"));
    let (pipeline, mut rx) = Pipeline::new("bench", 4096);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let manager = PluginManager::new(&cfg, pipeline);
    let projects: Vec<String> = (0..LANES).map(|i| format!("p{i}")).collect();
    let plugins = projects
        .iter()
        .map(|p| PluginItem {
            git: repo(&dir.path().join("remotes"), p),
            interval: 60,
            parameters: String::new(),
            branch: None,
        })
        .collect();
    let mut plan = Plan::default();
    plan.namespaces.insert(
        NS.to_owned(),
        NamespacePlan {
            plugins,
            ..NamespacePlan::default()
        },
    );
    manager.sync(&plan).await;
    let checkout = manager.checkout_dir(NS, "p0").expect("checkout dir");

    let managed = |m: PluginManager| {
        move |_i: usize| {
            let m = m.clone();
            async move {
                match m.run_scheduled(NS, "p0").await {
                    Scheduled::Ran(r) => assert!(r.ok, "{r:?}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    };
    let bare = |dir: std::path::PathBuf| {
        move |_i: usize| {
            let dir = dir.clone();
            async move {
                let out = tokio::process::Command::new("bash")
                    .arg("plugin.sh")
                    .current_dir(&dir)
                    .output()
                    .await
                    .expect("bash");
                assert!(out.status.success());
            }
        }
    };

    lap(WARMUP, managed(manager.clone())).await;
    lap(WARMUP, bare(checkout.clone())).await;
    // Interleave the two so machine noise hits both alike.
    let mut base = Vec::new();
    let mut mgr = Vec::new();
    for _ in 0..4 {
        base.push(lap(CPU_RUNS / 4, bare(checkout.clone())).await);
        mgr.push(lap(CPU_RUNS / 4, managed(manager.clone())).await);
    }
    let sum = |v: &[Lap]| Lap {
        self_cpu: v.iter().map(|l| l.self_cpu).sum(),
        child_cpu: v.iter().map(|l| l.child_cpu).sum(),
        wall: v.iter().map(|l| l.wall).sum(),
    };
    let (b, m) = (sum(&base), sum(&mgr));
    let b_self = per_run_us(b.self_cpu, CPU_RUNS);
    let m_self = per_run_us(m.self_cpu, CPU_RUNS);
    println!("runs per side: {CPU_RUNS} (after {WARMUP} warm-up runs each)");
    println!(
        "baseline bare tokio Command: self {b_self:.0} us/run, children {:.0} us/run, wall {:.2} ms/run",
        per_run_us(b.child_cpu, CPU_RUNS),
        b.wall.as_secs_f64() * 1e3 / CPU_RUNS as f64
    );
    println!(
        "manager run_scheduled:       self {m_self:.0} us/run, children {:.0} us/run, wall {:.2} ms/run",
        per_run_us(m.child_cpu, CPU_RUNS),
        m.wall.as_secs_f64() * 1e3 / CPU_RUNS as f64
    );
    println!("ratio manager/baseline (self CPU): {:.2}", m_self / b_self);
    let share = m_self * 1e-6 * 500.0 / 60.0;
    println!(
        "extrapolated: 500 plugins every 60 s = {:.2} runs/s -> {:.3} % of one core for the agent itself (budget 2 %)",
        500.0 / 60.0,
        share * 100.0
    );

    // Memory: RSS after 1,000 and after 10,000 runs, four plugins in parallel lanes.
    let run_lanes = |n: usize| {
        let manager = manager.clone();
        let projects = projects.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for p in projects {
                let m = manager.clone();
                set.spawn(async move {
                    for _ in 0..n / LANES {
                        let r = m.run_scheduled(NS, &p).await;
                        assert!(matches!(r, Scheduled::Ran(ref r) if r.ok), "{r:?}");
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.expect("lane");
            }
        }
    };
    let rss0 = rss_kib();
    run_lanes(1_000).await;
    let rss1k = rss_kib();
    run_lanes(MEM_RUNS - 1_000).await;
    let rss10k = rss_kib();
    println!(
        "RSS: start {rss0} KiB, after 1,000 runs {rss1k} KiB, after {MEM_RUNS} runs {rss10k} KiB (ratio 10k/1k {:.3})",
        rss10k as f64 / rss1k as f64
    );
}
