#!/usr/bin/env bash
# Fleet status budget (issue 13): `agentctl fleet status` over 1,000 endpoints, each answering
# after 20 ms, in under 2 s with 64 in flight; the client's peak memory reported.
# The endpoints are a fixture (bench/fleet_fixture.py) serving a recorded answer of a real
# release agent (its /me/status, /plugins/list and /me/ns, recorded at the start of the run)
# from 1,000 ports on 127.0.0.1, each request answered after the delay. agentctl is the release
# build; the agent that is recorded may be any build (only its answers are used).
# Baselines, same run, same fixture:
#   - curl --parallel fetching the same 3,000 URLs with 192 transfers at once (64 hosts x the 3
#     calls a probe makes), so the ratio shows what agentctl adds over a plain concurrent client;
#   - the floor: ceil(1000 / 64) rounds x 20 ms.
#   bench/fleet.sh [endpoints] [delay_ms] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
delay_ms=${2:-20}
runs=${3:-3}
base=19000
token=fleet-bench-token-0123456789
# agentctl is measured, in release; the agent only provides the answers to record (any build).
cargo build --release --quiet -p agentctl
cargo build --quiet -p agent
agent=$PWD/target/debug/agent
ctl=$PWD/target/release/agentctl
work=$(mktemp -d)
fixture_pid=""
cleanup() {
  [ -f "$work/agent/agent.toml" ] && "$agent" stop -f "$work/agent/agent.toml" >/dev/null 2>&1 || true
  [ -n "$fixture_pid" ] && kill "$fixture_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Record a real agent's answers.
mkdir -p "$work/agent"
printf '[agent]\nlisten = "127.0.0.1:18701"\nhostname = "bench-host"\ntoken = "%s"\n' "$token" >"$work/agent/agent.toml"
chmod 600 "$work/agent/agent.toml"
printf '[[namespace]]\nname = "bench.fleet"\n' >"$work/agent/registry.toml"
"$agent" start -f "$work/agent/agent.toml" >/dev/null
sleep 2
for p in "me/status status" "plugins/list plugins" "me/ns ns"; do
  set -- $p
  curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:18701/$1" >"$work/$2.json"
done
"$agent" stop -f "$work/agent/agent.toml" >/dev/null
rm -f "$work/agent/agent.toml"

python3 bench/fleet_fixture.py "$work" "$base" "$n" "$(awk "BEGIN{print $delay_ms/1000}")" >"$work/fixture.out" &
fixture_pid=$!
for _ in $(seq 200); do grep -q ready "$work/fixture.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/fixture.out" || { echo "fixture did not start" >&2; exit 1; }

: >"$work/hosts"; : >"$work/urls"
for i in $(seq 0 $((n - 1))); do
  port=$((base + i))
  printf 'h-%04d 127.0.0.1:%d\n' "$i" "$port" >>"$work/hosts"
  for p in me/status plugins/list me/ns; do
    printf 'url = "http://127.0.0.1:%d/%s"\noutput = "/dev/null"\n' "$port" "$p" >>"$work/urls"
  done
done

now() { date +%s.%N; }
cpu() { awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$1"; }
floor=$(awk "BEGIN{r=int(($n+63)/64); print r*$delay_ms/1000}")
echo "endpoints $n, delay ${delay_ms} ms, 64 in flight; floor ${floor} s; load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for r in $(seq "$runs"); do
  t0=$(now)
  /usr/bin/time -v curl -s --parallel --parallel-max 192 -H "Authorization: Bearer $token" -K "$work/urls" 2>"$work/curltime" || true
  t1=$(now)
  /usr/bin/time -v "$ctl" fleet status --hosts "$work/hosts" --token "$token" >"$work/out" 2>"$work/time" || true
  t2=$(now)
  summary=$(tail -1 "$work/out")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time")
  curl_rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/curltime")
  awk -v c="$t1" -v a="$t0" -v b="$t2" -v rss="$rss" -v crss="$curl_rss" -v s="$summary" -v fl="$floor" -v r="$r" \
      -v cpu="$(cpu "$work/time")" -v ccpu="$(cpu "$work/curltime")" 'BEGIN{
    curl=c-a; ctl=b-c;
    printf "run %d: agentctl %.3f s wall, %.2f s CPU, peak RSS %d KiB (%s); curl %.3f s wall, %.2f s CPU, peak RSS %d KiB; wall agentctl/curl %.2f, agentctl/floor %.2f\n", r, ctl, cpu, rss, s, curl, ccpu, crss, ctl/curl, ctl/fl }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
