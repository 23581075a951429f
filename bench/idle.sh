#!/usr/bin/env bash
# Idle agent budget (issue 3): system collectors at their defaults, three namespaces, file output;
# resident memory and CPU over a window (default 120 s), read from /proc.
# Baselines, run at the same time on the same machine:
#   - the same binary with no namespace (runtime and API only), so the ratio shows what the
#     collectors and the pipeline add;
#   - collectd (Debian's collectd-core) with the equivalent plugins at 10 s writing CSV, the
#     tool the issue names for scale (skipped when /usr/sbin/collectd is missing).
#   - with IDLE_KEEP_STARTUP_CODE=1, the 3-namespace agent once more with madvise() stubbed out
#     (LD_PRELOAD of a one-line library), i.e. without the unmapping of start-up code of
#     agent/src/resident.rs: the same binary before and after that change, in the same window.
#   - with IDLE_BEFORE_BIN=/path/to/agent, another build (say main's) with three namespaces in
#     the same window: a before/after of a change that the load of the machine does not skew.
# CPU is read twice: from /proc/<pid>/stat (clock ticks, 10 ms each: over 90 s one tick is 0.011 %
# of a core, about a quarter of what an idle agent uses) and, when perf is allowed, as perf's
# task-clock of the process and every thread it starts (nanoseconds).
#   bench/idle.sh [seconds]     (IDLE_PORT: first of the ports used, default 18601)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
port=${IDLE_PORT:-18601}
cargo build --release --quiet -p agent
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/agent
# The layout of idle code (agent/build.rs) only works while its symbol names match the build's;
# they change with the dependencies and the toolchain (then run scripts/idle-symbol-order.sh).
if command -v nm >/dev/null; then
  have=$(nm --defined-only "$bin" | awk '{print $3}' | sort -u | comm -12 - <(sort -u agent/link/idle.order) | wc -l)
  echo "agent/link/idle.order: $have of $(wc -l <agent/link/idle.order) functions found in the binary"
fi
work=$(mktemp -d)
collectd_pid=""
cleanup() {
  for d in "$work"/*/; do [ -f "$d/agent.toml" ] && "$bin" stop -f "$d/agent.toml" >/dev/null 2>&1 || true; done
  [ -n "$collectd_pid" ] && kill "$collectd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() { # name port namespaces...   (AGENT_BIN: the binary, default this build's)
  local dir=$work/$1 port=$2 agent=${AGENT_BIN:-$bin}; shift 2
  mkdir -p "$dir"
  printf '[agent]\nlisten = "127.0.0.1:%s"\n' "$port" >"$dir/agent.toml"
  : >"$dir/registry.toml"
  for ns in "$@"; do printf '[[namespace]]\nname = "%s"\n' "$ns" >>"$dir/registry.toml"; done
  "$agent" start -f "$dir/agent.toml" >/dev/null
  cat "$dir/data/agent.pid"
}

pids=("$(start baseline "$port")" "$(start agent $((port + 1)) idle.a idle.b idle.c)")
names=("agent, no namespace" "agent, 3 namespaces")
if [ "${IDLE_KEEP_STARTUP_CODE:-}" = 1 ]; then
  printf 'int madvise(void *a, unsigned long l, int advice) { (void)a; (void)l; (void)advice; return 0; }\n' >"$work/nomadvise.c"
  cc -shared -fPIC -O2 -o "$work/nomadvise.so" "$work/nomadvise.c"
  pids+=("$(LD_PRELOAD=$work/nomadvise.so start kept $((port + 2)) idle.a idle.b idle.c)")
  names+=("agent, 3 ns, code kept")
fi
if [ -n "${IDLE_BEFORE_BIN:-}" ]; then
  pids+=("$(AGENT_BIN=$IDLE_BEFORE_BIN start before $((port + 3)) idle.a idle.b idle.c)")
  names+=("before, 3 namespaces")
fi
if [ -x /usr/sbin/collectd ]; then
  mkdir -p "$work/collectd/csv"
  cat >"$work/collectd/collectd.conf" <<CONF
Hostname "idle-bench"
Interval 10
BaseDir "$work/collectd"
PIDFile "$work/collectd/collectd.pid"
PluginDir "/usr/lib/collectd"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin swap
LoadPlugin disk
LoadPlugin interface
LoadPlugin df
LoadPlugin load
LoadPlugin processes
LoadPlugin contextswitch
LoadPlugin fhcount
LoadPlugin uptime
LoadPlugin csv
<Plugin csv>
  DataDir "$work/collectd/csv"
</Plugin>
CONF
  /usr/sbin/collectd -f -C "$work/collectd/collectd.conf" >/dev/null 2>&1 &
  collectd_pid=$!
  pids+=("$collectd_pid")
  names+=("collectd (baseline)")
fi
sleep 5 # past start-up
hz=$(getconf CLK_TCK)
declare -a t0s maxrss anon file
for i in "${!pids[@]}"; do t0s[$i]=$(awk '{print $14 + $15}' "/proc/${pids[$i]}/stat"); maxrss[$i]=0; done
perf_ok=""
perf_pids=()
if command -v perf >/dev/null && perf stat -e task-clock -- true >/dev/null 2>&1; then
  perf_ok=1
  for i in "${!pids[@]}"; do
    perf stat -x, -e task-clock -p "${pids[$i]}" -- sleep "$secs" 2>"$work/perf.$i" &
    perf_pids+=($!)
  done
fi
start_s=$(date +%s.%N)
for _ in $(seq "$secs"); do
  sleep 1
  for i in "${!pids[@]}"; do
    read -r r a f < <(awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print r, a, f}' "/proc/${pids[$i]}/status")
    if ((r > maxrss[i])); then maxrss[$i]=$r; anon[$i]=$a; file[$i]=$f; fi
  done
done
end_s=$(date +%s.%N)
declare -a t1s
for i in "${!pids[@]}"; do t1s[$i]=$(awk '{print $14 + $15}' "/proc/${pids[$i]}/stat"); done
for p in "${perf_pids[@]}"; do wait "$p" || true; done
wall=$(python3 -c "print($end_s - $start_s)")
printf 'window %.0f s, %s clock ticks per second\n' "$wall" "$hz"
printf '%-22s %14s %16s %14s %12s %12s %14s\n' process "cpu % of core" "cpu % (perf)" "max RSS MiB" "anon MiB" "file MiB" "VmHWM MiB"
for i in "${!pids[@]}"; do
  # VmHWM: the kernel's peak RSS since exec, start-up included.
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/${pids[$i]}/status")
  ms=$( [ -n "$perf_ok" ] && awk -F, '/task-clock/ {print $1}' "$work/perf.$i" || true)
  python3 - "${names[$i]}" "${t0s[$i]}" "${t1s[$i]}" "$hz" "$wall" "${maxrss[$i]}" "${anon[$i]}" "${file[$i]}" "$hwm" "${ms:-}" "$secs" <<'PY'
import sys
name, t0, t1, hz, wall, rss, anon, file, hwm, ms, secs = sys.argv[1:]
cpu = (int(t1) - int(t0)) / int(hz) / float(wall) * 100
perf = f"{float(ms) / 1000 / float(secs) * 100:16.4f}" if ms else f"{'-':>16}"
print(f"{name:<22} {cpu:14.3f} {perf} {int(rss)/1024:14.1f} {int(anon)/1024:12.1f} {int(file)/1024:12.1f} {int(hwm)/1024:14.1f}")
PY
done
echo "lines written by the 3-namespace agent: $(cat "$work"/agent/data/out/*.lp | wc -l)"
