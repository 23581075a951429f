//! The `/post` JSON body parser, then normalisation and both encoders: nothing may panic, and
//! every element is either a metric or a counted rejection.
#![no_main]

use agent::pipeline::normalize::{normalize, Rename};
use agent::pipeline::{json, lineproto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = json::parse_metrics(data) else {
        return;
    };
    assert!(parsed.errors.len() <= agent::pipeline::MAX_REPORTED_ERRORS);
    let points: Vec<_> = parsed
        .items
        .into_iter()
        .filter_map(|m| normalize(m, Rename::Keep, "fuzz", 1_764_000_000).ok())
        .collect();
    let _ = lineproto::encode_batch(&points, 4096);
    let _ = json::encode_batch("ns", &points, 4096);
});
