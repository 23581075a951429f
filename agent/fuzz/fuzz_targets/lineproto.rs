//! The line-protocol parser: nothing may panic; every metric it yields normalises or is refused
//! with a reason, and a normalised point encodes to exactly one line.
#![no_main]

use agent::pipeline::lineproto::{self, parse};
use agent::pipeline::normalize::{normalize, Rename};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse::parse_body(data);
    assert!(parsed.errors.len() <= agent::pipeline::MAX_REPORTED_ERRORS);
    for m in parsed.metrics {
        if let Ok(p) = normalize(m, Rename::Keep, "fuzz", 1_764_000_000) {
            let mut line = Vec::new();
            lineproto::encode_point(&p, &mut line);
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line per point");
        }
    }
});
