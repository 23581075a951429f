#!/usr/bin/env bash
# Load test of POST /post over loopback with wrk: 1,000-metric bodies, JSON and line protocol, into a
# release-built agent with the file output. The baseline is wrk against GET /me/status in the same
# run. Prints a markdown table for docs/benchmarks.md ("HTTP ingestion").
#
# Needs: wrk (Debian package), python3. Env: DURATION (s, default 10), CONNS (default 4).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
duration="${DURATION:-10}"
conns="${CONNS:-4}"
cd "$repo"
cargo build --release -p agent --bin agent >&2
agent_bin="${CARGO_TARGET_DIR:-$repo/target}/release/agent"

work="$(mktemp -d)"
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ]; then kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/agent.toml" <<TOML
[agent]
listen = "127.0.0.1:$port"
data_dir = "data"
hostname = "bench-host"
[output]
kind = "file"
[log]
level = "warn"
TOML
printf '[[namespace]]\nname = "bench.load"\n' > "$work/registry.toml"

python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
metrics = [{"name": f"app.requests.{i % 50}", "value": i * 1.5, "timestamp": 1764000000,
            "tags": {"endpoint": f"/api/v{i % 7}", "code": str(200 + i % 3)}} for i in range(1000)]
open(f"{d}/body.json", "w").write(json.dumps(metrics))
lines = [f"app.requests.{i % 50},code={200 + i % 3},endpoint=/api/v{i % 7} value={i * 1.5} 1764000000"
         for i in range(1000)]
open(f"{d}/body.lp", "w").write("\n".join(lines) + "\n")
PY

"$agent_bin" start --foreground -f "$work/agent.toml" 2>"$work/agent.err" &
agent_pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/me/status" >/dev/null 2>&1 && break
    sleep 0.1
done
# /post needs the token the agent made at start (docs/api.md, "Token").
TOKEN="$(cat "$work/data/auth_token")"
export TOKEN

run() { # name ctype body path -> requests per second
    local out
    if [ "$1" = status ]; then
        out="$(wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$port/me/status")"
    else
        out="$(CTYPE="$2" BODY="$3" wrk -t1 -c"$conns" -d"${duration}s" -s "$repo/bench/post_load.lua" \
            "http://127.0.0.1:$port/post?ns=bench.load")"
    fi
    echo "$out" >&2
    if echo "$out" | grep -q 'Non-2xx'; then echo "error: $1 had non-2xx answers" >&2; exit 1; fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}

status_rps="$(run status)"
json_rps="$(run json application/json "$work/body.json")"
lp_rps="$(run lineproto text/plain "$work/body.lp")"
accepted="$(curl -fs "http://127.0.0.1:$port/me/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline"]["accepted"])')"
# How long the batcher and the file output need to catch up with what was accepted.
drain_start=$(date +%s.%N)
for _ in $(seq 600); do
    queued="$(curl -fs "http://127.0.0.1:$port/me/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline"]["queued"])')"
    [ "$queued" = 0 ] && break
    sleep 0.1
done
drain_secs="$(python3 -c "import time; print(f'{time.time() - $drain_start:.1f}')")"

python3 - "$status_rps" "$json_rps" "$lp_rps" "$accepted" "$duration" "$conns" "$drain_secs" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
s, j, l, acc, dur, conns, drain = map(float, sys.argv[1:8])
print(f"wrk -t1 -c{int(conns)} -d{int(dur)}s each; {int(acc):,} points accepted by the pipeline in total; "
      f"the batcher and file output caught up {drain:.1f} s after the last run; load average {sys.argv[8]}\n")
print("| run | requests/s | points/s | requests/s vs /me/status |")
print("| --- | ---: | ---: | ---: |")
print(f"| GET /me/status (baseline) | {s:,.0f} | - | 1.00 |")
print(f"| POST /post JSON, 1,000 metrics/body | {j:,.0f} | {j*1000:,.0f} | {j/s:.3f} |")
print(f"| POST /post line protocol, 1,000 lines/body | {l:,.0f} | {l*1000:,.0f} | {l/s:.3f} |")
PY
