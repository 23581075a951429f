#!/usr/bin/env bash
# Idle budget: the TUI uses under 1 % of a core while idle.
#
# Starts an idle agent (file output, one namespace, no plugins) and `agentctl` in a detached
# 80x24 tmux session on its Overview screen, then reads utime+stime of both from
# /proc/<pid>/stat over SECS seconds (default 60). The agent is the same-run baseline.
# Usage: console/benches/idle_cpu.sh [SECS]   (builds release binaries first)
set -euo pipefail
SECS=${1:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -q -p agent -p agentctl --bins --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release"
DIR=$(mktemp -d)
SOCK="agentctl-idle-$$"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  [[ -n "${AGENT_PID:-}" ]] && kill "$AGENT_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
printf '[agent]\nlisten = "127.0.0.1:%s"\ndata_dir = "data"\n' "$PORT" > "$DIR/agent.toml"
printf '[[namespace]]\nname = "idle.test"\n' > "$DIR/registry.toml"
"$BIN/agent" start --foreground -f "$DIR/agent.toml" 2>"$DIR/agent.err" &
AGENT_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/me/status" >/dev/null && break; sleep 0.1; done
tmux -L "$SOCK" new-session -d -x 80 -y 24 "$BIN/agentctl --addr 127.0.0.1:$PORT"
sleep 3
CTL_PID=$(tmux -L "$SOCK" list-panes -F '#{pane_pid}')
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
c0=$(ticks "$CTL_PID"); a0=$(ticks "$AGENT_PID"); t0=$(date +%s.%N)
sleep "$SECS"
c1=$(ticks "$CTL_PID"); a1=$(ticks "$AGENT_PID"); t1=$(date +%s.%N)
python3 - "$c0" "$c1" "$a0" "$a1" "$t0" "$t1" "$HZ" <<'PY'
import sys
c0, c1, a0, a1, t0, t1, hz = map(float, sys.argv[1:])
wall = t1 - t0
ctl = (c1 - c0) / hz / wall * 100
agent = (a1 - a0) / hz / wall * 100
print(f"wall {wall:.1f} s")
print(f"agentctl (TUI, idle, Overview): {ctl:.3f} % of a core ({c1 - c0:.0f} ticks)")
print(f"agent (idle, baseline):         {agent:.3f} % of a core ({a1 - a0:.0f} ticks)")
print(f"ratio agentctl / agent:         {ctl / agent:.2f}" if agent > 0 else "agent used no measurable CPU")
PY
