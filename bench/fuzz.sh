#!/usr/bin/env bash
# Runs the /post parsers' fuzz targets briefly (FUZZ_SECS each, default 30).
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Needs: cargo install cargo-fuzz --locked
set -euo pipefail
cd "$(dirname "$0")/../agent"
secs="${FUZZ_SECS:-30}"
for target in post_json lineproto; do
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
echo "fuzz: post_json and lineproto ran ${secs} s each without a crash"
