#!/bin/sh
# The plugin manager's per-run cost and memory over 10,000 runs; figures for docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench -p agent --bench plugins
