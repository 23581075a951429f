#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain: installs the Debian
# packages the tests need when they are missing (as root, with apt-get), then runs every test.
# `--no-fail-fast`: a missing tool fails only the tests that need it, never hides the others.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p agent`).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests start for real, and why:
#   git (git daemon, git http-backend)  plugin checkouts       tmux            console tests
#   influxdb                            InfluxDB output tests   prometheus      /metrics scraped
#   prometheus-node-exporter            system families compared against it
#   openssh-client openssh-server       checkouts over a real sshd on loopback
#   iproute2 (ss)                       socket states           util-linux (flock, setpriv)
#   pkg-config zlib1g-dev               libz-sys links the system zlib
#   ca-certificates curl                fetches and API calls in scripts
PACKAGES=(git tmux influxdb prometheus prometheus-node-exporter openssh-client openssh-server
  iproute2 util-linux pkg-config zlib1g-dev ca-certificates curl)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  (run as root to install them, or: apt-get install ${missing[*]});" >&2
    echo "  the tests that need them will fail, naming what is missing; the rest run." >&2
  fi
fi

exec cargo test --workspace --no-fail-fast "$@"
