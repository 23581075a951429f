#!/usr/bin/env bash
# Idle agent budget (issue 3): system collectors at their defaults, three namespaces, file output;
# resident memory and CPU over a window (default 120 s), read from /proc.
# Baseline, run at the same time: the same binary with no namespace (runtime and API only), so
# the ratio shows what the collectors and the pipeline add on this machine right now.
#   bench/idle.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
cargo build --release --quiet -p agent
bin=$PWD/target/release/agent
work=$(mktemp -d)
trap 'for d in "$work"/*/; do "$bin" stop -f "$d/agent.toml" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT

start() { # name port namespaces...
  local dir=$work/$1 port=$2; shift 2
  mkdir -p "$dir"
  printf '[agent]\nlisten = "127.0.0.1:%s"\n' "$port" >"$dir/agent.toml"
  : >"$dir/registry.toml"
  for ns in "$@"; do printf '[[namespace]]\nname = "%s"\n' "$ns" >>"$dir/registry.toml"; done
  "$bin" start -f "$dir/agent.toml" >/dev/null
  cat "$dir/data/agent.pid"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

base=$(start baseline 18601)
agent=$(start agent 18602 idle.a idle.b idle.c)
sleep 5 # past start-up
hz=$(getconf CLK_TCK)
b0=$(ticks "$base"); a0=$(ticks "$agent"); t0=$(date +%s.%N)
max_b=0; max_a=0
for _ in $(seq "$secs"); do
  sleep 1
  r=$(rss_kib "$base"); ((r > max_b)) && max_b=$r
  r=$(rss_kib "$agent"); ((r > max_a)) && max_a=$r
done
b1=$(ticks "$base"); a1=$(ticks "$agent"); t1=$(date +%s.%N)
python3 - "$hz" "$t0" "$t1" "$b0" "$b1" "$a0" "$a1" "$max_b" "$max_a" "$work/agent/data/out" <<'PY'
import sys, os
hz, t0, t1, b0, b1, a0, a1, mb, ma, out = sys.argv[1:]
hz, wall = int(hz), float(t1) - float(t0)
cpu = lambda a, b: (int(b) - int(a)) / hz / wall * 100
lines = sum(sum(1 for _ in open(os.path.join(out, f))) for f in os.listdir(out))
print(f"window {wall:.0f} s")
print(f"baseline (no namespace): cpu {cpu(b0, b1):.3f} % of a core, max RSS {int(mb)/1024:.1f} MiB")
print(f"agent (3 namespaces):    cpu {cpu(a0, a1):.3f} % of a core, max RSS {int(ma)/1024:.1f} MiB")
print(f"ratio agent/baseline:    cpu {cpu(a0, a1) / max(cpu(b0, b1), 1e-9):.1f}x, RSS {int(ma)/int(mb):.2f}x")
print(f"points written by the agent: {lines}")
PY
