#!/usr/bin/env bash
# Writes agent/link/idle.order: the agent's functions that run while it is idle, hottest first.
# agent/build.rs hands it to the linker (lld's --symbol-ordering-file) for release builds, so
# that code sits together in a few pages instead of being spread through the 7 MiB text
# segment, where this kernel maps 64 KiB around every page fault (docs/benchmarks.md, "Idle
# agent"). Regenerate it after large changes; symbols it names that no longer exist are ignored.
#
# How: the release agent runs under callgrind with three namespaces and every system family at
# 10 s (so the 60 s and 300 s families run in the window too); the counters are zeroed once
# start-up is over, so the dump holds only what runs at idle.
#   scripts/idle-symbol-order.sh [seconds after start-up, default 60] [port, default 18650]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
port=${2:-18650}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet -p agent
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/agent
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
printf '[agent]\nlisten = "127.0.0.1:%s"\n' "$port" >"$work/agent.toml"
every='intervals = { CPU = 10, MEM = 10, DISK = 10, NET = 10, FS = 10, KERNEL = 10, TIME = 10, NETSTAT = 10, SOCKET = 10, PRESSURE = 10, VMSTAT = 10, CONNTRACK = 10, SOFTNET = 10, HWMON = 10, RAID = 10, COREDUMP = 10 }'
for ns in idle.a idle.b idle.c; do printf '[[namespace]]\nname = "%s"\n%s\n' "$ns" "$every"; done >"$work/registry.toml"
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.out" \
  "$bin" start --foreground -f "$work/agent.toml" >"$work/vg.log" 2>&1 &
pid=$!
sleep 20 # start-up under valgrind: config, registry, first collections
callgrind_control -z "$pid" >/dev/null 2>&1
sleep "$secs"
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 2
kill "$pid"
wait "$pid" 2>/dev/null || true
python3 - "$bin" "$work" agent/link/idle.order <<'PY'
import glob, re, sys
binary, work, out = sys.argv[1:]
obs, fns, cost = {}, {}, {}
for path in glob.glob(work + "/cg.out.*"):
    ob = fn = None
    after_calls = False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            called, kind, ident, name = m.groups()
            table = obs if kind == "ob" else fns
            if name:
                table[ident] = name
            if not called:
                if kind == "ob":
                    ob = obs.get(ident)
                else:
                    fn = fns.get(ident)
            continue
        if line.startswith("calls="):
            # The cost line after it is the callee's inclusive cost, not this function's.
            after_calls = True
            continue
        parts = line.split()
        if len(parts) == 2 and line[:1] in "0123456789+-*":
            if after_calls:
                after_calls = False
            elif ob == binary and fn:
                cost[fn] = cost.get(fn, 0) + int(parts[1])
names = [f for f, c in sorted(cost.items(), key=lambda kv: -kv[1]) if c > 0 and not f.startswith("0x")]
with open(out, "w") as f:
    f.write("\n".join(names) + "\n")
print(f"{out}: {len(names)} functions")
PY
