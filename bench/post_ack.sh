#!/usr/bin/env bash
# Budget of issue 12: POST /post answered once durable (agent.post_ack = "durable", the default)
# against the in-memory answer (post_ack = "queued"), in the same run. Same method as
# post_load.sh: wrk with post_load.lua, 1,000-line line-protocol bodies, CONNS connections,
# release build, file output. Two agents run side by side (one per mode) and the runs alternate
# (queued, durable, queued, durable, ...) so a change of the machine's load hits both alike.
# Prints a markdown table for docs/benchmarks.md ("HTTP ingestion").
#
# Needs: wrk (Debian package), python3. Env: DURATION (s, default 10), CONNS (default 4),
# ROUNDS (default 3).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
duration="${DURATION:-10}"
conns="${CONNS:-4}"
rounds="${ROUNDS:-3}"
cd "$repo"
cargo build --release -p agent --bin agent >&2
agent_bin="${CARGO_TARGET_DIR:-$repo/target}/release/agent"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work" <<'PY'
import sys
d = sys.argv[1]
lines = [f"app.requests.{i % 50},code={200 + i % 3},endpoint=/api/v{i % 7} value={i * 1.5} 1764000000"
         for i in range(1000)]
open(f"{d}/body.lp", "w").write("\n".join(lines) + "\n")
PY

start_agent() { # mode -> sets $port (not in a subshell, so the agent's pid is kept for cleanup)
    local mode="$1"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    mkdir -p "$work/$mode"
    cat > "$work/$mode/agent.toml" <<TOML
[agent]
listen = "127.0.0.1:$port"
data_dir = "data"
hostname = "bench-host"
post_ack = "$mode"
[output]
kind = "file"
[log]
level = "warn"
TOML
    printf '[[namespace]]\nname = "bench.load"\n' > "$work/$mode/registry.toml"
    "$agent_bin" start --foreground -f "$work/$mode/agent.toml" >/dev/null 2>"$work/$mode/agent.err" &
    pids+=($!)
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/me/status" >/dev/null 2>&1 && break
        sleep 0.1
    done
}
start_agent queued; queued_port="$port"
start_agent durable; durable_port="$port"

run() { # mode port -> requests per second
    local out
    # /post needs the token each agent made at start (docs/api.md, "Token").
    out="$(TOKEN="$(cat "$work/$1/data/auth_token")" CTYPE=text/plain BODY="$work/body.lp" wrk -t1 -c"$conns" -d"${duration}s" \
        -s "$repo/bench/post_load.lua" "http://127.0.0.1:$2/post?ns=bench.load")"
    echo "$out" >&2
    if echo "$out" | grep -q 'Non-2xx'; then echo "error: non-2xx answers" >&2; exit 1; fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}

q_all=""; d_all=""
for _ in $(seq "$rounds"); do
    q_all="$q_all $(run queued "$queued_port")"
    d_all="$d_all $(run durable "$durable_port")"
done
# Every durable answer was a 200: its points were written to the spool file before it.
spooled="$(curl -fs "http://127.0.0.1:$durable_port/me/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline"]["accepted"])')"

python3 - "$q_all" "$d_all" "$duration" "$conns" "$spooled" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
q = [float(x) for x in sys.argv[1].split()]
d = [float(x) for x in sys.argv[2].split()]
dur, conns, spooled = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mq, md = sum(q) / len(q), sum(d) / len(d)
print(f"wrk -t1 -c{conns} -d{dur}s per run, {len(q)} runs per mode, alternating; "
      f"{spooled:,} points accepted by the durable agent; load average at the end {sys.argv[6]}\n")
print("| POST /post line protocol, 1,000 lines/body | runs (requests/s) | mean requests/s | points/s | vs in-memory |")
print("| --- | --- | ---: | ---: | ---: |")
print(f"| `post_ack = \"queued\"` (in-memory answer, baseline) | {', '.join(f'{x:,.0f}' for x in q)} | {mq:,.0f} | {mq*1000:,.0f} | 1.00 |")
print(f"| `post_ack = \"durable\"` (answer after the spool write) | {', '.join(f'{x:,.0f}' for x in d)} | {md:,.0f} | {md*1000:,.0f} | **{md/mq:.2f}** |")
PY
