//! Budget: reconciling a plan of 10,000 items where one changed takes under 50 ms.
//!
//! Measures `Scheduler::reconcile` against 10,000 running port-check jobs (100 namespaces x 100
//! items, interval 1 h so no run interferes), alternating two plans that differ in one item (one
//! job stops, one starts), and a reconcile with no change. Baseline, in the same run: cloning the
//! plan, the least any reconcile has to look at. Figures go into docs/benchmarks.md ("Reconcile").

use std::hint::black_box;
use std::sync::Arc;

use agent::output::BoxFuture;
use agent::registry::{NamespacePlan, Plan, PortItem};
use agent::scheduler::{JobKey, JobSpec, Runner, Scheduler, SchedulerStats};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio_util::sync::CancellationToken;

struct Idle;

impl Runner for Idle {
    fn run(&self, _key: &JobKey, _spec: &JobSpec) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn plan(changed: bool) -> Plan {
    let mut plan = Plan::default();
    for n in 0..100 {
        let mut ns = NamespacePlan::default();
        for i in 0..100u16 {
            let moved = changed && n == 50 && i == 50;
            ns.ports.push(PortItem {
                name: format!("check{i}"),
                port: if moved { 20_000 } else { 10_000 + i },
                connect_timeout: 3,
                host: None,
                interval: 3600,
            });
        }
        plan.namespaces.insert(format!("service.ns{n:03}"), ns);
    }
    plan
}

fn reconcile(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let a = Arc::new(plan(false));
    let b = Arc::new(plan(true));
    assert_eq!(a.item_count(), 10_000);
    let shutdown = CancellationToken::new();
    let mut scheduler = Scheduler::new(
        Arc::new(Idle),
        Arc::new(SchedulerStats::default()),
        &shutdown,
    );
    scheduler.reconcile(&a);

    let mut group = c.benchmark_group("reconcile_10k");
    group.bench_function("baseline_clone_plan", |bench| {
        bench.iter(|| black_box(Plan::clone(&a)))
    });
    let mut flip = false;
    group.bench_function("one_item_changed", |bench| {
        bench.iter(|| {
            flip = !flip;
            let report = scheduler.reconcile(if flip { &b } else { &a });
            assert_eq!((report.started, report.stopped), (1, 1));
            report
        })
    });
    if flip {
        scheduler.reconcile(&a);
    }
    group.bench_function("nothing_changed", |bench| {
        bench.iter(|| {
            let report = scheduler.reconcile(&a);
            assert_eq!(report.started + report.stopped + report.updated, 0);
            report
        })
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, reconcile);
criterion_main!(benches);
