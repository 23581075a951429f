//! System collectors in the real agent: what `[system]` in the config leaves out.

use std::time::Duration;

use support::{wait_until, AgentBuilder};

const NS: &str = "e2e.sys";

/// Interfaces with a `net.in_bytes` line in the namespace's output.
fn interfaces(output: &str) -> Vec<String> {
    let mut found: Vec<String> = output
        .lines()
        .filter(|l| l.starts_with("net.in_bytes,"))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|series| series.split(',').find_map(|t| t.strip_prefix("iface=")))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_config_decides_which_interfaces_are_left_out() {
    let registry = format!("[[namespace]]\nname = \"{NS}\"\nintervals = {{ NET = 1 }}\n");
    let everything = AgentBuilder::new()
        .config("[output]\nflush_ms = 100\n[system]\nskip_interfaces = []")
        .registry(&registry)
        .start();
    let defaults = AgentBuilder::new()
        .config("[output]\nflush_ms = 100")
        .registry(&registry)
        .start();
    // The first collection only takes the counters; rates come from the second on.
    assert!(
        wait_until(Duration::from_secs(15), || interfaces(
            &everything.output_file(NS)
        )
        .contains(&"lo".to_owned())),
        "with skip_interfaces = [] the loopback interface is reported:\n{}",
        everything.output_file(NS)
    );
    // The agents started together with the same NET interval: the default one has collected
    // as often, and more in these seconds, but reports no `lo`.
    std::thread::sleep(Duration::from_secs(3));
    let left = interfaces(&defaults.output_file(NS));
    assert!(
        !left.contains(&"lo".to_owned()),
        "lo is left out by default: {left:?}"
    );
}
