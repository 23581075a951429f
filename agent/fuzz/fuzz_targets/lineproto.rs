//! The line-protocol parser: nothing may panic; every metric it yields normalises or is refused
//! with a reason, a normalised point encodes to exactly one line, and the direct-to-points path
//! agrees with the metric path.
#![no_main]

use agent::pipeline::lineproto::{self, parse};
use agent::pipeline::normalize::{normalize, Rename};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse::parse_body(data);
    assert!(parsed.errors.len() <= agent::pipeline::MAX_REPORTED_ERRORS);
    let via_metrics: Vec<_> = parsed
        .items
        .into_iter()
        .filter_map(|m| normalize(m, Rename::Keep, "fuzz", 1_764_000_000).ok())
        .collect();
    for p in &via_metrics {
        let mut line = Vec::new();
        lineproto::encode_point(p, &mut line);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line per point");
    }
    // The /post hot path must mean the same as the metric path.
    let direct = parse::parse_points(data, "fuzz", 1_764_000_000);
    assert_eq!(direct.items, via_metrics);
});
