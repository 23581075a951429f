#!/usr/bin/env bash
# Builds the Debian package: both binaries (release, no debug info), their man pages and shell
# completions (generated from the same clap definitions, by the binaries themselves), then the
# .deb with cargo-deb. Prints the package's path. docs/operations.md describes what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
cargo build --release --locked -p agent -p agentctl
rm -rf target/packaging
target/release/agent generate-docs target/packaging >/dev/null
target/release/agentctl generate-docs target/packaging >/dev/null
cargo deb --no-build --locked -p agent "$@" | tail -1
